package diffae

import (
	"math"

	"gonum.org/v1/gonum/floats"
)

// logisticLoss returns the mean binary cross-entropy of σ(x·w[:d] + w[d]) against y plus l2/2·‖w[:d]‖², and its
// gradient in g, for n standardised rows of d features.
func logisticLoss(x []float64, n, d int, y []bool, l2 float64, w, g []float64) float64 {
	clear(g)
	var f float64
	for i := range n {
		s, t := addLogisticGrad(x[i*d:(i+1)*d], y[i], w, g)
		// log(1+e^s) − t·s, stable on both sides.
		f += math.Max(s, 0) + math.Log1p(math.Exp(-math.Abs(s))) - t*s
	}
	inv := 1 / float64(n)
	f *= inv
	for j := range g {
		g[j] *= inv
	}
	for j := range d {
		f += 0.5 * l2 * w[j] * w[j]
		g[j] += l2 * w[j]
	}
	return f
}

// addLogisticGrad adds one example's gradient of the BCE of σ(w[:d]·x + w[d]) against label to g (the bias's
// last) and returns the logit and the target (0 or 1).
func addLogisticGrad(x []float64, label bool, w, g []float64) (logit, target float64) {
	d := len(x)
	s := w[d] + floats.Dot(w[:d], x)
	if label {
		target = 1
	}
	r := sigmoid(s) - target // dBCE/dlogit
	floats.AddScaled(g[:d], r, x)
	g[d] += r
	return s, target
}

// fitLogistic minimises logisticLoss over (w, b) by L-BFGS (memory 10, backtracking Armijo line search) until the
// gradient's norm falls below 1e-6 or maxIter iterations have run: the probe's convex problem solved to
// convergence rather than for an optimiser's budget. It returns w with the bias last and the iterations used.
func fitLogistic(x []float64, n, d int, y []bool, l2 float64, maxIter int) ([]float64, int) {
	p := d + 1
	w := make([]float64, p)
	g := make([]float64, p)
	f := logisticLoss(x, n, d, y, l2, w, g)
	const mem = 10
	var ss, ys [][]float64
	var rho []float64
	dir := make([]float64, p)
	wn := make([]float64, p)
	gn := make([]float64, p)
	alpha := make([]float64, mem)
	it := 0
	for ; it < maxIter; it++ {
		if math.Sqrt(dot64(g, g)) < 1e-6 {
			break
		}
		// Two-loop recursion: dir = −H·g.
		copy(dir, g)
		for k := len(ss) - 1; k >= 0; k-- {
			alpha[k] = rho[k] * dot64(ss[k], dir)
			axpy(-alpha[k], ys[k], dir)
		}
		if k := len(ss) - 1; k >= 0 {
			gamma := dot64(ss[k], ys[k]) / dot64(ys[k], ys[k])
			for j := range dir {
				dir[j] *= gamma
			}
		}
		for k := range ss {
			beta := rho[k] * dot64(ys[k], dir)
			axpy(alpha[k]-beta, ss[k], dir)
		}
		for j := range dir {
			dir[j] = -dir[j]
		}
		gd := dot64(g, dir)
		if gd >= 0 { // not a descent direction: restart from the gradient
			ss, ys, rho = ss[:0], ys[:0], rho[:0]
			for j := range dir {
				dir[j] = -g[j]
			}
			gd = -dot64(g, g)
		}
		step := 1.0
		var fn float64
		for range 50 {
			for j := range w {
				wn[j] = w[j] + step*dir[j]
			}
			fn = logisticLoss(x, n, d, y, l2, wn, gn)
			if fn <= f+1e-4*step*gd {
				break
			}
			step /= 2
		}
		s := make([]float64, p)
		yv := make([]float64, p)
		for j := range w {
			s[j] = wn[j] - w[j]
			yv[j] = gn[j] - g[j]
		}
		if sy := dot64(s, yv); sy > 1e-12 {
			if len(ss) == mem {
				ss, ys, rho = ss[1:], ys[1:], rho[1:]
			}
			ss, ys, rho = append(ss, s), append(ys, yv), append(rho, 1/sy)
		}
		done := math.Abs(f-fn) <= 1e-12*math.Max(1, math.Abs(f))
		copy(w, wn)
		copy(g, gn)
		f = fn
		if done {
			it++
			break
		}
	}
	return w, it
}

func dot64(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

func axpy(a float64, x, y []float64) {
	for i, v := range x {
		y[i] += a * v
	}
}
