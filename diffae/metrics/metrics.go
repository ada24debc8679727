// Package metrics scores reconstructions and classifiers for the paper's
// tables: MSE, PSNR and SSIM between batches of images, and AUROC and
// accuracy of binary classifiers.
//
// Images are float32 N×C×H×W slices with values in [-1,1], the model's
// range; every image metric first maps them to [0,1] by (x+1)/2, as the
// authors' evaluation does, and computes in float64. Functions return one
// value per image; Mean averages them the way the paper's tables do (the
// mean of per-image PSNR, not the PSNR of the mean MSE).
//
// The package is pure computation: it must not read files, know about
// models, or keep state. Mismatched lengths and dimensions are programming
// errors and panic with a message saying which.
package metrics

import (
	"fmt"
	"math"
)

// Dims are the dimensions of a batch of images stored as N×C×H×W.
type Dims struct{ N, C, H, W int }

func (d Dims) check(fn string, x, y []float32) {
	if d.N < 0 || d.C < 1 || d.H < 1 || d.W < 1 {
		panic(fmt.Sprintf("metrics.%s: bad dimensions %+v", fn, d))
	}
	if n := d.N * d.C * d.H * d.W; len(x) != n || len(y) != n {
		panic(fmt.Sprintf("metrics.%s: dimensions %+v need %d values, got %d and %d", fn, d, n, len(x), len(y)))
	}
}

// MSE returns, per image, the mean squared error between x and y after both
// are mapped to [0,1] (a quarter of the MSE in [-1,1]), as in the paper's
// Table 2.
func MSE(x, y []float32, d Dims) []float64 {
	d.check("MSE", x, y)
	out := make([]float64, d.N)
	size := d.C * d.H * d.W
	for i := range out {
		var s float64
		for j := i * size; j < (i+1)*size; j++ {
			e := (float64(x[j]) - float64(y[j])) / 2
			s += e * e
		}
		out[i] = s / float64(size)
	}
	return out
}

// PSNR returns, per image, the peak signal-to-noise ratio in decibels of
// images mapped to [0,1]: 10·log10(1/MSE). Identical images give +Inf.
func PSNR(x, y []float32, d Dims) []float64 {
	mse := MSE(x, y, d)
	for i, m := range mse {
		mse[i] = PSNRFromMSE(m)
	}
	return mse
}

// PSNRFromMSE converts an MSE of [0,1] images to PSNR in decibels.
func PSNRFromMSE(mse float64) float64 { return -10 * math.Log10(mse) }

// Mean returns the arithmetic mean of v, or NaN when v is empty.
func Mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
