package nn

import (
	"math"

	"dae/tensor"
)

// Attention is the reference's AttentionBlock with one head: x + proj_out(attn(qkv(GN(x)))), where attention
// scales q and k each by C^−¼. qkv and proj_out are 1×1 convolutions stored as Conv1d weights [out, in, 1].
type Attention struct {
	Name      string
	C         int
	Norm      *GroupNorm
	QKV, Proj *Conv2d
	n, t      int
	qkv, w    *tensor.Tensor // [N, 3C, T], softmax weights [N, T, T]
	h, y      *tensor.Tensor
	dw, dqkv  *tensor.Tensor
	dh, dx    *tensor.Tensor
}

// NewAttention defines name.norm, name.qkv and name.proj_out.
func NewAttention(ps *Params, name string, c int) *Attention {
	a := &Attention{Name: name, C: c, Norm: NewGroupNorm(ps, name+".norm", c)}
	a.QKV = &Conv2d{Name: name + ".qkv", Cin: c, Cout: 3 * c, K: 1,
		W: ps.New(name+".qkv.weight", 3*c, c, 1), B: ps.New(name+".qkv.bias", 3*c)}
	a.Proj = &Conv2d{Name: name + ".proj_out", Cin: c, Cout: c, K: 1,
		W: ps.New(name+".proj_out.weight", c, c, 1), B: ps.New(name+".proj_out.bias", c)}
	return a
}

// Forward applies the block to x [N, C, H, W].
func (a *Attention) Forward(x *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 4 || x.Shape[1] != a.C {
		shapeFail(a.Name, x, "[N, %d, H, W]", a.C)
	}
	d := x.Dev
	n, c, t := x.Shape[0], a.C, x.Shape[2]*x.Shape[3]
	a.n, a.t = n, t
	hn := a.Norm.Forward(x, tensor.GNMod{})
	a.qkv = a.QKV.Forward(hn)
	scale := float32(1 / math.Sqrt(float64(c)))
	a.w = tensor.Ensure(d, a.w, n, t, t)
	a.h = tensor.Ensure(d, a.h, n, c, x.Shape[2], x.Shape[3])
	if fused, ok := d.(attentionCore); ok && fused.AttentionCore(a.h, a.w, a.qkv, n, c, t, scale) {
		return a.finish(x)
	}
	// w[t,s] = Σ_c q[c,t]·k[c,s] / √C
	d.Gemm(tensor.GemmArgs{TransA: true, M: t, N: t, K: c, Alpha: scale, A: a.qkv, LDA: t,
		B: a.qkv.View(c*t, a.qkv.Len()-c*t), LDB: t, C: a.w,
		Batch: n, StrideA: 3 * c * t, StrideB: 3 * c * t, StrideC: t * t})
	d.Softmax(a.w, a.w, n*t, t)
	// h[c,t] = Σ_s v[c,s]·w[t,s]
	d.Gemm(tensor.GemmArgs{TransB: true, M: c, N: t, K: t, Alpha: 1, A: a.qkv.View(2*c*t, a.qkv.Len()-2*c*t),
		LDA: t, B: a.w, LDB: t, C: a.h, Batch: n, StrideA: 3 * c * t, StrideB: t * t, StrideC: c * t})
	return a.finish(x)
}

// attentionCore is a device that computes the attention products and softmax of a batch in one call, or says it
// did not ((*tensor.CPU).AttentionCore: each image's steps back to back, in cache).
type attentionCore interface {
	AttentionCore(h, w, qkv *tensor.Tensor, n, c, t int, scale float32) bool
}

// finish projects the attention output a.h and adds the input x.
func (a *Attention) finish(x *tensor.Tensor) *tensor.Tensor {
	d := x.Dev
	p := a.Proj.Forward(a.h)
	a.y = tensor.Ensure(d, a.y, x.Shape...)
	d.Lincomb(a.y, 1, x, 1, p)
	return a.y
}

func (a *Attention) Backward(dy *tensor.Tensor) *tensor.Tensor {
	checkGrad(a.Name, dy, a.y.Shape)
	d := dy.Dev
	n, c, t := a.n, a.C, a.t
	scale := float32(1 / math.Sqrt(float64(c)))
	dh := a.Proj.Backward(dy)
	a.dqkv = tensor.Ensure(d, a.dqkv, n, 3*c, t)
	q := a.qkv
	k := a.qkv.View(c*t, a.qkv.Len()-c*t)
	v := a.qkv.View(2*c*t, a.qkv.Len()-2*c*t)
	dq := a.dqkv
	dk := a.dqkv.View(c*t, a.dqkv.Len()-c*t)
	dv := a.dqkv.View(2*c*t, a.dqkv.Len()-2*c*t)
	a.dw = tensor.Ensure(d, a.dw, n, t, t)
	if fused, ok := d.(attentionCoreBackward); ok && fused.AttentionCoreBackward(a.dqkv, a.dw, dh, a.qkv, a.w, n, c, t, scale) {
		return a.finishBackward(dy)
	}
	// dw[t,s] = Σ_c dh[c,t]·v[c,s]
	d.Gemm(tensor.GemmArgs{TransA: true, M: t, N: t, K: c, Alpha: 1, A: dh, LDA: t, B: v, LDB: t, C: a.dw,
		Batch: n, StrideA: c * t, StrideB: 3 * c * t, StrideC: t * t})
	// dv[c,s] = Σ_t dh[c,t]·w[t,s]
	d.Gemm(tensor.GemmArgs{M: c, N: t, K: t, Alpha: 1, A: dh, LDA: t, B: a.w, LDB: t, C: dv, LDC: t,
		Batch: n, StrideA: c * t, StrideB: t * t, StrideC: 3 * c * t})
	d.SoftmaxBackward(a.dw, a.w, a.dw, n*t, t)
	// dq[c,t] = Σ_s k[c,s]·dS[t,s]/√C ; dk[c,s] = Σ_t q[c,t]·dS[t,s]/√C
	d.Gemm(tensor.GemmArgs{TransB: true, M: c, N: t, K: t, Alpha: scale, A: k, LDA: t, B: a.dw, LDB: t, C: dq,
		LDC: t, Batch: n, StrideA: 3 * c * t, StrideB: t * t, StrideC: 3 * c * t})
	d.Gemm(tensor.GemmArgs{M: c, N: t, K: t, Alpha: scale, A: q, LDA: t, B: a.dw, LDB: t, C: dk, LDC: t,
		Batch: n, StrideA: 3 * c * t, StrideB: t * t, StrideC: 3 * c * t})
	return a.finishBackward(dy)
}

// attentionCoreBackward is a device that computes the attention backward of a batch in one call, or says it
// did not ((*tensor.CPU).AttentionCoreBackward).
type attentionCoreBackward interface {
	AttentionCoreBackward(dqkv, dw, dh, qkv, w *tensor.Tensor, n, c, t int, scale float32) bool
}

// finishBackward takes a.dqkv through qkv and the norm, and adds dy's residual path.
func (a *Attention) finishBackward(dy *tensor.Tensor) *tensor.Tensor {
	d := dy.Dev
	n, c := a.n, a.C
	dn := a.QKV.Backward(a.dqkv.Reshape(n, 3*c, a.y.Shape[2], a.y.Shape[3]))
	dxn := a.Norm.Backward(dn)
	a.dx = tensor.Ensure(d, a.dx, a.y.Shape...)
	d.Lincomb(a.dx, 1, dy, 1, dxn)
	return a.dx
}
