package metrics

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bruteSSIM is SSIM written the slow, obvious way: a 2-D window built from
// the Gaussian formula, explicit zero padding, one position at a time.
func bruteSSIM(x, y []float32, d Dims, pad Padding) []float64 {
	const half = 5
	var g1 [11]float64
	var sum float64
	for i := range g1 {
		g1[i] = math.Exp(-float64((i-half)*(i-half)) / (2 * 1.5 * 1.5))
		sum += g1[i]
	}
	at := func(v []float32, off, yy, xx int) float64 {
		if yy < 0 || yy >= d.H || xx < 0 || xx >= d.W {
			return 0
		}
		return (float64(v[off+yy*d.W+xx]) + 1) / 2
	}
	y0, y1, x0, x1 := 0, d.H, 0, d.W
	if pad == Valid {
		y0, y1, x0, x1 = half, d.H-half, half, d.W-half
	}
	c1, c2 := 0.01*0.01, 0.03*0.03
	out := make([]float64, d.N)
	for n := 0; n < d.N; n++ {
		var total float64
		for c := 0; c < d.C; c++ {
			off := (n*d.C + c) * d.H * d.W
			var s float64
			for py := y0; py < y1; py++ {
				for px := x0; px < x1; px++ {
					var ma, mb, saa, sbb, sab float64
					for ky := -half; ky <= half; ky++ {
						for kx := -half; kx <= half; kx++ {
							w := g1[ky+half] * g1[kx+half] / (sum * sum)
							a, b := at(x, off, py+ky, px+kx), at(y, off, py+ky, px+kx)
							ma += w * a
							mb += w * b
							saa += w * a * a
							sbb += w * b * b
							sab += w * a * b
						}
					}
					va, vb, cov := saa-ma*ma, sbb-mb*mb, sab-ma*mb
					s += (2*ma*mb + c1) * (2*cov + c2) / ((ma*ma + mb*mb + c1) * (va + vb + c2))
				}
			}
			total += s / float64((y1-y0)*(x1-x0))
		}
		out[n] = total / float64(d.C)
	}
	return out
}

func TestSSIMMatchesBruteForce(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for _, d := range []Dims{{2, 1, 11, 11}, {2, 3, 16, 13}, {1, 1, 32, 32}, {1, 2, 5, 7}} {
		x := randomImages(r, d)
		y := make([]float32, len(x))
		for i := range y {
			y[i] = x[i]*0.6 + (r.Float32()*2-1)*0.4
		}
		for _, pad := range []Padding{SameZero, Valid} {
			if pad == Valid && (d.H < 11 || d.W < 11) {
				continue
			}
			got, want := SSIM(x, y, d, pad), bruteSSIM(x, y, d, pad)
			for i := range want {
				if !near(got[i], want[i], 1e-12) {
					t.Errorf("%+v %v image %d: SSIM %v, brute force %v", d, pad, i, got[i], want[i])
				}
			}
		}
	}
}

func TestSSIMByHand(t *testing.T) {
	t.Parallel()
	// Two flat images, 0 and 0.5 in [-1,1], i.e. a = 0.5 and b = 0.75 in
	// [0,1]. Every valid window sees no variance, so SSIM is the luminance
	// term alone: (2ab + C1) / (a² + b² + C1) = 0.7501 / 0.8126.
	d := Dims{1, 1, 12, 11}
	x, y := make([]float32, 12*11), make([]float32, 12*11)
	for i := range y {
		y[i] = 0.5
	}
	if got, want := SSIM(x, y, d, Valid)[0], 0.7501/0.8126; !near(got, want, 1e-12) {
		t.Errorf("flat images, valid: %v, want %v", got, want)
	}

	// A 1×1 image with zero padding: the window's centre weight w = g₅²
	// (g the normalised 1-D Gaussian) is all it sees, so μa = w·a,
	// σa² = w·a² - w²·a² = w(1-w)a², and likewise for b and the covariance.
	var sum float64
	for k := -5; k <= 5; k++ {
		sum += math.Exp(-float64(k*k) / 4.5)
	}
	w := 1 / (sum * sum)
	a, b := 0.5, 0.75
	c1, c2 := 1e-4, 9e-4
	want := (2*w*w*a*b + c1) * (2*w*(1-w)*a*b + c2) /
		((w*w*(a*a+b*b) + c1) * (w*(1-w)*(a*a+b*b) + c2))
	if got := SSIM([]float32{0}, []float32{0.5}, Dims{1, 1, 1, 1}, SameZero)[0]; !near(got, want, 1e-12) {
		t.Errorf("1×1 images, same padding: %v, want %v", got, want)
	}
}

func TestSSIMProperties(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	d := Dims{N: 4, C: 3, H: 32, W: 32}
	// Smooth images, as real ones are, so the noise levels are told apart.
	x := make([]float32, d.N*d.C*d.H*d.W)
	for i := range x {
		px, py := i%d.W, (i/d.W)%d.H
		x[i] = float32(math.Sin(float64(px)/4+float64(i/(d.H*d.W))) * math.Cos(float64(py)/5))
	}
	for _, pad := range []Padding{SameZero, Valid} {
		for i, s := range SSIM(x, x, d, pad) {
			if !near(s, 1, 1e-12) {
				t.Errorf("%v: SSIM(x, x) of image %d = %v, want 1", pad, i, s)
			}
		}
		prev := 1.0
		for _, sigma := range []float32{0.02, 0.1, 0.3, 0.8} {
			y := make([]float32, len(x))
			for i := range y {
				y[i] = x[i] + sigma*float32(r.NormFloat64())
			}
			s := Mean(SSIM(x, y, d, pad))
			if s >= prev {
				t.Errorf("%v: noise σ %v gives SSIM %v, not below %v", pad, sigma, s, prev)
			}
			prev = s
		}
	}
	// Symmetric.
	y := randomImages(r, d)
	a, b := SSIM(x, y, d, SameZero), SSIM(y, x, d, SameZero)
	for i := range a {
		if !near(a[i], b[i], 1e-12) {
			t.Errorf("SSIM not symmetric: %v vs %v", a[i], b[i])
		}
	}
}

func BenchmarkSSIM(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	d := Dims{N: 64, C: 1, H: 32, W: 32}
	x, y := randomImages(r, d), randomImages(r, d)
	for b.Loop() {
		SSIM(x, y, d, SameZero)
	}
}
