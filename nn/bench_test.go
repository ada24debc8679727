package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"dae/tensor"
)

// Run with: go test -bench . -run '^$' ./nn (2 threads, as on the target machine).

// Conv2d 3×3, forward and forward+backward (weights and input) as in training, through the direct 3×3 kernel and
// through im2col + GEMM, on the layer shapes of fm32/fmnist32 (batch 16), wider layers and a single image:
// [n, cin, h, w] → cout.
func BenchmarkConv2d3x3(b *testing.B) {
	for _, sh := range []struct{ n, cin, cout, hw int }{
		{16, 32, 32, 32}, {16, 64, 64, 16}, {16, 64, 64, 8}, {16, 128, 64, 16}, {32, 64, 64, 32}, {8, 128, 128, 32},
		{16, 128, 128, 4}, {1, 64, 64, 32}, // one image (decoding a single file): output channels split over the cores
	} {
		for _, path := range []string{"direct", "im2col"} {
			d := tensor.NewCPU(2)
			d.SetIm2colConv(path == "im2col")
			rng := rand.New(rand.NewPCG(51, 1))
			ps := NewParams(d)
			c := NewConv2d(ps, "conv", sh.cin, sh.cout, 3)
			Init{rng}.TorchDefault(c.W, c.B, sh.cin*9)
			x, dy := d.New(sh.n, sh.cin, sh.hw, sh.hw), d.New(sh.n, sh.cout, sh.hw, sh.hw)
			for i := range x.Data {
				x.Data[i] = float32(rng.NormFloat64())
			}
			for i := range dy.Data {
				dy.Data[i] = float32(rng.NormFloat64())
			}
			fwd := 2.0 * float64(sh.n*sh.hw*sh.hw*sh.cin*sh.cout*9) // multiply-adds of one pass, as FLOPs
			name := fmt.Sprintf("%dx%dx%d->%d/%s", sh.n, sh.cin, sh.hw, sh.cout, path)
			b.Run(name+"/forward", func(b *testing.B) {
				c.Forward(x)
				for b.Loop() {
					c.Forward(x)
				}
				b.ReportMetric(fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			b.Run(name+"/forward+backward", func(b *testing.B) {
				c.Forward(x)
				c.Backward(dy)
				for b.Loop() {
					c.Forward(x)
					c.Backward(dy)
				}
				b.ReportMetric(3*fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// The AdaGN normalisation of a ResBlock at the layer level: GN + scale/shift + SiLU fused, against GroupNorm
// with scale/shift followed by a separate SiLU layer.
func BenchmarkGroupNormSiLULayer(b *testing.B) {
	d := tensor.NewCPU(2)
	rng := rand.New(rand.NewPCG(52, 1))
	n, ch, hw := 32, 64, 32
	ps := NewParams(d)
	g := NewGroupNorm(ps, "gn", ch)
	x, dy := d.New(n, ch, hw, hw), d.New(n, ch, hw, hw)
	sc, sh := d.New(n, ch), d.New(n, ch)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
		dy.Data[i] = float32(rng.NormFloat64())
	}
	elems := float64(x.Len())
	perElem := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/elems, "ns/elem")
	}
	fused := tensor.GNMod{Scale: sc, Shift: sh, SiLU: true}
	plain := tensor.GNMod{Scale: sc, Shift: sh}
	b.Run("fused/forward+backward", func(b *testing.B) {
		for b.Loop() {
			g.Forward(x, fused)
			g.Backward(dy)
		}
		perElem(b)
	})
	b.Run("unfused/forward+backward", func(b *testing.B) {
		var s SiLU
		for b.Loop() {
			s.Forward(g.Forward(x, plain))
			g.Backward(s.Backward(dy))
		}
		perElem(b)
	})
}
