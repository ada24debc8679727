// Single-image attention products, and 1×1 convolutions, without OpenBLAS.
//
// The attention block's matrices are small (t = 256 positions, c = 64…512 channels at 16×16) and arrive in the
// layouts the convolutions leave, q, k, v each [c][t]. OpenBLAS packs both operands of every product and clears
// its output before accumulating, which at these sizes costs about as much as the arithmetic. Here every product
// is written as C[m][n] = α Σ_k A(m, k) B[k][n]: B is first packed into panels of 32 columns, each read front to
// back (pack_b; pack_bt when B is given transposed, through 16×16 register transposes), and a block of 8 rows × 32
// columns of C stays in 16 AVX-512 registers while k runs, each step loading the panel's two vectors of row k and
// broadcasting 8 values of A. A is read in place when its rows are contiguous, else 8 rows at a time are copied
// side by side first (so q is read as qᵀ without a transpose). Products whose output the network wants transposed
// are written to scratch and transposed (c·t floats against t·t·c multiply-adds). The same block serves 1×1
// convolutions, with the bias and a residual added as it stores.
#include <immintrin.h>
#include "kernels.h"

int k_attn_cap = 1; // 1: use these kernels where the CPU has AVX-512; 0: decline (tests compare with OpenBLAS)

#define MR 8
#define NR 32

// mk computes C[0..7][0..31] = α Σ_k A[r·am + k·ak] · B[k·ldb + 0..31]. Inlined into two callers, each with one of
// the strides fixed at 1, so that the eight rows of A are addressed without multiplications.
__attribute__((target("avx512f"), always_inline)) static inline void mk(long K, float alpha, const float *A, long am,
                                                                        long ak, const float *B, long ldb,
                                                                        float *Cm, long ldc, const float *bias,
                                                                        const float *R) {
	__m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
	__m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
	for (long k = 0; k < K; k++) {
		const float *a = A + k * ak, *b = B + k * ldb;
		__m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), x;
#define ROW(r, lo, hi)                                                                                                 \
	x = _mm512_set1_ps(a[(r) * am]);                                                                               \
	lo = _mm512_fmadd_ps(x, b0, lo);                                                                               \
	hi = _mm512_fmadd_ps(x, b1, hi);
		ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31)
		ROW(4, c40, c41) ROW(5, c50, c51) ROW(6, c60, c61) ROW(7, c70, c71)
#undef ROW
	}
	__m512 al = _mm512_set1_ps(alpha), z = _mm512_setzero_ps();
	// C = α·acc, plus bias[r] and R[r][…] (the same layout as C) where given.
#define ST(r, lo, hi)                                                                                                  \
	{                                                                                                              \
		__m512 b0 = bias ? _mm512_set1_ps(bias[r]) : z, b1 = b0;                                               \
		if (R) {                                                                                               \
			b0 = _mm512_add_ps(b0, _mm512_loadu_ps(R + (r) * ldc));                                        \
			b1 = _mm512_add_ps(b1, _mm512_loadu_ps(R + (r) * ldc + 16));                                   \
		}                                                                                                      \
		_mm512_storeu_ps(Cm + (r) * ldc, _mm512_fmadd_ps(al, lo, b0));                                         \
		_mm512_storeu_ps(Cm + (r) * ldc + 16, _mm512_fmadd_ps(al, hi, b1));                                    \
	}
	ST(0, c00, c01) ST(1, c10, c11) ST(2, c20, c21) ST(3, c30, c31)
	ST(4, c40, c41) ST(5, c50, c51) ST(6, c60, c61) ST(7, c70, c71)
#undef ST
}

// t16 transposes the 16×16 tile at s (row pitch ls) into d (row pitch ld) in registers.
__attribute__((target("avx512f"))) static void t16(float *d, long ld, const float *s, long ls) {
	__m512 r[16], u[16];
	for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(s + i * ls);
	for (int i = 0; i < 16; i += 2) { // rows 2i, 2i+1 interleaved element by element, in each 128-bit lane
		u[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
		u[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
	}
	for (int g = 0; g < 16; g += 4) { // r[g + j], lane l: column 4l + j of rows g…g+3
		for (int j = 0; j < 2; j++) {
			__m512d a = _mm512_castps_pd(u[g + j]), b = _mm512_castps_pd(u[g + 2 + j]);
			r[g + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
			r[g + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
		}
	}
	for (int j = 0; j < 4; j++) { // column 4l + j gathers lane l of r[j], r[4 + j], r[8 + j], r[12 + j]
		__m512 a1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44), a2 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xee);
		__m512 b1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44), b2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xee);
		_mm512_storeu_ps(d + j * ld, _mm512_shuffle_f32x4(a1, b1, 0x88));
		_mm512_storeu_ps(d + (4 + j) * ld, _mm512_shuffle_f32x4(a1, b1, 0xdd));
		_mm512_storeu_ps(d + (8 + j) * ld, _mm512_shuffle_f32x4(a2, b2, 0x88));
		_mm512_storeu_ps(d + (12 + j) * ld, _mm512_shuffle_f32x4(a2, b2, 0xdd));
	}
}

// transpose writes d[j][i] = s[i][j] for s [rows][cols], both multiples of 16.
__attribute__((target("avx512f"))) static void transpose(float *d, const float *s, long rows, long cols) {
	for (long i = 0; i < rows; i += 16)
		for (long j = 0; j < cols; j += 16) t16(d + j * rows + i, rows, s + i * cols + j, cols);
}

// pack_b copies B [K][N] (row pitch ldb) into panels [N/32][K][32], each read front to back by the kernel.
__attribute__((target("avx512f"))) static void pack_b(float *d, const float *B, long ldb, long K, long N) {
	for (long n0 = 0; n0 < N; n0 += NR)
		for (long k = 0; k < K; k++, d += NR) {
			_mm512_storeu_ps(d, _mm512_loadu_ps(B + k * ldb + n0));
			_mm512_storeu_ps(d + 16, _mm512_loadu_ps(B + k * ldb + n0 + 16));
		}
}

// pack_bt packs B [K][N] given as its transpose S [N][K] (row pitch ls) into the same panels as pack_b.
__attribute__((target("avx512f"))) static void pack_bt(float *d, const float *S, long ls, long K, long N) {
	for (long n0 = 0; n0 < N; n0 += NR, d += K * NR)
		for (long k0 = 0; k0 < K; k0 += 16) {
			t16(d + k0 * NR, NR, S + n0 * ls + k0, ls);
			t16(d + k0 * NR + 16, NR, S + (n0 + 16) * ls + k0, ls);
		}
}

// mm: C [M][N] (row pitch ldc) = α A·B, with A(m, k) = A[m·am + k·ak] and B packed by pack_b or pack_bt. Either
// am or ak is 1. With ak = 1 (rows of A contiguous) the kernel reads A in place; otherwise each block of 8 rows
// of A is first copied to ap [K][8], so that the kernel reads one cache line per two steps of k instead of one
// line, far from the last, per step.
__attribute__((target("avx512f"))) static void mm(long M, long N, long K, float alpha, const float *A, long am,
                                                  long ak, const float *Bp, float *Cm, long ldc, float *ap) {
	for (long m0 = 0; m0 < M; m0 += MR) {
		if (ak == 1) {
			for (long p = 0; p < N / NR; p++)
				mk(K, alpha, A + m0 * am, am, 1, Bp + p * K * NR, NR, Cm + m0 * ldc + p * NR, ldc, 0, 0);
			continue;
		}
		for (long k = 0; k < K; k++) _mm256_storeu_ps(ap + k * MR, _mm256_loadu_ps(A + m0 + k * ak));
		for (long p = 0; p < N / NR; p++)
			mk(K, alpha, ap, 1, MR, Bp + p * K * NR, NR, Cm + m0 * ldc + p * NR, ldc, 0, 0);
	}
}

// k_attn_ok says whether these kernels take attention over t positions with c channels here.
int k_attn_ok(long c, long t) {
	return k_attn_cap && c % NR == 0 && c % MR == 0 && t % NR == 0 && t % MR == 0 &&
	       __builtin_cpu_supports("avx512f");
}

// Scratch: packed B (t·max(t, c)), a transposed output (t·c), 8 rows of A (8·max(t, c)).
long k_attn_scratch_len(long c, long t) { return (t + 8) * (t > c ? t : c) + t * c; }

// k_attn_fwd: for one image, from qkv [3c][t], w = softmax(scale·qᵀk) [t][t] and h = v·wᵀ [c][t].
void k_attn_fwd(float *h, float *w, const float *qkv, long c, long t, float scale, float *scratch) {
	const float *q = qkv, *k = qkv + c * t, *v = qkv + 2 * c * t;
	float *bp = scratch, *ht = scratch + t * (t > c ? t : c), *ap = ht + t * c;
	pack_b(bp, k, t, c, t);
	mm(t, t, c, scale, q, 1, t, bp, w, t, ap); // w[i][j] = scale Σ_c q[c][i] k[c][j]
	k_softmax(w, w, t, 0, t);
	pack_bt(bp, v, t, t, c);
	mm(t, c, t, 1, w, t, 1, bp, ht, c, ap); // ht[i][c] = Σ_j w[i][j] v[c][j]
	transpose(h, ht, t, c);
}

// k_attn_bwd: for one image, from dh [c][t] and the forward's qkv and w, dqkv [3c][t]; dw [t][t] is left holding
// the softmax's input gradient.
void k_attn_bwd(float *dqkv, float *dw, const float *dh, const float *qkv, const float *w, long c, long t, float scale,
                float *scratch) {
	const float *q = qkv, *k = qkv + c * t, *v = qkv + 2 * c * t;
	float *dq = dqkv, *dk = dqkv + c * t, *dv = dqkv + 2 * c * t;
	float *bp = scratch, *dqt = scratch + t * (t > c ? t : c), *ap = dqt + t * c;
	pack_b(bp, v, t, c, t);
	mm(t, t, c, 1, dh, 1, t, bp, dw, t, ap); // dw[i][j] = Σ_c dh[c][i] v[c][j]
	pack_b(bp, w, t, t, t);
	mm(c, t, t, 1, dh, t, 1, bp, dv, t, ap); // dv[c][j] = Σ_i dh[c][i] w[i][j]
	k_softmax_bwd(dw, w, dw, t, 0, t);       // dS
	pack_bt(bp, k, t, t, c);
	mm(t, c, t, scale, dw, t, 1, bp, dqt, c, ap); // dqt[i][c] = scale Σ_j dS[i][j] k[c][j]
	transpose(dq, dqt, t, c);
	pack_b(bp, dw, t, t, t);
	mm(c, t, t, scale, q, t, 1, bp, dk, t, ap); // dk[c][j] = scale Σ_i q[c][i] dS[i][j]
}

// k_conv1x1_ok says whether k_conv1x1 takes a 1×1 convolution to cout channels over hw positions here.
int k_conv1x1_ok(long cout, long hw) { return k_attn_cap && cout % MR == 0 && hw % NR == 0 && __builtin_cpu_supports("avx512f"); }

long k_conv1x1_scratch_len(long cin, long hw) { return cin * hw; }

// k_conv1x1: for one image, y [cout][hw] = w [cout][cin] · x [cin][hw] + bias (may be NULL) + res (may be NULL;
// may be y itself: each block of y is read before it is written).
__attribute__((target("avx512f"))) void k_conv1x1(float *y, const float *x, const float *w, const float *bias,
                                                  const float *res, long cin, long cout, long hw, float *scratch) {
	pack_b(scratch, x, hw, cin, hw);
	for (long m0 = 0; m0 < cout; m0 += MR)
		for (long p = 0; p < hw / NR; p++)
			mk(cin, 1, w + m0 * cin, cin, 1, scratch + p * cin * NR, NR, y + m0 * hw + p * NR, hw,
			   bias ? bias + m0 : 0, res ? res + m0 * hw + p * NR : 0);
}
