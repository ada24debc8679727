// Direct 3×3 convolution (stride 1, padding 1) of one image, without im2col and without the GEMM's packing.
//
// The input is copied once into a zero-bordered buffer P [cin][(h+2)(w+2) + slack]. On that buffer's row pitch
// rw = w+2, output position p = y·rw + x reads P[ci][p + ky·rw + kx] for tap (ky, kx), so every tap of every
// input channel is one contiguous run of positions: the kernel computes whole runs of PB positions for CB output
// channels at a time, in registers, straight from P (the two columns per row that fall in the border are computed
// and dropped). Weights are packed once per call as [cout/CB][cin][9][CB] so that the CB weights of a tap are
// adjacent.
#include <string.h>
#include <immintrin.h>
#include "kernels.h"

#define CB 8  // output channels per block
#define PB 48 // output positions per block: three AVX-512 vectors

static long plane_of(long h, long w) { return (h + 2) * (w + 2) + PB + 16; }
static long npos_of(long h, long w) { return (h * (w + 2) + PB - 1) / PB * PB; }

long k_conv3x3_packed_len(long cout, long cin) { return (cout + CB - 1) / CB * CB * cin * 9; }

long k_conv3x3_scratch_len(long cin, long cout, long h, long w) {
	return cin * plane_of(h, w) + (cout + CB - 1) / CB * CB * npos_of(h, w);
}

// k_conv3x3_pack packs w [cout][cin][3][3]. With flip it packs the kernel of the input gradient instead, the
// transposed and spatially flipped w'[ci][co][k] = w[co][ci][8−k] (a convolution from cout to cin channels).
void k_conv3x3_pack(float *wp, const float *w, long cout, long cin, int flip) {
	long ob = flip ? cin : cout, ib = flip ? cout : cin;
	long nb = (ob + CB - 1) / CB;
	for (long b = 0; b < nb; b++)
		for (long i = 0; i < ib; i++)
			for (long k = 0; k < 9; k++)
				for (long j = 0; j < CB; j++) {
					long o = b * CB + j;
					float v = 0;
					if (o < ob) v = flip ? w[(i * cin + o) * 9 + 8 - k] : w[(o * cin + i) * 9 + k];
					wp[((b * ib + i) * 9 + k) * CB + j] = v;
				}
}

__attribute__((target("avx512f"))) static void block_avx512(float *yo, long ldy, const float *s, long plane,
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
#pragma GCC unroll 8
	for (int j = 0; j < CB; j++) {
		_mm512_storeu_ps(yo + j * ldy, a[j][0]);
		_mm512_storeu_ps(yo + j * ldy + 16, a[j][1]);
		_mm512_storeu_ps(yo + j * ldy + 32, a[j][2]);
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

int k_conv3x3_generic_only; // tests set it to run the portable block on AVX-512 machines too

// k_conv3x3 sets y [cout][h][w] = x [cin][h][w] ⋆ w + bias (bias may be NULL) for one image; wp from
// k_conv3x3_pack, scratch of k_conv3x3_scratch_len floats.
void k_conv3x3(float *y, const float *x, const float *wp, const float *bias, long cin, long cout, long h, long w,
               float *scratch) {
	long rw = w + 2, plane = plane_of(h, w), np = npos_of(h, w), nb = (cout + CB - 1) / CB;
	float *P = scratch, *Y = scratch + cin * plane;
	for (long ci = 0; ci < cin; ci++) {
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
	int avx512 = __builtin_cpu_supports("avx512f") && !k_conv3x3_generic_only;
	for (long p0 = 0; p0 < np; p0 += PB)
		for (long b = 0; b < nb; b++) {
			float *yo = Y + b * CB * np + p0;
			const float *wb = wp + b * cin * 9 * CB;
			if (avx512)
				block_avx512(yo, np, P + p0, plane, wb, cin, rw);
			else
				block_generic(yo, np, P + p0, plane, wb, cin, rw);
		}
	for (long co = 0; co < cout; co++) {
		float bv = bias ? bias[co] : 0.0f;
		const float *src = Y + co * np;
		float *dst = y + co * h * w;
		for (long r = 0; r < h; r++)
			for (long c = 0; c < w; c++) dst[r * w + c] = src[r * rw + c] + bv;
	}
}
