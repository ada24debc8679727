package metrics

import (
	"math"
	"math/rand/v2"
	"testing"
)

func near(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol || (math.IsInf(a, 1) && math.IsInf(b, 1))
}

func randomImages(r *rand.Rand, d Dims) []float32 {
	x := make([]float32, d.N*d.C*d.H*d.W)
	for i := range x {
		x[i] = r.Float32()*2 - 1
	}
	return x
}

func TestMSEAndPSNR(t *testing.T) {
	t.Parallel()
	d := Dims{N: 3, C: 2, H: 2, W: 2}
	x := make([]float32, 24)
	y := make([]float32, 24)
	// Image 0: identical. Image 1: every value off by 0.2 in [-1,1], so
	// 0.1 in [0,1]: MSE 0.01, PSNR 20 dB. Image 2: half the values off by
	// 2 (-1 against 1): MSE 0.5, PSNR 10·log10(2).
	for j := 8; j < 16; j++ {
		x[j], y[j] = 0.3, 0.5
	}
	for j := 16; j < 24; j += 2 {
		x[j], y[j] = -1, 1
	}
	tests := []struct {
		name      string
		i         int
		mse, psnr float64
	}{
		{"identical", 0, 0, math.Inf(1)},
		{"uniform error", 1, 0.01, 20},
		{"half wrong", 2, 0.5, 10 * math.Log10(2)},
	}
	mse, psnr := MSE(x, y, d), PSNR(x, y, d)
	for _, tt := range tests {
		// 0.3 and 0.5 are not exact in float32; the error is about 1e-8.
		if !near(mse[tt.i], tt.mse, 1e-8) || !near(psnr[tt.i], tt.psnr, 1e-5) {
			t.Errorf("%s: MSE %v PSNR %v, want %v and %v", tt.name, mse[tt.i], psnr[tt.i], tt.mse, tt.psnr)
		}
	}
	if got := Mean(mse); !near(got, 0.51/3, 1e-8) {
		t.Errorf("Mean(MSE) = %v", got)
	}
	if got := PSNRFromMSE(1e-3); !near(got, 30, 1e-12) {
		t.Errorf("PSNRFromMSE(1e-3) = %v, want 30", got)
	}
	if !math.IsNaN(Mean(nil)) {
		t.Error("Mean(nil) is not NaN")
	}
}

func TestPanicsOnBadDims(t *testing.T) {
	t.Parallel()
	x := make([]float32, 12)
	tests := []struct {
		name string
		f    func()
	}{
		{"MSE short", func() { MSE(x, x[:11], Dims{1, 3, 2, 2}) }},
		{"MSE wrong dims", func() { MSE(x, x, Dims{1, 3, 2, 3}) }},
		{"SSIM zero channels", func() { SSIM(x, x, Dims{1, 0, 2, 2}, SameZero) }},
		{"SSIM valid too small", func() { SSIM(x, x, Dims{1, 3, 2, 2}, Valid) }},
		{"SSIM bad padding", func() { SSIM(x, x, Dims{1, 3, 2, 2}, Padding(7)) }},
		{"AUROC lengths", func() { AUROC([]float64{1}, nil) }},
		{"AUROC NaN", func() { AUROC([]float64{math.NaN(), 1}, []bool{true, false}) }},
		{"Accuracy lengths", func() { Accuracy([]int{1}, []int{1, 2}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("did not panic")
				}
			}()
			tt.f()
		})
	}
}
