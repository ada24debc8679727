package diffae

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// synthCodes draws n codes of size d: positives shifted by +sep along a random unit direction, negatives by −sep,
// plus unit noise, offset and scaled per dimension so that normalisation matters.
func synthCodes(n, d int, sep float64, posShare float64, seed uint64) (z []float32, labels []bool, dir []float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	dir = make([]float64, d)
	var nrm float64
	for j := range dir {
		dir[j] = rng.NormFloat64()
		nrm += dir[j] * dir[j]
	}
	for j := range dir {
		dir[j] /= math.Sqrt(nrm)
	}
	z = make([]float32, n*d)
	labels = make([]bool, n)
	for i := range n {
		labels[i] = rng.Float64() < posShare
		s := -sep
		if labels[i] {
			s = sep
		}
		for j := range d {
			z[i*d+j] = float32((rng.NormFloat64()+s*dir[j])*float64(1+j%3) + float64(j))
		}
	}
	return z, labels, dir
}

func TestTrainClassifier(t *testing.T) {
	const d = 16
	tests := []struct {
		name     string
		sep      float64
		posShare float64
		pu       bool
		minAUROC float64
		minAcc   float64
	}{
		{"separable", 3, 0.5, false, 0.99, 0.95},
		{"separable rare positives", 3, 0.1, false, 0.99, 0.95},
		{"overlapping", 0.5, 0.5, false, 0.7, 0.6},
		{"PU rare positives", 3, 0.05, true, 0.99, 0.9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z, labels, _ := synthCodes(2000, d, tc.sep, tc.posShare, 3)
			c, err := TrainClassifier("a", z, d, labels, ClassifierOptions{HoldOut: 0.25, PU: tc.pu, Seed: 1}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.Metrics["auroc"] < tc.minAUROC || c.Metrics["accuracy"] < tc.minAcc {
				t.Errorf("held-out AUROC %.3f accuracy %.3f, want ≥ %.2f, %.2f", c.Metrics["auroc"], c.Metrics["accuracy"], tc.minAUROC, tc.minAcc)
			}
			if got := c.Metrics["n_holdout"]; math.Abs(got-500) > 2 {
				t.Errorf("held out %v codes, want about 500", got)
			}
		})
	}
}

// In PU mode with few positives, balancing moves the decision threshold so that most true positives are called
// positive; without it a plain classifier would be calibrated to the rare class.
func TestTrainClassifierPUBalances(t *testing.T) {
	const d = 8
	z, labels, _ := synthCodes(3000, d, 0.8, 0.03, 5)
	recall := func(pu bool) float64 {
		c, err := TrainClassifier("a", z, d, labels, ClassifierOptions{Epochs: 10, PU: pu, Seed: 2}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var tp, p int
		for i, l := range labels {
			if l {
				p++
				if c.Prob(z[i*d:(i+1)*d]) > 0.5 {
					tp++
				}
			}
		}
		return float64(tp) / float64(p)
	}
	plain, pu := recall(false), recall(true)
	if pu < 0.7 || pu <= plain {
		t.Errorf("recall of positives: PU %.2f, plain %.2f; want PU ≥ 0.7 and above plain", pu, plain)
	}
}

func TestTrainClassifierErrors(t *testing.T) {
	z := make([]float32, 8)
	tests := []struct {
		name   string
		z      []float32
		d      int
		labels []bool
		o      ClassifierOptions
	}{
		{"ragged", make([]float32, 7), 2, []bool{true, false, true}, ClassifierOptions{}},
		{"label count", z, 2, []bool{true, false}, ClassifierOptions{}},
		{"one class", z, 2, []bool{true, true, true, true}, ClassifierOptions{}},
		{"hold-out", z, 2, []bool{true, false, true, false}, ClassifierOptions{HoldOut: 1}},
		{"hold-out NaN", z, 2, []bool{true, false, true, false}, ClassifierOptions{HoldOut: math.NaN()}},
	}
	for _, tc := range tests {
		if _, err := TrainClassifier("x", tc.z, tc.d, tc.labels, tc.o, nil, nil); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	// A done context stops training before its first epoch, with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := TrainClassifier("x", z, 2, []bool{true, false, true, false}, ClassifierOptions{Ctx: ctx}, nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
}

func TestClassifierSaveLoad(t *testing.T) {
	const d = 4
	z, labels, _ := synthCodes(200, d, 2, 0.5, 9)
	a, err := TrainClassifier("coat", z, d, labels, ClassifierOptions{Epochs: 3, HoldOut: 0.2}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.ModelID = "abc"
	b := *a
	b.Attribute = "bag"
	b.B += 1
	path := filepath.Join(t.TempDir(), "c.json")
	if err := SaveClassifiers(path, []*Classifier{a, &b}); err != nil {
		t.Fatal(err)
	}
	got, err := LoadClassifier(path, "bag")
	if err != nil {
		t.Fatal(err)
	}
	if got.ModelID != "abc" || got.Logit(z[:d]) != b.Logit(z[:d]) || got.Metrics["auroc"] != a.Metrics["auroc"] {
		t.Errorf("round trip changed the classifier: %+v", got)
	}
	if _, err := LoadClassifier(path, ""); !errors.Is(err, ErrNoClassifier) {
		t.Errorf("ambiguous load: err %v, want ErrNoClassifier", err)
	}
	if _, err := LoadClassifier(path, "shoe"); !errors.Is(err, ErrNoClassifier) {
		t.Errorf("missing attribute: err %v, want ErrNoClassifier", err)
	}
	// A metric that is not a number (the AUROC of a held-out share without positives) is left out, not fatal.
	c := *a
	c.Metrics = map[string]float64{"auroc": math.NaN(), "accuracy": 0.9, "x": math.Inf(1)}
	if err := c.Save(path); err != nil {
		t.Fatalf("save with a NaN metric: %v", err)
	}
	got, err = LoadClassifier(path, "coat")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Metrics["auroc"]; ok || got.Metrics["accuracy"] != 0.9 || len(got.Metrics) != 1 {
		t.Errorf("metrics after a save with NaN and Inf: %v, want accuracy only", got.Metrics)
	}
	if math.IsNaN(c.Metrics["auroc"]) == false {
		t.Error("Save changed the caller's metrics")
	}
}
