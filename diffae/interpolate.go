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
// Lerp, where the formula divides by almost zero; nearly opposite ones (any great circle joins them) turn through a
// direction orthogonal to a, their norm going linearly from a's to b's, rather than through the zero vector.
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
		if cos > 0 {
			return Lerp(a, b, alpha)
		}
		if len(a) > 1 {
			return turnAround(a, math.Sqrt(na), math.Sqrt(nb), alpha), nil
		}
		return Lerp(a, b, alpha) // one dimension: no way round
	}
	wa := math.Sin((1-alpha)*theta) / math.Sin(theta)
	wb := math.Sin(alpha*theta) / math.Sin(theta)
	out := make([]float32, len(a))
	for i := range a {
		out[i] = float32(wa*float64(a[i]) + wb*float64(b[i]))
	}
	return out, nil
}

// turnAround is Slerp from a (of norm na) to a vector of norm nb opposite it: cos(απ)·â + sin(απ)·u scaled by
// (1−α)·na + α·nb, with u the unit vector orthogonal to a nearest to the axis where a is smallest.
func turnAround(a []float32, na, nb, alpha float64) []float32 {
	k := 0
	for i := range a {
		if math.Abs(float64(a[i])) < math.Abs(float64(a[k])) {
			k = i
		}
	}
	u := make([]float64, len(a))
	var nu float64
	for i := range a {
		u[i] = -float64(a[k]) * float64(a[i]) / (na * na)
		if i == k {
			u[i]++
		}
		nu += u[i] * u[i]
	}
	nu = math.Sqrt(nu)
	r := (1-alpha)*na + alpha*nb
	c, s := math.Cos(alpha*math.Pi), math.Sin(alpha*math.Pi)
	out := make([]float32, len(a))
	for i := range a {
		out[i] = float32(r * (c*float64(a[i])/na + s*u[i]/nu))
	}
	return out
}
