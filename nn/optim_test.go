package nn

import (
	"math"
	"testing"
)

// refAdam is torch.optim.Adam / AdamW written out for one scalar in float64: bias-corrected moments, eps added
// outside the square root, weight decay decoupled (applied to the weight before the step, as AdamW does).
type refAdam struct{ m, v float64 }

func (r *refAdam) step(w, g, lr, b1, b2, eps, wd float64, t int) float64 {
	w *= 1 - lr*wd
	r.m = b1*r.m + (1-b1)*g
	r.v = b2*r.v + (1-b2)*g*g
	mh := r.m / (1 - math.Pow(b1, float64(t)))
	den := math.Sqrt(r.v)/math.Sqrt(1-math.Pow(b2, float64(t))) + eps
	return w - lr*mh/den
}

func TestAdam(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lr   float32
		wd   float32
		eps  float32
	}{{"adam", 1e-3, 0, 1e-8}, {"adamw", 1e-2, 0.1, 1e-8}, {"large eps", 1e-2, 0, 0.5}} {
		ps := NewParams(cpu)
		p := ps.New("w", 5)
		copy(p.W.Data, []float32{1, -2, 0.5, 3, 0})
		grads := [][]float32{{0.1, -0.2, 3, 0, 1e-3}, {-0.3, 0.1, 2, 0, 1e-3}, {0.5, 0.5, -1, 0, -2e-3}}
		o := NewAdam(tc.lr, tc.wd)
		o.Eps = tc.eps
		ref := make([]refAdam, 5)
		want := []float64{1, -2, 0.5, 3, 0}
		for step, g := range grads {
			copy(p.G.Data, g)
			o.Update(ps)
			for i := range want {
				want[i] = ref[i].step(want[i], float64(g[i]), float64(tc.lr), 0.9, 0.999, float64(tc.eps),
					float64(tc.wd), step+1)
				if d := math.Abs(float64(p.W.Data[i]) - want[i]); d > 1e-6*(1+math.Abs(want[i])) {
					t.Errorf("%s step %d [%d]: w = %.9g, want %.9g", tc.name, step+1, i, p.W.Data[i], want[i])
				}
			}
		}
		// The betas are float32, so 1−β₂ is 0.00099998713 rather than PyTorch's 0.001 (β₂ is a double there):
		// the second moment differs by 1.3e-5 relative; bias correction uses the same β₂, so steps agree closely.
		m, v := o.Moments(p)
		for i := range ref {
			if math.Abs(float64(m.Data[i])-ref[i].m) > 1e-6*math.Abs(ref[i].m)+1e-9 ||
				math.Abs(float64(v.Data[i])-ref[i].v) > 2e-5*ref[i].v+1e-12 {
				t.Errorf("%s moments [%d] = (%g, %g), want (%g, %g)", tc.name, i, m.Data[i], v.Data[i], ref[i].m, ref[i].v)
			}
		}
	}
	// Hand-computed first step of Adam: m̂ = g and v̂ = g², so w moves by lr·g/(|g|+eps) ≈ lr·sign(g).
	ps := NewParams(cpu)
	p := ps.New("w", 2)
	copy(p.W.Data, []float32{1, 1})
	copy(p.G.Data, []float32{0.25, -4})
	NewAdam(0.1, 0).Update(ps)
	if math.Abs(float64(p.W.Data[0])-0.9) > 1e-6 || math.Abs(float64(p.W.Data[1])-1.1) > 1e-6 {
		t.Errorf("first Adam step from 1 with lr 0.1: %v, want [0.9 1.1]", p.W.Data)
	}
	// First AdamW step: the decay is decoupled: w·(1−lr·wd) − lr·sign(g).
	copy(p.W.Data, []float32{2, 2})
	NewAdam(0.1, 0.5).Update(ps)
	if math.Abs(float64(p.W.Data[0])-(2*0.95-0.1)) > 1e-6 || math.Abs(float64(p.W.Data[1])-(2*0.95+0.1)) > 1e-6 {
		t.Errorf("first AdamW step: %v, want [1.8 2]", p.W.Data)
	}
}

func TestClipGradNorm(t *testing.T) {
	t.Parallel()
	ps := NewParams(cpu)
	a, b := ps.New("a", 2), ps.New("b", 1, 2)
	set := func() {
		copy(a.G.Data, []float32{3, 0})
		copy(b.G.Data, []float32{0, -4})
	}
	set()
	if n := ClipGradNorm(ps, 10); math.Abs(n-5) > 1e-6 {
		t.Fatalf("norm = %g, want 5", n)
	}
	if a.G.Data[0] != 3 || b.G.Data[1] != -4 {
		t.Fatalf("norm 5 under max 10 changed the gradients: %v %v", a.G.Data, b.G.Data)
	}
	set()
	if n := ClipGradNorm(ps, 1); math.Abs(n-5) > 1e-6 {
		t.Fatalf("norm = %g, want 5", n)
	}
	// PyTorch: coef = max/(norm+1e-6).
	c := 1 / (5 + 1e-6)
	for i, got := range []float32{a.G.Data[0], a.G.Data[1], b.G.Data[0], b.G.Data[1]} {
		want := []float64{3 * c, 0, 0, -4 * c}[i]
		if math.Abs(float64(got)-want) > 1e-6 {
			t.Errorf("clipped gradient %d = %g, want %g", i, got, want)
		}
	}
	after := math.Sqrt(float64(a.G.Data[0]*a.G.Data[0] + b.G.Data[1]*b.G.Data[1]))
	if math.Abs(after-1) > 1e-5 {
		t.Errorf("norm after clipping = %g, want 1", after)
	}
}

func TestEMA(t *testing.T) {
	t.Parallel()
	ps := NewParams(cpu)
	p := ps.New("w", 3)
	copy(p.W.Data, []float32{1, 2, 3})
	e := NewEMA(ps, 0.9)
	if e.Shadow.Get("w") == nil || e.Shadow.Get("w").W == p.W {
		t.Fatal("EMA shadow must be a separate copy named like the parameter")
	}
	copy(p.W.Data, []float32{11, 2, -7})
	e.Update(ps, 0.9)
	want := []float64{0.9*1 + 0.1*11, 2, 0.9*3 - 0.1*7}
	for i, w := range want {
		if got := float64(e.Shadow.List[0].W.Data[i]); math.Abs(got-w) > 1e-6 {
			t.Errorf("ema [%d] = %g, want %g", i, got, w)
		}
	}
	if p.W.Data[0] != 11 {
		t.Error("EMA update changed the live parameters")
	}
	if d := WarmDecay(0.9999, 0); math.Abs(d-0.1) > 1e-12 {
		t.Errorf("WarmDecay(0.9999, 0) = %g, want 0.1", d)
	}
	if d := WarmDecay(0.9999, 1e6); d != 0.9999 {
		t.Errorf("WarmDecay(0.9999, 1e6) = %g, want 0.9999", d)
	}
}
