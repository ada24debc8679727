package diffae

import (
	"math/rand/v2"
	"testing"
	"time"

	"dae/tensor"
)

// FLOPs per image of the reference models: ReferenceFLOPs (also used by dae bench).
var refFLOPs = ReferenceFLOPs

func benchModel(b *testing.B, preset string) (*Model, *tensor.Tensor, *tensor.Tensor) {
	cfg, err := Preset(preset)
	if err != nil {
		b.Fatal(err)
	}
	cfg.LatentNet = nil
	m := New(cpu, cfg, 1)
	batch := BenchBatch(preset)
	rng := rand.New(rand.NewPCG(1, 2))
	x := randTensor(rng, batch, cfg.InChannels, cfg.ImageSize, cfg.ImageSize)
	z := randTensor(rng, batch, cfg.ZDim())
	return m, x, z
}

// timing marks the device's counters when a timed loop starts.
type timing struct {
	start      time.Time
	gemm, conv time.Duration
}

func startTiming() timing { return timing{time.Now(), cpu.GemmTime(), cpu.DirectConvTime()} }

// report gives images/s, effective GFLOP/s (reference FLOPs over wall time) and the shares of the cores' time
// spent inside GEMM (OpenBLAS) and inside the direct 3×3 convolution kernel.
func report(b *testing.B, imgs int, flopsPerImg float64, t timing) {
	sec := time.Since(t.start).Seconds()
	b.ReportMetric(float64(imgs)/sec, "img/s")
	b.ReportMetric(float64(imgs)*flopsPerImg/sec/1e9, "GFLOP/s")
	b.ReportMetric(100*(cpu.GemmTime()-t.gemm).Seconds()/(sec*float64(cpu.Threads())), "%GEMM")
	b.ReportMetric(100*(cpu.DirectConvTime()-t.conv).Seconds()/(sec*float64(cpu.Threads())), "%conv3x3")
}

// convPaths runs f once with the direct 3×3 convolution kernel and once with im2col + GEMM, so one run gives
// the ratio.
func convPaths(b *testing.B, f func(b *testing.B)) {
	defer cpu.SetIm2colConv(false)
	for _, path := range []string{"direct", "im2col"} {
		cpu.SetIm2colConv(path == "im2col")
		b.Run(path, f)
	}
}

func BenchmarkDecoderForward(b *testing.B) {
	for _, p := range []string{"fm32", "celeba64"} {
		b.Run(p, func(b *testing.B) {
			m, x, z := benchModel(b, p)
			n := x.Shape[0]
			ts := make([]float32, n)
			convPaths(b, func(b *testing.B) {
				m.UNet.Forward(x, ts, z)
				b.ResetTimer()
				t := startTiming()
				for i := 0; i < b.N; i++ {
					m.UNet.Forward(x, ts, z)
				}
				report(b, n*b.N, refFLOPs[p].Decoder, t)
			})
		})
	}
}

func BenchmarkEncoderForward(b *testing.B) {
	for _, p := range []string{"fm32", "celeba64"} {
		b.Run(p, func(b *testing.B) {
			m, x, _ := benchModel(b, p)
			n := x.Shape[0]
			convPaths(b, func(b *testing.B) {
				m.Enc.Forward(x)
				b.ResetTimer()
				t := startTiming()
				for i := 0; i < b.N; i++ {
					m.Enc.Forward(x)
				}
				report(b, n*b.N, refFLOPs[p].Encoder, t)
			})
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
			convPaths(b, func(b *testing.B) {
				if _, err := tr.Step(); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				t := startTiming()
				for i := 0; i < b.N; i++ {
					if _, err := tr.Step(); err != nil {
						b.Fatal(err)
					}
				}
				f := refFLOPs[p]
				report(b, n*b.N, 3*(f.Decoder+f.Encoder), t)
			})
		})
	}
}
