package diffae

import (
	"fmt"
	"math"
)

// Lerp returns (1-α)·a + α·b, the paper's interpolation of z_sem.
func Lerp(a, b []float32, alpha float64) ([]float32, error) {
	if len(a) != len(b) {
		return nil, fmt.Errorf("lerp: vectors of %d and %d values", len(a), len(b))
	}
	out := make([]float32, len(a))
	for i := range a {
		out[i] = float32((1-alpha)*float64(a[i]) + alpha*float64(b[i]))
	}
	return out, nil
}

// Slerp is the spherical interpolation of the flattened a and b (the paper's interpolation of x_T):
// sin((1-α)θ)/sin θ · a + sin(αθ)/sin θ · b, with θ the angle between them. Nearly parallel vectors fall back to
// Lerp, where the formula divides by almost zero.
func Slerp(a, b []float32, alpha float64) ([]float32, error) {
	if len(a) != len(b) {
		return nil, fmt.Errorf("slerp: vectors of %d and %d values", len(a), len(b))
	}
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return Lerp(a, b, alpha)
	}
	cos := math.Max(-1, math.Min(1, dot/math.Sqrt(na*nb)))
	theta := math.Acos(cos)
	if math.Sin(theta) < 1e-6 {
		return Lerp(a, b, alpha)
	}
	wa := math.Sin((1-alpha)*theta) / math.Sin(theta)
	wb := math.Sin(alpha*theta) / math.Sin(theta)
	out := make([]float32, len(a))
	for i := range a {
		out[i] = float32(wa*float64(a[i]) + wb*float64(b[i]))
	}
	return out, nil
}
