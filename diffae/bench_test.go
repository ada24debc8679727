package diffae

import (
	"testing"
	"time"
)

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

// benchPart times part of each preset, with both convolution paths.
func benchPart(b *testing.B, part string) {
	for _, p := range []string{"fm32", "celeba64"} {
		b.Run(p, func(b *testing.B) {
			run, n, flops, err := NewBenchRunner(cpu, p, part)
			if err != nil {
				b.Fatal(err)
			}
			convPaths(b, func(b *testing.B) {
				if err := run(); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				t := startTiming()
				for i := 0; i < b.N; i++ {
					if err := run(); err != nil {
						b.Fatal(err)
					}
				}
				report(b, n*b.N, flops, t)
			})
		})
	}
}

func BenchmarkDecoderForward(b *testing.B) { benchPart(b, "decoder") }

func BenchmarkEncoderForward(b *testing.B) { benchPart(b, "encoder") }

func BenchmarkTrainStep(b *testing.B) { benchPart(b, "train") }
