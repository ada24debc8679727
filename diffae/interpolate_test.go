package diffae

import (
	"math"
	"math/rand/v2"
	"testing"
)

func norm32(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestLerp(t *testing.T) {
	a := []float32{0, 2, -4}
	b := []float32{4, 2, 4}
	tests := []struct {
		t    float32
		want []float32
	}{
		{0, []float32{0, 2, -4}},
		{1, []float32{4, 2, 4}},
		{0.25, []float32{1, 2, -2}},
	}
	for _, tc := range tests {
		got := Lerp(a, b, tc.t)
		for i := range got {
			if math.Abs(float64(got[i]-tc.want[i])) > 1e-6 {
				t.Errorf("Lerp(t=%v)[%d] = %v, want %v", tc.t, i, got[i], tc.want[i])
			}
		}
	}
}

func TestSlerp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 3 * 32 * 32
	a := make([]float32, n)
	b := make([]float32, n)
	for i := range a {
		a[i] = float32(rng.NormFloat64())
		b[i] = float32(rng.NormFloat64())
	}
	// Endpoints are reproduced exactly (up to rounding).
	for _, tc := range []struct {
		t    float32
		want []float32
	}{{0, a}, {1, b}} {
		got := Slerp(a, b, tc.t)
		for i := range got {
			if math.Abs(float64(got[i]-tc.want[i])) > 1e-4 {
				t.Fatalf("Slerp(t=%v)[%d] = %v, want %v", tc.t, i, got[i], tc.want[i])
			}
		}
	}
	// For two vectors of equal norm the path stays on the sphere, whereas
	// lerp's midpoint of two near-orthogonal Gaussians shrinks by about √2.
	bs := make([]float32, n)
	scale := float32(norm32(a) / norm32(b))
	for i := range b {
		bs[i] = b[i] * scale
	}
	na := norm32(a)
	for _, tt := range []float32{0.1, 0.3, 0.5, 0.7, 0.9} {
		if got := norm32(Slerp(a, bs, tt)); math.Abs(got-na)/na > 1e-4 {
			t.Errorf("|Slerp(t=%v)| = %v, want %v", tt, got, na)
		}
	}
	if got := norm32(Lerp(a, bs, 0.5)); got > 0.8*na {
		t.Errorf("|Lerp(0.5)| = %v unexpectedly close to %v; test vectors not near-orthogonal", got, na)
	}
	// The angle grows linearly in t.
	ang := func(u, v []float32) float64 {
		var d float64
		for i := range u {
			d += float64(u[i]) * float64(v[i])
		}
		return math.Acos(d / (norm32(u) * norm32(v)))
	}
	total := ang(a, bs)
	if got := ang(a, Slerp(a, bs, 0.3)); math.Abs(got-0.3*total) > 1e-3 {
		t.Errorf("angle at t=0.3 = %v, want %v", got, 0.3*total)
	}
	// Parallel vectors fall back to lerp rather than dividing by sin 0.
	got := Slerp(a, a, 0.5)
	for i := range got {
		if math.IsNaN(float64(got[i])) || math.Abs(float64(got[i]-a[i])) > 1e-5 {
			t.Fatalf("Slerp(a, a)[%d] = %v, want %v", i, got[i], a[i])
		}
	}
}
