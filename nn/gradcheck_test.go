package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"dae/tensor"
)

var cpu = tensor.NewCPU(0)

func randT(rng *rand.Rand, shape ...int) *tensor.Tensor {
	t := cpu.New(shape...)
	for i := range t.Data {
		t.Data[i] = float32(rng.NormFloat64())
	}
	return t
}

// gradCheck compares the analytic gradient of L = Σ f(x)⊙r with central differences, for each tensor in wrt
// (inputs and parameters) at up to probes random coordinates. backward must return after filling the gradients
// listed in grads (same order as wrt).
func gradCheck(t *testing.T, name string, rng *rand.Rand, wrt []*tensor.Tensor, forward func() *tensor.Tensor,
	backward func(dy *tensor.Tensor) []*tensor.Tensor, probes int) {
	t.Helper()
	y := forward()
	r := randT(rng, y.Shape...)
	loss := func() float64 {
		y := forward()
		s := 0.0
		for i, v := range y.Data {
			s += float64(v) * float64(r.Data[i])
		}
		return s
	}
	// analytic
	forward()
	grads := backward(r)
	copies := make([][]float32, len(grads))
	for i, g := range grads {
		copies[i] = append([]float32(nil), g.Data...)
	}
	const eps = 1e-2
	for wi, x := range wrt {
		for p := 0; p < probes; p++ {
			i := rng.IntN(x.Len())
			old := x.Data[i]
			x.Data[i] = old + eps
			lp := loss()
			x.Data[i] = old - eps
			lm := loss()
			x.Data[i] = old
			num := (lp - lm) / (2 * eps)
			ana := float64(copies[wi][i])
			if diff := math.Abs(num - ana); diff > 2e-2*math.Max(1, math.Abs(num)) {
				t.Errorf("%s: d/d(input %d)[%d]: analytic %.5f, numeric %.5f", name, wi, i, ana, num)
			}
		}
	}
}

func TestGradConv(t *testing.T) {
	for _, tc := range []struct {
		n, cin, cout, h, w, k int
	}{{2, 3, 5, 6, 7, 3}, {1, 4, 3, 1, 1, 3}, {2, 5, 7, 4, 3, 1}, {1, 9, 2, 5, 5, 3}} {
		rng := rand.New(rand.NewPCG(1, uint64(tc.k+tc.cin)))
		ps := NewParams(cpu)
		c := NewConv2d(ps, "conv", tc.cin, tc.cout, tc.k)
		Init{rng}.TorchDefault(c.W, c.B, tc.cin*tc.k*tc.k)
		x := randT(rng, tc.n, tc.cin, tc.h, tc.w)
		gradCheck(t, "conv", rng, []*tensor.Tensor{x, c.W.W, c.B.W},
			func() *tensor.Tensor { return c.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				ps.ZeroGrad()
				return []*tensor.Tensor{c.Backward(dy), c.W.G, c.B.G}
			}, 20)
	}
}

func TestGradGroupNormMod(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	for _, silu := range []bool{false, true} {
		ps := NewParams(cpu)
		n, c, h, w := 2, 6, 3, 5
		g := NewGroupNorm(ps, "gn", c)
		g.G = 3
		Init{rng}.Normal(g.Gamma, 1)
		Init{rng}.Normal(g.Beta, 1)
		x := randT(rng, n, c, h, w)
		sc, sh, z := randT(rng, n, c), randT(rng, n, c), randT(rng, n, c)
		mod := tensor.GNMod{Scale: sc, Shift: sh, ZScale: z, SiLU: silu}
		gradCheck(t, "groupnorm", rng, []*tensor.Tensor{x, g.Gamma.W, g.Beta.W, sc, sh, z},
			func() *tensor.Tensor { return g.Forward(x, mod) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				ps.ZeroGrad()
				dx := g.Backward(dy)
				return []*tensor.Tensor{dx, g.Gamma.G, g.Beta.G, g.DScale, g.DShift, g.DZ}
			}, 15)
	}
}

func TestGradAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	ps := NewParams(cpu)
	a := NewAttention(ps, "attn", 6)
	for _, p := range ps.List {
		Init{rng}.Normal(p, 0.5)
	}
	x := randT(rng, 2, 6, 3, 2)
	wrt := []*tensor.Tensor{x}
	for _, p := range ps.List {
		wrt = append(wrt, p.W)
	}
	gradCheck(t, "attention", rng, wrt,
		func() *tensor.Tensor { return a.Forward(x) },
		func(dy *tensor.Tensor) []*tensor.Tensor {
			ps.ZeroGrad()
			out := []*tensor.Tensor{a.Backward(dy)}
			for _, p := range ps.List {
				out = append(out, p.G)
			}
			return out
		}, 10)
}
