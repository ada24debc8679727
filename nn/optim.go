package nn

import (
	"math"

	"dae/tensor"
)

// Adam is Adam (WeightDecay 0) or AdamW (decoupled WeightDecay > 0), with PyTorch's defaults.
type Adam struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	Step                               int
	m, v                               map[*Param][2]*tensor.Tensor
}

// NewAdam returns Adam with β = (0.9, 0.999), ε = 1e-8.
func NewAdam(lr, weightDecay float32) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay,
		m: map[*Param][2]*tensor.Tensor{}}
}

func (o *Adam) state(p *Param) [2]*tensor.Tensor {
	s, ok := o.m[p]
	if !ok {
		s = [2]*tensor.Tensor{p.W.Dev.New(p.W.Shape...), p.W.Dev.New(p.W.Shape...)}
		o.m[p] = s
	}
	return s
}

// Update applies one step to every parameter of ps from its gradient.
func (o *Adam) Update(ps *Params) {
	o.Step++
	bc1 := float32(1 - math.Pow(float64(o.Beta1), float64(o.Step)))
	bc2 := float32(1 - math.Pow(float64(o.Beta2), float64(o.Step)))
	for _, p := range ps.List {
		s := o.state(p)
		p.W.Dev.Adam(p.W, p.G, s[0], s[1], o.LR, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, bc1, bc2)
	}
}

// Moments returns the first and second moments of p (created on first use), for checkpoints.
func (o *Adam) Moments(p *Param) (m, v *tensor.Tensor) {
	s := o.state(p)
	return s[0], s[1]
}

// ClipGradNorm scales all gradients so that their global L2 norm is at most maxNorm, as PyTorch's
// clip_grad_norm_ does, and returns the norm before clipping.
func ClipGradNorm(ps *Params, maxNorm float64) float64 {
	s := 0.0
	for _, p := range ps.List {
		s += p.G.Dev.SumSquares(p.G)
	}
	norm := math.Sqrt(s)
	if c := maxNorm / (norm + 1e-6); c < 1 {
		for _, p := range ps.List {
			p.G.Dev.Scale(p.G, float32(c))
		}
	}
	return norm
}

// EMA keeps an exponential moving average of parameters in a shadow set with the same names.
type EMA struct {
	Shadow *Params
	Decay  float64
}

// NewEMA copies ps into a new shadow set on the same device.
func NewEMA(ps *Params, decay float64) *EMA {
	sh := &Params{Dev: ps.Dev, byName: map[string]*Param{}}
	for _, p := range ps.List {
		q := &Param{Name: p.Name, W: ps.Dev.New(p.W.Shape...)}
		ps.Dev.Copy(q.W, p.W)
		sh.List = append(sh.List, q)
		sh.byName[p.Name] = q
	}
	return &EMA{Shadow: sh, Decay: decay}
}

// Update moves the shadow toward ps with the given decay (use a warm-up such as min(Decay, (1+n)/(10+n))).
func (e *EMA) Update(ps *Params, decay float64) {
	for i, p := range ps.List {
		ps.Dev.EMA(e.Shadow.List[i].W, p.W, float32(decay))
	}
}

// WarmDecay is min(decay, (1+step)/(10+step)).
func WarmDecay(decay float64, step int) float64 {
	return min(decay, float64(1+step)/float64(10+step))
}
