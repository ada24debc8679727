// Direct 3×3 convolution (stride 1, padding 1) of one image, without im2col and without the GEMM's packing.
//
// The input is copied once into a zero-bordered buffer P [cin][(h+2)(w+2) + slack]. On that buffer's row pitch
// rw = w+2, output position p = y·rw + x reads P[ci][p + ky·rw + kx] for tap (ky, kx), so every tap of every
// input channel is one contiguous run of positions: the kernel computes whole runs of PB positions for CB output
// channels at a time, in registers, straight from P (the two columns per row that fall in the border are computed
// and dropped). Weights are packed once per call as [cout/CB][cin][9][CB] so that the CB weights of a tap are
// adjacent.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "kernels.h"

#define CB 8  // output channels per block
#define PB 48 // output positions per block: three AVX-512 vectors

static int isa(void);

static long plane_of(long h, long w) { return (h + 2) * (w + 2) + PB + 16; }
static long npos_of(long h, long w) { return (h * (w + 2) + PB - 1) / PB * PB; }
static long nvec_of(long h, long w) { return (h * w + 15) / 16; }

long k_conv3x3_packed_len(long cout, long cin) { return (cout + CB - 1) / CB * CB * cin * 9; }

long k_conv3x3_scratch_len(long cin, long cout, long h, long w) {
	return cin * plane_of(h, w) + (cout + CB - 1) / CB * CB * npos_of(h, w) + (nvec_of(h, w) * 10 + 1) / 2;
}

// k_conv3x3_pack packs w [cout][cin][3][3]. With flip it packs the kernel of the input gradient instead, the
// transposed and spatially flipped w'[ci][co][k] = w[co][ci][8−k] (a convolution from cout to cin channels).
// Only blocks [b0, b1) of CB output channels are packed, so that the cores can share the work.
void k_conv3x3_pack(float *wp, const float *w, long cout, long cin, int flip, long b0, long b1) {
	long ob = flip ? cin : cout, ib = flip ? cout : cin;
	for (long b = b0; b < b1; b++)
		for (long i = 0; i < ib; i++)
			for (long k = 0; k < 9; k++)
				for (long j = 0; j < CB; j++) {
					long o = b * CB + j;
					float v = 0;
					if (o < ob) v = flip ? w[(i * cin + o) * 9 + 8 - k] : w[(o * cin + i) * 9 + k];
					wp[((b * ib + i) * 9 + k) * CB + j] = v;
				}
}

// Where a block's three vectors of positions land in the output: each vector covers up to three rows of the
// padded-width grid; for row r its valid lanes (column < w, row < h) are stored, masked, at y + p − 2r.
typedef struct {
	int nseg[3];
	long off[3][3]; // p − 2r of lane 0
	__mmask16 mask[3][3];
} out_map;

static void map_block(out_map *m, long p0, long h, long w) {
	long rw = w + 2;
	for (int v = 0; v < 3; v++) {
		long p = p0 + 16 * v;
		m->nseg[v] = 0;
		for (long r = p / rw; r <= (p + 15) / rw && r < h; r++) {
			unsigned mk = 0;
			for (int l = 0; l < 16; l++) {
				long q = p + l;
				if (q / rw == r && q % rw < w) mk |= 1u << l;
			}
			if (mk) {
				int k = m->nseg[v]++;
				m->off[v][k] = p - 2 * r;
				m->mask[v][k] = (__mmask16)mk;
			}
		}
	}
}

// block_avx512 computes output channels [0, nco) of a block (nco ≤ CB) at positions p0…p0+47 and stores them,
// plus the bias and, when res is not NULL, the residual res (laid out as y), straight into y [co][h·w] (ldy = h·w).
__attribute__((target("avx512f"))) static void block_avx512(float *y, const float *res, long ldy, const out_map *om,
                                                            const float *bias, long nco, const float *s, long plane,
                                                            const float *wb, long cin, long rw) {
	__m512 a[CB][3];
#pragma GCC unroll 8
	for (int j = 0; j < CB; j++) a[j][0] = a[j][1] = a[j][2] = _mm512_setzero_ps();
	for (long i = 0; i < cin; i++, s += plane, wb += 9 * CB) {
#pragma GCC unroll 9
		for (int k = 0; k < 9; k++) {
			const float *q = s + (k / 3) * rw + k % 3;
			__m512 x0 = _mm512_loadu_ps(q), x1 = _mm512_loadu_ps(q + 16), x2 = _mm512_loadu_ps(q + 32);
#pragma GCC unroll 8
			for (int j = 0; j < CB; j++) {
				__m512 wv = _mm512_set1_ps(wb[k * CB + j]);
				a[j][0] = _mm512_fmadd_ps(wv, x0, a[j][0]);
				a[j][1] = _mm512_fmadd_ps(wv, x1, a[j][1]);
				a[j][2] = _mm512_fmadd_ps(wv, x2, a[j][2]);
			}
		}
	}
	// Every index into a[][] stays a constant (loops fully unrolled, conditions inside), or GCC would keep the
	// accumulators in memory.
#pragma GCC unroll 8
	for (int j = 0; j < CB; j++) {
		if (j < nco) {
			__m512 bv = _mm512_set1_ps(bias ? bias[j] : 0.0f);
			float *yj = y + j * ldy;
			const float *rj = res ? res + j * ldy : NULL;
#pragma GCC unroll 3
			for (int v = 0; v < 3; v++) {
				__m512 o = _mm512_add_ps(a[j][v], bv);
#pragma GCC unroll 3
				for (int k = 0; k < 3; k++)
					if (k < om->nseg[v]) {
						__m512 ok = o;
						if (rj)
							ok = _mm512_add_ps(o, _mm512_maskz_loadu_ps(om->mask[v][k], rj + om->off[v][k]));
						_mm512_mask_storeu_ps(yj + om->off[v][k], om->mask[v][k], ok);
					}
			}
		}
	}
}

// The block with AVX2 and FMA (16 registers): four sub-blocks of 4 output channels × 24 positions, 12 accumulators.
__attribute__((target("avx2,fma"))) static void block_avx2(float *yo, long ldy, const float *s, long plane,
                                                           const float *wb, long cin, long rw) {
	for (int half = 0; half < 2; half++)
		for (int j0 = 0; j0 < CB; j0 += 4) {
			__m256 a[4][3];
#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) a[j][0] = a[j][1] = a[j][2] = _mm256_setzero_ps();
			const float *sp = s + half * 24, *wq = wb + j0;
			for (long i = 0; i < cin; i++, sp += plane, wq += 9 * CB) {
#pragma GCC unroll 9
				for (int k = 0; k < 9; k++) {
					const float *q = sp + (k / 3) * rw + k % 3;
					__m256 x0 = _mm256_loadu_ps(q), x1 = _mm256_loadu_ps(q + 8), x2 = _mm256_loadu_ps(q + 16);
#pragma GCC unroll 4
					for (int j = 0; j < 4; j++) {
						__m256 wv = _mm256_broadcast_ss(wq + k * CB + j);
						a[j][0] = _mm256_fmadd_ps(wv, x0, a[j][0]);
						a[j][1] = _mm256_fmadd_ps(wv, x1, a[j][1]);
						a[j][2] = _mm256_fmadd_ps(wv, x2, a[j][2]);
					}
				}
			}
#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) {
				float *o = yo + (j0 + j) * ldy + half * 24;
				_mm256_storeu_ps(o, a[j][0]);
				_mm256_storeu_ps(o + 8, a[j][1]);
				_mm256_storeu_ps(o + 16, a[j][2]);
			}
		}
}

// The same block for CPUs without AVX-512: two halves of 24 positions, four output channels at a time, so that
// the accumulators fit the 16 AVX registers once GCC vectorises the inner loop.
__attribute__((target_clones("avx2", "default"))) static void block_generic(float *yo, long ldy, const float *s,
                                                                            long plane, const float *wb, long cin,
                                                                            long rw) {
	for (int half = 0; half < 2; half++)
		for (int j0 = 0; j0 < CB; j0 += 4) {
			float a[4][24];
			memset(a, 0, sizeof a);
			const float *sp = s + half * 24;
			const float *wq = wb;
			for (long i = 0; i < cin; i++, sp += plane, wq += 9 * CB)
				for (int k = 0; k < 9; k++) {
					const float *q = sp + (k / 3) * rw + k % 3;
					for (int j = 0; j < 4; j++) {
						float wv = wq[k * CB + j0 + j];
						for (int v = 0; v < 24; v++) a[j][v] += wv * q[v];
					}
				}
			for (int j = 0; j < 4; j++) memcpy(yo + (j0 + j) * ldy + half * 24, a[j], sizeof a[j]);
		}
}

// On maps narrower than 16 the AVX-512 forward works on the unpadded image instead (no copy into a bordered
// buffer, no border columns computed and dropped; on an 8×8 map those are a third of the padded grid): output position p = y·w + x reads x[p + (ky−1)·w + (kx−1)] for tap (ky, kx), a masked
// load whose mask clears the lanes where that tap falls outside the image (left or right of the row, above the
// first row or below the last; masked-off lanes are never read, so the addresses outside the plane do not fault).
// The masks depend only on (h, w): one __mmask16 per tap and vector of 16 positions, built once per shape and
// kept (mask_table). Blocks are up to three vectors (48 positions) by 8 output channels; the last block of a
// plane takes what is left, so an 8×8 map computes 64 positions, not the 96 of its padded-width grid. Wider maps
// keep the bordered copy: their planes are 1, 4, 16 KB apart, so reading a block's window in place from every
// input channel hits the same few L1 sets (the copy's pitch is not a power of two), which cost more than the copy.

#define MT_SLOTS 64
static struct {
	long h, w;
	__mmask16 *m; // published last (release), read first (acquire)
} mt_cache[MT_SLOTS];
static pthread_mutex_t mt_mu = PTHREAD_MUTEX_INITIALIZER;

// mask_fill sets m[v·9 + k] for every vector v of the plane: bit l set when position 16v + l is in the image and
// tap k of it lands inside the image too. m[nvec·9 + v] is the store mask (position in the image).
static void mask_fill(__mmask16 *m, long h, long w) {
	long nv = nvec_of(h, w), hw = h * w;
	for (long v = 0; v < nv; v++) {
		unsigned mk[9] = {0}, st = 0;
		for (int l = 0; l < 16; l++) {
			long p = 16 * v + l;
			if (p >= hw) break;
			long y = p / w, x = p % w;
			st |= 1u << l;
			for (int k = 0; k < 9; k++) {
				long yy = y + k / 3 - 1, xx = x + k % 3 - 1;
				if (yy >= 0 && yy < h && xx >= 0 && xx < w) mk[k] |= 1u << l;
			}
		}
		for (int k = 0; k < 9; k++) m[v * 9 + k] = (__mmask16)mk[k];
		m[nv * 9 + v] = (__mmask16)st;
	}
}

static long mask_len(long h, long w) { return nvec_of(h, w) * 10; }

// mask_table returns the masks of (h, w), building them the first time; NULL if the cache is full (the caller
// then builds them in its own scratch).
static const __mmask16 *mask_table(long h, long w) {
	for (int i = 0; i < MT_SLOTS; i++) {
		__mmask16 *m = __atomic_load_n(&mt_cache[i].m, __ATOMIC_ACQUIRE);
		if (!m) break;
		if (mt_cache[i].h == h && mt_cache[i].w == w) return m;
	}
	const __mmask16 *out = NULL;
	pthread_mutex_lock(&mt_mu);
	for (int i = 0; i < MT_SLOTS; i++) {
		__mmask16 *m = mt_cache[i].m;
		if (m && mt_cache[i].h == h && mt_cache[i].w == w) {
			out = m;
			break;
		}
		if (!m) {
			m = malloc((size_t)mask_len(h, w) * sizeof *m);
			if (!m) break;
			mask_fill(m, h, w);
			mt_cache[i].h = h;
			mt_cache[i].w = w;
			__atomic_store_n(&mt_cache[i].m, m, __ATOMIC_RELEASE);
			out = m;
			break;
		}
	}
	pthread_mutex_unlock(&mt_mu);
	return out;
}

// block_core computes output channels [0, nco) (nco ≤ CB) of NV vectors of 16 positions and stores them, plus the
// bias and the residual, into y (channel j at y + j·hw, vector v ystep further). Vector v reads the input from x +
// v·xstep (input channel i at i·hw further) through the tap masks mk[v·mkstep + k], and is stored through st[v·ststep];
// wb holds the packed weights of the block, [cin][9][CB]. blockm and blocki below give it its two uses.
__attribute__((target("avx512f"), always_inline)) static inline void block_core(
    float *y, const float *res, long hw, const float *bias, long nco, const float *x, long xstep, long ystep,
    const int NV, const __mmask16 *mk, long mkstep, const __mmask16 *st, long ststep, const float *wb, long cin,
    long w, const int prefetch) {
	__m512 a[CB][3];
#pragma GCC unroll 8
	for (int j = 0; j < CB; j++) a[j][0] = a[j][1] = a[j][2] = _mm512_setzero_ps();
	const float *s = x;
	for (long i = 0; i < cin; i++, s += hw, wb += 9 * CB) {
		// The input is read in place, channel plane after channel plane, which the hardware prefetchers do not
		// follow: fetch what the next block of positions will read below this block's window.
		if (prefetch) {
#pragma GCC unroll 3
			for (int v = 0; v < 3; v++) _mm_prefetch((const char *)(s + 48 + w + 1 + 16 * v), _MM_HINT_T0);
		}
#pragma GCC unroll 9
		for (int k = 0; k < 9; k++) {
			const float *q = s + (k / 3 - 1) * w + (k % 3 - 1);
			__m512 xv[3];
#pragma GCC unroll 3
			for (int v = 0; v < 3; v++)
				if (v < NV) xv[v] = _mm512_maskz_loadu_ps(mk[v * mkstep + k], q + v * xstep);
#pragma GCC unroll 8
			for (int j = 0; j < CB; j++) {
				__m512 wv = _mm512_set1_ps(wb[k * CB + j]);
#pragma GCC unroll 3
				for (int v = 0; v < 3; v++)
					if (v < NV) a[j][v] = _mm512_fmadd_ps(wv, xv[v], a[j][v]);
			}
		}
	}
#pragma GCC unroll 8
	for (int j = 0; j < CB; j++) {
		if (j < nco) {
			__m512 bv = _mm512_set1_ps(bias ? bias[j] : 0.0f);
			float *yj = y + j * hw;
			const float *rj = res ? res + j * hw : NULL;
#pragma GCC unroll 3
			for (int v = 0; v < 3; v++)
				if (v < NV) {
					__m512 o = _mm512_add_ps(a[j][v], bv);
					if (rj) o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(st[v * ststep], rj + v * ystep));
					_mm512_mask_storeu_ps(yj + v * ystep, st[v * ststep], o);
				}
		}
	}
}

// blockm is block_core on NV consecutive vectors of one image from position p0: y [co][hw], x the image's first
// input channel [cin][hw], mk its 9·NV tap masks (vector-major), st its NV store masks.
__attribute__((target("avx512f"), always_inline)) static inline void blockm(float *y, const float *res, long hw,
                                                                          const float *bias, long nco,
                                                                          const float *x, long p0, int NV,
                                                                          const __mmask16 *mk, const __mmask16 *st,
                                                                          const float *wb, long cin, long w) {
	block_core(y + p0, res ? res + p0 : NULL, hw, bias, nco, x + p0, 16, 16, NV, mk, 9, st, 1, wb, cin, w, 1);
}

__attribute__((target("avx512f"))) static void conv_unpadded(float *y, const float *x, const float *wp,
                                                             const float *bias, const float *res, long cin,
                                                             long cout, long h, long w, const __mmask16 *m) {
	long hw = h * w, nv = nvec_of(h, w), nb = (cout + CB - 1) / CB;
	const __mmask16 *st = m + nv * 9;
	for (long v0 = 0; v0 < nv; v0 += 3) {
		int k = nv - v0 < 3 ? (int)(nv - v0) : 3;
		for (long b = 0; b < nb; b++) {
			long c0 = b * CB, nco = cout - c0 < CB ? cout - c0 : CB;
			float *yb = y + c0 * hw;
			const float *rb = res ? res + c0 * hw : NULL, *bb = bias ? bias + c0 : NULL;
			const float *wb = wp + b * cin * 9 * CB;
			const __mmask16 *mk = m + v0 * 9, *sv = st + v0;
			if (k == 3)
				blockm(yb, rb, hw, bb, nco, x, 16 * v0, 3, mk, sv, wb, cin, w);
			else if (k == 2)
				blockm(yb, rb, hw, bb, nco, x, 16 * v0, 2, mk, sv, wb, cin, w);
			else
				blockm(yb, rb, hw, bb, nco, x, 16 * v0, 1, mk, sv, wb, cin, w);
		}
	}
}

// Maps of at most 16 positions (4×4) are one vector per image: a block of one image has 8 accumulators, and
// each masked load of its input feeds only 8 products. blocki takes NI (≤ 3) images at once instead, 8 output
// channels × NI images = up to 24 accumulators, so that the 8 weights of a tap, broadcast once, serve every image:
// block_core with the images as its vectors (xstride, ystride apart), all under the same tap masks mk[0..9) and
// store mask st.
__attribute__((target("avx512f"), always_inline)) static inline void blocki(float *y, const float *res, long ystride,
                                                                          const float *bias, long nco,
                                                                          const float *x, long xstride, const int NI,
                                                                          const __mmask16 *mk, __mmask16 st,
                                                                          const float *wb, long cin, long hw,
                                                                          long w) {
	block_core(y, res, hw, bias, nco, x, xstride, ystride, NI, mk, 0, &st, 0, wb, cin, w, 0);
}

// k_conv3x3_small is k_conv3x3 for n images of at most 16 positions each (AVX-512 only; k_conv3x3_fast() == 2):
// x [n][cin][h][w], y and res [n][cout][h][w]. It returns 0, having done nothing, for any other map or CPU.
__attribute__((target("avx512f"))) static void conv_small(float *y, const float *x, const float *wp,
                                                           const float *bias, const float *res, long n, long cin,
                                                           long cout, long h, long w, const __mmask16 *m) {
	long hw = h * w, nb = (cout + CB - 1) / CB;
	for (long i0 = 0; i0 < n; i0 += 3) {
		int ni = n - i0 < 3 ? (int)(n - i0) : 3;
		for (long b = 0; b < nb; b++) {
			long c0 = b * CB, nco = cout - c0 < CB ? cout - c0 : CB;
			float *yb = y + (i0 * cout + c0) * hw;
			const float *rb = res ? res + (i0 * cout + c0) * hw : NULL, *bb = bias ? bias + c0 : NULL;
			const float *xb = x + i0 * cin * hw, *wb = wp + b * cin * 9 * CB;
			if (ni == 3)
				blocki(yb, rb, cout * hw, bb, nco, xb, cin * hw, 3, m, m[9], wb, cin, hw, w);
			else if (ni == 2)
				blocki(yb, rb, cout * hw, bb, nco, xb, cin * hw, 2, m, m[9], wb, cin, hw, w);
			else
				blocki(yb, rb, cout * hw, bb, nco, xb, cin * hw, 1, m, m[9], wb, cin, hw, w);
		}
	}
}

int k_conv3x3_small(float *y, const float *x, const float *wp, const float *bias, const float *res, long n,
                    long cin, long cout, long h, long w) {
	if (h * w > 16 || isa() != 2) return 0; // not a map of one vector, or no AVX-512: declined
	__mmask16 own[10];
	const __mmask16 *m = mask_table(h, w);
	if (!m) {
		mask_fill(own, h, w);
		m = own;
	}
	conv_small(y, x, wp, bias, res, n, cin, cout, h, w, m);
	return 1;
}

int k_conv3x3_cap = 2; // the widest blocks to use: 2 AVX-512, 1 AVX2, 0 portable (tests lower it)

// isa_upto is the widest block this CPU has, at most cap (2 AVX-512, 1 AVX2 with FMA, 0 portable).
static int isa_upto(int cap) {
	if (cap >= 2 && __builtin_cpu_supports("avx512f")) return 2;
	if (cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
	return 0;
}

static int isa(void) { return isa_upto(k_conv3x3_cap); }

// k_conv3x3_fast says which blocks the direct kernels have here: 2 AVX-512 (all three kernels), 1 AVX2 (the
// forward block, also used for the input gradient; the weight gradient's 27 accumulators do not fit 16
// registers), 0 only the portable ones, which are correct everywhere but slower than im2col + GEMM.
int k_conv3x3_fast(void) { return isa_upto(2); }

static void pad_image(float *P, const float *x, long c, long h, long w, long plane) {
	long rw = w + 2;
	for (long ci = 0; ci < c; ci++) {
		float *p = P + ci * plane;
		memset(p, 0, (size_t)rw * sizeof(float));
		for (long r = 0; r < h; r++) {
			float *d = p + (r + 1) * rw;
			d[0] = 0;
			memcpy(d + 1, x + (ci * h + r) * w, (size_t)w * sizeof(float));
			d[w + 1] = 0;
		}
		memset(p + (h + 1) * rw, 0, (size_t)(plane - (h + 1) * rw) * sizeof(float));
	}
}

// k_conv3x3 sets y [cout][h][w] = x [cin][h][w] ⋆ w + bias + res for one image (bias and res may be NULL; res
// [cout][h][w], a residual added on the way out, may be y itself); wp from k_conv3x3_pack, scratch of
// k_conv3x3_scratch_len floats.
void k_conv3x3(float *y, const float *x, const float *wp, const float *bias, const float *res, long cin, long cout,
               long h, long w, float *scratch) {
	long rw = w + 2, plane = plane_of(h, w), np = npos_of(h, w), nb = (cout + CB - 1) / CB;
	float *P = scratch, *Y = scratch + cin * plane;
	int level = isa();
	if (level == 2 && w < 16) {
		const __mmask16 *m = mask_table(h, w);
		if (!m) {
			__mmask16 *own = (__mmask16 *)scratch;
			mask_fill(own, h, w);
			m = own;
		}
		conv_unpadded(y, x, wp, bias, res, cin, cout, h, w, m);
		return;
	}
	pad_image(P, x, cin, h, w, plane);
	if (level == 2) {
		// Straight into y: no intermediate grid, no compaction pass.
		out_map om;
		for (long p0 = 0; p0 < np; p0 += PB) {
			map_block(&om, p0, h, w);
			for (long b = 0; b < nb; b++) {
				long c0 = b * CB, nco = cout - c0 < CB ? cout - c0 : CB;
				block_avx512(y + c0 * h * w, res ? res + c0 * h * w : NULL, h * w, &om, bias ? bias + c0 : NULL, nco,
				             P + p0, plane, wp + b * cin * 9 * CB, cin, rw);
			}
		}
		return;
	}
	for (long p0 = 0; p0 < np; p0 += PB)
		for (long b = 0; b < nb; b++)
			if (level == 1)
				block_avx2(Y + b * CB * np + p0, np, P + p0, plane, wp + b * cin * 9 * CB, cin, rw);
			else
				block_generic(Y + b * CB * np + p0, np, P + p0, plane, wp + b * cin * 9 * CB, cin, rw);
	for (long co = 0; co < cout; co++) {
		float bv = bias ? bias[co] : 0.0f;
		const float *src = Y + co * np;
		float *dst = y + co * h * w;
		const float *rs = res ? res + co * h * w : NULL;
		for (long r = 0; r < h; r++)
			for (long c = 0; c < w; c++) dst[r * w + c] = src[r * rw + c] + bv + (rs ? rs[r * w + c] : 0.0f);
	}
}

// The weight gradient: dw[co][ci][k] += Σ_p dy[co][p]·P[ci][p + off_k], a sum over the image's positions for
// three output channels and all nine taps at once (27 accumulators), lanes over positions, reduced at the end.
__attribute__((target("avx512f"))) static void dw_avx512(float out[27], const float *d0, const float *d1,
                                                         const float *d2, const float *s, long np, long rw) {
	__m512 a[3][9];
#pragma GCC unroll 9
	for (int k = 0; k < 9; k++) a[0][k] = a[1][k] = a[2][k] = _mm512_setzero_ps();
	for (long p = 0; p < np; p += 16) {
		__m512 y0 = _mm512_loadu_ps(d0 + p), y1 = _mm512_loadu_ps(d1 + p), y2 = _mm512_loadu_ps(d2 + p);
#pragma GCC unroll 9
		for (int k = 0; k < 9; k++) {
			__m512 xv = _mm512_loadu_ps(s + p + (k / 3) * rw + k % 3);
			__asm__("" : "+v"(xv)); // one (unaligned) load per tap, not one per product
			a[0][k] = _mm512_fmadd_ps(y0, xv, a[0][k]);
			a[1][k] = _mm512_fmadd_ps(y1, xv, a[1][k]);
			a[2][k] = _mm512_fmadd_ps(y2, xv, a[2][k]);
		}
	}
#pragma GCC unroll 9
	for (int k = 0; k < 9; k++) {
		out[k] = _mm512_reduce_add_ps(a[0][k]);
		out[9 + k] = _mm512_reduce_add_ps(a[1][k]);
		out[18 + k] = _mm512_reduce_add_ps(a[2][k]);
	}
}

__attribute__((target_clones("avx2", "default"))) static void dw_generic(float out[27], const float *d0,
                                                                         const float *d1, const float *d2,
                                                                         const float *s, long np, long rw) {
	const float *d[3] = {d0, d1, d2};
	for (int j = 0; j < 3; j++)
		for (int k = 0; k < 9; k++) {
			const float *q = s + (k / 3) * rw + k % 3;
			float acc[16] = {0};
			for (long p = 0; p < np; p += 16)
				for (int v = 0; v < 16; v++) acc[v] += d[j][p + v] * q[p + v];
			float t = 0;
			for (int v = 0; v < 16; v++) t += acc[v];
			out[j * 9 + k] = t;
		}
}

#define DW_CHUNK 1536 // positions per pass of the weight-gradient kernel: its rows stay in L1/L2

// A channel's row: n planes, then room for the last chunk's reads past them (up to 15 + 2(w+2) + 2 floats).
// Here an image's plane is just its zero-bordered (h+2)(w+2): a valid position reads at most 2(w+2)+2 further,
// which stays inside its own plane, and the positions in between images have dy = 0.
static long dw_plane_of(long h, long w) { return (h + 2) * (w + 2); }
// Rows start on 64-byte boundaries (the dy loads are then aligned; unaligned rows cost a third of the speed).
static long dw_row_of(long n, long h, long w) { return (n * dw_plane_of(h, w) + 2 * (w + 2) + 32 + 15) / 16 * 16; }

// The channels-last weight gradient (AVX-512, cin a multiple of 16): x is copied once, transposed, into
// X [n][h+2][w+2][cin] with a zero border, so that the 16 input channels of a tap at a position are one aligned
// vector. For a block of 16 input channels and three output channels, dw[co][ci][k] += Σ_p dy[co][p]·X[p+off_k][ci]
// runs over the image's positions only (no border positions, no padded grid): per position three broadcasts of
// dy, read where it lies, and nine vector loads feed 27 accumulators whose lanes are input channels, so nothing
// is reduced across lanes at the end.
static long cl_len(long n, long cin, long h, long w) { return n * (h + 2) * (w + 2) * cin + 16; }

long k_conv3x3_dw_scratch_len(long n, long cin, long cout, long h, long w) {
	long a = (cin + cout + 1) * dw_row_of(n, h, w), b = cl_len(n, cin, h, w);
	return a > b ? a : b;
}

// transpose16 sets the 16 vectors c[j][i] = r[i][j].
__attribute__((target("avx512f"), always_inline)) static inline void transpose16(__m512 r[16]) {
	__m512 t[16], u[16];
#pragma GCC unroll 8
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
	// u[4q + m] holds, in 128-bit lane L, column 4L + m of rows 4q … 4q+3.
#pragma GCC unroll 4
	for (int q = 0; q < 4; q++) {
		__m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 2]);
		__m512d c = _mm512_castps_pd(t[4 * q + 1]), d = _mm512_castps_pd(t[4 * q + 3]);
		u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
		u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
		u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
		u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
	}
#pragma GCC unroll 4
	for (int m = 0; m < 4; m++) {
		__m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);
		__m512 w0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88), w1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
		r[m] = _mm512_shuffle_f32x4(v0, w0, 0x88);
		r[8 + m] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
		r[4 + m] = _mm512_shuffle_f32x4(v1, w1, 0x88);
		r[12 + m] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
	}
}

// to_channels_last fills X [cin/16][n][h+2][w+2][16] (border zero) from x [n][cin][h][w], 16 channels × 16
// positions at a time through a register transpose. Each block of 16 channels is one contiguous run: a pass of the
// kernel over it reads consecutive lines (interleaving the blocks per position would put a pass's lines cin·4 bytes
// apart, on a fraction of the cache's sets).
__attribute__((target("avx512f"))) static void to_channels_last(float *X, const float *x, long n, long cin, long h,
                                                                long w) {
	long rw = w + 2, hw = h * w, full = hw / 16 * 16, img = (h + 2) * rw * 16;
	for (long c0 = 0; c0 < cin; c0 += 16)
		for (long i = 0; i < n; i++) {
			float *Xi = X + (c0 / 16 * n + i) * img;
			memset(Xi, 0, (size_t)(rw * 16) * sizeof(float));
			memset(Xi + (h + 1) * rw * 16, 0, (size_t)(rw * 16) * sizeof(float));
			for (long y = 0; y < h; y++) {
				memset(Xi + (y + 1) * rw * 16, 0, 16 * sizeof(float));
				memset(Xi + ((y + 1) * rw + w + 1) * 16, 0, 16 * sizeof(float));
			}
			const float *xi = x + (i * cin + c0) * hw;
			for (long p0 = 0; p0 < full; p0 += 16) {
				__m512 r[16];
#pragma GCC unroll 16
				for (int l = 0; l < 16; l++) r[l] = _mm512_loadu_ps(xi + l * hw + p0);
				transpose16(r);
#pragma GCC unroll 16
				for (int j = 0; j < 16; j++) {
					long p = p0 + j, y = p / w, xx = p % w;
					_mm512_store_ps(Xi + ((y + 1) * rw + xx + 1) * 16, r[j]);
				}
			}
			for (long p = full; p < hw; p++) {
				long y = p / w, xx = p % w;
				for (int l = 0; l < 16; l++) Xi[((y + 1) * rw + xx + 1) * 16 + l] = xi[l * hw + p];
			}
		}
}

// dwcl_body adds to acc [NC][9][16] the sums over n images' positions for the NC (≤ 3) output channels d[0..NC)
// (each [h][w], the next image dstride further) and the 16 input channels at X [n][h+2][w+2][16]. The registers
// are added into acc after every DW_CHUNK positions or so (at the end of the image that passes it), so that no
// float sum runs over more terms than the padded-grid kernel's (a sum over all of 16 images of 32×32 lost 6e-6
// relative).
__attribute__((target("avx512f"), always_inline)) static inline void dwcl_body(float *acc, const float *const *d,
                                                                             long dstride, const float *X, long n,
                                                                             long h, long w, const int NC) {
	__m512 a[3][9];
#pragma GCC unroll 9
	for (int k = 0; k < 9; k++) a[0][k] = a[1][k] = a[2][k] = _mm512_setzero_ps();
	long rw = w + 2, img = (h + 2) * rw * 16, rs = rw * 16, since = 0;
	for (long i = 0; i < n; i++) {
		since += h * w;
		if (since > DW_CHUNK && i > 0) {
#pragma GCC unroll 9
			for (int k = 0; k < 9; k++)
#pragma GCC unroll 3
				for (int j = 0; j < 3; j++)
					if (j < NC) {
						float *q = acc + (j * 9 + k) * 16;
						_mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), a[j][k]));
						a[j][k] = _mm512_setzero_ps();
					}
			since = h * w;
		}
		const float *e0 = d[0] + i * dstride, *e1 = NC > 1 ? d[1] + i * dstride : e0,
		            *e2 = NC > 2 ? d[2] + i * dstride : e0;
		for (long y = 0; y < h; y++) {
			const float *xr = X + i * img + y * rs;
			for (long p = y * w; p < y * w + w; p++, xr += 16) {
				// Hidden from the optimiser: seeing that this position's taps are the next one's, GCC carries
				// loaded vectors from one position to the next, runs out of registers and spills accumulators.
				const float *xq = xr;
				__asm__("" : "+r"(xq));
				__m512 yv[3];
				yv[0] = _mm512_set1_ps(e0[p]);
				if (NC > 1) yv[1] = _mm512_set1_ps(e1[p]);
				if (NC > 2) yv[2] = _mm512_set1_ps(e2[p]);
#pragma GCC unroll 9
				for (int k = 0; k < 9; k++) {
					__m512 xv = _mm512_load_ps(xq + (k / 3) * rs + (k % 3) * 16);
					__asm__("" : "+v"(xv)); // one load per tap, not one per product
#pragma GCC unroll 3
					for (int j = 0; j < 3; j++)
						if (j < NC) a[j][k] = _mm512_fmadd_ps(yv[j], xv, a[j][k]);
				}
			}
		}
	}
#pragma GCC unroll 9
	for (int k = 0; k < 9; k++)
#pragma GCC unroll 3
		for (int j = 0; j < 3; j++)
			if (j < NC) {
				float *q = acc + (j * 9 + k) * 16;
				_mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), a[j][k]));
			}
}

// dwcl_block is dwcl_body for nc = 1, 2 or 3 output channels: a layer whose output channels are not a multiple of
// three ends in a block of one or two, computed as such.
__attribute__((target("avx512f"))) static void dwcl_block(float *acc, const float *const *d, long nc, long dstride,
                                                          const float *X, long n, long h, long w) {
	if (nc == 3)
		dwcl_body(acc, d, dstride, X, n, h, w, 3);
	else if (nc == 2)
		dwcl_body(acc, d, dstride, X, n, h, w, 2);
	else
		dwcl_body(acc, d, dstride, X, n, h, w, 1);
}

int k_conv3x3_dw_cl = 1; // 0: every weight gradient on the padded grid (benchmarks compare the two)

static void dw_channels_last(float *dw, const float *x, const float *dy, long n, long cin, long cout, long h, long w,
                             float *scratch) {
	long hw = h * w;
	float *X = (float *)(((unsigned long)scratch + 63) & ~63ul);
	to_channels_last(X, x, n, cin, h, w);
	float acc[27 * 16];
	long img = (h + 2) * (w + 2) * 16;
	for (long c0 = 0; c0 < cin; c0 += 16)
		for (long co = 0; co < cout; co += 3) {
			const float *Xb = X + c0 / 16 * n * img;
			long nc = cout - co < 3 ? cout - co : 3;
			const float *d[3] = {dy + co * hw, dy + (co + 1) * hw, dy + (co + 2) * hw}; // only the first nc are read
			memset(acc, 0, sizeof acc);
			dwcl_block(acc, d, nc, cout * hw, Xb, n, h, w);
			for (long j = 0; j < nc; j++)
				for (int k = 0; k < 9; k++)
					for (int l = 0; l < 16; l++) dw[((co + j) * cin + c0 + l) * 9 + k] += acc[(j * 9 + k) * 16 + l];
		}
}

// k_conv3x3_dw adds to dw [cout][cin][3][3] the weight gradient of n images x [n][cin][h][w], dy [n][cout][h][w];
// scratch of k_conv3x3_dw_scratch_len floats. The images are laid end to end, each on its zero-bordered plane,
// so that one sum runs over the positions of all of them (the horizontal reductions are paid once per chunk of
// DW_CHUNK positions, not once per small image).
void k_conv3x3_dw(float *dw, const float *x, const float *dy, long n, long cin, long cout, long h, long w,
                  float *scratch) {
	if (k_conv3x3_dw_cl && isa() == 2 && cin % 16 == 0) {
		dw_channels_last(dw, x, dy, n, cin, cout, h, w, scratch);
		return;
	}
	long rw = w + 2, plane = dw_plane_of(h, w), row = dw_row_of(n, h, w);
	long total = (n * plane + 15) / 16 * 16;
	float *P = scratch, *D = scratch + cin * row, *zero = D + cout * row;
	memset(zero, 0, (size_t)row * sizeof(float));
	for (long ci = 0; ci < cin; ci++) {
		float *p = P + ci * row;
		for (long i = 0; i < n; i++) {
			float *q = p + i * plane; // rows 0 and h+1 zero, each row between: 0, the image row, 0
			memset(q, 0, (size_t)rw * sizeof(float));
			for (long r = 0; r < h; r++) {
				float *d = q + (r + 1) * rw;
				d[0] = d[w + 1] = 0;
				memcpy(d + 1, x + ((i * cin + ci) * h + r) * w, (size_t)w * sizeof(float));
			}
			memset(q + (h + 1) * rw, 0, (size_t)rw * sizeof(float));
		}
		memset(p + n * plane, 0, (size_t)(row - n * plane) * sizeof(float));
	}
	// dy on each image's padded-width grid, zero in the two border columns of each row and after the last row,
	// so that the positions the forward kernel computes and drops add nothing here.
	for (long co = 0; co < cout; co++) {
		float *d = D + co * row;
		for (long i = 0; i < n; i++) {
			float *q = d + i * plane;
			for (long r = 0; r < h; r++) {
				memcpy(q + r * rw, dy + ((i * cout + co) * h + r) * w, (size_t)w * sizeof(float));
				q[r * rw + w] = q[r * rw + w + 1] = 0;
			}
			memset(q + h * rw, 0, (size_t)(plane - h * rw) * sizeof(float));
		}
		memset(d + n * plane, 0, (size_t)(row - n * plane) * sizeof(float));
	}
	int avx512 = isa() == 2;
	float out[27];
	for (long c0 = 0; c0 < total; c0 += DW_CHUNK) {
		long len = total - c0 < DW_CHUNK ? total - c0 : DW_CHUNK;
		for (long co = 0; co < cout; co += 3) {
			long nc = cout - co < 3 ? cout - co : 3;
			const float *d0 = D + co * row + c0, *d1 = nc > 1 ? d0 + row : zero, *d2 = nc > 2 ? d0 + 2 * row : zero;
			for (long ci = 0; ci < cin; ci++) {
				if (avx512)
					dw_avx512(out, d0, d1, d2, P + ci * row + c0, len, rw);
				else
					dw_generic(out, d0, d1, d2, P + ci * row + c0, len, rw);
				for (long j = 0; j < nc; j++)
					for (int k = 0; k < 9; k++) dw[((co + j) * cin + ci) * 9 + k] += out[j * 9 + k];
			}
		}
	}
}
