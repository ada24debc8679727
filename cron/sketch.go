package cron

import (
	"math"
	"math/rand/v2"

	"dae/store"
)

// Hyperplanes returns the store.SketchBits random Gaussian directions of dimension d that sketches of d-dimensional
// z_sem use, row after row. They depend on d only (a fixed seed), so every replica and every run agrees on them and
// sketches stored at different times are comparable.
func Hyperplanes(d int) []float32 {
	rng := rand.New(rand.NewPCG(0x5e7c4_d1ae, uint64(d)))
	h := make([]float32, store.SketchBits*d)
	for i := range h {
		h[i] = float32(rng.NormFloat64())
	}
	return h
}

// Sketch returns the sign-random-projection sketch of z under hyperplanes h (from Hyperplanes(len(z))): bit i,
// most significant first, is set when z·h_i ≥ 0. For two vectors at angle θ each bit differs with probability θ/π,
// so the Hamming distance of sketches ranks neighbours by cosine approximately. It also returns ‖z‖.
func Sketch(z, h []float32) (bits []byte, norm float32) {
	d := len(z)
	bits = make([]byte, store.SketchBits/8)
	for i := range store.SketchBits {
		row := h[i*d : (i+1)*d]
		var s float64
		for j, v := range z {
			s += float64(v) * float64(row[j])
		}
		if s >= 0 {
			bits[i/8] |= 0x80 >> (i % 8)
		}
	}
	var n float64
	for _, v := range z {
		n += float64(v) * float64(v)
	}
	return bits, float32(math.Sqrt(n))
}
