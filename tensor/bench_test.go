package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// Run with: go test -bench . -run '^$' ./tensor
// Every benchmark uses a 2-thread CPU device, the machine the targets are set for.

func benchDev() *CPU { return NewCPU(2) }

func randn(d *CPU, rng *rand.Rand, shape ...int) *Tensor {
	t := d.New(shape...)
	for i := range t.Data {
		t.Data[i] = float32(rng.NormFloat64())
	}
	return t
}

func BenchmarkSgemm(b *testing.B) {
	d := benchDev()
	rng := rand.New(rand.NewPCG(1, 1))
	for _, s := range []struct{ m, n, k int }{{64, 1024, 576}, {512, 512, 512}, {2048, 2048, 2048}} {
		b.Run(fmt.Sprintf("%dx%dx%d", s.m, s.n, s.k), func(b *testing.B) {
			a, bb, c := randn(d, rng, s.m, s.k), randn(d, rng, s.k, s.n), d.New(s.m, s.n)
			g := GemmArgs{M: s.m, N: s.n, K: s.k, Alpha: 1, A: a, B: bb, C: c}
			d.Gemm(g)
			b.ResetTimer()
			for b.Loop() {
				d.Gemm(g)
			}
			b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// The model's most common normalisation: [32, 64, 32, 32] in 32 groups with AdaGN scale and shift and SiLU.
const bn, bc, bhw, bg = 32, 64, 32 * 32, 32

func perElem(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(bn*bc*bhw), "ns/elem")
}

type gnBench struct {
	x, y, dy, dx, t, dt, gamma, beta, mean, rstd, dgamma, dbeta *Tensor
	mod                                                         GNMod
	dsc, dsh                                                    *Tensor
}

func newGNBench(d *CPU) *gnBench {
	rng := rand.New(rand.NewPCG(2, 2))
	g := &gnBench{x: randn(d, rng, bn, bc, bhw), dy: randn(d, rng, bn, bc, bhw), y: d.New(bn, bc, bhw),
		dx: d.New(bn, bc, bhw), t: d.New(bn, bc, bhw), dt: d.New(bn, bc, bhw),
		gamma: randn(d, rng, bc), beta: randn(d, rng, bc), mean: d.New(bn, bg), rstd: d.New(bn, bg),
		dgamma: d.New(bc), dbeta: d.New(bc), dsc: d.New(bn, bc), dsh: d.New(bn, bc)}
	g.mod = GNMod{Scale: randn(d, rng, bn, bc), Shift: randn(d, rng, bn, bc), SiLU: true}
	return g
}

func BenchmarkGroupNorm(b *testing.B) {
	d := benchDev()
	g := newGNBench(d)
	noSiLU := g.mod
	noSiLU.SiLU = false
	grads := GNGrads{DX: g.dx, DGamma: g.dgamma, DBeta: g.dbeta, DScale: g.dsc, DShift: g.dsh}
	b.Run("fused-silu/forward", func(b *testing.B) {
		for b.Loop() {
			d.GroupNorm(g.y, g.x, g.gamma, g.beta, g.mean, g.rstd, bn, bc, bhw, bg, 1e-5, g.mod)
		}
		perElem(b)
	})
	b.Run("fused-silu/backward", func(b *testing.B) {
		d.GroupNorm(g.y, g.x, g.gamma, g.beta, g.mean, g.rstd, bn, bc, bhw, bg, 1e-5, g.mod)
		for b.Loop() {
			d.GroupNormBackward(grads, g.dy, g.x, g.gamma, g.beta, g.mean, g.rstd, bn, bc, bhw, bg, g.mod)
		}
		perElem(b)
	})
	// The same work un-fused: group norm with scale/shift, then a separate SiLU pass (and its backward).
	b.Run("unfused/forward", func(b *testing.B) {
		for b.Loop() {
			d.GroupNorm(g.t, g.x, g.gamma, g.beta, g.mean, g.rstd, bn, bc, bhw, bg, 1e-5, noSiLU)
			d.SiLU(g.y, g.t)
		}
		perElem(b)
	})
	b.Run("unfused/backward", func(b *testing.B) {
		d.GroupNorm(g.t, g.x, g.gamma, g.beta, g.mean, g.rstd, bn, bc, bhw, bg, 1e-5, noSiLU)
		for b.Loop() {
			d.SiLUBackward(g.dt, g.t, g.dy)
			d.GroupNormBackward(grads, g.dt, g.x, g.gamma, g.beta, g.mean, g.rstd, bn, bc, bhw, bg, noSiLU)
		}
		perElem(b)
	})
	b.Run("plain/forward", func(b *testing.B) {
		for b.Loop() {
			d.GroupNorm(g.y, g.x, g.gamma, g.beta, g.mean, g.rstd, bn, bc, bhw, bg, 1e-5, GNMod{})
		}
		perElem(b)
	})
}

func BenchmarkSiLU(b *testing.B) {
	d := benchDev()
	g := newGNBench(d)
	b.Run("forward", func(b *testing.B) {
		for b.Loop() {
			d.SiLU(g.y, g.x)
		}
		perElem(b)
	})
	b.Run("backward", func(b *testing.B) {
		for b.Loop() {
			d.SiLUBackward(g.dx, g.x, g.dy)
		}
		perElem(b)
	})
	// A memory-bound yardstick: one read, one write.
	b.Run("copy", func(b *testing.B) {
		for b.Loop() {
			d.Copy(g.y, g.x)
		}
		perElem(b)
	})
}

// BenchmarkGroupNormShapes runs the fused AdaGN+SiLU forward and backward on the encoder's and decoder's map sizes
// (fm32, batch 16): small maps make the per-channel and per-group overheads count.
func BenchmarkGroupNormShapes(b *testing.B) {
	d := benchDev()
	rng := rand.New(rand.NewPCG(3, 3))
	for _, s := range []struct{ n, c, hw int }{{16, 32, 1024}, {16, 64, 256}, {16, 64, 64}, {16, 128, 16}} {
		x, dy := randn(d, rng, s.n, s.c, s.hw), randn(d, rng, s.n, s.c, s.hw)
		y, dx := d.New(s.n, s.c, s.hw), d.New(s.n, s.c, s.hw)
		gamma, beta := randn(d, rng, s.c), randn(d, rng, s.c)
		mean, rstd := d.New(s.n, 32), d.New(s.n, 32)
		mod := GNMod{Scale: randn(d, rng, s.n, s.c), Shift: randn(d, rng, s.n, s.c), SiLU: true}
		grads := GNGrads{DX: dx, DGamma: d.New(s.c), DBeta: d.New(s.c), DScale: d.New(s.n, s.c), DShift: d.New(s.n, s.c)}
		per := func(b *testing.B) {
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(s.n*s.c*s.hw), "ns/elem")
		}
		name := fmt.Sprintf("%dx%dx%d", s.n, s.c, s.hw)
		b.Run(name+"/forward", func(b *testing.B) {
			for b.Loop() {
				d.GroupNorm(y, x, gamma, beta, mean, rstd, s.n, s.c, s.hw, 32, 1e-5, mod)
			}
			per(b)
		})
		b.Run(name+"/backward", func(b *testing.B) {
			d.GroupNorm(y, x, gamma, beta, mean, rstd, s.n, s.c, s.hw, 32, 1e-5, mod)
			for b.Loop() {
				d.GroupNormBackward(grads, dy, x, gamma, beta, mean, rstd, s.n, s.c, s.hw, 32, mod)
			}
			per(b)
		})
	}
}

// The 3×3 weight gradient alone (Conv2dBackward without dx) on the fm32 training shapes, through the
// channels-last kernel and through the padded-grid one (on 4×4 maps im2col + GEMM), alternating every 20 calls in one timed loop so that
// both see the same machine; GFLOP/s of each and the ratio.
func BenchmarkConvWeightGrad(b *testing.B) {
	defer func() { setDWChannelsLast(true) }()
	for _, s := range []struct{ n, cin, cout, hw int }{{16, 32, 32, 32}, {16, 64, 32, 32}, {16, 64, 64, 16},
		{16, 128, 64, 16}, {16, 64, 64, 8}, {16, 128, 128, 8}, {16, 128, 128, 4}} {
		b.Run(fmt.Sprintf("%dx%dx%d->%d", s.n, s.cin, s.hw, s.cout), func(b *testing.B) {
			d := benchDev()
			rng := rand.New(rand.NewPCG(3, 3))
			x, dy := randn(d, rng, s.n, s.cin, s.hw, s.hw), randn(d, rng, s.n, s.cout, s.hw, s.hw)
			w, dw, db := randn(d, rng, s.cout, s.cin, 3, 3), d.New(s.cout, s.cin, 3, 3), d.New(s.cout)
			var spent [2]float64
			calls := 0
			for b.Loop() {
				for path := range 2 {
					setDWChannelsLast(path == 0)
					t0 := time.Now()
					for range 20 {
						d.Conv2dBackward(nil, dw, db, dy, x, w, s.n, s.cin, s.cout, s.hw, s.hw, 3)
					}
					spent[path] += float64(time.Since(t0))
				}
				calls += 20
			}
			flops := 2 * float64(s.n*s.hw*s.hw*s.cin*s.cout*9) * float64(calls)
			b.ReportMetric(flops/spent[0], "GFLOP/s-cl")
			b.ReportMetric(flops/spent[1], "GFLOP/s-grid")
			b.ReportMetric(spent[1]/spent[0], "speedup")
		})
	}
}
