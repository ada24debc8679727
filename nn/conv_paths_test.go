package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"dae/tensor"
)

// plainDevice hides the CPU's own convolution, so layers take the whole-batch im2col path other devices use.
type plainDevice struct{ tensor.Device }

// The CPU's own convolution (image by image for large images, whole-batch for small ones; the direct 3×3 kernel
// or im2col + GEMM) and the generic whole-batch path of other devices give the same outputs and gradients.
func TestConvPathsAgree(t *testing.T) {
	for _, tc := range []struct{ n, cin, cout, h, w, k int }{
		{1, 3, 5, 4, 6, 3}, {3, 4, 6, 5, 5, 3}, {2, 7, 3, 3, 4, 1}, {4, 8, 8, 1, 1, 3},
		// 256 pixels and more: the CPU works image by image
		{3, 5, 4, 16, 17, 3}, {2, 6, 5, 16, 16, 1}, {1, 3, 4, 16, 16, 3},
		// the direct 3×3 kernel: channel counts off its blocks of 8, widths from its smallest (8) up, one channel in
		{2, 1, 8, 8, 8, 3}, {2, 20, 13, 9, 11, 3}, {1, 16, 32, 32, 32, 3}, {3, 33, 17, 12, 8, 3}, {2, 8, 8, 7, 40, 3},
	} {
		rng := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.cin)))
		x := randT(rng, tc.n, tc.cin, tc.h, tc.w)
		dy := randT(rng, tc.n, tc.cout, tc.h, tc.w)
		run := func(d tensor.Device) (y, dx, dw, db []float32) {
			ps := NewParams(cpu)
			c := NewConv2d(ps, "conv", tc.cin, tc.cout, tc.k)
			Init{rand.New(rand.NewPCG(5, 6))}.TorchDefault(c.W, c.B, tc.cin*tc.k*tc.k)
			for _, p := range ps.List {
				p.W.Dev, p.G.Dev = d, d
			}
			xd := tensor.Wrap(d, append([]float32(nil), x.Data...), x.Shape...)
			dyd := tensor.Wrap(d, append([]float32(nil), dy.Data...), dy.Shape...)
			y = append([]float32(nil), c.Forward(xd).Data...)
			dx = append([]float32(nil), c.Backward(dyd).Data...)
			return y, dx, c.W.G.Data, c.B.G.Data
		}
		y2, dx2, dw2, db2 := run(plainDevice{cpu})
		im2col := tensor.NewCPU(1)
		im2col.SetIm2colConv(true)
		for _, dev := range []struct {
			name string
			d    tensor.Device
		}{{"cpu", cpu}, {"one-thread cpu (image by image, direct 3×3)", tensor.NewCPU(1)},
			{"one-thread cpu, im2col", im2col}} {
			y1, dx1, dw1, db1 := run(dev.d)
			for _, p := range []struct {
				name string
				a, b []float32
			}{{"y", y1, y2}, {"dx", dx1, dx2}, {"dw", dw1, dw2}, {"db", db1, db2}} {
				for i := range p.a {
					if math.Abs(float64(p.a[i]-p.b[i])) > 1e-4*(1+math.Abs(float64(p.b[i]))) {
						t.Fatalf("%+v: %s[%d]: %s %g, whole-batch %g", tc, p.name, i, dev.name, p.a[i], p.b[i])
					}
				}
			}
		}
	}
}

// TestConvWeightGradDeterministic: with more workers than two, the weight gradient is still the same bits on
// every run (the workers' partial sums are added in worker order, not in the order they finish).
func TestConvWeightGradDeterministic(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"direct", "im2col"} {
		d := tensor.NewCPU(5)
		d.SetIm2colConv(path == "im2col")
		rng := rand.New(rand.NewPCG(61, 1))
		ps := NewParams(d)
		c := NewConv2d(ps, "conv", 8, 16, 3)
		Init{rng}.TorchDefault(c.W, c.B, 8*9)
		x, dy := d.New(10, 8, 8, 8), d.New(10, 16, 8, 8)
		for i := range x.Data {
			x.Data[i] = float32(rng.NormFloat64())
		}
		for i := range dy.Data {
			dy.Data[i] = float32(rng.NormFloat64())
		}
		var first []float32
		for run := range 30 {
			for i := range c.W.G.Data {
				c.W.G.Data[i] = 0.125 // a non-zero accumulator, as after an earlier use of the same weight
			}
			c.Forward(x)
			c.Backward(dy)
			if run == 0 {
				first = append([]float32(nil), c.W.G.Data...)
				continue
			}
			for i, v := range c.W.G.Data {
				if v != first[i] {
					t.Fatalf("%s, run %d: dW[%d] = %v, first run %v", path, run, i, v, first[i])
				}
			}
		}
		if math.IsNaN(float64(first[0])) {
			t.Fatalf("%s: NaN gradient", path)
		}
	}
}
