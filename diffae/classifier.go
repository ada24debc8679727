package diffae

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"dae/diffae/metrics"
)

// Classifier is a linear attribute classifier on normalised z_sem: logit = W·((z−Mean)/Std) + B. The paper's
// attribute manipulation moves z along W in that normalised space, so the normalisation is part of the
// classifier and travels with it. ModelID names the autoencoder whose codes it was trained on: codes of another
// model live in a different space and must not be scored by it.
type Classifier struct {
	Attribute string    `json:"attribute"`
	ModelID   string    `json:"model_id"`
	W         []float32 `json:"w"`
	B         float32   `json:"b"`
	Mean      []float32 `json:"mean"`
	Std       []float32 `json:"std"`
	// Pattern is the unit vector Σw/‖Σw‖, Σ the covariance of the normalised training codes: the direction in
	// which the codes themselves move as the logit grows (the classifier's activation pattern, where w is its
	// filter). Absent in classifiers saved before it existed.
	Pattern []float32          `json:"pattern,omitempty"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// MetricMedianPositiveLogit names the Metrics entry holding the median logit of the training positives.
const MetricMedianPositiveLogit = "median_positive_logit"

// PositiveLogitQuantiles are the quantiles of the training positives' logits a classifier records besides the
// median, as Metrics entries named by MetricPositiveLogitQuantile ("positive_logit_p90" for 0.9): targets for
// Eq. 11 deeper inside the class.
var PositiveLogitQuantiles = []float64{0.75, 0.9, 0.95}

// TargetNames are the names of the logit targets a classifier records: the median and the quantiles of its
// training positives' logits ("median", "p75", "p90", "p95").
func TargetNames() []string {
	names := []string{"median"}
	for _, q := range PositiveLogitQuantiles {
		names = append(names, fmt.Sprintf("p%d", int(math.Round(100*q))))
	}
	return names
}

// TargetMetric names the Metrics entry holding the logit target called name (one of TargetNames; "p50" is the
// median too).
func TargetMetric(name string) (string, error) {
	if name == "median" || name == "p50" {
		return MetricMedianPositiveLogit, nil
	}
	for i, n := range TargetNames()[1:] {
		if name == n {
			return MetricPositiveLogitQuantile(PositiveLogitQuantiles[i]), nil
		}
	}
	return "", fmt.Errorf("target %q: want one of %s", name, strings.Join(TargetNames(), ", "))
}

// TargetLogit is the logit the classifier's recorded target called name stands for.
func (c *Classifier) TargetLogit(name string) (float64, error) {
	key, err := TargetMetric(name)
	if err != nil {
		return 0, err
	}
	v, ok := c.Metrics[key]
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("classifier %q records no %s of its positives' logits (%s): retrain it", c.Attribute, name, key)
	}
	return v, nil
}

// MetricPositiveLogitQuantile names the Metrics entry of the q-quantile of the training positives' logits.
func MetricPositiveLogitQuantile(q float64) string {
	return fmt.Sprintf("positive_logit_p%d", int(math.Round(100*q)))
}

// ClassifierOptions control TrainClassifier. Zero values take the defaults noted per field.
type ClassifierOptions struct {
	// Epochs over the training share (default 100).
	Epochs int
	// LR is Adam's learning rate (default 1e-3, as in the paper).
	LR float64
	// Batch is the minibatch size (default 64).
	Batch int
	// PU selects positive–unlabelled training: the false labels are unlabelled rather than negative. They are
	// counted as negatives and the positives are oversampled to balance them, so a handful of positives is not
	// drowned by the unlabelled mass.
	PU bool
	// Seed makes the hold-out split, the shuffling and the oversampling reproducible.
	Seed uint64
	// L2 is the weight of the ridge penalty L2/2·‖w‖² added to the mean BCE (the bias is not penalised). Without
	// it, a few hundred dimensions and a separable class let w grow along directions of little variance that
	// separate the training codes but that the decoder hardly reads, so that moving a code along w (manipulation)
	// changes its logit and not its image. Negative means none; 0 takes DefaultClassifierL2.
	L2 float64
	// HoldOut is the share of codes (stratified by label) kept out of training to measure AUROC and accuracy;
	// 0 means train on everything and leave the metrics empty.
	HoldOut float64
	// Ctx, if set, is checked between epochs: training stops with its error once it is done (a scheduler
	// shutting down need not wait for a long training to finish).
	Ctx context.Context
}

// DefaultClassifierL2 is ClassifierOptions.L2 when none is given.
const DefaultClassifierL2 = 1e-2

func (o *ClassifierOptions) fill() {
	if o.L2 == 0 {
		o.L2 = DefaultClassifierL2
	}
	if o.L2 < 0 {
		o.L2 = 0
	}
	if o.Epochs <= 0 {
		o.Epochs = 100
	}
	if o.LR <= 0 {
		o.LR = 1e-3
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
}

// LatentMeanStd returns the per-dimension mean and unbiased standard deviation of n codes of size d; zero
// deviations become 1 so that normalising never divides by zero.
func LatentMeanStd(z []float32, d int) (mean, std []float32) {
	n := len(z) / d
	m := make([]float64, d)
	v := make([]float64, d)
	for i := range n {
		for j := range d {
			m[j] += float64(z[i*d+j])
		}
	}
	for j := range m {
		m[j] /= float64(n)
	}
	for i := range n {
		for j := range d {
			e := float64(z[i*d+j]) - m[j]
			v[j] += e * e
		}
	}
	mean, std = make([]float32, d), make([]float32, d)
	for j := range d {
		mean[j] = float32(m[j])
		s := 1.0
		if n > 1 {
			s = math.Sqrt(v[j] / float64(n-1))
		}
		if s == 0 || math.IsNaN(s) {
			s = 1
		}
		std[j] = float32(s)
	}
	return mean, std
}

// TrainClassifier fits a logistic regression (binary cross-entropy, Adam) of labels on the n = len(z)/d codes z,
// normalised by mean and std (pass the model's latent statistics; nil computes them from z). With o.HoldOut > 0
// it fills Metrics["auroc"] and Metrics["accuracy"] on the held-out share; Metrics also records the sizes.
func TrainClassifier(attribute string, z []float32, d int, labels []bool, o ClassifierOptions, mean, std []float32) (*Classifier, error) {
	o.fill()
	switch {
	case d <= 0:
		return nil, fmt.Errorf("classifier %q: code size %d", attribute, d)
	case len(z)%d != 0:
		return nil, fmt.Errorf("classifier %q: %d values are not a whole number of codes of %d", attribute, len(z), d)
	case len(z)/d != len(labels):
		return nil, fmt.Errorf("classifier %q: %d codes for %d labels", attribute, len(z)/d, len(labels))
	case (mean == nil) != (std == nil):
		return nil, fmt.Errorf("classifier %q: give both mean and std or neither", attribute)
	case mean != nil && (len(mean) != d || len(std) != d):
		return nil, fmt.Errorf("classifier %q: normalisation of size %d/%d for codes of %d", attribute, len(mean), len(std), d)
	case !(o.HoldOut >= 0 && o.HoldOut < 1): // NaN too
		return nil, fmt.Errorf("classifier %q: hold-out share %v not in [0, 1)", attribute, o.HoldOut)
	}
	n := len(labels)
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed_c1a5))
	var pos, neg []int
	for i, l := range labels {
		if l {
			pos = append(pos, i)
		} else {
			neg = append(neg, i)
		}
	}
	if len(pos) == 0 || len(neg) == 0 {
		return nil, fmt.Errorf("classifier %q: need both classes, have %d positive and %d %s", attribute, len(pos), len(neg), negName(o.PU))
	}
	// Stratified hold-out: each class keeps at least one training example.
	rng.Shuffle(len(pos), func(i, j int) { pos[i], pos[j] = pos[j], pos[i] })
	rng.Shuffle(len(neg), func(i, j int) { neg[i], neg[j] = neg[j], neg[i] })
	hp := min(int(math.Round(o.HoldOut*float64(len(pos)))), len(pos)-1)
	hn := min(int(math.Round(o.HoldOut*float64(len(neg)))), len(neg)-1)
	held := append(append([]int{}, pos[:hp]...), neg[:hn]...)
	trPos, trNeg := pos[hp:], neg[hn:]

	if mean == nil {
		mean, std = LatentMeanStd(z, d)
	}
	c := &Classifier{Attribute: attribute, W: make([]float32, d), Mean: append([]float32(nil), mean...),
		Std: append([]float32(nil), std...), Metrics: map[string]float64{}}
	zn := make([]float64, n*d)
	for i := range n {
		for j := range d {
			zn[i*d+j] = float64((z[i*d+j] - mean[j]) / std[j])
		}
	}

	// Adam on (w, b) in float64: the problem is small and float32 accumulation would make results depend on
	// batch order more than necessary.
	w := make([]float64, d+1) // w[d] is the bias
	m1 := make([]float64, d+1)
	m2 := make([]float64, d+1)
	g := make([]float64, d+1)
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	// Start the bias at the log-odds of the labels the optimiser sees (balanced in PU mode) so that the few
	// hundred Adam steps of a small labelled set go to the direction rather than to finding the base rate.
	if !o.PU || len(trPos) >= len(trNeg) {
		w[d] = math.Log(float64(len(trPos)) / float64(len(trNeg)))
	}
	step := 0
	for range o.Epochs {
		if o.Ctx != nil && o.Ctx.Err() != nil {
			return nil, fmt.Errorf("classifier %q: %w", attribute, o.Ctx.Err())
		}
		order := epochOrder(trPos, trNeg, o.PU, rng)
		for lo := 0; lo < len(order); lo += o.Batch {
			batch := order[lo:min(lo+o.Batch, len(order))]
			clear(g)
			for _, i := range batch {
				addLogisticGrad(zn[i*d:(i+1)*d], labels[i], w, g)
			}
			step++
			inv := 1 / float64(len(batch))
			c1 := 1 - math.Pow(beta1, float64(step))
			c2 := 1 - math.Pow(beta2, float64(step))
			for j := range w {
				gj := g[j] * inv
				if j < d {
					gj += o.L2 * w[j]
				}
				m1[j] = beta1*m1[j] + (1-beta1)*gj
				m2[j] = beta2*m2[j] + (1-beta2)*gj*gj
				w[j] -= o.LR * (m1[j] / c1) / (math.Sqrt(m2[j]/c2) + eps)
			}
		}
	}
	for j := range d {
		c.W[j] = float32(w[j])
	}
	c.B = float32(w[d])
	c.Pattern = pattern(zn, d, append(trPos[:len(trPos):len(trPos)], trNeg...), w[:d])
	c.Metrics["n_train"] = float64(len(trPos) + len(trNeg))
	c.Metrics["l2"] = o.L2
	c.Metrics["n_train_positive"] = float64(len(trPos))
	c.Metrics["n_holdout"] = float64(len(held))
	// The median logit of the training positives is the paper's target for Eq. 11 manipulation; keeping it here
	// spares the manipulating side from needing the labelled codes.
	pz := make([]float32, 0, len(trPos)*d)
	for _, i := range trPos {
		pz = append(pz, z[i*d:(i+1)*d]...)
	}
	c.Metrics[MetricMedianPositiveLogit] = c.MedianLogit(pz)
	for i, v := range c.QuantileLogits(pz, PositiveLogitQuantiles...) {
		c.Metrics[MetricPositiveLogitQuantile(PositiveLogitQuantiles[i])] = v
	}
	if len(held) > 0 {
		hz := make([]float32, 0, len(held)*d)
		hl := make([]bool, 0, len(held))
		for _, i := range held {
			hz = append(hz, z[i*d:(i+1)*d]...)
			hl = append(hl, labels[i])
		}
		c.Metrics["auroc"], c.Metrics["accuracy"] = c.Evaluate(hz, hl)
	}
	return c, nil
}

// pattern returns Σw/‖Σw‖ for the covariance Σ of the codes zn[i] of rows (nil if it vanishes).
func pattern(zn []float64, d int, rows []int, w []float64) []float32 {
	if len(rows) < 2 {
		return nil
	}
	mu := make([]float64, d)
	for _, i := range rows {
		for j, v := range zn[i*d : (i+1)*d] {
			mu[j] += v
		}
	}
	for j := range mu {
		mu[j] /= float64(len(rows))
	}
	p := make([]float64, d)
	for _, i := range rows {
		x := zn[i*d : (i+1)*d]
		var s float64
		for j, v := range x {
			s += (v - mu[j]) * w[j]
		}
		for j, v := range x {
			p[j] += s * (v - mu[j])
		}
	}
	var n float64
	for _, v := range p {
		n += v * v
	}
	if n == 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return nil
	}
	out := make([]float32, d)
	inv := 1 / math.Sqrt(n)
	for j, v := range p {
		out[j] = float32(v * inv)
	}
	return out
}

func negName(pu bool) string {
	if pu {
		return "unlabelled"
	}
	return "negative"
}

// epochOrder is one epoch's shuffled training indices; in PU mode the positives are repeated (with a random
// remainder) until they match the unlabelled count.
func epochOrder(pos, neg []int, pu bool, rng *rand.Rand) []int {
	order := append([]int{}, neg...)
	if pu && len(pos) < len(neg) {
		for range len(neg) / len(pos) {
			order = append(order, pos...)
		}
		for range len(neg) % len(pos) {
			order = append(order, pos[rng.IntN(len(pos))])
		}
	} else {
		order = append(order, pos...)
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// Dim is the code size the classifier expects.
func (c *Classifier) Dim() int { return len(c.W) }

// Logit scores one code z (len Dim(), not normalised). It panics on a wrong size, a programming error.
func (c *Classifier) Logit(z []float32) float64 {
	if len(z) != len(c.W) {
		panic(fmt.Sprintf("classifier %q: code of %d values, want %d", c.Attribute, len(z), len(c.W)))
	}
	s := float64(c.B)
	for j, v := range z {
		s += float64(c.W[j]) * float64((v-c.Mean[j])/c.Std[j])
	}
	return s
}

// Prob is p(attribute | z), the sigmoid of Logit.
func (c *Classifier) Prob(z []float32) float64 { return sigmoid(c.Logit(z)) }

// Logits scores n = len(z)/Dim() codes.
func (c *Classifier) Logits(z []float32) []float64 {
	d := len(c.W)
	out := make([]float64, len(z)/d)
	for i := range out {
		out[i] = c.Logit(z[i*d : (i+1)*d])
	}
	return out
}

// Evaluate returns the AUROC of the logits and the accuracy of thresholding p at 0.5 on n codes and their labels.
// AUROC is NaN when labels hold one class only.
func (c *Classifier) Evaluate(z []float32, labels []bool) (auroc, acc float64) {
	s := c.Logits(z)
	if len(s) != len(labels) {
		panic(fmt.Sprintf("classifier %q: %d codes for %d labels", c.Attribute, len(s), len(labels)))
	}
	pred := make([]bool, len(s))
	for i, v := range s {
		pred[i] = v > 0
	}
	return metrics.AUROC(s, labels), metrics.Accuracy(pred, labels)
}

// Validate checks that the sizes agree and the numbers are finite, so a hand-edited or truncated file fails on
// load rather than producing NaN scores later.
func (c *Classifier) Validate() error {
	d := len(c.W)
	if d == 0 || len(c.Mean) != d || len(c.Std) != d {
		return fmt.Errorf("classifier %q: sizes w %d, mean %d, std %d", c.Attribute, d, len(c.Mean), len(c.Std))
	}
	for j := range d {
		if !finite(c.W[j]) || !finite(c.Mean[j]) || !finite(c.Std[j]) || c.Std[j] == 0 {
			return fmt.Errorf("classifier %q: bad value at dimension %d", c.Attribute, j)
		}
	}
	if !finite(c.B) {
		return fmt.Errorf("classifier %q: bias is not finite", c.Attribute)
	}
	if c.Pattern != nil {
		if len(c.Pattern) != d {
			return fmt.Errorf("classifier %q: pattern has %d values for codes of %d", c.Attribute, len(c.Pattern), d)
		}
		var wp float64
		for j, v := range c.Pattern {
			if !finite(v) {
				return fmt.Errorf("classifier %q: bad pattern value at dimension %d", c.Attribute, j)
			}
			wp += float64(v) * float64(c.W[j])
		}
		// Σw·w = wᵀΣw > 0 for any w ≠ 0: a pattern that does not raise the logit was not computed from this w.
		if wp <= 0 {
			return fmt.Errorf("classifier %q: the pattern does not raise the logit (w·pattern = %g)", c.Attribute, wp)
		}
	}
	return nil
}

func finite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// classifierFile is the on-disk form: a small JSON document holding one or more classifiers (typically the
// one-vs-rest set of a labelling), all for the same model.
type classifierFile struct {
	Version     int           `json:"version"`
	Classifiers []*Classifier `json:"classifiers"`
}

// Save writes c alone to path (see SaveClassifiers).
func (c *Classifier) Save(path string) error { return SaveClassifiers(path, []*Classifier{c}) }

// SaveClassifiers writes cs to path as JSON, atomically (a temporary file renamed into place), so a reader such
// as a worker never sees half a file.
func SaveClassifiers(path string, cs []*Classifier) error {
	for _, c := range cs {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("save %s: %w", path, err)
		}
	}
	// JSON has no NaN or infinity: a metric that is not a finite number (the AUROC of a held-out share without
	// positives, say) is left out of the file rather than failing the save.
	out := make([]*Classifier, len(cs))
	for i, c := range cs {
		cc := *c
		cc.Metrics = make(map[string]float64, len(c.Metrics))
		for k, v := range c.Metrics {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				cc.Metrics[k] = v
			}
		}
		out[i] = &cc
	}
	b, err := json.Marshal(classifierFile{Version: 1, Classifiers: out})
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".classifier-*")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// LoadClassifiers reads every classifier in a file written by SaveClassifiers.
func LoadClassifiers(path string) ([]*Classifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f classifierFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("classifier file %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("classifier file %s: version %d, want 1", path, f.Version)
	}
	if len(f.Classifiers) == 0 {
		return nil, fmt.Errorf("classifier file %s: no classifiers", path)
	}
	for _, c := range f.Classifiers {
		if c == nil {
			return nil, fmt.Errorf("classifier file %s: null classifier", path)
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("classifier file %s: %w", path, err)
		}
	}
	return f.Classifiers, nil
}

// ErrNoClassifier is returned when a file has no classifier for the requested attribute.
var ErrNoClassifier = errors.New("no classifier for attribute")

// LoadClassifier reads the classifier for attribute from path; an empty attribute accepts a file holding exactly
// one classifier.
func LoadClassifier(path, attribute string) (*Classifier, error) {
	cs, err := LoadClassifiers(path)
	if err != nil {
		return nil, err
	}
	return PickClassifier(cs, attribute)
}

// PickClassifier finds attribute among cs (see LoadClassifier).
func PickClassifier(cs []*Classifier, attribute string) (*Classifier, error) {
	if attribute == "" {
		if len(cs) == 1 {
			return cs[0], nil
		}
		names := make([]string, len(cs))
		for i, c := range cs {
			names[i] = c.Attribute
		}
		return nil, fmt.Errorf("%d classifiers %v, name an attribute: %w", len(cs), names, ErrNoClassifier)
	}
	for _, c := range cs {
		if c.Attribute == attribute {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%q: %w", attribute, ErrNoClassifier)
}

// CheckModel refuses to use c on codes of a model other than the one it was trained for. An empty ModelID on
// either side (a fresh, unsaved model) is accepted.
func (c *Classifier) CheckModel(m *Model) error {
	if c.Dim() != m.Cfg.ZDim() {
		return fmt.Errorf("classifier %q takes codes of %d, model %s makes %d", c.Attribute, c.Dim(), m.Name(), m.Cfg.ZDim())
	}
	if c.ModelID != "" && m.ID != "" && c.ModelID != m.ID {
		return fmt.Errorf("classifier %q was trained on model %s, not %s", c.Attribute, c.ModelID, m.ID)
	}
	return nil
}
