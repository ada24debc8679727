// CUDA kernels of the gpu package: one or more for every tensor.Device method that is not a plain copy or memset.
// Each computes what the CPU kernel of the same name in tensor/kernels.c computes (see tensor/device.go for the
// contracts); reductions sum in a different order, so results agree to rounding, not bit for bit, except the dropout
// mask, which is the same counter-based hash on both devices.
//
// Conventions, relied on by the Go launcher and checked against the PTX by kernels_test.go:
//   - every kernel is extern "C" (unmangled) and named k_*;
//   - parameters are pointers, long long, int or float only;
//   - element-wise kernels take their element count last and loop grid-stride, so any grid is correct;
//   - kernels that reduce run one block per output row and need blockDim.x to be a multiple of 32 (at most 1024).
//
// Rebuild kernels.ptx with `go generate ./gpu` (needs nvcc); the PTX is committed so that building needs none.

#include <stdint.h>

typedef long long i64;

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

// block_sum returns the sum of v over the block to every thread. sh holds 32 elements.
template <typename T> __device__ T block_sum(T v, T *sh) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
	__syncthreads(); // sh may still be read by a previous call
	if (lane == 0) sh[wid] = v;
	__syncthreads();
	if (wid == 0) {
		v = lane < nw ? sh[lane] : (T)0;
		for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
		if (lane == 0) sh[0] = v;
	}
	__syncthreads();
	return sh[0];
}

__device__ float block_max(float v, float *sh) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
	__syncthreads();
	if (lane == 0) sh[wid] = v;
	__syncthreads();
	if (wid == 0) {
		v = lane < nw ? sh[lane] : -INFINITY;
		for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
		if (lane == 0) sh[0] = v;
	}
	__syncthreads();
	return sh[0];
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }

// ---- element-wise ----

extern "C" __global__ void k_axpby(float a, const float *x, float b, float *y, i64 n) {
	GRID_STRIDE(i, n) y[i] = a * x[i] + b * y[i];
}

extern "C" __global__ void k_lincomb(float *d, float a, const float *x, float b, const float *y, i64 n) {
	GRID_STRIDE(i, n) d[i] = a * x[i] + b * y[i];
}

extern "C" __global__ void k_mul(float *d, const float *x, const float *y, i64 n) {
	GRID_STRIDE(i, n) d[i] = x[i] * y[i];
}

extern "C" __global__ void k_scale(float *t, float a, i64 n) {
	GRID_STRIDE(i, n) t[i] *= a;
}

extern "C" __global__ void k_clamp(float *t, float lo, float hi, i64 n) {
	GRID_STRIDE(i, n) {
		float v = t[i] < lo ? lo : t[i];
		t[i] = v > hi ? hi : v;
	}
}

extern "C" __global__ void k_silu(float *y, const float *x, i64 n) {
	GRID_STRIDE(i, n) y[i] = x[i] * sigmoidf(x[i]);
}

extern "C" __global__ void k_silu_bwd(float *dx, const float *x, const float *dy, i64 n) {
	GRID_STRIDE(i, n) {
		float s = sigmoidf(x[i]);
		dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
	}
}

extern "C" __global__ void k_ema(float *e, const float *w, float decay, i64 n) {
	float a = 1.0f - decay;
	GRID_STRIDE(i, n) e[i] = decay * e[i] + a * w[i];
}

extern "C" __global__ void k_adam(float *w, const float *g, float *m, float *v, float lr, float b1, float b2, float eps,
                                  float wd, float bc1, float bc2, i64 n) {
	float ib1 = 1.0f / bc1, isb2 = 1.0f / sqrtf(bc2);
	GRID_STRIDE(i, n) {
		float gi = g[i];
		float mi = b1 * m[i] + (1.0f - b1) * gi;
		float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		float upd = (mi * ib1) / (sqrtf(vi) * isb2 + eps);
		w[i] = w[i] - lr * (upd + wd * w[i]);
	}
}

// splitmix64's finaliser of seed + golden·(i+1): the CPU's counter-based generator, bit for bit. thr and keep are
// computed once on the host exactly as the CPU computes them.
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

extern "C" __global__ void k_dropout_mask(float *m, unsigned long long seed, unsigned int thr, float keep, i64 n) {
	GRID_STRIDE(i, n) {
		uint32_t r = (uint32_t)(mix64(seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)) >> 32);
		m[i] = r < thr ? 0.0f : keep;
	}
}

// n blocks of len elements; block i at src + i·ss goes to dst + i·ds.
extern "C" __global__ void k_copy_blocks(float *dst, i64 ds, const float *src, i64 ss, i64 len, int acc, i64 n) {
	GRID_STRIDE(k, n * len) {
		i64 i = k / len, j = k - i * len;
		float v = src[i * ss + j];
		if (acc)
			dst[i * ds + j] += v;
		else
			dst[i * ds + j] = v;
	}
}

// y viewed as [n, c, hw]: y += bias[channel].
extern "C" __global__ void k_add_bias(float *y, const float *b, i64 c, i64 hw, i64 n) {
	GRID_STRIDE(i, n * c * hw) y[i] += b[(i / hw) % c];
}

// ---- layout ----

// col[(ci·k+ky)·k+kx, b·hw + y·w + x] = x[b, ci, y+ky−pad, x+kx−pad], one thread per element of col.
extern "C" __global__ void k_im2col(float *col, const float *x, i64 n, i64 c, i64 h, i64 w, i64 k, i64 pad) {
	i64 hw = h * w, ncols = n * hw;
	GRID_STRIDE(e, c * k * k * ncols) {
		i64 r = e / ncols, j = e - r * ncols;
		i64 kx = r % k, ky = (r / k) % k, ci = r / (k * k);
		i64 b = j / hw, p = j - b * hw;
		i64 yy = p / w + ky - pad, xx = p % w + kx - pad;
		col[e] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? x[((b * c + ci) * h + yy) * w + xx] : 0.0f;
	}
}

// Im2Col's adjoint as a gather: each element of dx adds the k·k entries of col that read it (no atomics).
extern "C" __global__ void k_col2im(float *dx, const float *col, i64 n, i64 c, i64 h, i64 w, i64 k, i64 pad) {
	i64 hw = h * w, ncols = n * hw;
	GRID_STRIDE(e, n * c * hw) {
		i64 b = e / (c * hw), ci = (e / hw) % c, p = e % hw;
		i64 y = p / w, x = p % w;
		float s = 0.0f;
		for (i64 ky = 0; ky < k; ky++) {
			i64 oy = y - ky + pad;
			if (oy < 0 || oy >= h) continue;
			for (i64 kx = 0; kx < k; kx++) {
				i64 ox = x - kx + pad;
				if (ox < 0 || ox >= w) continue;
				s += col[((ci * k + ky) * k + kx) * ncols + b * hw + oy * w + ox];
			}
		}
		dx[e] += s;
	}
}

// dst[ch, b, i] = x[b, ch, i]
extern "C" __global__ void k_nchw_cnhw(float *d, const float *x, i64 n, i64 c, i64 hw) {
	GRID_STRIDE(e, n * c * hw) {
		i64 ch = e / (n * hw), b = (e / hw) % n, i = e % hw;
		d[e] = x[(b * c + ch) * hw + i];
	}
}

// dst[b, ch, i] = x[ch, b, i] + bias[ch] (bias may be null)
extern "C" __global__ void k_cnhw_nchw(float *d, const float *x, const float *bias, i64 n, i64 c, i64 hw) {
	GRID_STRIDE(e, n * c * hw) {
		i64 b = e / (c * hw), ch = (e / hw) % c, i = e % hw;
		d[e] = x[(ch * n + b) * hw + i] + (bias ? bias[ch] : 0.0f);
	}
}

// ---- pooling ----

// h, w: the input's (large) sizes.
extern "C" __global__ void k_avgpool2(float *y, const float *x, i64 h, i64 w, i64 planes) {
	i64 oh = h / 2, ow = w / 2;
	GRID_STRIDE(e, planes * oh * ow) {
		i64 p = e / (oh * ow), i = (e / ow) % oh, j = e % ow;
		const float *a = x + p * h * w + 2 * i * w + 2 * j;
		y[e] = 0.25f * (a[0] + a[1] + a[w] + a[w + 1]);
	}
}

extern "C" __global__ void k_avgpool2_bwd(float *dx, const float *dy, i64 h, i64 w, i64 planes) {
	i64 oh = h / 2, ow = w / 2;
	GRID_STRIDE(e, planes * h * w) {
		i64 p = e / (h * w), i = (e / w) % h, j = e % w;
		float g = 0.0f;
		if (i < 2 * oh && j < 2 * ow) g = 0.25f * dy[p * oh * ow + (i / 2) * ow + j / 2];
		dx[e] = g;
	}
}

// h, w: the input's (small) sizes.
extern "C" __global__ void k_up2(float *y, const float *x, i64 h, i64 w, i64 planes) {
	i64 oh = 2 * h, ow = 2 * w;
	GRID_STRIDE(e, planes * oh * ow) {
		i64 p = e / (oh * ow), i = (e / ow) % oh, j = e % ow;
		y[e] = x[p * h * w + (i / 2) * w + j / 2];
	}
}

extern "C" __global__ void k_up2_bwd(float *dx, const float *dy, i64 h, i64 w, i64 planes) {
	i64 ow = 2 * w;
	GRID_STRIDE(e, planes * h * w) {
		i64 p = e / (h * w), i = (e / w) % h, j = e % w;
		const float *r0 = dy + p * 4 * h * w + 2 * i * ow + 2 * j, *r1 = r0 + ow;
		dx[e] = r0[0] + r0[1] + r1[0] + r1[1];
	}
}

extern "C" __global__ void k_spmean_bwd(float *dx, const float *dy, i64 hw, i64 planes) {
	GRID_STRIDE(e, planes * hw) dx[e] = dy[e / hw] / (float)hw;
}

// ---- one block per row ----

// Block per plane: y[p] = mean of x[p, :hw].
extern "C" __global__ void k_spmean(float *y, const float *x, i64 hw) {
	__shared__ double sh[32];
	const float *xp = x + blockIdx.x * hw;
	double s = 0;
	for (i64 i = threadIdx.x; i < hw; i += blockDim.x) s += xp[i];
	s = block_sum(s, sh);
	if (threadIdx.x == 0) y[blockIdx.x] = (float)(s / hw);
}

// Block per channel: db[ch] += Σ_{b,i} dy[b, ch, i].
extern "C" __global__ void k_chan_sum(float *db, const float *dy, i64 n, i64 c, i64 hw) {
	__shared__ double sh[32];
	i64 ch = blockIdx.x;
	double s = 0;
	for (i64 j = threadIdx.x; j < n * hw; j += blockDim.x) {
		i64 b = j / hw, i = j - b * hw;
		s += dy[(b * c + ch) * hw + i];
	}
	s = block_sum(s, sh);
	if (threadIdx.x == 0) db[ch] += (float)s;
}

// Block per row of [rows, d]; softmax may run in place (y == x): each element is read before it is written.
extern "C" __global__ void k_softmax(float *y, const float *x, i64 d) {
	__shared__ float sh[32];
	const float *xr = x + blockIdx.x * d;
	float *yr = y + blockIdx.x * d;
	float mx = -INFINITY;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) mx = fmaxf(mx, xr[i]);
	mx = block_max(mx, sh);
	float s = 0.0f;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		float e = __expf(xr[i] - mx);
		yr[i] = e;
		s += e;
	}
	s = block_sum(s, sh);
	float inv = 1.0f / s;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) yr[i] *= inv;
}

// dx = y⊙(dy − Σ dy⊙y); may run in place (dx == dy).
extern "C" __global__ void k_softmax_bwd(float *dx, const float *y, const float *dy, i64 d) {
	__shared__ float sh[32];
	const float *yr = y + blockIdx.x * d, *dyr = dy + blockIdx.x * d;
	float *dxr = dx + blockIdx.x * d;
	float s = 0.0f;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) s += dyr[i] * yr[i];
	s = block_sum(s, sh);
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) dxr[i] = yr[i] * (dyr[i] - s);
}

extern "C" __global__ void k_ln_fwd(float *y, const float *x, const float *gamma, const float *beta, float *mean,
                                    float *rstd, i64 d, float eps) {
	__shared__ double sh[32];
	i64 r = blockIdx.x;
	const float *xr = x + r * d;
	double s = 0;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) s += xr[i];
	double m = block_sum(s, sh) / d;
	double v = 0;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		double t = xr[i] - m;
		v += t * t;
	}
	v = block_sum(v, sh) / d;
	float rs = (float)(1.0 / sqrt(v + eps)), mf = (float)m;
	if (threadIdx.x == 0) {
		mean[r] = mf;
		rstd[r] = rs;
	}
	float *yr = y + r * d;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) yr[i] = (xr[i] - mf) * rs * gamma[i] + beta[i];
}

// Block per row: dx.
extern "C" __global__ void k_ln_bwd_dx(float *dx, const float *dy, const float *x, const float *gamma,
                                       const float *mean, const float *rstd, i64 d) {
	__shared__ double sh[32];
	i64 r = blockIdx.x;
	const float *xr = x + r * d, *dyr = dy + r * d;
	float m = mean[r], rs = rstd[r];
	double s1 = 0, s2 = 0;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		float xh = (xr[i] - m) * rs, dxh = dyr[i] * gamma[i];
		s1 += dxh;
		s2 += dxh * xh;
	}
	float m1 = (float)(block_sum(s1, sh) / d), m2 = (float)(block_sum(s2, sh) / d);
	float *dxr = dx + r * d;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		float xh = (xr[i] - m) * rs;
		dxr[i] = rs * (dyr[i] * gamma[i] - m1 - xh * m2);
	}
}

// Thread per column: dgamma[i] += Σ_r dy·x̂, dbeta[i] += Σ_r dy.
extern "C" __global__ void k_ln_bwd_params(float *dgamma, float *dbeta, const float *dy, const float *x,
                                           const float *mean, const float *rstd, i64 rows, i64 d) {
	GRID_STRIDE(i, d) {
		float sg = 0.0f, sb = 0.0f;
		for (i64 r = 0; r < rows; r++) {
			float g = dy[r * d + i];
			sg += g * (x[r * d + i] - mean[r]) * rstd[r];
			sb += g;
		}
		dgamma[i] += sg;
		dbeta[i] += sb;
	}
}

// ---- group norm ----

// The per-(sample, channel) affine of the fused group norm: y = x·a + b before SiLU.
__device__ __forceinline__ void gn_affine(float rs, float mf, float ga, float be, const float *scale,
                                          const float *shift, const float *zscale, i64 nc, float *a, float *b) {
	float av = rs * ga, bv = be - mf * av;
	if (scale) {
		float s1 = 1.0f + scale[nc];
		av *= s1;
		bv *= s1;
	}
	if (shift) bv += shift[nc];
	if (zscale) {
		float z1 = 1.0f + zscale[nc];
		av *= z1;
		bv *= z1;
	}
	*a = av;
	*b = bv;
}

// Block per (sample, group). Statistics are sums of x − x₀ (x₀ the group's first value), gathered in double, as on
// the CPU, so that a large mean does not cancel the variance.
extern "C" __global__ void k_gn_fwd(float *y, const float *x, const float *gamma, const float *beta, float *mean,
                                    float *rstd, const float *scale, const float *shift, const float *zscale, int silu,
                                    i64 c, i64 hw, i64 g, float eps) {
	__shared__ double sh[32];
	i64 p = blockIdx.x, b = p / g, gi = p % g, cg = c / g, cnt = cg * hw;
	const float *xs = x + (b * c + gi * cg) * hw;
	float *ys = y + (b * c + gi * cg) * hw;
	float s0 = xs[0], a1 = 0.0f, a2 = 0.0f;
	for (i64 i = threadIdx.x; i < cnt; i += blockDim.x) {
		float d = xs[i] - s0;
		a1 += d;
		a2 += d * d;
	}
	double t1 = block_sum((double)a1, sh), t2 = block_sum((double)a2, sh);
	double dm = t1 / cnt, v = t2 / cnt - dm * dm;
	v = v > 0 ? v : 0;
	float rs = (float)(1.0 / sqrt(v + eps)), mf = (float)(s0 + dm);
	if (threadIdx.x == 0) {
		mean[p] = mf;
		rstd[p] = rs;
	}
	for (i64 i = threadIdx.x; i < cnt; i += blockDim.x) {
		i64 ch = gi * cg + i / hw, nc = b * c + ch;
		float a, bb;
		gn_affine(rs, mf, gamma[ch], beta[ch], scale, shift, zscale, nc, &a, &bb);
		float u = xs[i] * a + bb;
		ys[i] = silu ? u * sigmoidf(u) : u;
	}
}

// Block per (sample, channel): the five sums of the backward pass over the channel's hw values. dgp and dbp are
// per-(sample, channel) partials of dγ and dβ; dscale, dshift, dz (each may be null) are written.
extern "C" __global__ void k_gn_bwd_sums(float *dgp, float *dbp, float *dscale, float *dshift, float *dz,
                                         const float *dy, const float *x, const float *gamma, const float *beta,
                                         const float *mean, const float *rstd, const float *scale, const float *shift,
                                         const float *zscale, int silu, i64 c, i64 hw, i64 g) {
	__shared__ float sh[32];
	i64 nc = blockIdx.x, b = nc / c, ch = nc % c, p = b * g + ch / (c / g);
	float m = mean[p], rs = rstd[p], ga = gamma[ch], be = beta[ch];
	float s1 = scale ? 1.0f + scale[nc] : 1.0f, shv = shift ? shift[nc] : 0.0f, z1 = zscale ? 1.0f + zscale[nc] : 1.0f;
	const float *xr = x + nc * hw, *dyr = dy + nc * hw;
	float sg = 0, sb = 0, sz = 0, ss = 0, ssh = 0;
	for (i64 i = threadIdx.x; i < hw; i += blockDim.x) {
		float xh = (xr[i] - m) * rs;
		float h1 = xh * ga + be, h2 = h1 * s1 + shv, u = h2 * z1;
		float du = dyr[i];
		if (silu) {
			float sgm = sigmoidf(u);
			du *= sgm * (1.0f + u * (1.0f - sgm));
		}
		float dh2 = du * z1;
		sz += du * h2;
		ss += dh2 * h1;
		ssh += dh2;
		float dh1 = dh2 * s1;
		sb += dh1;
		sg += dh1 * xh;
	}
	sg = block_sum(sg, sh);
	sb = block_sum(sb, sh);
	sz = block_sum(sz, sh);
	ss = block_sum(ss, sh);
	ssh = block_sum(ssh, sh);
	if (threadIdx.x == 0) {
		dgp[nc] = sg;
		dbp[nc] = sb;
		if (dscale) dscale[nc] = ss;
		if (dshift) dshift[nc] = ssh;
		if (dz) dz[nc] = sz;
	}
}

// Block per (sample, group): dx from the channel sums of k_gn_bwd_sums (dx̂ = dh1·γ, so its group sums are
// Σ_c γ_c·dbp and Σ_c γ_c·dgp).
extern "C" __global__ void k_gn_bwd_dx(float *dx, const float *dgp, const float *dbp, const float *dy, const float *x,
                                       const float *gamma, const float *beta, const float *mean, const float *rstd,
                                       const float *scale, const float *shift, const float *zscale, int silu, i64 c,
                                       i64 hw, i64 g) {
	__shared__ double sh[32];
	i64 p = blockIdx.x, b = p / g, gi = p % g, cg = c / g, cnt = cg * hw;
	double a = 0, q = 0;
	for (i64 cc = threadIdx.x; cc < cg; cc += blockDim.x) {
		i64 ch = gi * cg + cc;
		a += (double)dbp[b * c + ch] * gamma[ch];
		q += (double)dgp[b * c + ch] * gamma[ch];
	}
	float mdxh = (float)(block_sum(a, sh) / cnt), mdxhx = (float)(block_sum(q, sh) / cnt);
	float m = mean[p], rs = rstd[p];
	i64 base = (b * c + gi * cg) * hw;
	for (i64 i = threadIdx.x; i < cnt; i += blockDim.x) {
		i64 ch = gi * cg + i / hw, nc = b * c + ch;
		float s1 = scale ? 1.0f + scale[nc] : 1.0f, shv = shift ? shift[nc] : 0.0f;
		float z1 = zscale ? 1.0f + zscale[nc] : 1.0f, ga = gamma[ch];
		float xh = (x[base + i] - m) * rs;
		float du = dy[base + i];
		if (silu) {
			float u = ((xh * ga + beta[ch]) * s1 + shv) * z1;
			float sgm = sigmoidf(u);
			du *= sgm * (1.0f + u * (1.0f - sgm));
		}
		float dxh = du * z1 * s1 * ga;
		dx[base + i] = rs * (dxh - mdxh - xh * mdxhx);
	}
}

// Thread per channel: dgamma[ch] += Σ_b dgp[b, ch] and likewise dbeta (either may be null), in sample order as on
// the CPU.
extern "C" __global__ void k_gn_bwd_params(float *dgamma, float *dbeta, const float *dgp, const float *dbp, i64 n,
                                           i64 c) {
	GRID_STRIDE(ch, c) {
		float sg = 0.0f, sb = 0.0f;
		for (i64 b = 0; b < n; b++) {
			sg += dgp[b * c + ch];
			sb += dbp[b * c + ch];
		}
		if (dgamma) dgamma[ch] += sg;
		if (dbeta) dbeta[ch] += sb;
	}
}

// ---- reductions to a scalar: each block writes one double partial; the host adds them in block order ----

extern "C" __global__ void k_sumsq(double *part, const float *x, i64 n) {
	__shared__ double sh[32];
	double s = 0;
	GRID_STRIDE(i, n) s += (double)x[i] * x[i];
	s = block_sum(s, sh);
	if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// g (may be null) = 2(p−t)·gs; partial sums of (p−t)².
extern "C" __global__ void k_mse(double *part, float *g, const float *p, const float *t, float gs, i64 n) {
	__shared__ double sh[32];
	double s = 0;
	GRID_STRIDE(i, n) {
		float d = p[i] - t[i];
		s += (double)d * d;
		if (g) g[i] = 2.0f * d * gs;
	}
	s = block_sum(s, sh);
	if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// g (may be null) = sign(p−t)·gs; partial sums of |p−t|.
extern "C" __global__ void k_l1(double *part, float *g, const float *p, const float *t, float gs, i64 n) {
	__shared__ double sh[32];
	double s = 0;
	GRID_STRIDE(i, n) {
		float d = p[i] - t[i];
		s += d < 0 ? -d : d;
		if (g) g[i] = d > 0 ? gs : (d < 0 ? -gs : 0.0f);
	}
	s = block_sum(s, sh);
	if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// ---- GEMM fallback (used when no cuBLAS can be loaded) ----

#define TILE 16

// Row-major C = α·op(A)·op(B) + β·C for product blockIdx.z; a TILE×TILE block per TILE×TILE tile of C. With β = 0,
// C is not read (as in BLAS), so it may hold anything.
extern "C" __global__ void k_gemm(int ta, int tb, i64 M, i64 N, i64 K, float alpha, const float *A, i64 lda, i64 sa,
                                  const float *B, i64 ldb, i64 sb, float beta, float *C, i64 ldc, i64 sc) {
	__shared__ float as[TILE][TILE + 1], bs[TILE][TILE + 1];
	A += blockIdx.z * sa;
	B += blockIdx.z * sb;
	C += blockIdx.z * sc;
	i64 row = (i64)blockIdx.y * TILE + threadIdx.y, col = (i64)blockIdx.x * TILE + threadIdx.x;
	float acc = 0.0f;
	for (i64 k0 = 0; k0 < K; k0 += TILE) {
		i64 ak = k0 + threadIdx.x, bk = k0 + threadIdx.y;
		as[threadIdx.y][threadIdx.x] = (row < M && ak < K) ? (ta ? A[ak * lda + row] : A[row * lda + ak]) : 0.0f;
		bs[threadIdx.y][threadIdx.x] = (bk < K && col < N) ? (tb ? B[col * ldb + bk] : B[bk * ldb + col]) : 0.0f;
		__syncthreads();
		for (int k = 0; k < TILE; k++) acc += as[threadIdx.y][k] * bs[k][threadIdx.x];
		__syncthreads();
	}
	if (row < M && col < N) {
		float *c = C + row * ldc + col;
		*c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
	}
}
