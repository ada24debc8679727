package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"dae/tensor"
)

// Forward passes against straightforward float64 loops written from the reference's definitions.

func f64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// assertClose fails when |got−want| > tol·(|want| + rms(want)) anywhere.
func assertClose(t *testing.T, name string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	rms := 0.0
	for _, w := range want {
		rms += w * w
	}
	rms = math.Sqrt(rms / float64(len(want)))
	bad := 0
	for i, g := range got {
		if d := math.Abs(float64(g) - want[i]); !(d <= tol*(math.Abs(want[i])+rms)) {
			if bad++; bad <= 5 {
				t.Errorf("%s [%d]: got %.7g, want %.7g", name, i, g, want[i])
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", name, bad, len(got))
	}
}

func refConv(x, w, b []float64, n, cin, cout, h, wd, k int) []float64 {
	pad := k / 2
	y := make([]float64, n*cout*h*wd)
	for bi := range n {
		for o := range cout {
			for yy := range h {
				for xx := range wd {
					s := b[o]
					for i := range cin {
						for ky := range k {
							for kx := range k {
								sy, sx := yy+ky-pad, xx+kx-pad
								if sy < 0 || sy >= h || sx < 0 || sx >= wd {
									continue
								}
								s += w[((o*cin+i)*k+ky)*k+kx] * x[((bi*cin+i)*h+sy)*wd+sx]
							}
						}
					}
					y[((bi*cout+o)*h+yy)*wd+xx] = s
				}
			}
		}
	}
	return y
}

func TestForwardConv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, cin, cout, h, w, k int }{
		{2, 3, 5, 6, 7, 3}, {1, 4, 3, 1, 1, 3}, {1, 13, 6, 1, 1, 1}, {3, 9, 11, 5, 4, 3},
		{1, 64, 64, 8, 8, 3}, {2, 17, 8, 3, 5, 1}, {1, 5, 7, 1, 9, 3},
	} {
		rng := rand.New(rand.NewPCG(21, uint64(tc.cin*tc.k)))
		ps := NewParams(cpu)
		c := NewConv2d(ps, "conv", tc.cin, tc.cout, tc.k)
		Init{rng}.TorchDefault(c.W, c.B, tc.cin*tc.k*tc.k)
		x := randT(rng, tc.n, tc.cin, tc.h, tc.w)
		y := c.Forward(x)
		if !y.ShapeEq(tc.n, tc.cout, tc.h, tc.w) {
			t.Fatalf("conv %v: output %v", tc, y.Shape)
		}
		want := refConv(f64(x.Data), f64(c.W.W.Data), f64(c.B.W.Data), tc.n, tc.cin, tc.cout, tc.h, tc.w, tc.k)
		assertClose(t, fmt.Sprintf("conv %v", tc), y.Data, want, 1e-4)
	}
}

func refLinear(x, w, b []float64, n, in, out int) []float64 {
	y := make([]float64, n*out)
	for i := range n {
		for o := range out {
			s := b[o]
			for j := range in {
				s += x[i*in+j] * w[o*in+j]
			}
			y[i*out+o] = s
		}
	}
	return y
}

func TestForwardLinear(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, in, out int }{{1, 7, 5}, {5, 64, 13}, {3, 1, 2}} {
		rng := rand.New(rand.NewPCG(22, uint64(tc.in)))
		ps := NewParams(cpu)
		l := NewLinear(ps, "lin", tc.in, tc.out)
		Init{rng}.TorchDefault(l.W, l.B, tc.in)
		x := randT(rng, tc.n, tc.in)
		want := refLinear(f64(x.Data), f64(l.W.W.Data), f64(l.B.W.Data), tc.n, tc.in, tc.out)
		assertClose(t, fmt.Sprintf("linear %v", tc), l.Forward(x).Data, want, 1e-4)
	}
}

// refGroupNorm is torch.nn.GroupNorm (biased variance, eps inside the square root) followed by the model's
// AdaGN: ((·)·(1+scale)+shift)·(1+zscale), then SiLU; nil mods are absent.
func refGroupNorm(x, gamma, beta, scale, shift, z []float64, n, c, hw, g int, silu bool) []float64 {
	y := make([]float64, len(x))
	cg := c / g
	for b := range n {
		for gi := range g {
			lo, hi := (b*c+gi*cg)*hw, (b*c+(gi+1)*cg)*hw
			m := 0.0
			for _, v := range x[lo:hi] {
				m += v
			}
			m /= float64(hi - lo)
			v := 0.0
			for _, u := range x[lo:hi] {
				v += (u - m) * (u - m)
			}
			v /= float64(hi - lo)
			for ch := gi * cg; ch < (gi+1)*cg; ch++ {
				nc := b*c + ch
				for i := range hw {
					u := (x[nc*hw+i]-m)/math.Sqrt(v+1e-5)*gamma[ch] + beta[ch]
					if scale != nil {
						u *= 1 + scale[nc]
					}
					if shift != nil {
						u += shift[nc]
					}
					if z != nil {
						u *= 1 + z[nc]
					}
					if silu {
						u /= 1 + math.Exp(-u)
					}
					y[nc*hw+i] = u
				}
			}
		}
	}
	return y
}

func TestForwardGroupNorm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n, c, h, w int
		mod        string
	}{
		{2, 64, 4, 4, ""}, {2, 64, 4, 4, "s"}, {2, 64, 4, 4, "h"}, {2, 64, 4, 4, "z"}, {2, 64, 4, 4, "a"},
		{2, 64, 4, 4, "shza"}, {1, 6, 1, 1, "shza"}, {3, 96, 1, 1, "sa"}, {1, 6, 5, 3, ""}, {1, 12, 3, 7, "hz"},
		{2, 128, 16, 16, "shza"},
	} {
		name := fmt.Sprintf("groupnorm %v", tc)
		rng := rand.New(rand.NewPCG(23, uint64(len(name))))
		ps := NewParams(cpu)
		g := NewGroupNorm(ps, "gn", tc.c)
		if g.G != min(32, tc.c) {
			t.Fatalf("%d channels: %d groups, want %d", tc.c, g.G, min(32, tc.c))
		}
		Init{rng}.Normal(g.Gamma, 1)
		Init{rng}.Normal(g.Beta, 1)
		x := randT(rng, tc.n, tc.c, tc.h, tc.w)
		for i := range x.Data {
			x.Data[i] = 3*x.Data[i] + 1 // a non-zero mean and a non-unit variance
		}
		var mod tensor.GNMod
		var sc, sh, z []float64
		for _, r := range tc.mod {
			m := randT(rng, tc.n, tc.c)
			switch r {
			case 's':
				mod.Scale, sc = m, f64(m.Data)
			case 'h':
				mod.Shift, sh = m, f64(m.Data)
			case 'z':
				mod.ZScale, z = m, f64(m.Data)
			case 'a':
				mod.SiLU = true
			}
		}
		y := g.Forward(x, mod)
		want := refGroupNorm(f64(x.Data), f64(g.Gamma.W.Data), f64(g.Beta.W.Data), sc, sh, z,
			tc.n, tc.c, tc.h*tc.w, g.G, mod.SiLU)
		assertClose(t, name, y.Data, want, 1e-4)
	}
}

func TestForwardLayerNorm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, d int }{{1, 7}, {4, 512}, {3, 13}, {2, 1}} {
		rng := rand.New(rand.NewPCG(24, uint64(tc.d)))
		ps := NewParams(cpu)
		l := NewLayerNorm(ps, "ln", tc.d)
		Init{rng}.Normal(l.Gamma, 1)
		Init{rng}.Normal(l.Beta, 1)
		x := randT(rng, tc.n, tc.d)
		for i := range x.Data {
			x.Data[i] = 2*x.Data[i] - 5
		}
		xs, gm, bt := f64(x.Data), f64(l.Gamma.W.Data), f64(l.Beta.W.Data)
		want := make([]float64, len(xs))
		for r := range tc.n {
			row := xs[r*tc.d : (r+1)*tc.d]
			m, v := 0.0, 0.0
			for _, u := range row {
				m += u
			}
			m /= float64(tc.d)
			for _, u := range row {
				v += (u - m) * (u - m)
			}
			v /= float64(tc.d)
			for i, u := range row {
				want[r*tc.d+i] = (u-m)/math.Sqrt(v+1e-5)*gm[i] + bt[i]
			}
		}
		assertClose(t, fmt.Sprintf("layernorm %v", tc), l.Forward(x).Data, want, 1e-4)
	}
}

// refAttention is the reference AttentionBlock with one head, written out: h = GN(x); qkv = W·h + b (1×1);
// q, k, v = the three channel blocks; w[t,s] = softmax_s(Σ_c (q[c,t]·C^−¼)(k[c,s]·C^−¼)); a[c,t] = Σ_s w[t,s]·v[c,s];
// out = x + Wp·a + bp.
func refAttention(a *Attention, xs []float64, n, c, t int) []float64 {
	gamma, beta := f64(a.Norm.Gamma.W.Data), f64(a.Norm.Beta.W.Data)
	h := refGroupNorm(xs, gamma, beta, nil, nil, nil, n, c, t, Groups(c), false)
	wq, bq := f64(a.QKV.W.W.Data), f64(a.QKV.B.W.Data)
	wp, bp := f64(a.Proj.W.W.Data), f64(a.Proj.B.W.Data)
	sc := math.Pow(float64(c), -0.25)
	out := make([]float64, len(xs))
	for b := range n {
		hb := h[b*c*t : (b+1)*c*t]
		qkv := make([]float64, 3*c*t)
		for o := range 3 * c {
			for ti := range t {
				s := bq[o]
				for i := range c {
					s += wq[o*c+i] * hb[i*t+ti]
				}
				qkv[o*t+ti] = s
			}
		}
		q, k, v := qkv[:c*t], qkv[c*t:2*c*t], qkv[2*c*t:]
		att := make([]float64, c*t)
		for ti := range t {
			w := make([]float64, t)
			mx := math.Inf(-1)
			for s := range t {
				for ci := range c {
					w[s] += q[ci*t+ti] * sc * k[ci*t+s] * sc
				}
				mx = math.Max(mx, w[s])
			}
			sum := 0.0
			for s := range w {
				w[s] = math.Exp(w[s] - mx)
				sum += w[s]
			}
			for ci := range c {
				acc := 0.0
				for s := range t {
					acc += w[s] / sum * v[ci*t+s]
				}
				att[ci*t+ti] = acc
			}
		}
		for o := range c {
			for ti := range t {
				s := bp[o]
				for i := range c {
					s += wp[o*c+i] * att[i*t+ti]
				}
				out[(b*c+o)*t+ti] = xs[(b*c+o)*t+ti] + s
			}
		}
	}
	return out
}

func TestForwardAttention(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, c, h, w int }{{2, 6, 3, 2}, {1, 64, 4, 4}, {1, 96, 1, 1}, {3, 13, 2, 5}, {2, 128, 8, 8}, {8, 32, 16, 16}} {
		rng := rand.New(rand.NewPCG(25, uint64(tc.c*tc.h)))
		ps := NewParams(cpu)
		a := NewAttention(ps, "attn", tc.c)
		for _, p := range ps.List {
			Init{rng}.Normal(p, 0.5)
		}
		x := randT(rng, tc.n, tc.c, tc.h, tc.w)
		y := a.Forward(x)
		want := refAttention(a, f64(x.Data), tc.n, tc.c, tc.h*tc.w)
		assertClose(t, fmt.Sprintf("attention %v", tc), y.Data, want, 1e-4)
	}
}

// The CPU's one-call attention (each image's products and softmax back to back), forward and backward, gives what
// the batched calls give, bit for bit: same products, same order of summation.
func TestAttentionCoreMatchesBatched(t *testing.T) {
	t.Parallel()
	d := tensor.NewCPU(2)
	// The same device without the attention methods (but with its convolutions, so that the layers around the
	// attention take the same path).
	plain := struct {
		tensor.Device
		tensor.ConvDevice
	}{d, d}
	rng := rand.New(rand.NewPCG(27, 1))
	for _, n := range []int{1, 2, 5} {
		var ys, grads [2][]float32
		for k, dev := range []tensor.Device{d, plain} {
			ps := NewParams(dev)
			a := NewAttention(ps, "attn", 16)
			prng := rand.New(rand.NewPCG(28, 1))
			for _, p := range ps.List {
				Init{prng}.Normal(p, 0.5)
			}
			x := dev.New(n, 16, 8, 8)
			x.Dev = dev // New gives the CPU itself; the layer picks its path by the input's device
			if k == 0 {
				for i := range x.Data {
					x.Data[i] = float32(rng.NormFloat64())
				}
				ys[1] = slices.Clone(x.Data) // the same input for the second device
			} else {
				copy(x.Data, ys[1])
			}
			ys[k] = slices.Clone(a.Forward(x).Data)
			dy := dev.New(n, 16, 8, 8)
			dy.Dev = dev
			for i := range dy.Data {
				dy.Data[i] = float32(math.Sin(float64(i)))
			}
			grads[k] = slices.Clone(a.Backward(dy).Data)
			for _, p := range ps.List {
				grads[k] = append(grads[k], p.G.Data...)
			}
		}
		if !slices.Equal(ys[0], ys[1]) {
			t.Errorf("n=%d: AttentionCore differs from the batched products", n)
		}
		if !slices.Equal(grads[0], grads[1]) {
			worst, at := 0.0, 0
			for i := range grads[0] {
				if dd := math.Abs(float64(grads[0][i] - grads[1][i])); dd > worst {
					worst, at = dd, i
				}
			}
			t.Errorf("n=%d: AttentionCoreBackward's gradients differ from the batched products' (%d values, worst %g at %d: %g vs %g)", n, len(grads[0]), worst, at, grads[0][at], grads[1][at])
		}
	}
}

func TestForwardPoolUpsampleMeanConcat(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(26, 1))
	x := randT(rng, 2, 3, 4, 6)
	var p AvgPool2
	y := p.Forward(x)
	var u Upsample2
	z := u.Forward(x)
	var m SpatialMean
	mu := m.Forward(x)
	for b := range 2 {
		for c := range 3 {
			at := func(yy, xx int) float64 { return float64(x.Data[((b*3+c)*4+yy)*6+xx]) }
			sum := 0.0
			for yy := range 4 {
				for xx := range 6 {
					sum += at(yy, xx)
					if got := z.Data[((b*3+c)*8+2*yy+1)*12+2*xx]; got != float32(at(yy, xx)) {
						t.Fatalf("upsample [%d,%d,%d,%d] = %g, want %g", b, c, 2*yy+1, 2*xx, got, at(yy, xx))
					}
				}
			}
			if got := float64(mu.Data[b*3+c]); math.Abs(got-sum/24) > 1e-6 {
				t.Fatalf("spatial mean [%d,%d] = %g, want %g", b, c, got, sum/24)
			}
			for yy := range 2 {
				for xx := range 3 {
					want := (at(2*yy, 2*xx) + at(2*yy, 2*xx+1) + at(2*yy+1, 2*xx) + at(2*yy+1, 2*xx+1)) / 4
					if got := float64(y.Data[((b*3+c)*2+yy)*3+xx]); math.Abs(got-want) > 1e-6 {
						t.Fatalf("avgpool [%d,%d,%d,%d] = %g, want %g", b, c, yy, xx, got, want)
					}
				}
			}
		}
	}
	a2 := randT(rng, 2, 5, 4, 6)
	var cc Concat
	cat := cc.Forward(x, a2)
	if !cat.ShapeEq(2, 8, 4, 6) {
		t.Fatalf("concat shape %v", cat.Shape)
	}
	for b := range 2 {
		for c := range 8 {
			for i := range 24 {
				var want float32
				if c < 3 {
					want = x.Data[(b*3+c)*24+i]
				} else {
					want = a2.Data[(b*5+c-3)*24+i]
				}
				if got := cat.Data[(b*8+c)*24+i]; got != want {
					t.Fatalf("concat [%d,%d,%d] = %g, want %g", b, c, i, got, want)
				}
			}
		}
	}
}
