package nn

import "dae/tensor"

// GroupNorm normalises [N, C, H, W] (or [N, C, T]) in min(32, C) groups with eps 1e-5, and can chain the model's
// AdaGN scale/shift, semantic scale and SiLU in the same pass. Weight and bias [C].
type GroupNorm struct {
	Name               string
	Gamma, Beta        *Param
	C, G               int
	Eps                float32
	x, y, mean, rstd   *tensor.Tensor
	dx                 *tensor.Tensor
	mod                tensor.GNMod
	DScale, DShift, DZ *tensor.Tensor // gradients of the last mod, [N, C], after Backward
}

// Groups is the reference's group count for c channels.
func Groups(c int) int { return min(32, c) }

// NewGroupNorm defines name.weight (ones) and name.bias in ps.
func NewGroupNorm(ps *Params, name string, c int) *GroupNorm {
	g := &GroupNorm{Name: name, C: c, G: Groups(c), Eps: 1e-5,
		Gamma: ps.New(name+".weight", c), Beta: ps.New(name+".bias", c)}
	ps.Dev.Fill(g.Gamma.W, 1)
	return g
}

func (g *GroupNorm) dims(x *tensor.Tensor) (n, hw int) {
	if len(x.Shape) < 2 || x.Shape[1] != g.C || g.C%g.G != 0 {
		shapeFail(g.Name, x, "[N, %d, ...]", g.C)
	}
	hw = 1
	for _, s := range x.Shape[2:] {
		hw *= s
	}
	return x.Shape[0], hw
}

// Forward normalises x and applies mod (its tensors [N, C]).
func (g *GroupNorm) Forward(x *tensor.Tensor, mod tensor.GNMod) *tensor.Tensor {
	n, hw := g.dims(x)
	for _, m := range []*tensor.Tensor{mod.Scale, mod.Shift, mod.ZScale} {
		if m != nil && m.Len() != n*g.C {
			shapeFail(g.Name+" condition", m, "[%d, %d]", n, g.C)
		}
	}
	d := x.Dev
	g.x, g.mod = x, mod
	g.y = tensor.Ensure(d, g.y, x.Shape...)
	g.mean = tensor.Ensure(d, g.mean, n, g.G)
	g.rstd = tensor.Ensure(d, g.rstd, n, g.G)
	d.GroupNorm(g.y, x, g.Gamma.W, g.Beta.W, g.mean, g.rstd, n, g.C, hw, g.G, g.Eps, mod)
	return g.y
}

// Backward returns dL/dx; the gradients of the mod's scale, shift and z-scale are left in DScale, DShift, DZ.
func (g *GroupNorm) Backward(dy *tensor.Tensor) *tensor.Tensor {
	checkGrad(g.Name, dy, g.x.Shape)
	d := dy.Dev
	n, hw := g.dims(g.x)
	g.dx = tensor.Ensure(d, g.dx, g.x.Shape...)
	gr := tensor.GNGrads{DX: g.dx, DGamma: g.Gamma.G, DBeta: g.Beta.G}
	if g.mod.Scale != nil {
		g.DScale = tensor.Ensure(d, g.DScale, n, g.C)
		gr.DScale = g.DScale
	}
	if g.mod.Shift != nil {
		g.DShift = tensor.Ensure(d, g.DShift, n, g.C)
		gr.DShift = g.DShift
	}
	if g.mod.ZScale != nil {
		g.DZ = tensor.Ensure(d, g.DZ, n, g.C)
		gr.DZScale = g.DZ
	}
	d.GroupNormBackward(gr, dy, g.x, g.Gamma.W, g.Beta.W, g.mean, g.rstd, n, g.C, hw, g.G, g.mod)
	return g.dx
}

// LayerNorm normalises the last axis of [N, D], eps 1e-5. Weight and bias [D].
type LayerNorm struct {
	Name             string
	Gamma, Beta      *Param
	D                int
	Eps              float32
	x, y, mean, rstd *tensor.Tensor
	dx               *tensor.Tensor
}

func NewLayerNorm(ps *Params, name string, dim int) *LayerNorm {
	l := &LayerNorm{Name: name, D: dim, Eps: 1e-5, Gamma: ps.New(name+".weight", dim), Beta: ps.New(name+".bias", dim)}
	ps.Dev.Fill(l.Gamma.W, 1)
	return l
}

func (l *LayerNorm) Forward(x *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 2 || x.Shape[1] != l.D {
		shapeFail(l.Name, x, "[N, %d]", l.D)
	}
	d := x.Dev
	n := x.Shape[0]
	l.x = x
	l.y = tensor.Ensure(d, l.y, n, l.D)
	l.mean = tensor.Ensure(d, l.mean, n)
	l.rstd = tensor.Ensure(d, l.rstd, n)
	d.LayerNorm(l.y, x, l.Gamma.W, l.Beta.W, l.mean, l.rstd, n, l.D, l.Eps)
	return l.y
}

func (l *LayerNorm) Backward(dy *tensor.Tensor) *tensor.Tensor {
	checkGrad(l.Name, dy, l.x.Shape)
	d := dy.Dev
	n := l.x.Shape[0]
	l.dx = tensor.Ensure(d, l.dx, n, l.D)
	d.LayerNormBackward(l.dx, l.Gamma.G, l.Beta.G, dy, l.x, l.Gamma.W, l.mean, l.rstd, n, l.D)
	return l.dx
}
