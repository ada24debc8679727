package diffae

import (
	"math/rand/v2"
	"testing"
	"time"

	"dae/tensor"
)

// FLOPs per image of the reference models (convolutions, linears, attention products), from the project's
// measurements of the authors' code.
var refFLOPs = map[string]struct{ dec, enc float64 }{
	"fm32":     {0.946e9, 0.158e9},
	"celeba64": {26.7e9, 3.07e9},
}

func benchModel(b *testing.B, preset string) (*Model, *tensor.Tensor, *tensor.Tensor) {
	cfg, err := Preset(preset)
	if err != nil {
		b.Fatal(err)
	}
	cfg.LatentNet = nil
	m := New(cpu, cfg, 1)
	batch := map[string]int{"fm32": 16, "celeba64": 8}[preset]
	rng := rand.New(rand.NewPCG(1, 2))
	x := randTensor(rng, batch, cfg.InChannels, cfg.ImageSize, cfg.ImageSize)
	z := randTensor(rng, batch, cfg.ZDim())
	return m, x, z
}

// report gives images/s, effective GFLOP/s (reference FLOPs over wall time) and the share of the cores' time
// spent inside GEMM (gemm0 is the device's GEMM time when the timed loop started).
func report(b *testing.B, imgs int, flopsPerImg float64, el time.Duration, gemm0 time.Duration) {
	sec := el.Seconds()
	b.ReportMetric(float64(imgs)/sec, "img/s")
	b.ReportMetric(float64(imgs)*flopsPerImg/sec/1e9, "GFLOP/s")
	b.ReportMetric(100*(cpu.GemmTime()-gemm0).Seconds()/(sec*float64(cpu.Threads())), "%GEMM")
}

func BenchmarkDecoderForward(b *testing.B) {
	for _, p := range []string{"fm32", "celeba64"} {
		b.Run(p, func(b *testing.B) {
			m, x, z := benchModel(b, p)
			n := x.Shape[0]
			ts := make([]float32, n)
			m.UNet.Forward(x, ts, z)
			b.ResetTimer()
			start, g0 := time.Now(), cpu.GemmTime()
			for i := 0; i < b.N; i++ {
				m.UNet.Forward(x, ts, z)
			}
			report(b, n*b.N, refFLOPs[p].dec, time.Since(start), g0)
		})
	}
}

func BenchmarkEncoderForward(b *testing.B) {
	for _, p := range []string{"fm32", "celeba64"} {
		b.Run(p, func(b *testing.B) {
			m, x, _ := benchModel(b, p)
			n := x.Shape[0]
			m.Enc.Forward(x)
			b.ResetTimer()
			start, g0 := time.Now(), cpu.GemmTime()
			for i := 0; i < b.N; i++ {
				m.Enc.Forward(x)
			}
			report(b, n*b.N, refFLOPs[p].enc, time.Since(start), g0)
		})
	}
}

// sliceSource serves a fixed tensor as training data.
type sliceSource struct {
	data []float32
	per  int
}

func (s sliceSource) Batch(idx []int, dst []float32, flip *rand.Rand) []float32 {
	for j, i := range idx {
		copy(dst[j*s.per:(j+1)*s.per], s.data[i*s.per:(i+1)*s.per])
	}
	return dst
}

func BenchmarkTrainStep(b *testing.B) {
	for _, p := range []string{"fm32", "celeba64"} {
		b.Run(p, func(b *testing.B) {
			m, x, _ := benchModel(b, p)
			n := x.Shape[0]
			tr := NewImageTrainer(m, sliceSource{x.Data, m.ImageSize()}, n, TrainOptions{Batch: n, Flip: true})
			if _, err := tr.Step(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start, g0 := time.Now(), cpu.GemmTime()
			for i := 0; i < b.N; i++ {
				if _, err := tr.Step(); err != nil {
					b.Fatal(err)
				}
			}
			f := refFLOPs[p]
			report(b, n*b.N, 3*(f.dec+f.enc), time.Since(start), g0)
		})
	}
}
