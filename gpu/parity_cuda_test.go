//go:build cuda

package gpu

// Parity of the CUDA device with the CPU device: every kernel, every nn layer's forward and backward pass, the
// networks, a training step and the samplers run on both, and the results must agree to a relative error of 1e-3
// (max |cpu − gpu| over max |cpu|; the samplers, whose 10 steps compound rounding, to 1e-2). This file links
// gorgonia.org/cu, so its test binary cannot start without a GPU; see TestCUDAParity in gpu_test.go and
// devicecheck.sh for how it is run.

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"dae/dataset"
	"dae/diffae"
	"dae/nn"
	"dae/tensor"
)

const parityTol = 1e-3

var cpuDev = tensor.NewCPU(0)

// devices returns the GPU with cuBLAS and the GPU with the fallback GEMM kernel, each opened once.
func devices(t *testing.T) map[string]*Device {
	t.Helper()
	out := map[string]*Device{}
	for name, o := range map[string]Options{"cublas": {}, "own-gemm": {NoCUBLAS: true}} {
		d, err := Open(0, o)
		if err != nil {
			t.Fatalf("opening the GPU: %v", err)
		}
		out[name] = d
	}
	t.Logf("GPU: %s", out["cublas"].Name())
	return out
}

func randHost(rng *rand.Rand, n int) []float32 {
	h := make([]float32, n)
	for i := range h {
		h[i] = float32(rng.NormFloat64())
	}
	return h
}

func on(d tensor.Device, h []float32, shape ...int) *tensor.Tensor {
	t := d.New(shape...)
	d.Upload(t, h)
	return t
}

// relErr is max|a−b| / max|a| (a the CPU's result).
func relErr(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	num, den := 0.0, 1e-12
	for i := range a {
		num = math.Max(num, math.Abs(float64(a[i])-float64(b[i])))
		den = math.Max(den, math.Abs(float64(a[i])))
	}
	if math.IsNaN(num) {
		return math.Inf(1)
	}
	return num / den
}

func same(t *testing.T, name string, cpu, gpu []float32, tol float64) {
	t.Helper()
	if e := relErr(cpu, gpu); e > tol {
		t.Errorf("%s: relative error %.3g > %g", name, e, tol)
	}
}

// pair holds the same tensors on both devices.
type pair struct{ c, g *tensor.Tensor }

func newPair(rng *rand.Rand, g tensor.Device, shape ...int) pair {
	h := randHost(rng, tensor.Numel(shape...))
	return pair{on(cpuDev, h, shape...), on(g, h, shape...)}
}

func (p pair) check(t *testing.T, name string) {
	t.Helper()
	same(t, name, p.c.Host(), p.g.Host(), parityTol)
}

// TestParityKernels runs each tensor.Device method on both devices with the same inputs, including views at an
// offset (as attention's GEMMs use) and in-place calls (as softmax's backward uses).
func TestParityKernels(t *testing.T) {
	for name, g := range devices(t) {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			type op struct {
				name string
				run  func(d tensor.Device, ts []*tensor.Tensor) float64
				// shapes of the tensors; outputs are compared afterwards (all tensors are)
				shapes [][]int
			}
			n, c, h, w, k := 3, 8, 6, 5, 3
			mod := func(ts []*tensor.Tensor) tensor.GNMod {
				return tensor.GNMod{Scale: ts[6], Shift: ts[7], ZScale: ts[8], SiLU: true}
			}
			ops := []op{
				{"Gemm", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.Gemm(tensor.GemmArgs{M: 7, N: 9, K: 11, Alpha: 1, A: ts[0], B: ts[1], C: ts[2]})
					return 0
				}, [][]int{{7, 11}, {11, 9}, {7, 9}}},
				{"GemmTransBatchedViews", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					// C[b] (4×5, ldc 6) = 0.5·A[b]ᵀ·B[b]ᵀ + 2·C[b], operands at offsets.
					d.Gemm(tensor.GemmArgs{TransA: true, TransB: true, M: 4, N: 5, K: 3, Alpha: 0.5, Beta: 2,
						A: ts[0].View(2, 3*4*3), LDA: 4, StrideA: 12, B: ts[1].View(1, 50), LDB: 3, StrideB: 16,
						C: ts[2].View(3, 60), LDC: 6, StrideC: 25, Batch: 3})
					return 0
				}, [][]int{{40}, {60}, {80}}},
				{"GemmSharedA", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.Gemm(tensor.GemmArgs{M: 6, N: 10, K: 4, Alpha: 1, A: ts[0], B: ts[1], C: ts[2],
						Batch: 3, StrideB: 40, StrideC: 60})
					return 0
				}, [][]int{{6, 4}, {3, 4, 10}, {3, 6, 10}}},
				{"Fill", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Fill(ts[0].View(3, 20), 2.5); return 0 }, [][]int{{30}}},
				{"Zero", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Zero(ts[0].View(1, 7)); return 0 }, [][]int{{30}}},
				{"Copy", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Copy(ts[0], ts[1].View(5, 30)); return 0 }, [][]int{{30}, {40}}},
				{"CopyBlocks", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.CopyBlocks(ts[0], 2, 10, ts[1], 1, 7, 5, 4, false)
					return 0
				}, [][]int{{45}, {30}}},
				{"CopyBlocksAcc", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.CopyBlocks(ts[0], 0, 10, ts[1], 3, 6, 6, 4, true)
					return 0
				}, [][]int{{40}, {30}}},
				{"Axpby", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Axpby(0.3, ts[0], -1.2, ts[1]); return 0 }, [][]int{{1000}, {1000}}},
				{"Lincomb", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Lincomb(ts[2], 0.3, ts[0], 2, ts[1]); return 0 }, [][]int{{999}, {999}, {999}}},
				{"Mul", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Mul(ts[2], ts[0], ts[1]); return 0 }, [][]int{{999}, {999}, {999}}},
				{"Scale", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Scale(ts[0], -0.7); return 0 }, [][]int{{300000}}},
				{"Clamp", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Clamp(ts[0], -0.5, 0.25); return 0 }, [][]int{{1000}}},
				{"SumSquares", func(d tensor.Device, ts []*tensor.Tensor) float64 { return d.SumSquares(ts[0]) }, [][]int{{1 << 20}}},
				{"SiLU", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.SiLU(ts[1], ts[0]); return 0 }, [][]int{{5000}, {5000}}},
				{"SiLUBackward", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.SiLUBackward(ts[2], ts[0], ts[1]); return 0 }, [][]int{{5000}, {5000}, {5000}}},
				{"AddChannelBias", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.AddChannelBias(ts[0], ts[1], n, c, h*w)
					return 0
				}, [][]int{{n, c, h, w}, {c}}},
				{"ChannelSumAcc", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.ChannelSumAcc(ts[0], ts[1], n, c, h*w); return 0 }, [][]int{{c}, {n, c, h, w}}},
				{"Im2Col", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.Im2Col(ts[1], ts[0], n, c, h, w, k, 1); return 0 }, [][]int{{n, c, h, w}, {c * k * k, n * h * w}}},
				{"Col2ImAcc", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.Col2ImAcc(ts[0], ts[1], n, c, h, w, k, 1)
					return 0
				}, [][]int{{n, c, h, w}, {c * k * k, n * h * w}}},
				{"NCHWToCNHW", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.NCHWToCNHW(ts[1], ts[0], n, c, h*w); return 0 }, [][]int{{n, c, h, w}, {c, n, h, w}}},
				{"CNHWToNCHW", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.CNHWToNCHW(ts[1], ts[0], ts[2], n, c, h*w)
					return 0
				}, [][]int{{c, n, h, w}, {n, c, h, w}, {c}}},
				{"CNHWToNCHWNoBias", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.CNHWToNCHW(ts[1], ts[0], nil, n, c, h*w)
					return 0
				}, [][]int{{c, n, h, w}, {n, c, h, w}}},
				{"GroupNormMod", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.GroupNorm(ts[1], ts[0], ts[2], ts[3], ts[4], ts[5], n, c, h*w, 4, 1e-5, mod(ts))
					return 0
				}, [][]int{{n, c, h, w}, {n, c, h, w}, {c}, {c}, {n, 4}, {n, 4}, {n, c}, {n, c}, {n, c}}},
				{"GroupNormBackwardMod", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.GroupNorm(ts[1], ts[0], ts[2], ts[3], ts[4], ts[5], n, c, h*w, 4, 1e-5, mod(ts))
					d.GroupNormBackward(tensor.GNGrads{DX: ts[10], DGamma: ts[11], DBeta: ts[12], DScale: ts[13],
						DShift: ts[14], DZScale: ts[15]}, ts[9], ts[0], ts[2], ts[3], ts[4], ts[5], n, c, h*w, 4, mod(ts))
					return 0
				}, [][]int{{n, c, h, w}, {n, c, h, w}, {c}, {c}, {n, 4}, {n, 4}, {n, c}, {n, c}, {n, c},
					{n, c, h, w}, {n, c, h, w}, {c}, {c}, {n, c}, {n, c}, {n, c}}},
				{"GroupNormBackwardPlain", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.GroupNorm(ts[1], ts[0], ts[2], ts[3], ts[4], ts[5], n, c, h*w, 8, 1e-5, tensor.GNMod{})
					d.GroupNormBackward(tensor.GNGrads{DX: ts[7], DGamma: ts[8], DBeta: ts[9]}, ts[6], ts[0], ts[2],
						ts[3], ts[4], ts[5], n, c, h*w, 8, tensor.GNMod{})
					return 0
				}, [][]int{{n, c, h, w}, {n, c, h, w}, {c}, {c}, {n, 8}, {n, 8}, {n, c, h, w}, {n, c, h, w}, {c}, {c}}},
				{"LayerNorm", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.LayerNorm(ts[1], ts[0], ts[2], ts[3], ts[4], ts[5], 5, 300, 1e-5)
					d.LayerNormBackward(ts[7], ts[8], ts[9], ts[6], ts[0], ts[2], ts[4], ts[5], 5, 300)
					return 0
				}, [][]int{{5, 300}, {5, 300}, {300}, {300}, {5}, {5}, {5, 300}, {5, 300}, {300}, {300}}},
				{"SoftmaxInPlace", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.Softmax(ts[0], ts[0], 12, 300)
					d.SoftmaxBackward(ts[1], ts[0], ts[1], 12, 300)
					return 0
				}, [][]int{{12, 300}, {12, 300}}},
				{"AvgPool2", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.AvgPool2(ts[1], ts[0], n*c, 6, 8)
					d.AvgPool2Backward(ts[2], ts[1], n*c, 6, 8)
					return 0
				}, [][]int{{n * c, 6, 8}, {n * c, 3, 4}, {n * c, 6, 8}}},
				{"Upsample2", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.Upsample2(ts[1], ts[0], n*c, 3, 5)
					d.Upsample2Backward(ts[2], ts[1], n*c, 3, 5)
					return 0
				}, [][]int{{n * c, 3, 5}, {n * c, 6, 10}, {n * c, 3, 5}}},
				{"SpatialMean", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.SpatialMean(ts[1], ts[0], n*c, 1000)
					d.SpatialMeanBackward(ts[2], ts[1], n*c, 1000)
					return 0
				}, [][]int{{n * c, 1000}, {n * c}, {n * c, 1000}}},
				{"MSE", func(d tensor.Device, ts []*tensor.Tensor) float64 { return d.MSE(ts[2], ts[0], ts[1], 3) }, [][]int{{100000}, {100000}, {100000}}},
				{"MSENoGrad", func(d tensor.Device, ts []*tensor.Tensor) float64 { return d.MSE(nil, ts[0], ts[1], 1) }, [][]int{{1000}, {1000}}},
				{"L1", func(d tensor.Device, ts []*tensor.Tensor) float64 { return d.L1(ts[2], ts[0], ts[1], 0.5) }, [][]int{{100000}, {100000}, {100000}}},
				{"Adam", func(d tensor.Device, ts []*tensor.Tensor) float64 {
					d.Mul(ts[3], ts[3], ts[3]) // v ≥ 0
					d.Adam(ts[0], ts[1], ts[2], ts[3], 1e-3, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.001)
					return 0
				}, [][]int{{5000}, {5000}, {5000}, {5000}}},
				{"EMA", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.EMA(ts[0], ts[1], 0.99); return 0 }, [][]int{{5000}, {5000}}},
				{"DropoutMask", func(d tensor.Device, ts []*tensor.Tensor) float64 { d.DropoutMask(ts[0], 0.1, 12345); return 0 }, [][]int{{100003}}},
			}
			for _, o := range ops {
				t.Run(o.name, func(t *testing.T) {
					var pc, pg []*tensor.Tensor
					for _, s := range o.shapes {
						p := newPair(rng, g, s...)
						pc, pg = append(pc, p.c), append(pg, p.g)
					}
					rc, rg := o.run(cpuDev, pc), o.run(g, pg)
					if math.Abs(rc-rg) > parityTol*math.Max(math.Abs(rc), 1e-12) {
						t.Errorf("result: cpu %g, gpu %g", rc, rg)
					}
					for i := range pc {
						same(t, o.name+" tensor "+string(rune('0'+i)), pc[i].Host(), pg[i].Host(), parityTol)
					}
				})
			}
		})
	}
}

// The dropout masks must be bit-identical, not only close.
func TestParityDropoutExact(t *testing.T) {
	g := devices(t)["cublas"]
	for _, p := range []float32{0.1, 0.5} {
		mc, mg := cpuDev.New(77777), g.New(77777)
		cpuDev.DropoutMask(mc, p, 99)
		g.DropoutMask(mg, p, 99)
		hg := mg.Host()
		for i, v := range mc.Data {
			if hg[i] != v {
				t.Fatalf("p=%g: element %d is %g on the CPU, %g on the GPU", p, i, v, hg[i])
			}
		}
	}
}

// layerCase builds one layer on a device (parameters initialised from a fixed seed), runs its forward pass on x and
// its backward pass with dy, and returns the tensors to compare: outputs, input gradients, parameter gradients.
type layerCase struct {
	name  string
	shape []int // of x
	run   func(d tensor.Device, ps *nn.Params, x, dy func(shape ...int) *tensor.Tensor) []*tensor.Tensor
}

func TestParityLayers(t *testing.T) {
	g := devices(t)["cublas"]
	cases := []layerCase{
		{"Conv3x3", []int{2, 6, 9, 7}, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			l := nn.NewConv2d(ps, "c", 6, 10, 3)
			initParams(ps)
			y := l.Forward(x(2, 6, 9, 7))
			return []*tensor.Tensor{y, l.Backward(dy(y.Shape...)), l.W.G, l.B.G}
		}},
		{"Conv1x1", []int{2, 6, 5, 5}, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			l := nn.NewConv2d(ps, "c", 6, 4, 1)
			initParams(ps)
			y := l.Forward(x(2, 6, 5, 5))
			return []*tensor.Tensor{y, l.Backward(dy(y.Shape...)), l.W.G, l.B.G}
		}},
		{"Linear", nil, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			l := nn.NewLinear(ps, "l", 33, 17)
			initParams(ps)
			y := l.Forward(x(5, 33))
			return []*tensor.Tensor{y, l.Backward(dy(y.Shape...)), l.W.G, l.B.G}
		}},
		{"GroupNormAdaGN", nil, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			l := nn.NewGroupNorm(ps, "gn", 64)
			initParams(ps)
			mod := tensor.GNMod{Scale: x(2, 64), Shift: x(2, 64), ZScale: x(2, 64), SiLU: true}
			y := l.Forward(x(2, 64, 4, 4), mod)
			return []*tensor.Tensor{y, l.Backward(dy(y.Shape...)), l.Gamma.G, l.Beta.G, l.DScale, l.DShift, l.DZ}
		}},
		{"LayerNorm", nil, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			l := nn.NewLayerNorm(ps, "ln", 48)
			initParams(ps)
			y := l.Forward(x(7, 48))
			return []*tensor.Tensor{y, l.Backward(dy(y.Shape...)), l.Gamma.G, l.Beta.G}
		}},
		{"Attention", nil, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			l := nn.NewAttention(ps, "a", 32)
			initParams(ps)
			y := l.Forward(x(2, 32, 4, 4))
			return []*tensor.Tensor{y, l.Backward(dy(y.Shape...)), l.QKV.W.G, l.Proj.W.G, l.Norm.Gamma.G}
		}},
		{"SiLU+Pool+Upsample+Concat+Mean", nil, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			var s nn.SiLU
			var p nn.AvgPool2
			var u nn.Upsample2
			var c nn.Concat
			var m nn.SpatialMean
			a := s.Forward(x(2, 3, 8, 8))
			b := u.Forward(p.Forward(a))
			cc := c.Forward(a, b)
			y := m.Forward(cc)
			da, db := c.Backward(m.Backward(dy(y.Shape...)))
			dx := s.Backward(p.Backward(u.Backward(db)))
			return []*tensor.Tensor{y, da, dx}
		}},
		{"Dropout+Losses", nil, func(d tensor.Device, ps *nn.Params, x, dy func(...int) *tensor.Tensor) []*tensor.Tensor {
			dr := &nn.Dropout{P: 0.3, Training: true, Rng: rand.New(rand.NewPCG(5, 6))}
			y := dr.Forward(x(4, 100))
			t := x(4, 100)
			gm, gl := d.New(4, 100), d.New(4, 100)
			lm, ll := nn.MSELoss(gm, y, t), nn.L1Loss(gl, y, t)
			ls := d.New(2)
			d.Upload(ls, []float32{float32(lm), float32(ll)})
			return []*tensor.Tensor{y, dr.Backward(gm), gl, ls}
		}},
	}
	for _, lc := range cases {
		t.Run(lc.name, func(t *testing.T) {
			var outs [2][]*tensor.Tensor
			for i, d := range []tensor.Device{cpuDev, g} {
				rng := rand.New(rand.NewPCG(7, 8)) // the same inputs on both devices
				ps := nn.NewParams(d)
				mk := func(shape ...int) *tensor.Tensor { return on(d, randHost(rng, tensor.Numel(shape...)), shape...) }
				outs[i] = lc.run(d, ps, mk, mk)
			}
			for j := range outs[0] {
				same(t, lc.name+" tensor "+string(rune('0'+j)), outs[0][j].Host(), outs[1][j].Host(), parityTol)
			}
		})
	}
}

// initParams gives every parameter of ps the same pseudo-random values on every device.
func initParams(ps *nn.Params) {
	in := nn.Init{Rng: rand.New(rand.NewPCG(3, 4))}
	for _, p := range ps.List {
		in.Normal(p, 0.5)
	}
}

// tinyModel builds the tiny preset on d with fixed weights.
func tinyModel(t *testing.T, d tensor.Device) *diffae.Model {
	t.Helper()
	cfg, err := diffae.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	return diffae.New(d, cfg, 1)
}

// TestParityNetworks runs the encoder, the decoder (UNet) forward and backward, the latent network, two training
// steps and the DDIM samplers of the tiny model on both devices.
func TestParityNetworks(t *testing.T) {
	g := devices(t)["cublas"]
	ms := []*diffae.Model{tinyModel(t, cpuDev), tinyModel(t, g)}
	cfg := ms[0].Cfg
	n := 2
	rng := rand.New(rand.NewPCG(9, 10))
	xh := randHost(rng, n*ms[0].ImageSize())
	zh := randHost(rng, n*cfg.ZDim())
	ts := []float32{10, 900}
	var res [2][][]float32
	for i, m := range ms {
		dev := []tensor.Device{cpuDev, g}[i]
		x := on(dev, xh, n, cfg.InChannels, cfg.ImageSize, cfg.ImageSize)
		z := on(dev, zh, n, cfg.ZDim())
		zs := m.Enc.Forward(x).Host()
		eps := m.UNet.Forward(x, ts, z)
		epsH := eps.Host()
		m.Params().ZeroGrad()
		dx := m.UNet.Backward(on(dev, xh, eps.Shape...)).Host()
		var grads []float32
		for _, p := range m.Params().List {
			if p.G != nil {
				grads = append(grads, p.G.Host()...)
			}
		}
		res[i] = [][]float32{zs, epsH, dx, grads}
		if m.Latent != nil {
			res[i] = append(res[i], m.Latent.Forward(z, ts).Host())
		}
	}
	for j, name := range []string{"z_sem", "eps", "dx", "parameter gradients", "latent eps"} {
		if j < len(res[0]) {
			same(t, name, res[0][j], res[1][j], parityTol)
		}
	}

	// Two training steps from the same weights and data: the same loss and the same weights after.
	var losses [2][]float64
	var weights [2][]float32
	for i := range 2 {
		m := tinyModel(t, []tensor.Device{cpuDev, g}[i])
		imgs := &dataset.Images{N: n, C: m.Cfg.InChannels, H: m.Cfg.ImageSize, W: m.Cfg.ImageSize, Data: xh}
		tr := diffae.NewImageTrainer(m, imgs, n, diffae.TrainOptions{Batch: n, Seed: 3})
		for range 2 {
			l, err := tr.Step()
			if err != nil {
				t.Fatal(err)
			}
			losses[i] = append(losses[i], l)
		}
		for _, p := range m.Params().List {
			weights[i] = append(weights[i], p.W.Host()...)
		}
	}
	for s := range losses[0] {
		if math.Abs(losses[0][s]-losses[1][s]) > parityTol*losses[0][s] {
			t.Errorf("training step %d: loss %g on the CPU, %g on the GPU", s, losses[0][s], losses[1][s])
		}
	}
	same(t, "weights after 2 steps", weights[0], weights[1], parityTol)

	// The samplers compound 10 steps of rounding: 1e-2.
	ctx := context.Background()
	var enc [2][2][]float32
	for i, m := range ms {
		z, xT, err := m.Encode(ctx, xh, n, diffae.EncodeOptions{Steps: 10})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := m.Decode(ctx, z, xT, n, diffae.DecodeOptions{Steps: 10})
		if err != nil {
			t.Fatal(err)
		}
		enc[i] = [2][]float32{xT, rec}
	}
	same(t, "x_T (10-step DDIM encode)", enc[0][0], enc[1][0], 1e-2)
	same(t, "reconstruction (10-step decode)", enc[0][1], enc[1][1], 1e-2)
}

// fixtureDir finds the authors' reference numbers (shared/fixtures/official-tiny16) from the package directory or
// from the repository root, where devicecheck.sh runs; DAE_FIXTURES overrides.
func fixtureDir() string {
	if d := os.Getenv("DAE_FIXTURES"); d != "" {
		return d
	}
	for _, d := range []string{"../../shared", "../shared", "shared", "../../../shared"} {
		p := filepath.Join(d, "fixtures", "official-tiny16")
		if _, err := os.Stat(filepath.Join(p, "weights.safetensors")); err == nil {
			return p
		}
	}
	return ""
}

// TestFixtureNetworksCUDA is diffae's TestFixtureNetworks on the GPU: the networks loaded from the authors'
// weights must give the authors' outputs.
func TestFixtureNetworksCUDA(t *testing.T) {
	dir := fixtureDir()
	if dir == "" {
		t.Skip("reference fixture not found (set DAE_FIXTURES to shared/fixtures/official-tiny16)")
	}
	g := devices(t)["cublas"]
	m, err := diffae.Load(g, filepath.Join(dir, "weights.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	exp, err := nn.ReadSafetensors(filepath.Join(dir, "expect.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) ([]float32, []int) {
		v, s, err := exp.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		return v, s
	}
	x0, xs := get("x0")
	z := m.Enc.Forward(on(g, x0, xs...)).Host()
	wantZ, _ := get("z_sem")
	same(t, "z_sem", wantZ, z, parityTol)
	xt, xts := get("x_t")
	tv, _ := get("t")
	eps := m.UNet.Forward(on(g, xt, xts...), tv, on(g, wantZ, xts[0], m.Cfg.ZDim())).Host()
	wantEps, _ := get("eps")
	same(t, "eps", wantEps, eps, parityTol)
	lz, lzs := get("latent_z")
	lt, _ := get("latent_t")
	le := m.Latent.Forward(on(g, lz, lzs...), lt).Host()
	wantLE, _ := get("latent_eps")
	same(t, "latent_eps", wantLE, le, parityTol)
	zE, xT, err := m.Encode(context.Background(), x0, xs[0], diffae.EncodeOptions{Steps: 10})
	if err != nil {
		t.Fatal(err)
	}
	wantXT, _ := get("x_T_ddim10")
	same(t, "x_T_ddim10", wantXT, xT, 1e-2)
	same(t, "z_sem (Encode)", wantZ, zE, parityTol)
}
