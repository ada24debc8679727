package nn

import (
	"fmt"
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

// gcOpts tunes gradCheck. The defaults catch a wrong sign, a missing term or a gradient sent to the wrong
// element (as a padding off-by-one does): those give errors of the order of the gradient itself, while float32
// forward passes and O(eps²) truncation stay below a few 1e-4 here.
type gcOpts struct {
	eps    float64 // finite-difference step
	rtol   float64 // allowed |num−ana| relative to max(|num|, scale of the tensor's gradient)
	probes int     // coordinates checked per tensor when it has more than allCoords elements
}

const allCoords = 96

// gradCheck compares the analytic gradient of L = Σ f(·)⊙r (accumulated in float64) with central differences,
// for each tensor in wrt (inputs and parameters). backward receives dL/dy = r and returns the gradients in the
// order of wrt; it must overwrite or zero what it accumulates into. Each tensor is checked along one random
// direction (which touches every coordinate) and coordinate by coordinate (all of them for small tensors).
func gradCheck(t *testing.T, name string, rng *rand.Rand, wrt []*tensor.Tensor, forward func() *tensor.Tensor,
	backward func(dy *tensor.Tensor) []*tensor.Tensor, o gcOpts) {
	t.Helper()
	if o.eps == 0 {
		o.eps = 1e-2
	}
	if o.rtol == 0 {
		o.rtol = 3e-3
	}
	if o.probes == 0 {
		o.probes = 24
	}
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
	// The loss is a sum of float32 products, each rounded to about 2⁻²⁴ of itself (more where the op amplifies
	// rounding); a difference quotient cannot resolve less than that divided by the step.
	noise := 0.0
	for i, v := range forward().Data {
		noise += math.Abs(float64(v) * float64(r.Data[i]))
	}
	noise *= 8 * 0x1p-24
	grads := backward(r)
	if len(grads) != len(wrt) {
		t.Fatalf("%s: backward returned %d gradients for %d tensors", name, len(grads), len(wrt))
	}
	ana := make([][]float32, len(grads))
	for i, g := range grads {
		if g == nil || g.Len() != wrt[i].Len() {
			t.Fatalf("%s: gradient %d is %v, want %v", name, i, g, wrt[i])
		}
		ana[i] = append([]float32(nil), g.Data...)
	}
	fails := 0
	report := func(format string, args ...any) {
		t.Helper()
		if fails++; fails <= 8 {
			t.Errorf(name+": "+format, args...)
		}
	}
	for wi, x := range wrt {
		scale := 0.0 // RMS of the analytic gradient: the yardstick for coordinates whose gradient is ~0
		for _, g := range ana[wi] {
			scale += float64(g) * float64(g)
		}
		scale = math.Sqrt(scale / float64(len(ana[wi])))
		// Directional derivative along a random ±1 direction.
		dir := make([]float32, x.Len())
		want := 0.0
		for i := range dir {
			dir[i] = float32(2*rng.IntN(2) - 1)
			want += float64(dir[i]) * float64(ana[wi][i])
		}
		orig := append([]float32(nil), x.Data...)
		h := o.eps / math.Sqrt(float64(x.Len()))
		for i := range x.Data {
			x.Data[i] = orig[i] + float32(h)*dir[i]
		}
		lp := loss()
		for i := range x.Data {
			x.Data[i] = orig[i] - float32(h)*dir[i]
		}
		lm := loss()
		copy(x.Data, orig)
		got := (lp - lm) / (2 * h)
		if d := math.Abs(got - want); d > o.rtol*math.Max(math.Abs(want), scale*math.Sqrt(float64(x.Len())))+noise/h {
			report("tensor %d %v: directional derivative: analytic %.6g, numeric %.6g", wi, x.Shape, want, got)
		}
		// Coordinates.
		idx := make([]int, 0, allCoords)
		if x.Len() <= allCoords {
			for i := range x.Len() {
				idx = append(idx, i)
			}
		} else {
			idx = append(idx, 0, x.Len()-1)
			for range o.probes {
				idx = append(idx, rng.IntN(x.Len()))
			}
		}
		for _, i := range idx {
			old := x.Data[i]
			x.Data[i] = old + float32(o.eps)
			lp := loss()
			x.Data[i] = old - float32(o.eps)
			lm := loss()
			x.Data[i] = old
			num := (lp - lm) / (2 * o.eps)
			a := float64(ana[wi][i])
			if d := math.Abs(num - a); d > o.rtol*math.Max(math.Abs(num), scale)+noise/o.eps {
				report("tensor %d %v [%d]: analytic %.6g, numeric %.6g", wi, x.Shape, i, a, num)
			}
		}
	}
	if fails > 8 {
		t.Errorf("%s: %d mismatches in all", name, fails)
	}
}

// paramsWrt lists x then every parameter's weight, and the matching gradients.
func paramsWrt(ps *Params, xs ...*tensor.Tensor) []*tensor.Tensor {
	out := append([]*tensor.Tensor(nil), xs...)
	for _, p := range ps.List {
		out = append(out, p.W)
	}
	return out
}

func paramGrads(ps *Params, dxs ...*tensor.Tensor) []*tensor.Tensor {
	out := append([]*tensor.Tensor(nil), dxs...)
	for _, p := range ps.List {
		out = append(out, p.G)
	}
	return out
}

func TestGradConv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n, cin, cout, h, w, k int
	}{
		{2, 3, 5, 6, 7, 3},
		{1, 4, 3, 1, 1, 3}, // 1×1 spatial: only the centre tap sees data
		{2, 5, 7, 4, 3, 1},
		{1, 9, 2, 5, 5, 3},
		{3, 13, 6, 1, 6, 3}, // one row
		{1, 11, 10, 2, 1, 3},
		{1, 3, 17, 1, 1, 1},
		{2, 8, 16, 3, 3, 3},
	} {
		name := fmt.Sprintf("conv%d n%d cin%d cout%d %dx%d", tc.k, tc.n, tc.cin, tc.cout, tc.h, tc.w)
		rng := rand.New(rand.NewPCG(1, uint64(tc.k+tc.cin)))
		ps := NewParams(cpu)
		c := NewConv2d(ps, "conv", tc.cin, tc.cout, tc.k)
		Init{rng}.TorchDefault(c.W, c.B, tc.cin*tc.k*tc.k)
		x := randT(rng, tc.n, tc.cin, tc.h, tc.w)
		gradCheck(t, name, rng, paramsWrt(ps, x),
			func() *tensor.Tensor { return c.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				ps.ZeroGrad()
				return paramGrads(ps, c.Backward(dy))
			}, gcOpts{})
	}
}

func TestGradConvNoInputGrad(t *testing.T) {
	t.Parallel()
	for _, k := range []int{1, 3} {
		rng := rand.New(rand.NewPCG(11, uint64(k)))
		ps := NewParams(cpu)
		c := NewConv2d(ps, "conv", 3, 4, k)
		c.NoInputGrad = true
		Init{rng}.TorchDefault(c.W, c.B, 3*k*k)
		x := randT(rng, 2, 3, 4, 5)
		gradCheck(t, fmt.Sprintf("conv%d no input grad", k), rng, paramsWrt(ps),
			func() *tensor.Tensor { return c.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				ps.ZeroGrad()
				if dx := c.Backward(dy); dx != nil {
					t.Errorf("NoInputGrad conv returned dx %v", dx)
				}
				return paramGrads(ps)
			}, gcOpts{})
	}
}

// Gradients accumulate into Param.G across backward calls (the model reuses a layer's weights only through
// separate layers, but training relies on G += and on ZeroGrad).
func TestGradAccumulates(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(12, 1))
	ps := NewParams(cpu)
	c := NewConv2d(ps, "conv", 3, 4, 3)
	Init{rng}.TorchDefault(c.W, c.B, 27)
	x := randT(rng, 2, 3, 4, 4)
	dy := randT(rng, 2, 4, 4, 4)
	c.Forward(x)
	c.Backward(dy)
	once := append([]float32(nil), c.W.G.Data...)
	c.Forward(x)
	c.Backward(dy)
	for i, v := range c.W.G.Data {
		if math.Abs(float64(v-2*once[i])) > 1e-4*(1+math.Abs(float64(v))) {
			t.Fatalf("weight grad [%d] after two backward passes = %g, want 2×%g", i, v, once[i])
		}
	}
	ps.ZeroGrad()
	for _, p := range ps.List {
		for _, v := range p.G.Data {
			if v != 0 {
				t.Fatalf("ZeroGrad left %s.G non-zero", p.Name)
			}
		}
	}
}

func TestGradLinear(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, in, out int }{{1, 7, 5}, {3, 16, 9}, {4, 1, 1}, {2, 33, 64}} {
		rng := rand.New(rand.NewPCG(2, uint64(tc.in)))
		ps := NewParams(cpu)
		l := NewLinear(ps, "lin", tc.in, tc.out)
		Init{rng}.TorchDefault(l.W, l.B, tc.in)
		x := randT(rng, tc.n, tc.in)
		gradCheck(t, fmt.Sprintf("linear %v", tc), rng, paramsWrt(ps, x),
			func() *tensor.Tensor { return l.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				ps.ZeroGrad()
				return paramGrads(ps, l.Backward(dy))
			}, gcOpts{})
	}
}

func TestGradGroupNorm(t *testing.T) {
	t.Parallel()
	type modSet struct {
		name                  string
		scale, shift, z, silu bool
	}
	mods := []modSet{
		{"plain", false, false, false, false},
		{"scale", true, false, false, false},
		{"shift", false, true, false, false},
		{"zscale", false, false, true, false},
		{"silu", false, false, false, true},
		{"scale+shift", true, true, false, false},
		{"all", true, true, true, true},
	}
	shapes := []struct {
		n, c  int
		sp    []int
		group int // 0: the reference's min(32, C)
	}{
		{2, 6, []int{3, 5}, 0},  // 6 groups of 1 channel
		{2, 6, []int{3, 5}, 3},  // 3 groups of 2
		{1, 64, []int{2, 2}, 0}, // 32 groups of 2
		{3, 64, []int{1, 1}, 0}, // 1×1 spatial: 2 values per group
		{2, 12, []int{7}, 4},    // [N, C, T]
		{1, 8, []int{5, 7}, 4},  // rows of 35: the kernels' 16-lane blocks and a tail
		{2, 4, []int{32}, 2},    // rows of exactly two blocks
	}
	for _, sh := range shapes {
		for _, m := range mods {
			name := fmt.Sprintf("groupnorm n%d c%d %v g%d %s", sh.n, sh.c, sh.sp, sh.group, m.name)
			rng := rand.New(rand.NewPCG(3, uint64(len(name))))
			ps := NewParams(cpu)
			g := NewGroupNorm(ps, "gn", sh.c)
			if sh.group != 0 {
				g.G = sh.group
			}
			Init{rng}.Normal(g.Gamma, 1)
			Init{rng}.Normal(g.Beta, 1)
			x := randT(rng, append([]int{sh.n, sh.c}, sh.sp...)...)
			if x.Len()/(sh.n*g.G) == 2 {
				// Two values per group: x̂ = ±d/√(d²+ε) for half-difference d, whose derivatives explode as d → 0;
				// keep the two apart so that a step of eps stays in the smooth region.
				for i := range x.Data {
					x.Data[i] = 0.5*x.Data[i] + float32(4*(i%2)-2)
				}
			}
			wrt := paramsWrt(ps, x)
			var mod tensor.GNMod
			if m.scale {
				mod.Scale = randT(rng, sh.n, sh.c)
				wrt = append(wrt, mod.Scale)
			}
			if m.shift {
				mod.Shift = randT(rng, sh.n, sh.c)
				wrt = append(wrt, mod.Shift)
			}
			if m.z {
				mod.ZScale = randT(rng, sh.n, sh.c)
				wrt = append(wrt, mod.ZScale)
			}
			mod.SiLU = m.silu
			gradCheck(t, name, rng, wrt,
				func() *tensor.Tensor { return g.Forward(x, mod) },
				func(dy *tensor.Tensor) []*tensor.Tensor {
					ps.ZeroGrad()
					out := paramGrads(ps, g.Backward(dy))
					if m.scale {
						out = append(out, g.DScale)
					}
					if m.shift {
						out = append(out, g.DShift)
					}
					if m.z {
						out = append(out, g.DZ)
					}
					return out
				}, gcOpts{eps: 3e-3, rtol: 5e-3})
		}
	}
}

func TestGradLayerNorm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, d int }{{1, 7}, {3, 64}, {5, 3}} {
		rng := rand.New(rand.NewPCG(4, uint64(tc.d)))
		ps := NewParams(cpu)
		l := NewLayerNorm(ps, "ln", tc.d)
		Init{rng}.Normal(l.Gamma, 1)
		Init{rng}.Normal(l.Beta, 1)
		x := randT(rng, tc.n, tc.d)
		gradCheck(t, fmt.Sprintf("layernorm %v", tc), rng, paramsWrt(ps, x),
			func() *tensor.Tensor { return l.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				ps.ZeroGrad()
				return paramGrads(ps, l.Backward(dy))
			}, gcOpts{eps: 3e-3, rtol: 5e-3})
	}
}

func TestGradAttention(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, c, h, w int }{{2, 6, 3, 2}, {1, 64, 2, 2}, {1, 96, 1, 1}, {1, 12, 1, 3}} {
		rng := rand.New(rand.NewPCG(5, uint64(tc.c*tc.h)))
		ps := NewParams(cpu)
		a := NewAttention(ps, "attn", tc.c)
		for _, p := range ps.List {
			Init{rng}.Normal(p, 0.5)
		}
		x := randT(rng, tc.n, tc.c, tc.h, tc.w)
		gradCheck(t, fmt.Sprintf("attention %v", tc), rng, paramsWrt(ps, x),
			func() *tensor.Tensor { return a.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				ps.ZeroGrad()
				return paramGrads(ps, a.Backward(dy))
			}, gcOpts{eps: 3e-3, rtol: 5e-3})
	}
}

func TestGradSiLU(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(6, 1))
	x := randT(rng, 3, 5, 7)
	for i := range x.Data {
		x.Data[i] *= 4 // reach the tails too
	}
	var s SiLU
	gradCheck(t, "silu", rng, []*tensor.Tensor{x},
		func() *tensor.Tensor { return s.Forward(x) },
		func(dy *tensor.Tensor) []*tensor.Tensor { return []*tensor.Tensor{s.Backward(dy)} }, gcOpts{eps: 1e-3})
}

func TestGradPoolUpsampleMean(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 1))
	for _, sh := range [][]int{{2, 3, 4, 6}, {1, 5, 2, 2}, {1, 1, 8, 2}} {
		x := randT(rng, sh...)
		var p AvgPool2
		gradCheck(t, fmt.Sprintf("avgpool %v", sh), rng, []*tensor.Tensor{x},
			func() *tensor.Tensor { return p.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor { return []*tensor.Tensor{p.Backward(dy)} }, gcOpts{})
	}
	for _, sh := range [][]int{{2, 3, 2, 3}, {1, 5, 1, 1}, {1, 1, 3, 1}} {
		x := randT(rng, sh...)
		var u Upsample2
		gradCheck(t, fmt.Sprintf("upsample %v", sh), rng, []*tensor.Tensor{x},
			func() *tensor.Tensor { return u.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor { return []*tensor.Tensor{u.Backward(dy)} }, gcOpts{})
	}
	for _, sh := range [][]int{{2, 3, 4, 5}, {1, 7, 1, 1}, {3, 1, 2, 8}} {
		x := randT(rng, sh...)
		var m SpatialMean
		gradCheck(t, fmt.Sprintf("spatial mean %v", sh), rng, []*tensor.Tensor{x},
			func() *tensor.Tensor { return m.Forward(x) },
			func(dy *tensor.Tensor) []*tensor.Tensor { return []*tensor.Tensor{m.Backward(dy)} }, gcOpts{})
	}
}

func TestGradConcat(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(8, 1))
	for _, tc := range []struct{ a, b []int }{
		{[]int{2, 3, 4, 5}, []int{2, 5, 4, 5}},
		{[]int{1, 1, 1, 1}, []int{1, 7, 1, 1}},
		{[]int{3, 4}, []int{3, 2}},
		{[]int{2, 2, 9}, []int{2, 3, 9}},
	} {
		a, b := randT(rng, tc.a...), randT(rng, tc.b...)
		var c Concat
		gradCheck(t, fmt.Sprintf("concat %v %v", tc.a, tc.b), rng, []*tensor.Tensor{a, b},
			func() *tensor.Tensor { return c.Forward(a, b) },
			func(dy *tensor.Tensor) []*tensor.Tensor {
				da, db := c.Backward(dy)
				return []*tensor.Tensor{da, db}
			}, gcOpts{})
	}
}

// Dropout draws a new mask on every call; re-seeding its generator before each forward pass fixes the mask, so
// the function is linear in x and the finite-difference check applies.
func TestGradDropout(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(9, 1))
	x := randT(rng, 4, 3, 5, 5)
	dr := &Dropout{P: 0.3, Training: true}
	fwd := func() *tensor.Tensor {
		dr.Rng = rand.New(rand.NewPCG(42, 42))
		return dr.Forward(x)
	}
	gradCheck(t, "dropout", rng, []*tensor.Tensor{x}, fwd,
		func(dy *tensor.Tensor) []*tensor.Tensor { return []*tensor.Tensor{dr.Backward(dy)} }, gcOpts{})

	// The backward pass is exactly the forward mask's scaling, and about P of the elements are dropped.
	y := append([]float32(nil), fwd().Data...)
	dy := randT(rng, x.Shape...)
	dx := dr.Backward(dy)
	keep := float32(1 / (1 - dr.P))
	dropped := 0
	for i, v := range y {
		switch {
		case v == 0:
			dropped++
			if dx.Data[i] != 0 {
				t.Fatalf("dropped element %d has gradient %g", i, dx.Data[i])
			}
		case v == x.Data[i]*keep:
			if dx.Data[i] != dy.Data[i]*keep {
				t.Fatalf("kept element %d: gradient %g, want %g", i, dx.Data[i], dy.Data[i]*keep)
			}
		default:
			t.Fatalf("element %d: y = %g, x = %g: neither dropped nor scaled by %g", i, v, x.Data[i], keep)
		}
	}
	if f := float64(dropped) / float64(len(y)); math.Abs(f-dr.P) > 0.08 {
		t.Errorf("dropped fraction %.3f, want about %.1f", f, dr.P)
	}

	// Not training: the identity, both ways.
	dr.Training = false
	if got := dr.Forward(x); got != x {
		t.Error("dropout in eval mode changed its input")
	}
	if got := dr.Backward(dy); got != dy {
		t.Error("dropout in eval mode changed the gradient")
	}
}

// scalarGradCheck compares grad with central differences of a float64 loss over every element of x.
func scalarGradCheck(t *testing.T, name string, x *tensor.Tensor, loss func() float64, grad []float32, eps float64) {
	t.Helper()
	for i := range x.Data {
		old := x.Data[i]
		x.Data[i] = old + float32(eps)
		lp := loss()
		x.Data[i] = old - float32(eps)
		lm := loss()
		x.Data[i] = old
		num := (lp - lm) / (float64(float32(old+float32(eps))) - float64(float32(old-float32(eps))))
		if d := math.Abs(num - float64(grad[i])); d > 1e-3*math.Abs(num)+1e-6 {
			t.Errorf("%s [%d]: analytic %.6g, numeric %.6g", name, i, grad[i], num)
		}
	}
}

func TestGradLosses(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(10, 1))
	p, tg := randT(rng, 2, 3, 4, 5), randT(rng, 2, 3, 4, 5)
	for i := range p.Data { // keep |p−t| > eps so that L1 is differentiable at every probe
		if d := p.Data[i] - tg.Data[i]; math.Abs(float64(d)) < 0.05 {
			p.Data[i] += 0.1
		}
	}
	grad := cpu.New(p.Shape...)

	mse := MSELoss(grad, p, tg)
	want := 0.0
	for i := range p.Data {
		d := float64(p.Data[i]) - float64(tg.Data[i])
		want += d * d
	}
	want /= float64(p.Len())
	if math.Abs(mse-want) > 1e-6*want {
		t.Errorf("MSE = %.9g, want %.9g", mse, want)
	}
	scalarGradCheck(t, "mse", p, func() float64 { return MSELoss(nil, p, tg) }, append([]float32(nil), grad.Data...), 1e-2)

	l1 := L1Loss(grad, p, tg)
	want = 0
	for i := range p.Data {
		want += math.Abs(float64(p.Data[i]) - float64(tg.Data[i]))
	}
	want /= float64(p.Len())
	if math.Abs(l1-want) > 1e-6*want {
		t.Errorf("L1 = %.9g, want %.9g", l1, want)
	}
	scalarGradCheck(t, "l1", p, func() float64 { return L1Loss(nil, p, tg) }, append([]float32(nil), grad.Data...), 1e-2)
}

// The sinusoidal embedding against the formula in float64 (the reference rounds t·f to float32 first, which
// moves large arguments by up to half an ulp of t·f).
func TestTimestepEmbedding(t *testing.T) {
	t.Parallel()
	ts := []float32{0, 1, 17.5, 999}
	dim := 10
	got := TimestepEmbedding(ts, dim, 10000)
	if len(got) != len(ts)*dim {
		t.Fatalf("len %d, want %d", len(got), len(ts)*dim)
	}
	half := dim / 2
	for r, tv := range ts {
		for i := range half {
			f := math.Exp(-math.Log(10000) * float64(i) / float64(half))
			a := float64(tv) * f
			tol := 1e-6 + 1e-6*a
			if c := got[r*dim+i]; math.Abs(float64(c)-math.Cos(a)) > tol {
				t.Errorf("t=%g i=%d: cos %g, want %g", tv, i, c, math.Cos(a))
			}
			if s := got[r*dim+half+i]; math.Abs(float64(s)-math.Sin(a)) > tol {
				t.Errorf("t=%g i=%d: sin %g, want %g", tv, i, s, math.Sin(a))
			}
		}
	}
}
