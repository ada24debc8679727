package metrics

import (
	"fmt"
	"math"
)

// SSIM parameters, as in Wang et al. (2004) and every common implementation.
const (
	SSIMWindow = 11   // side of the Gaussian window
	SSIMSigma  = 1.5  // its standard deviation
	SSIMK1     = 0.01 // C1 = (K1·L)², L = 1 the data range of [0,1] images
	SSIMK2     = 0.03 // C2 = (K2·L)²
)

// Padding says which window positions SSIM averages over.
type Padding int

const (
	// SameZero centres the window on every pixel and treats pixels outside
	// the image as 0, averaging over all H×W positions. It is the authors'
	// evaluation (the pytorch-ssim code their metrics.py imports: conv2d
	// with padding 5), so it is the one to use for the paper's tables.
	SameZero Padding = iota
	// Valid averages only over the (H-10)×(W-10) positions where the window
	// lies inside the image, as pytorch_msssim and skimage's
	// structural_similarity(gaussian_weights=True,
	// use_sample_covariance=False) do. It needs H and W of at least 11.
	Valid
)

func (p Padding) String() string {
	switch p {
	case SameZero:
		return "same-zero"
	case Valid:
		return "valid"
	}
	return fmt.Sprintf("Padding(%d)", int(p))
}

// ssimWindow is the normalised 1-D Gaussian; the 2-D window is its outer
// product, so filtering is separable.
var ssimWindow = func() (g [SSIMWindow]float64) {
	var sum float64
	for i := range g {
		d := float64(i - SSIMWindow/2)
		g[i] = math.Exp(-d * d / (2 * SSIMSigma * SSIMSigma))
		sum += g[i]
	}
	for i := range g {
		g[i] /= sum
	}
	return g
}()

// SSIM returns, per image, the structural similarity of x and y mapped to
// [0,1]: the SSIM map with an 11×11 Gaussian window (σ 1.5), K1 0.01,
// K2 0.03, data range 1 and population (biased) variances, computed per
// channel and averaged over channels and the positions that pad selects.
// SSIM(x, x) is 1.
func SSIM(x, y []float32, d Dims, pad Padding) []float64 {
	d.check("SSIM", x, y)
	oh, ow := d.H, d.W
	switch pad {
	case SameZero:
	case Valid:
		if d.H < SSIMWindow || d.W < SSIMWindow {
			panic(fmt.Sprintf("metrics.SSIM: valid padding needs images of at least %d×%d, got %d×%d", SSIMWindow, SSIMWindow, d.H, d.W))
		}
		oh, ow = d.H-SSIMWindow+1, d.W-SSIMWindow+1
	default:
		panic(fmt.Sprintf("metrics.SSIM: unknown padding %v", pad))
	}
	const c1, c2 = SSIMK1 * SSIMK1, SSIMK2 * SSIMK2
	plane := d.H * d.W
	// Five filtered planes: E[a], E[b], E[a²], E[b²], E[ab]; raw inputs and
	// one row-filtered scratch plane are reused across planes.
	a, b := make([]float64, plane), make([]float64, plane)
	prod := make([]float64, plane)
	tmp := make([]float64, d.H*ow)
	var mu [5][]float64
	for k := range mu {
		mu[k] = make([]float64, oh*ow)
	}
	out := make([]float64, d.N)
	for i := range out {
		var total float64
		for c := 0; c < d.C; c++ {
			off := (i*d.C + c) * plane
			for j := range a {
				a[j] = (float64(x[off+j]) + 1) / 2
				b[j] = (float64(y[off+j]) + 1) / 2
			}
			filter(a, d.H, d.W, oh, ow, pad, tmp, mu[0])
			filter(b, d.H, d.W, oh, ow, pad, tmp, mu[1])
			for j := range prod {
				prod[j] = a[j] * a[j]
			}
			filter(prod, d.H, d.W, oh, ow, pad, tmp, mu[2])
			for j := range prod {
				prod[j] = b[j] * b[j]
			}
			filter(prod, d.H, d.W, oh, ow, pad, tmp, mu[3])
			for j := range prod {
				prod[j] = a[j] * b[j]
			}
			filter(prod, d.H, d.W, oh, ow, pad, tmp, mu[4])
			var s float64
			for j := range mu[0] {
				m1, m2 := mu[0][j], mu[1][j]
				v1, v2, cov := mu[2][j]-m1*m1, mu[3][j]-m2*m2, mu[4][j]-m1*m2
				s += (2*m1*m2 + c1) * (2*cov + c2) / ((m1*m1 + m2*m2 + c1) * (v1 + v2 + c2))
			}
			total += s / float64(len(mu[0]))
		}
		out[i] = total / float64(d.C)
	}
	return out
}

// filter convolves the h×w plane in with the 2-D Gaussian window into the
// oh×ow plane out, rows first into tmp (h×ow), then columns.
func filter(in []float64, h, w, oh, ow int, pad Padding, tmp, out []float64) {
	shift := 0 // input index of window tap 0 for output index 0
	if pad == SameZero {
		shift = -SSIMWindow / 2
	}
	for y := 0; y < h; y++ {
		row := in[y*w : (y+1)*w]
		for x := 0; x < ow; x++ {
			var s float64
			for k, g := range ssimWindow {
				if j := x + k + shift; j >= 0 && j < w {
					s += g * row[j]
				}
			}
			tmp[y*ow+x] = s
		}
	}
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			var s float64
			for k, g := range ssimWindow {
				if j := y + k + shift; j >= 0 && j < h {
					s += g * tmp[j*ow+x]
				}
			}
			out[y*ow+x] = s
		}
	}
}
