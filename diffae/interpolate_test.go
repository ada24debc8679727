package diffae

import (
	"math"
	"testing"
)

func TestLerpSlerpEnds(t *testing.T) {
	t.Parallel()
	a := []float32{1, 0, 2, -1}
	b := []float32{0, 1, -1, 3}
	for _, f := range []struct {
		name string
		fn   func(a, b []float32, alpha float64) ([]float32, error)
	}{{"lerp", Lerp}, {"slerp", Slerp}} {
		for _, tc := range []struct {
			alpha float64
			want  []float32
		}{{0, a}, {1, b}} {
			got, err := f.fn(a, b, tc.alpha)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Abs(float64(got[i]-tc.want[i])) > 1e-5 {
					t.Errorf("%s(α=%g)[%d] = %g, want %g", f.name, tc.alpha, i, got[i], tc.want[i])
				}
			}
		}
		if _, err := f.fn(a, b[:2], 0.5); err == nil {
			t.Errorf("%s accepted vectors of different lengths", f.name)
		}
	}
}

func TestSlerpKeepsNormOfOrthogonalUnitVectors(t *testing.T) {
	t.Parallel()
	a := []float32{1, 0}
	b := []float32{0, 1}
	for _, alpha := range []float64{0.1, 0.25, 0.5, 0.9} {
		got, _ := Slerp(a, b, alpha)
		n := math.Hypot(float64(got[0]), float64(got[1]))
		if math.Abs(n-1) > 1e-5 {
			t.Errorf("‖slerp(α=%g)‖ = %g, want 1", alpha, n)
		}
		l, _ := Lerp(a, b, alpha)
		if alpha != 0 && alpha != 1 && math.Hypot(float64(l[0]), float64(l[1])) >= 1 {
			t.Errorf("lerp(α=%g) of orthogonal unit vectors should shrink", alpha)
		}
	}
}

// Opposite vectors turn through an orthogonal direction: every frame keeps a norm between the ends' (the middle
// one is not the zero vector), and the ends are a and b.
func TestSlerpOppositeVectors(t *testing.T) {
	t.Parallel()
	a := []float32{1, 2, 3}
	b := []float32{-2, -4, -6}
	for _, alpha := range []float64{0, 0.25, 0.5, 0.75, 1} {
		got, err := Slerp(a, b, alpha)
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, v := range got {
			n += float64(v) * float64(v)
		}
		want := (1-alpha)*math.Sqrt(14) + alpha*math.Sqrt(56)
		if math.Abs(math.Sqrt(n)-want) > 1e-5 {
			t.Errorf("α = %v: %v has norm %v, want %v", alpha, got, math.Sqrt(n), want)
		}
		for i, end := range map[float64][]float32{0: a, 1: b}[alpha] {
			if math.Abs(float64(got[i]-end)) > 1e-5 {
				t.Errorf("α = %v: %v, want %v", alpha, got, map[float64][]float32{0: a, 1: b}[alpha])
				break
			}
		}
	}
}
