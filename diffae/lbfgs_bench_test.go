package diffae

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkLogisticLoss is one evaluation of the exact probe's objective and gradient: 10,000 rows of z_sem's 512
// features, the inner loop of every L-BFGS iteration of `dae eval probe --exact`.
func BenchmarkLogisticLoss(b *testing.B) {
	const n, d = 10000, 512
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float64, n*d)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	y := make([]bool, n)
	for i := range y {
		y[i] = x[i*d] > 0
	}
	w, g := make([]float64, d+1), make([]float64, d+1)
	for i := range w {
		w[i] = 0.01 * rng.NormFloat64()
	}
	for b.Loop() {
		logisticLoss(x, n, d, y, 0.01, w, g)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n*d), "ns/value")
}
