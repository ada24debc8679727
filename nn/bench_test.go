package nn

import (
	"math/rand/v2"
	"testing"

	"dae/tensor"
)

// Run with: go test -bench . -run '^$' ./nn (2 threads, as on the target machine).

// Conv2d 3×3 on [32, 64, 32, 32] → 64 channels, forward then backward (weights and input), as in training.
func BenchmarkConv2d3x3(b *testing.B) {
	d := tensor.NewCPU(2)
	rng := rand.New(rand.NewPCG(51, 1))
	ps := NewParams(d)
	c := NewConv2d(ps, "conv", 64, 64, 3)
	Init{rng}.TorchDefault(c.W, c.B, 64*9)
	x, dy := d.New(32, 64, 32, 32), d.New(32, 64, 32, 32)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
		dy.Data[i] = float32(rng.NormFloat64())
	}
	fwd := 2.0 * 32 * 32 * 32 * 64 * 64 * 9 // multiply-adds of one pass, as FLOPs
	b.Run("forward", func(b *testing.B) {
		c.Forward(x)
		for b.Loop() {
			c.Forward(x)
		}
		b.ReportMetric(fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("forward+backward", func(b *testing.B) {
		c.Forward(x)
		c.Backward(dy)
		for b.Loop() {
			c.Forward(x)
			c.Backward(dy)
		}
		b.ReportMetric(3*fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
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
