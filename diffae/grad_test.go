package diffae

import (
	"math"
	"math/rand/v2"
	"testing"

	"dae/nn"
	"dae/tensor"
)

// randomize gives every parameter (including the zero-initialised ones) random values so every path carries
// gradient, as the reference fixture does.
func randomize(ps *nn.Params, rng *rand.Rand, std float64) {
	for _, p := range ps.List {
		nn.Init{Rng: rng}.Normal(p, std)
		if len(p.W.Shape) == 1 && (len(p.Name) > 7 && p.Name[len(p.Name)-7:] == ".weight") {
			// norm gains near 1
			h := p.W.Host()
			for i := range h {
				h[i] += 1
			}
			p.W.Dev.Upload(p.W, h)
		}
	}
}

// numGrad checks dL/dθ for a few coordinates of each listed parameter against central differences.
func numGrad(t *testing.T, name string, ps *nn.Params, loss func() float64, analytic func(), rng *rand.Rand,
	probes int, tol float64) {
	t.Helper()
	ps.ZeroGrad()
	analytic()
	grads := map[string][]float32{}
	for _, p := range ps.List {
		grads[p.Name] = p.G.Host()
	}
	const h = 1e-2
	checked, bad := 0, 0
	for _, p := range ps.List {
		for k := 0; k < probes; k++ {
			i := rng.IntN(p.W.Len())
			old := p.W.Data[i]
			p.W.Data[i] = old + h
			lp := loss()
			p.W.Data[i] = old - h
			lm := loss()
			p.W.Data[i] = old
			num := (lp - lm) / (2 * h)
			ana := float64(grads[p.Name][i])
			checked++
			if math.Abs(num-ana) > tol*math.Max(1, math.Abs(num)) {
				bad++
				t.Errorf("%s: %s[%d]: analytic %.5g numeric %.5g", name, p.Name, i, ana, num)
			}
		}
	}
	t.Logf("%s: %d coordinates checked, %d off", name, checked, bad)
}

func gradModel(t *testing.T, cfg *Config) (*Model, *rand.Rand) {
	m := New(cpu, cfg, 7)
	rng := rand.New(rand.NewPCG(3, 4))
	randomize(m.Params(), rng, 0.15)
	return m, rng
}

func TestGradAutoencoder(t *testing.T) {
	cfg, _ := Preset("tiny")
	cfg.ImageSize = 8
	cfg.AttentionResolutions = []int{4}
	cfg.EncAttnResolutions = []int{4}
	m, rng := gradModel(t, cfg)
	n := 2
	x0 := randTensor(rng, n, 3, 8, 8)
	xt := randTensor(rng, n, 3, 8, 8)
	r := randTensor(rng, n, 3, 8, 8)
	ts := []float32{13, 870}
	loss := func() float64 {
		z := m.Enc.Forward(x0)
		e := m.UNet.Forward(xt, ts, z)
		return dot(e, r)
	}
	analytic := func() {
		z := m.Enc.Forward(x0)
		m.UNet.Forward(xt, ts, z)
		dz := m.UNet.Backward(r)
		m.Enc.Backward(dz)
	}
	ps := nn.Merge(m.UNet.Params, m.Enc.Params)
	numGrad(t, "autoencoder", ps, loss, analytic, rng, 2, 3e-2)
}

func TestGradBaseline(t *testing.T) {
	cfg, _ := Preset("tiny")
	cfg.ImageSize = 8
	cfg.AttentionResolutions = []int{4}
	m, rng := gradModel(t, cfg.Baseline())
	xt := randTensor(rng, 2, 3, 8, 8)
	r := randTensor(rng, 2, 3, 8, 8)
	ts := []float32{999, 0}
	loss := func() float64 { return dot(m.UNet.Forward(xt, ts, nil), r) }
	analytic := func() { m.UNet.Forward(xt, ts, nil); m.UNet.Backward(r) }
	numGrad(t, "baseline", m.UNet.Params, loss, analytic, rng, 2, 3e-2)
}

func TestGradLatent(t *testing.T) {
	cfg, _ := Preset("tiny")
	m, rng := gradModel(t, cfg)
	z := randTensor(rng, 3, cfg.ZDim())
	r := randTensor(rng, 3, cfg.ZDim())
	ts := []float32{5, 500, 990}
	loss := func() float64 { return dot(m.Latent.Forward(z, ts), r) }
	analytic := func() { m.Latent.Forward(z, ts); m.Latent.Backward(r) }
	numGrad(t, "latent", m.Latent.Params, loss, analytic, rng, 3, 3e-2)
}

func randTensor(rng *rand.Rand, shape ...int) *tensor.Tensor {
	t := cpu.New(shape...)
	for i := range t.Data {
		t.Data[i] = float32(rng.NormFloat64())
	}
	return t
}

func dot(a, b *tensor.Tensor) float64 {
	s := 0.0
	for i, v := range a.Host() {
		s += float64(v) * float64(b.Data[i])
	}
	return s
}
