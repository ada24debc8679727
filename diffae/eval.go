package diffae

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"dae/diffae/metrics"
)

// Reconstruction methods of the paper's Table 2 analogue (SPEC A8).
const (
	// ReconEncoded is Diff-AE with x_T from its own stochastic encoder: encode at T steps, decode at T steps.
	ReconEncoded = "diffae-encoded-xT"
	// ReconRandom is Diff-AE decoding z_sem from x_T ~ N(0, I): what z_sem alone keeps of the image.
	ReconRandom = "diffae-random-xT"
	// ReconBaseline is the DDIM baseline with x_T from inverting its unconditional model (no z_sem).
	ReconBaseline = "ddim-inverted-xT"
)

// ReconOptions control EvalRecon.
type ReconOptions struct {
	Steps []int  // the T to evaluate (e.g. 10, 20, 50, 100)
	Batch int    // images per network evaluation (default 64)
	Seed  uint64 // seed of the random x_T (the same noise at every T, so the rows are paired)
	// Progress counts network evaluations of one image (image × step) over the whole evaluation.
	Progress Progress
	// Keep, when set, receives each method's reconstructions at each T (n×C×H×W in [-1,1]), e.g. to save them
	// or score them with a classifier.
	Keep func(method string, steps int, x []float32)
}

// ReconScore is the mean of one metric row over the images, with the standard error of each mean so that a
// difference between rows can be judged against the sample size.
type ReconScore struct {
	Method  string  `json:"method"`
	Steps   int     `json:"T"`
	N       int     `json:"n"`
	MSE     float64 `json:"mse"`
	SSIM    float64 `json:"ssim"`
	PSNR    float64 `json:"psnr"`
	MSESE   float64 `json:"mse_se"`
	SSIMSE  float64 `json:"ssim_se"`
	PSNRSE  float64 `json:"psnr_se"`
	Seconds float64 `json:"seconds"`
}

// ReconWork is the number of image network evaluations EvalRecon will run, for progress and estimates.
func ReconWork(m, baseline *Model, n int, steps []int) int {
	var w int
	for _, t := range steps {
		if m != nil {
			w += 3 * t * n // encode, decode, decode from random x_T
		}
		if baseline != nil {
			w += 2 * t * n // invert, decode
		}
	}
	return w
}

// EvalRecon reconstructs the n images x0 (n×C×H×W in [-1,1]) at every T of o.Steps with Diff-AE m (encoded and
// random x_T) and with the DDIM baseline (its own inverted x_T), and scores them against x0 with the authors'
// metrics: MSE on images mapped to [0,1], SSIM with the zero-padded "same" window (metrics.SameZero) and PSNR
// (mean of per-image dB). Either model may be nil to skip its rows. When it stops on an error (a cancelled
// context, say), it returns the rows finished so far with the error, so that hours of work are not lost.
func EvalRecon(ctx context.Context, m, baseline *Model, x0 []float32, n int, o ReconOptions) ([]ReconScore, error) {
	if m == nil && baseline == nil {
		return nil, errors.New("eval recon: no model to evaluate")
	}
	if m != nil && m.Enc == nil {
		return nil, fmt.Errorf("eval recon: %s has no semantic encoder (pass it as the baseline)", m.Name())
	}
	if baseline != nil && baseline.Enc != nil {
		return nil, fmt.Errorf("eval recon: baseline %s is a Diff-AE, not a DDIM baseline", baseline.Name())
	}
	ref := m
	if ref == nil {
		ref = baseline
	}
	if m != nil && baseline != nil && m.ImageSize() != baseline.ImageSize() {
		return nil, fmt.Errorf("eval recon: the models take images of %d and %d values", m.ImageSize(),
			baseline.ImageSize())
	}
	per := ref.ImageSize()
	if n <= 0 || len(x0) != n*per {
		return nil, fmt.Errorf("eval recon: %d values for %d images of %d", len(x0), n, per)
	}
	if len(o.Steps) == 0 {
		return nil, errors.New("eval recon: no T to evaluate")
	}
	for _, t := range o.Steps {
		if t <= 0 || t > NumTrainSteps {
			return nil, fmt.Errorf("eval recon: T = %d is not in [1, %d]", t, NumTrainSteps)
		}
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
	dims := metrics.Dims{N: n, C: ref.Cfg.InChannels, H: ref.Cfg.ImageSize, W: ref.Cfg.ImageSize}
	total := ReconWork(m, baseline, n, o.Steps)
	done := 0
	// stage adapts a stage's own progress (done of its total) to the whole evaluation's count of work units.
	stage := func(units int) Progress {
		base := done
		return func(d, t int) {
			if o.Progress != nil && t > 0 {
				o.Progress(base+int(int64(d)*int64(units)/int64(t)), total)
			}
		}
	}
	var noise []float32
	if m != nil {
		rng := rand.New(rand.NewPCG(o.Seed, 0x7a5d0e))
		noise = make([]float32, n*per)
		for i := range noise {
			noise[i] = float32(rng.NormFloat64())
		}
	}
	var out []ReconScore
	score := func(method string, t int, x []float32, start time.Time) {
		if o.Keep != nil {
			o.Keep(method, t, x)
		}
		s := ReconScore{Method: method, Steps: t, N: n, Seconds: time.Since(start).Seconds()}
		s.MSE, s.MSESE = meanSE(metrics.MSE(x, x0, dims))
		s.SSIM, s.SSIMSE = meanSE(metrics.SSIM(x, x0, dims, metrics.SameZero))
		s.PSNR, s.PSNRSE = meanSE(metrics.PSNR(x, x0, dims))
		out = append(out, s)
	}
	for _, t := range o.Steps {
		if m != nil {
			start := time.Now()
			z, xT, err := m.Encode(ctx, x0, n, EncodeOptions{Steps: t, Batch: o.Batch, Progress: stage(t * n)})
			if err != nil {
				return out, fmt.Errorf("eval recon: encode at T=%d: %w", t, err)
			}
			done += t * n
			x, err := m.Decode(ctx, z, xT, n, DecodeOptions{Steps: t, Batch: o.Batch, Progress: stage(t * n)})
			if err != nil {
				return out, fmt.Errorf("eval recon: decode at T=%d: %w", t, err)
			}
			done += t * n
			score(ReconEncoded, t, x, start)

			start = time.Now()
			x, err = m.Decode(ctx, z, noise, n, DecodeOptions{Steps: t, Batch: o.Batch, Progress: stage(t * n)})
			if err != nil {
				return out, fmt.Errorf("eval recon: decode random x_T at T=%d: %w", t, err)
			}
			done += t * n
			score(ReconRandom, t, x, start)
		}
		if baseline != nil {
			start := time.Now()
			xT, err := baseline.Invert(ctx, x0, n, EncodeOptions{Steps: t, Batch: o.Batch, Progress: stage(t * n)})
			if err != nil {
				return out, fmt.Errorf("eval recon: baseline inversion at T=%d: %w", t, err)
			}
			done += t * n
			x, err := baseline.Decode(ctx, nil, xT, n, DecodeOptions{Steps: t, Batch: o.Batch, Progress: stage(t * n)})
			if err != nil {
				return out, fmt.Errorf("eval recon: baseline decode at T=%d: %w", t, err)
			}
			done += t * n
			score(ReconBaseline, t, x, start)
		}
	}
	return out, nil
}

// meanSE returns the mean of v and its standard error (sample std / √n); infinite values (a perfect
// reconstruction's PSNR) are left out of both.
// X0Trace is the paper's Section 5.5 / Figure 6 in numbers: it encodes the n images x0 with T = steps (Diff-AE:
// z_sem and its stochastic x_T; a baseline: its inverted x_T), decodes them with T steps, and returns, for each
// step of the decoding (0 first), the mean squared error (images mapped to [0,1]) between the x̂0 the network
// predicts at that step and the input. The last entry is the reconstruction's MSE.
func X0Trace(ctx context.Context, m *Model, x0 []float32, n, steps, batch int) ([]float64, error) {
	per := m.ImageSize()
	if len(x0) != n*per {
		return nil, fmt.Errorf("x0 trace: %d values for %d images of %d", len(x0), n, per)
	}
	eo := EncodeOptions{Steps: steps, Batch: batch}
	var z, xT []float32
	var err error
	if m.Enc != nil {
		z, xT, err = m.Encode(ctx, x0, n, eo)
	} else {
		xT, err = m.Invert(ctx, x0, n, eo)
	}
	if err != nil {
		return nil, err
	}
	sums := make([]float64, steps)
	_, err = m.Decode(ctx, z, xT, n, DecodeOptions{Steps: steps, Batch: batch,
		X0: func(first, count, step int, pred []float32) {
			ref := x0[first*per : (first+count)*per]
			s := 0.0
			for i, v := range pred {
				d := float64(v-ref[i]) / 2
				s += d * d
			}
			sums[step] += s
		}})
	if err != nil {
		return nil, err
	}
	for i := range sums {
		sums[i] /= float64(n * per)
	}
	return sums, nil
}

func meanSE(v []float64) (mean, se float64) {
	var s, s2 float64
	k := 0
	for _, x := range v {
		if math.IsInf(x, 0) || math.IsNaN(x) {
			continue
		}
		s += x
		k++
	}
	if k == 0 {
		return math.NaN(), math.NaN()
	}
	mean = s / float64(k)
	for _, x := range v {
		if math.IsInf(x, 0) || math.IsNaN(x) {
			continue
		}
		s2 += (x - mean) * (x - mean)
	}
	if k < 2 {
		return mean, math.NaN()
	}
	return mean, math.Sqrt(s2/float64(k-1)) / math.Sqrt(float64(k))
}

// ProbeOptions control TrainProbe; zero values take the defaults noted.
type ProbeOptions struct {
	Epochs int     // passes over the training set (default 20)
	LR     float64 // Adam learning rate (default 1e-3)
	Batch  int     // minibatch (default 64)
	Seed   uint64
	// L2 is the classifiers' ridge penalty L2/2·‖w‖² (default none: a probe measures what is linearly there).
	L2 float64
	// Exact solves each one-vs-rest problem to convergence by L-BFGS (full batch, at most MaxIter iterations,
	// default 1000) instead of Epochs of minibatch Adam, so that the probe does not depend on an optimiser's budget;
	// Epochs, LR, Batch and Seed are then unused.
	Exact   bool
	MaxIter int
	// MinStd floors the per-feature std used to standardise. Raw pixels need it: the border of Fashion-MNIST is
	// black in nearly every image, so its std is tiny and the slight grey a diffusion model leaves there would
	// become a huge standardised value and swamp the logits of reconstructed images.
	MinStd float64
}

// Probe is a linear probe: one logistic regression per class (one-vs-rest) on features standardised by the
// training set's per-dimension mean and std. The ten-class prediction is the argmax of the logits.
type Probe struct {
	Classes []string
	C       []*Classifier
}

// TrainProbe fits one-vs-rest logistic regressions of labels (class indices into classes) on n = len(x)/d
// feature vectors, the classes in parallel. It uses TrainClassifier (BCE, Adam) for each class.
func TrainProbe(ctx context.Context, x []float32, d int, labels []int, classes []string, o ProbeOptions) (*Probe, error) {
	if o.Epochs <= 0 {
		o.Epochs = 20
	}
	if d <= 0 || len(x)%d != 0 || len(x)/d != len(labels) {
		return nil, fmt.Errorf("probe: %d values, feature size %d, %d labels", len(x), d, len(labels))
	}
	if len(classes) < 2 {
		return nil, fmt.Errorf("probe: %d classes", len(classes))
	}
	for i, l := range labels {
		if l < 0 || l >= len(classes) {
			return nil, fmt.Errorf("probe: label %d of example %d is not a class index in [0, %d)", l, i, len(classes))
		}
	}
	l2 := o.L2
	if l2 <= 0 {
		l2 = -1 // ClassifierOptions: none
	}
	mean, std := LatentMeanStd(x, d)
	for j := range std {
		std[j] = max(std[j], float32(o.MinStd))
	}
	p := &Probe{Classes: classes, C: make([]*Classifier, len(classes))}
	var xn []float64 // standardised features, shared by the exact solves
	if o.Exact {
		if o.MaxIter <= 0 {
			o.MaxIter = 1000
		}
		xn = make([]float64, len(x))
		for i := range len(labels) {
			for j := range d {
				xn[i*d+j] = float64((x[i*d+j] - mean[j]) / std[j])
			}
		}
	}
	errs := make([]error, len(classes))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for c := range classes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			y := make([]bool, len(labels))
			for i, l := range labels {
				y[i] = l == c
			}
			if o.Exact {
				w, iters := fitLogistic(xn, len(labels), d, y, max(l2, 0), o.MaxIter)
				cl := &Classifier{Attribute: classes[c], W: make([]float32, d), B: float32(w[d]), Mean: mean, Std: std,
					Metrics: map[string]float64{"iterations": float64(iters), "l2": max(l2, 0)}}
				for j := range d {
					cl.W[j] = float32(w[j])
				}
				p.C[c] = cl
				return
			}
			p.C[c], errs[c] = TrainClassifier(classes[c], x, d, y, ClassifierOptions{Epochs: o.Epochs, LR: o.LR,
				Batch: o.Batch, L2: l2, Seed: o.Seed + uint64(c)}, mean, std)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	return p, ctx.Err()
}

// ClassScore is a one-vs-rest probe's result on one class: AUROC of its logits and accuracy of p > 0.5.
type ClassScore struct {
	Class    string  `json:"class"`
	AUROC    float64 `json:"auroc"`
	Accuracy float64 `json:"accuracy"`
}

// ProbeReport is a probe's result on a test set.
type ProbeReport struct {
	N         int          `json:"n"`
	PerClass  []ClassScore `json:"per_class"`
	MeanAUROC float64      `json:"mean_auroc"`
	// MeanAccuracy is the mean of the one-vs-rest accuracies (each at least the share of the other classes).
	MeanAccuracy float64 `json:"mean_binary_accuracy"`
	// Accuracy is the multi-class accuracy of the argmax of the logits.
	Accuracy float64 `json:"accuracy"`
}

// Predict returns the argmax class of each of the n = len(x)/d feature vectors.
func (p *Probe) Predict(x []float32) []int {
	d := p.C[0].Dim()
	n := len(x) / d
	pred := make([]int, n)
	for i := range n {
		best := math.Inf(-1)
		for c, cl := range p.C {
			if s := cl.Logit(x[i*d : (i+1)*d]); s > best {
				best, pred[i] = s, c
			}
		}
	}
	return pred
}

// Evaluate scores the probe on features x and their labels.
func (p *Probe) Evaluate(x []float32, labels []int) ProbeReport {
	r := ProbeReport{N: len(labels)}
	var sa, sc float64
	for c, cl := range p.C {
		y := make([]bool, len(labels))
		for i, l := range labels {
			y[i] = l == c
		}
		auroc, acc := cl.Evaluate(x, y)
		r.PerClass = append(r.PerClass, ClassScore{Class: p.Classes[c], AUROC: auroc, Accuracy: acc})
		sa += auroc
		sc += acc
	}
	r.MeanAUROC = sa / float64(len(p.C))
	r.MeanAccuracy = sc / float64(len(p.C))
	r.Accuracy = metrics.Accuracy(p.Predict(x), labels)
	return r
}

// ProbeSetting is one point of a probe's hyperparameter grid with its ten-class accuracy on the validation share.
type ProbeSetting struct {
	Epochs      int     `json:"epochs"`
	L2          float64 `json:"l2"`
	LR          float64 `json:"lr"`
	ValAccuracy float64 `json:"val_accuracy"`
}

// TuneProbe chooses the epochs, the ridge penalty and the learning rate of a probe by validation: it trains
// TrainProbe with o and every setting of epochs × l2s × lrs (lrs empty: o's) on the training features outside a held-out share (example i where
// ⌊(i+1)·valShare⌋ > ⌊i·valShare⌋), scores the ten-class accuracy on that share, and returns o with the best pair
// (on ties the fewer epochs, the stronger penalty, the smaller rate) and every score. Each feature set gets its own choice, so a comparison
// of two probes is not decided by settings that suit one of them.
func TuneProbe(ctx context.Context, x []float32, d int, labels []int, classes []string, o ProbeOptions, epochs []int,
	l2s, lrs []float64, valShare float64) (ProbeOptions, []ProbeSetting, error) {
	if len(lrs) == 0 {
		lrs = []float64{o.LR}
	}
	if o.Exact { // only the penalty matters to a problem solved to convergence
		epochs, lrs = []int{max(o.Epochs, 1)}, []float64{max(o.LR, 1e-3)}
	}
	switch {
	case !(valShare > 0 && valShare < 1):
		return o, nil, fmt.Errorf("probe tuning: validation share %v not in (0, 1)", valShare)
	case len(epochs) == 0 || len(l2s) == 0:
		return o, nil, fmt.Errorf("probe tuning: an empty grid (%d epoch counts, %d penalties)", len(epochs), len(l2s))
	}
	for _, e := range epochs {
		if e < 1 {
			return o, nil, fmt.Errorf("probe tuning: epoch count %d is not positive", e)
		}
	}
	for _, l := range l2s {
		if !(l >= 0) || math.IsInf(l, 0) {
			return o, nil, fmt.Errorf("probe tuning: penalty %v is not a finite number ≥ 0", l)
		}
	}
	for _, l := range lrs {
		if !(l > 0) || math.IsInf(l, 0) {
			return o, nil, fmt.Errorf("probe tuning: learning rate %v is not a finite number > 0", l)
		}
	}
	if d <= 0 || len(x)%d != 0 || len(x)/d != len(labels) {
		return o, nil, fmt.Errorf("probe tuning: %d values, feature size %d, %d labels", len(x), d, len(labels))
	}
	// Example i is held out when ⌊(i+1)·share⌋ > ⌊i·share⌋: evenly spread, and exactly the share of any prefix.
	var xt, xv []float32
	var yt, yv []int
	for i, l := range labels {
		if math.Floor(float64(i+1)*valShare) > math.Floor(float64(i)*valShare) {
			xv = append(xv, x[i*d:(i+1)*d]...)
			yv = append(yv, l)
		} else {
			xt = append(xt, x[i*d:(i+1)*d]...)
			yt = append(yt, l)
		}
	}
	if len(yv) == 0 {
		return o, nil, fmt.Errorf("probe tuning: %d examples leave none for validation", len(labels))
	}
	var all []ProbeSetting
	best := -1
	for _, ep := range epochs {
		for _, l2 := range l2s {
			for _, lr := range lrs {
				oc := o
				oc.Epochs, oc.L2, oc.LR = ep, l2, lr
				p, err := TrainProbe(ctx, xt, d, yt, classes, oc)
				if err != nil {
					return o, nil, err
				}
				s := ProbeSetting{Epochs: ep, L2: l2, LR: lr, ValAccuracy: metrics.Accuracy(p.Predict(xv), yv)}
				all = append(all, s)
				if b := best; b < 0 || s.ValAccuracy > all[b].ValAccuracy ||
					(s.ValAccuracy == all[b].ValAccuracy && better(s, all[b])) {
					best = len(all) - 1
				}
			}
		}
	}
	o.Epochs, o.L2, o.LR = all[best].Epochs, all[best].L2, all[best].LR
	return o, all, nil
}

// better breaks a tie of validation accuracy: the fewer epochs, then the stronger penalty, then the smaller rate.
func better(a, b ProbeSetting) bool {
	if a.Epochs != b.Epochs {
		return a.Epochs < b.Epochs
	}
	if a.L2 != b.L2 {
		return a.L2 > b.L2
	}
	return a.LR < b.LR
}
