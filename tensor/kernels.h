// CPU kernels of the tensor package. Each works on a sub-range so that Go can split it over the cores.
#include <stdint.h>

void k_silu(float *y, const float *x, long lo, long hi);
void k_silu_bwd(float *dx, const float *x, const float *dy, long lo, long hi);
void k_axpby(float a, const float *x, float b, float *y, long lo, long hi);
void k_lincomb(float *d, float a, const float *x, float b, const float *y, long lo, long hi);
void k_mul(float *d, const float *x, const float *y, long lo, long hi);
void k_scale(float *t, float a, long lo, long hi);
void k_clamp(float *t, float l, float h, long lo, long hi);
double k_sumsq(const float *x, long lo, long hi);
void k_add_bias(float *y, const float *b, long c, long hw, long plo, long phi);
void k_chan_sum(float *db, const float *dy, long n, long c, long hw, long clo, long chi);
void k_im2col(float *col, const float *x, long n, long c, long h, long w, long k, long pad, long rlo, long rhi);
void k_col2im(float *dx, const float *col, long n, long c, long h, long w, long k, long pad, long clo, long chi);
void k_nchw_cnhw(float *d, const float *x, long n, long c, long hw, long clo, long chi);
void k_cnhw_nchw(float *d, const float *x, const float *bias, long n, long c, long hw, long clo, long chi);
void k_gn_fwd(float *y, const float *x, const float *gamma, const float *beta, float *mean, float *rstd,
              const float *scale, const float *shift, const float *zscale, int silu,
              long c, long hw, long g, float eps, long lo, long hi);
void k_gn_bwd(float *dx, float *dgamma_p, float *dbeta_p, float *dscale, float *dshift, float *dz,
              const float *dy, const float *x, const float *gamma, const float *beta, const float *mean,
              const float *rstd, const float *scale, const float *shift, const float *zscale, int silu,
              long c, long hw, long g, long lo, long hi);
void k_ln_fwd(float *y, const float *x, const float *gamma, const float *beta, float *mean, float *rstd, long d,
              float eps, long lo, long hi);
void k_ln_bwd(float *dx, float *dgamma_p, float *dbeta_p, const float *dy, const float *x, const float *gamma,
              const float *mean, const float *rstd, long d, long lo, long hi);
void k_softmax(float *y, const float *x, long d, long lo, long hi);
void k_softmax_bwd(float *dx, const float *y, const float *dy, long d, long lo, long hi);
void k_avgpool2(float *y, const float *x, long h, long w, long lo, long hi);
void k_avgpool2_bwd(float *dx, const float *dy, long h, long w, long lo, long hi);
void k_up2(float *y, const float *x, long h, long w, long lo, long hi);
void k_up2_bwd(float *dx, const float *dy, long h, long w, long lo, long hi);
void k_spmean(float *y, const float *x, long hw, long lo, long hi);
void k_spmean_bwd(float *dx, const float *dy, long hw, long lo, long hi);
double k_mse(float *g, const float *p, const float *t, float gs, long lo, long hi);
double k_l1(float *g, const float *p, const float *t, float gs, long lo, long hi);
void k_adam(float *w, const float *g, float *m, float *v, float lr, float b1, float b2, float eps, float wd,
            float bc1, float bc2, long lo, long hi);
void k_ema(float *e, const float *w, float decay, long lo, long hi);
void k_copy_blocks(float *dst, long dstStride, const float *src, long srcStride, long blockLen, int acc, long lo,
                   long hi);
void k_dropout_mask(float *m, float p, uint64_t seed, long lo, long hi);
long k_conv3x3_packed_len(long cout, long cin);
long k_conv3x3_scratch_len(long cin, long cout, long h, long w);
void k_conv3x3_pack(float *wp, const float *w, long cout, long cin, int flip, long b0, long b1);
void k_conv3x3(float *y, const float *x, const float *wp, const float *bias, const float *res, long cin, long cout,
               long h, long w, float *scratch);
int k_conv3x3_small(float *y, const float *x, const float *wp, const float *bias, const float *res, long n,
                    long cin, long cout, long h, long w);
extern int k_conv3x3_cap;
extern int k_conv3x3_dw_cl;
long k_conv3x3_dw_scratch_len(long n, long cin, long cout, long h, long w);
void k_conv3x3_dw(float *dw, const float *x, const float *dy, long n, long cin, long cout, long h, long w,
                  float *scratch);
int k_conv3x3_fast(void);
double k_fma_peak(long iters, int *lanes, int *fmas);
extern int k_attn_cap;
int k_attn_ok(long c, long t);
long k_attn_scratch_len(long c, long t);
void k_attn_fwd(float *h, float *w, const float *qkv, long c, long t, float scale, float *scratch);
void k_attn_bwd(float *dqkv, float *dw, const float *dh, const float *qkv, const float *w, long c, long t, float scale,
                float *scratch);
int k_conv1x1_ok(long cout, long hw);
long k_conv1x1_scratch_len(long cin, long hw);
void k_conv1x1(float *y, const float *x, const float *w, const float *bias, const float *res, long cin, long cout,
               long hw, float *scratch);
