package tensor

import "testing"

// The fork-join cost of one parallel call with almost no work in it.
func BenchmarkParOverhead(b *testing.B) {
	d := NewCPU(2)
	var sink [2][16]float32
	for b.Loop() {
		d.par(2, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				sink[i][0]++
			}
		})
	}
}
