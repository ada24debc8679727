// CPU kernels: plain loops written so that GCC vectorises them (AVX-512, AVX2 or SSE, chosen at load time).
// Reassociation lets GCC vectorise the reductions (sums in group and layer norms, losses).
#pragma GCC optimize("no-math-errno", "no-trapping-math", "associative-math", "no-signed-zeros")
#include <math.h>
#include <string.h>
#include <immintrin.h>
#include "kernels.h"

#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))

// expf to about 2 ulp, branch-free so that loops around it vectorise. Callers clamp to [lo, hi] = EXP_BOUNDS.
static inline float exp_fast(float x, float lo, float hi) {
	x = x < lo ? lo : x;
	x = x > hi ? hi : x;
	float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
	float r = x - n * 0.693359375f;
	r = r + n * 2.12194440e-4f;
	float p = 1.9875691500E-4f;
	p = p * r + 1.3981999507E-3f;
	p = p * r + 8.3334519073E-3f;
	p = p * r + 4.1665795894E-2f;
	p = p * r + 1.6666665459E-1f;
	p = p * r + 5.0000001201E-1f;
	p = p * r * r + r + 1.0f;
	int32_t i = ((int32_t)n + 127) << 23;
	float s;
	memcpy(&s, &i, sizeof s);
	return p * s;
}

// 1/d for d in [1, 2^116) without a division (a vector division is the slowest instruction in these loops): an
// initial guess from the bit pattern (relative error under 1/8, and a normal float over that range) and three
// Newton steps, each squaring the error, to within 2 ulp. (The file's associative-math lets GCC regroup the steps,
// so 1/1 may come out as 1 − 2⁻²⁴: nothing here computes 1 − σ from it.)
static inline float rcp_fast(float d) {
	int32_t i;
	memcpy(&i, &d, sizeof i);
	i = 0x7EF311C3 - i;
	float r;
	memcpy(&r, &i, sizeof r);
	for (int k = 0; k < 3; k++) r = r + r * (1.0f - d * r);
	return r;
}

// σ(x) = 1/(1 + e^−x), with e^−x at most e^80 so that rcp_fast's range holds (σ(−80) ≈ 2e-35, still a normal
// float; below that σ is as good as 0 for every use here).
static inline float sigmoid_fast(float x, float lo, float hi) { return rcp_fast(1.0f + exp_fast(-x, lo, hi - 8.0f)); }

// The derivative of SiLU, σ(x)(1 + x(1 − σ(x))), with 1 − σ taken as e^−x·σ: no cancellation where σ is near 1.
// x is clamped to [lo, hi] in that term: the compiler may form x·e^−x first, which past |x| ≈ 6000 would overflow
// (and far out x·e^−x with e^−x held at its clamp would not vanish); inside the clamp x·e^−x·σ is ≈ 0 or ≈ x·e^−x.
static inline float silu_grad(float x, float lo, float hi) {
	float e = exp_fast(-x, lo, hi - 8.0f);
	float s = rcp_fast(1.0f + e);
	float xc = x < lo ? lo : x;
	xc = xc > hi ? hi : xc;
	return s * (1.0f + xc * (e * s));
}

// The clamp bounds of exp_fast, hidden from the optimiser by an empty asm. With constant bounds GCC computes the
// clamped branch's constant result separately and blends it in: for SiLU that is x·σ(−88) = x·6e-39, a float32
// subnormal on every lane of every vector, and each subnormal result costs a microcode assist (SiLU ran ~9x
// slower, ~4 ns per element on one core instead of ~0.45).
#define EXP_BOUNDS                                                                                                 \
	float exp_lo = -87.0f, exp_hi = 88.0f;                                                                         \
	__asm__("" : "+m"(exp_lo), "+m"(exp_hi))

HOT void k_silu(float *y, const float *x, long lo, long hi) {
	EXP_BOUNDS;
	for (long i = lo; i < hi; i++) y[i] = x[i] * sigmoid_fast(x[i], exp_lo, exp_hi);
}

HOT void k_silu_bwd(float *dx, const float *x, const float *dy, long lo, long hi) {
	EXP_BOUNDS;
	for (long i = lo; i < hi; i++) {
		dx[i] = dy[i] * silu_grad(x[i], exp_lo, exp_hi);
	}
}

HOT void k_axpby(float a, const float *x, float b, float *y, long lo, long hi) {
	for (long i = lo; i < hi; i++) y[i] = a * x[i] + b * y[i];
}

HOT void k_lincomb(float *d, float a, const float *x, float b, const float *y, long lo, long hi) {
	for (long i = lo; i < hi; i++) d[i] = a * x[i] + b * y[i];
}

HOT void k_mul(float *d, const float *x, const float *y, long lo, long hi) {
	for (long i = lo; i < hi; i++) d[i] = x[i] * y[i];
}

HOT void k_scale(float *t, float a, long lo, long hi) {
	for (long i = lo; i < hi; i++) t[i] *= a;
}

HOT void k_clamp(float *t, float l, float h, long lo, long hi) {
	for (long i = lo; i < hi; i++) {
		float v = t[i] < l ? l : t[i];
		t[i] = v > h ? h : v;
	}
}

HOT double k_sumsq(const float *x, long lo, long hi) {
	double s = 0;
	for (long i = lo; i < hi; i++) s += (double)x[i] * x[i];
	return s;
}

// planes [plo, phi) of y viewed as [planes, hw], plane p has channel p % c.
HOT void k_add_bias(float *y, const float *b, long c, long hw, long plo, long phi) {
	for (long p = plo; p < phi; p++) {
		float v = b[p % c];
		float *r = y + p * hw;
		for (long i = 0; i < hw; i++) r[i] += v;
	}
}

HOT void k_chan_sum(float *db, const float *dy, long n, long c, long hw, long clo, long chi) {
	for (long ch = clo; ch < chi; ch++) {
		double s = 0;
		for (long b = 0; b < n; b++) {
			const float *r = dy + (b * c + ch) * hw;
			float ps = 0;
			for (long i = 0; i < hw; i++) ps += r[i];
			s += ps;
		}
		db[ch] += (float)s;
	}
}

// rows [rlo, rhi) of col, row = (ci*k+ky)*k+kx.
HOT void k_im2col(float *col, const float *x, long n, long c, long h, long w, long k, long pad, long rlo, long rhi) {
	long hw = h * w, ncols = n * hw;
	for (long r = rlo; r < rhi; r++) {
		long kx = r % k, ky = (r / k) % k, ci = r / (k * k);
		float *dst = col + r * ncols;
		for (long b = 0; b < n; b++) {
			const float *src = x + (b * c + ci) * hw;
			float *d = dst + b * hw;
			for (long y = 0; y < h; y++) {
				long sy = y + ky - pad;
				float *dr = d + y * w;
				if (sy < 0 || sy >= h) {
					memset(dr, 0, w * sizeof(float));
					continue;
				}
				const float *sr = src + sy * w;
				long dxo = kx - pad;
				long x0 = dxo < 0 ? -dxo : 0, x1 = dxo > 0 ? w - dxo : w;
				for (long xx = 0; xx < x0; xx++) dr[xx] = 0;
				for (long xx = x0; xx < x1; xx++) dr[xx] = sr[xx + dxo];
				for (long xx = x1; xx < w; xx++) dr[xx] = 0;
			}
		}
	}
}

// channels [clo, chi) of dx receive their k*k rows of col.
HOT void k_col2im(float *dx, const float *col, long n, long c, long h, long w, long k, long pad, long clo, long chi) {
	long hw = h * w, ncols = n * hw;
	for (long ci = clo; ci < chi; ci++) {
		for (long ky = 0; ky < k; ky++) {
			for (long kx = 0; kx < k; kx++) {
				const float *src = col + ((ci * k + ky) * k + kx) * ncols;
				long dxo = kx - pad;
				long x0 = dxo < 0 ? -dxo : 0, x1 = dxo > 0 ? w - dxo : w;
				for (long b = 0; b < n; b++) {
					float *d = dx + (b * c + ci) * hw;
					const float *s = src + b * hw;
					for (long y = 0; y < h; y++) {
						long sy = y + ky - pad;
						if (sy < 0 || sy >= h) continue;
						float *dr = d + sy * w;
						const float *sr = s + y * w;
						for (long xx = x0; xx < x1; xx++) dr[xx + dxo] += sr[xx];
					}
				}
			}
		}
	}
}

void k_nchw_cnhw(float *d, const float *x, long n, long c, long hw, long clo, long chi) {
	for (long ch = clo; ch < chi; ch++)
		for (long b = 0; b < n; b++) memcpy(d + (ch * n + b) * hw, x + (b * c + ch) * hw, hw * sizeof(float));
}

HOT void k_cnhw_nchw(float *d, const float *x, const float *bias, long n, long c, long hw, long clo, long chi) {
	for (long ch = clo; ch < chi; ch++) {
		float bv = bias ? bias[ch] : 0.0f;
		for (long b = 0; b < n; b++) {
			float *dr = d + (b * c + ch) * hw;
			const float *sr = x + (ch * n + b) * hw;
			for (long i = 0; i < hw; i++) dr[i] = sr[i] + bv;
		}
	}
}

// shifted_sums adds Σ(x−s) and Σ(x−s)² over n values to *s1 and *s2. The sums run in 16 float lanes, which GCC
// vectorises without reassociating anything (a plain float or double reduction it leaves scalar, at ~4 cycles per
// element), and are gathered in double. Shifting by a value of the data keeps Σd² − (Σd)²/n free of cancellation.
static inline void shifted_sums(const float *x, long n, float s, double *s1, double *s2) {
	float a[16] = {0}, q[16] = {0};
	long i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++) {
			float d = x[i + j] - s;
			a[j] += d;
			q[j] += d * d;
		}
	double t1 = 0, t2 = 0;
	for (; i < n; i++) {
		double d = x[i] - s;
		t1 += d;
		t2 += d * d;
	}
	for (int j = 0; j < 16; j++) {
		t1 += a[j];
		t2 += q[j];
	}
	*s1 += t1;
	*s2 += t2;
}

// Group norm over (sample, group) pairs [lo, hi). The affine, AdaGN and z-scale fold into one a·x+b per channel.
HOT void k_gn_fwd(float *y, const float *x, const float *gamma, const float *beta, float *mean, float *rstd,
                  const float *scale, const float *shift, const float *zscale, int silu, long c, long hw, long g,
                  float eps, long lo, long hi) {
	EXP_BOUNDS;
	long cg = c / g;
	for (long p = lo; p < hi; p++) {
		long b = p / g, gi = p % g;
		const float *xs = x + (b * c + gi * cg) * hw;
		long cnt = cg * hw;
		double s1 = 0, s2 = 0;
		// The group's channels lie next to each other: one run of cnt values, gathered into double every 4096
		// (256 per float lane), so small maps do not pay a 16-lane reduction per channel.
		for (long off = 0; off < cnt; off += 4096)
			shifted_sums(xs + off, cnt - off < 4096 ? cnt - off : 4096, xs[0], &s1, &s2);
		double dm = s1 / cnt;
		double m = xs[0] + dm;
		double v = s2 / cnt - dm * dm;
		v = v > 0 ? v : 0;
		float rs = (float)(1.0 / sqrt(v + eps));
		float mf = (float)m;
		mean[p] = mf;
		rstd[p] = rs;
		for (long cc = 0; cc < cg; cc++) {
			long ch = gi * cg + cc;
			long nc = b * c + ch;
			float a = rs * gamma[ch];
			float bb = beta[ch] - mf * a;
			if (scale) {
				float s1 = 1.0f + scale[nc];
				a *= s1;
				bb *= s1;
			}
			if (shift) bb += shift[nc];
			if (zscale) {
				float z1 = 1.0f + zscale[nc];
				a *= z1;
				bb *= z1;
			}
			const float *xr = x + nc * hw;
			float *yr = y + nc * hw;
			if (silu) {
				for (long i = 0; i < hw; i++) {
					float u = xr[i] * a + bb;
					yr[i] = u * sigmoid_fast(u, exp_lo, exp_hi);
				}
			} else {
				for (long i = 0; i < hw; i++) yr[i] = xr[i] * a + bb;
			}
		}
	}
}

// One element's contributions to the sums of k_gn_bwd's first pass.
static inline void gn_bwd_sums(float x, float dy, float m, float rs, float ga, float be, float s1, float sh, float z1,
                               int silu, float lo, float hi, float *sg, float *sb, float *sz, float *ss, float *ssh,
                               int keep, float *dup) {
	float xh = (x - m) * rs;
	float h1 = xh * ga + be; // after the affine
	float h2 = h1 * s1 + sh;  // after AdaGN
	float u = h2 * z1;        // before SiLU
	float du = dy;
	if (silu) {
		du *= silu_grad(u, lo, hi);
		if (keep) *dup = du;
	}
	float dh2 = du * z1;
	*sz += du * h2;
	*ss += dh2 * h1;
	*ssh += dh2;
	float dh1 = dh2 * s1;
	*sb += dh1;
	*sg += dh1 * xh;
}

// Backward of k_gn_fwd over (sample, group) pairs [lo, hi). dgamma_p and dbeta_p are per-(sample, channel)
// partials that the caller sums over samples.
HOT void k_gn_bwd(float *dx, float *dgamma_p, float *dbeta_p, float *dscale, float *dshift, float *dz,
                  const float *dy, const float *x, const float *gamma, const float *beta, const float *mean,
                  const float *rstd, const float *scale, const float *shift, const float *zscale, int silu, long c,
                  long hw, long g, long lo, long hi) {
	EXP_BOUNDS;
	long cg = c / g;
	int keep = silu && dx != x;
	for (long p = lo; p < hi; p++) {
		long b = p / g, gi = p % g;
		float m = mean[p], rs = rstd[p];
		double sdxh = 0, sdxhx = 0;
		for (long cc = 0; cc < cg; cc++) {
			long ch = gi * cg + cc, nc = b * c + ch;
			float s1 = scale ? 1.0f + scale[nc] : 1.0f;
			float sh = shift ? shift[nc] : 0.0f;
			float z1 = zscale ? 1.0f + zscale[nc] : 1.0f;
			float ga = gamma[ch], be = beta[ch];
			const float *xr = x + nc * hw, *dyr = dy + nc * hw;
			// With SiLU, its gradient du is kept in dx for the second pass (one exp per element, not two), unless dx
			// is x itself, which the second pass reads again.
			float *dur = dx + nc * hw;
			// Five sums over the row, kept in 16 lanes each so that GCC vectorises them (see shifted_sums).
			float lg[16] = {0}, lb[16] = {0}, lz[16] = {0}, ls[16] = {0}, lh[16] = {0};
			long i = 0;
			for (; i + 16 <= hw; i += 16)
				for (int j = 0; j < 16; j++)
					gn_bwd_sums(xr[i + j], dyr[i + j], m, rs, ga, be, s1, sh, z1, silu, exp_lo, exp_hi, lg + j, lb + j,
					            lz + j, ls + j, lh + j, keep, dur + i + j);
			for (; i < hw; i++)
				gn_bwd_sums(xr[i], dyr[i], m, rs, ga, be, s1, sh, z1, silu, exp_lo, exp_hi, lg, lb, lz, ls, lh, keep,
				            dur + i);
			float sg = 0, sb = 0, sz = 0, ss = 0, ssh = 0;
			for (int j = 0; j < 16; j++) {
				sg += lg[j];
				sb += lb[j];
				sz += lz[j];
				ss += ls[j];
				ssh += lh[j];
			}
			dgamma_p[nc] = sg;
			dbeta_p[nc] = sb;
			if (dscale) dscale[nc] = ss;
			if (dshift) dshift[nc] = ssh;
			if (dz) dz[nc] = sz;
			// dx̂ = dh1·γ, so its group sums follow from the channel sums.
			sdxh += (double)sb * ga;
			sdxhx += (double)sg * ga;
		}
		long cnt = cg * hw;
		float mdxh = (float)(sdxh / cnt), mdxhx = (float)(sdxhx / cnt);
		for (long cc = 0; cc < cg; cc++) {
			long ch = gi * cg + cc, nc = b * c + ch;
			float s1 = scale ? 1.0f + scale[nc] : 1.0f;
			float sh = shift ? shift[nc] : 0.0f;
			float z1 = zscale ? 1.0f + zscale[nc] : 1.0f;
			float ga = gamma[ch], be = beta[ch];
			float *dxr = dx + nc * hw;
			const float *xr = x + nc * hw, *dur = keep ? dxr : dy + nc * hw;
			float k = z1 * s1 * ga;
			if (silu && !keep) {
				for (long i = 0; i < hw; i++) {
					float xh = (xr[i] - m) * rs;
					float u = ((xh * ga + be) * s1 + sh) * z1;
					dxr[i] = rs * (dur[i] * silu_grad(u, exp_lo, exp_hi) * k - mdxh - xh * mdxhx);
				}
				continue;
			}
			for (long i = 0; i < hw; i++) {
				float xh = (xr[i] - m) * rs;
				dxr[i] = rs * (dur[i] * k - mdxh - xh * mdxhx);
			}
		}
	}
}

HOT void k_ln_fwd(float *y, const float *x, const float *gamma, const float *beta, float *mean, float *rstd, long d,
                  float eps, long lo, long hi) {
	for (long r = lo; r < hi; r++) {
		const float *xr = x + r * d;
		double s = 0;
		for (long i = 0; i < d; i++) s += xr[i];
		double m = s / d, v = 0;
		for (long i = 0; i < d; i++) {
			double t = xr[i] - m;
			v += t * t;
		}
		v /= d;
		float rs = (float)(1.0 / sqrt(v + eps)), mf = (float)m;
		mean[r] = mf;
		rstd[r] = rs;
		float *yr = y + r * d;
		for (long i = 0; i < d; i++) yr[i] = (xr[i] - mf) * rs * gamma[i] + beta[i];
	}
}

HOT void k_ln_bwd(float *dx, float *dgamma_p, float *dbeta_p, const float *dy, const float *x, const float *gamma,
                  const float *mean, const float *rstd, long d, long lo, long hi) {
	for (long r = lo; r < hi; r++) {
		const float *xr = x + r * d, *dyr = dy + r * d;
		float m = mean[r], rs = rstd[r];
		float *dgp = dgamma_p + r * d, *dbp = dbeta_p + r * d;
		double s1 = 0, s2 = 0;
		for (long i = 0; i < d; i++) {
			float xh = (xr[i] - m) * rs;
			float dxh = dyr[i] * gamma[i];
			dgp[i] = dyr[i] * xh;
			dbp[i] = dyr[i];
			s1 += dxh;
			s2 += dxh * xh;
		}
		float m1 = (float)(s1 / d), m2 = (float)(s2 / d);
		float *dxr = dx + r * d;
		for (long i = 0; i < d; i++) {
			float xh = (xr[i] - m) * rs;
			dxr[i] = rs * (dyr[i] * gamma[i] - m1 - xh * m2);
		}
	}
}

// row_max is the largest of x[0..d). finite-math-only lets GCC vectorise it: as a ? : it must otherwise keep
// NaN's order of operands and the loop stays scalar, which was three quarters of the softmax (a row with a NaN
// or an infinity is lost either way). Only this loop gets the option: on the whole softmax it stopped GCC from
// vectorising the exponentials.
static HOT __attribute__((optimize("finite-math-only"), noinline)) float row_max(const float *x, long d) {
	float mx = x[0];
	for (long i = 1; i < d; i++) mx = x[i] > mx ? x[i] : mx;
	return mx;
}

HOT void k_softmax(float *y, const float *x, long d, long lo, long hi) {
	EXP_BOUNDS;
	for (long r = lo; r < hi; r++) {
		const float *xr = x + r * d;
		float *yr = y + r * d;
		float mx = row_max(xr, d);
		float s = 0;
		for (long i = 0; i < d; i++) {
			yr[i] = exp_fast(xr[i] - mx, exp_lo, exp_hi);
			s += yr[i];
		}
		float inv = 1.0f / s;
		for (long i = 0; i < d; i++) yr[i] *= inv;
	}
}

HOT void k_softmax_bwd(float *dx, const float *y, const float *dy, long d, long lo, long hi) {
	for (long r = lo; r < hi; r++) {
		const float *yr = y + r * d, *dyr = dy + r * d;
		float s = 0;
		for (long i = 0; i < d; i++) s += dyr[i] * yr[i];
		float *dxr = dx + r * d;
		for (long i = 0; i < d; i++) dxr[i] = yr[i] * (dyr[i] - s);
	}
}

HOT void k_avgpool2(float *y, const float *x, long h, long w, long lo, long hi) {
	long oh = h / 2, ow = w / 2;
	for (long p = lo; p < hi; p++) {
		const float *xp = x + p * h * w;
		float *yp = y + p * oh * ow;
		for (long i = 0; i < oh; i++)
			for (long j = 0; j < ow; j++) {
				const float *a = xp + 2 * i * w + 2 * j;
				yp[i * ow + j] = 0.25f * (a[0] + a[1] + a[w] + a[w + 1]);
			}
	}
}

HOT void k_avgpool2_bwd(float *dx, const float *dy, long h, long w, long lo, long hi) {
	long oh = h / 2, ow = w / 2;
	for (long p = lo; p < hi; p++) {
		float *xp = dx + p * h * w;
		const float *yp = dy + p * oh * ow;
		for (long i = 0; i < oh; i++)
			for (long j = 0; j < ow; j++) {
				float g = 0.25f * yp[i * ow + j];
				float *a = xp + 2 * i * w + 2 * j;
				a[0] = g;
				a[1] = g;
				a[w] = g;
				a[w + 1] = g;
			}
	}
}

// h, w are the input (small) sizes.
HOT void k_up2(float *y, const float *x, long h, long w, long lo, long hi) {
	long ow = 2 * w;
	for (long p = lo; p < hi; p++) {
		const float *xp = x + p * h * w;
		float *yp = y + p * 4 * h * w;
		for (long i = 0; i < h; i++) {
			float *r0 = yp + 2 * i * ow, *r1 = r0 + ow;
			for (long j = 0; j < w; j++) {
				float v = xp[i * w + j];
				r0[2 * j] = v;
				r0[2 * j + 1] = v;
			}
			memcpy(r1, r0, ow * sizeof(float));
		}
	}
}

HOT void k_up2_bwd(float *dx, const float *dy, long h, long w, long lo, long hi) {
	long ow = 2 * w;
	for (long p = lo; p < hi; p++) {
		float *xp = dx + p * h * w;
		const float *yp = dy + p * 4 * h * w;
		for (long i = 0; i < h; i++) {
			const float *r0 = yp + 2 * i * ow, *r1 = r0 + ow;
			for (long j = 0; j < w; j++) xp[i * w + j] = r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1];
		}
	}
}

HOT void k_spmean(float *y, const float *x, long hw, long lo, long hi) {
	for (long p = lo; p < hi; p++) {
		double s = 0;
		for (long i = 0; i < hw; i++) s += x[p * hw + i];
		y[p] = (float)(s / hw);
	}
}

HOT void k_spmean_bwd(float *dx, const float *dy, long hw, long lo, long hi) {
	for (long p = lo; p < hi; p++) {
		float g = dy[p] / hw;
		for (long i = 0; i < hw; i++) dx[p * hw + i] = g;
	}
}

HOT double k_mse(float *g, const float *p, const float *t, float gs, long lo, long hi) {
	double s = 0;
	for (long i = lo; i < hi; i++) {
		float d = p[i] - t[i];
		s += (double)d * d;
		if (g) g[i] = 2.0f * d * gs;
	}
	return s;
}

HOT double k_l1(float *g, const float *p, const float *t, float gs, long lo, long hi) {
	double s = 0;
	for (long i = lo; i < hi; i++) {
		float d = p[i] - t[i];
		s += d < 0 ? -d : d;
		if (g) g[i] = d > 0 ? gs : (d < 0 ? -gs : 0.0f);
	}
	return s;
}

HOT void k_adam(float *w, const float *g, float *m, float *v, float lr, float b1, float b2, float eps, float wd,
                float bc1, float bc2, long lo, long hi) {
	float ib1 = 1.0f / bc1, isb2 = 1.0f / sqrtf(bc2);
	for (long i = lo; i < hi; i++) {
		float gi = g[i];
		float mi = b1 * m[i] + (1.0f - b1) * gi;
		float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		float upd = (mi * ib1) / (sqrtf(vi) * isb2 + eps);
		w[i] = w[i] - lr * (upd + wd * w[i]);
	}
}

HOT void k_ema(float *e, const float *w, float decay, long lo, long hi) {
	float a = 1.0f - decay;
	for (long i = lo; i < hi; i++) e[i] = decay * e[i] + a * w[i];
}

void k_copy_blocks(float *dst, long dstStride, const float *src, long srcStride, long blockLen, int acc, long lo,
                   long hi) {
	for (long i = lo; i < hi; i++) {
		float *d = dst + i * dstStride;
		const float *s = src + i * srcStride;
		if (acc)
			for (long j = 0; j < blockLen; j++) d[j] += s[j];
		else
			memcpy(d, s, blockLen * sizeof(float));
	}
}

// splitmix64 of (seed, i): a counter-based generator, identical on every device.
static inline uint64_t mix64(uint64_t z) {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

HOT void k_dropout_mask(float *m, float p, uint64_t seed, long lo, long hi) {
	uint32_t thr = (uint32_t)((double)p * 4294967296.0);
	float keep = 1.0f / (1.0f - p);
	for (long i = lo; i < hi; i++) {
		uint32_t r = (uint32_t)(mix64(seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)) >> 32);
		m[i] = r < thr ? 0.0f : keep;
	}
}

// k_fma_peak runs iters steps of 24 independent fused multiply-adds on full vectors (AVX-512 where there is
// one, else AVX2 with FMA, else plain floats) and returns the sum of the accumulators, so that nothing is
// optimised away: on one core, the rate of its arithmetic with nothing else in the way. *lanes and *fmas are set
// to the floats per vector (16, 8 or 1) and the FMAs per step (24, 12 or 4) it used: the two vector forms are one
// loop written for each register width, enough independent chains to keep both FMA units busy.
__attribute__((target("avx512f"))) static double fma_peak512(long iters) {
	__m512 a[24], m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 24
	for (int j = 0; j < 24; j++) a[j] = _mm512_set1_ps((float)j);
	for (long i = 0; i < iters; i++) {
#pragma GCC unroll 24
		for (int j = 0; j < 24; j++) a[j] = _mm512_fmadd_ps(a[j], m, b);
	}
	double s = 0;
	for (int j = 0; j < 24; j++) s += _mm512_reduce_add_ps(a[j]);
	return s;
}

__attribute__((target("avx2,fma"))) static double fma_peak256(long iters) {
	__m256 a[12], m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
	for (int j = 0; j < 12; j++) a[j] = _mm256_set1_ps((float)j);
	for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
		for (int j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], m, b);
	}
	float t[8];
	double s = 0;
	for (int j = 0; j < 12; j++) {
		_mm256_storeu_ps(t, a[j]);
		for (int l = 0; l < 8; l++) s += t[l];
	}
	return s;
}

double k_fma_peak(long iters, int *lanes, int *fmas) {
	if (__builtin_cpu_supports("avx512f")) {
		*lanes = 16;
		*fmas = 24;
		return fma_peak512(iters);
	}
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		*lanes = 8;
		*fmas = 12;
		return fma_peak256(iters);
	}
	float a[4] = {0, 1, 2, 3};
	for (long i = 0; i < iters; i++)
		for (int j = 0; j < 4; j++) a[j] = a[j] * 0.999999f + 1e-7f;
	*lanes = 1;
	*fmas = 4;
	return a[0] + a[1] + a[2] + a[3];
}
