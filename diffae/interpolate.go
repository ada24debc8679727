package diffae

import "math"

// Lerp returns (1-t)·a + t·b element-wise. The paper interpolates z_sem
// linearly because the semantic space is trained to be roughly linear.
// It panics if a and b differ in length, which is a programming error.
func Lerp(a, b []float32, t float32) []float32 {
	if len(a) != len(b) {
		panic("diffae.Lerp: length mismatch")
	}
	out := make([]float32, len(a))
	for i := range a {
		out[i] = a[i] + t*(b[i]-a[i])
	}
	return out
}

// Slerp interpolates spherically between the flattened vectors a and b:
// sin((1-t)θ)/sin θ · a + sin(tθ)/sin θ · b with θ the angle between them.
// x_T is close to Gaussian noise, whose norm concentrates on √n; slerp keeps
// intermediate frames on that shell where lerp would shrink them towards the
// origin and wash out the decoded images. When the vectors are (nearly)
// parallel it falls back to Lerp, where both agree. It panics if a and b
// differ in length.
func Slerp(a, b []float32, t float32) []float32 {
	if len(a) != len(b) {
		panic("diffae.Slerp: length mismatch")
	}
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return Lerp(a, b, t)
	}
	cos := dot / math.Sqrt(na*nb)
	cos = max(-1, min(1, cos))
	theta := math.Acos(cos)
	s := math.Sin(theta)
	if s < 1e-6 {
		return Lerp(a, b, t)
	}
	ca := math.Sin((1-float64(t))*theta) / s
	cb := math.Sin(float64(t)*theta) / s
	out := make([]float32, len(a))
	for i := range a {
		out[i] = float32(ca*float64(a[i]) + cb*float64(b[i]))
	}
	return out
}
