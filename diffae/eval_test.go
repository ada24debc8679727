package diffae

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestEvalRecon(t *testing.T) {
	cfg := tinyConfig(t, false)
	cfg.Dropout = 0
	m := New(cpu, cfg, 1)
	b := New(cpu, cfg.Baseline(), 2)
	const n = 3
	x0 := newFixedImages(rand.New(rand.NewPCG(1, 1)), n, m.ImageSize()).data
	steps := []int{2, 3}
	var last, total int
	kept := map[string]int{}
	scores, err := EvalRecon(context.Background(), m, b, x0, n, ReconOptions{Steps: steps, Batch: 2, Seed: 1,
		Progress: func(d, tot int) { last, total = d, tot },
		Keep:     func(method string, _ int, x []float32) { kept[method] += len(x) }})
	if err != nil {
		t.Fatal(err)
	}
	if want := ReconWork(m, b, n, steps); total != want || last != want {
		t.Errorf("progress ended at %d of %d, want %d of %d", last, total, want, want)
	}
	if len(scores) != 3*len(steps) {
		t.Fatalf("%d rows, want %d", len(scores), 3*len(steps))
	}
	for _, s := range scores {
		if s.N != n || !(s.MSE > 0) || !(s.SSIM <= 1) || math.IsNaN(s.PSNR) || math.IsNaN(s.MSESE) {
			t.Errorf("implausible row %+v", s)
		}
		// PSNR is the mean of per-image 10·log10(1/MSE): by Jensen it is at least that of the mean MSE.
		if s.PSNR < -10*math.Log10(s.MSE)-1e-9 {
			t.Errorf("%s T=%d: PSNR %v below that of the mean MSE %v", s.Method, s.Steps, s.PSNR, s.MSE)
		}
	}
	for _, k := range []string{ReconEncoded, ReconRandom, ReconBaseline} {
		if kept[k] != len(steps)*n*m.ImageSize() {
			t.Errorf("Keep got %d values of %s", kept[k], k)
		}
	}

	// Swapped models and bad T are refused; a cancelled run returns no rows and the context's error.
	bad := []struct {
		name  string
		m, b  *Model
		steps []int
	}{
		{"baseline as model", b, nil, steps},
		{"Diff-AE as baseline", nil, m, steps},
		{"T zero", m, nil, []int{0}},
		{"no T", m, nil, nil},
	}
	for _, tt := range bad {
		if _, err := EvalRecon(context.Background(), tt.m, tt.b, x0, n, ReconOptions{Steps: tt.steps}); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rows, err := EvalRecon(ctx, m, b, x0, n, ReconOptions{Steps: steps}); !errors.Is(err, context.Canceled) ||
		len(rows) != 0 {
		t.Errorf("cancelled: %d rows, error %v", len(rows), err)
	}
}

func TestMeanSE(t *testing.T) {
	mean, se := meanSE([]float64{1, 2, 3, math.Inf(1)})
	if mean != 2 || math.Abs(se-1/math.Sqrt(3)) > 1e-12 {
		t.Errorf("meanSE = %v, %v; want 2 and 1/√3", mean, se)
	}
	if m, se := meanSE([]float64{5}); m != 5 || !math.IsNaN(se) {
		t.Errorf("one value: %v, %v", m, se)
	}
}

// TestProbe trains probes on three Gaussian clusters in 6 dimensions (well separated along the first three) and
// checks that they classify held-out points; on shuffled labels they must not.
// clusters draws n points of d standard normal features, each with a random class of k whose own feature is
// shifted by shift.
func clusters(rng *rand.Rand, n, d, k int, shift float32) ([]float32, []int) {
	x := make([]float32, n*d)
	y := make([]int, n)
	for i := range n {
		y[i] = rng.IntN(k)
		for j := range d {
			x[i*d+j] = float32(rng.NormFloat64())
		}
		x[i*d+y[i]] += shift
	}
	return x, y
}

func TestProbe(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	const d, classes = 6, 3
	sample := func(n int) ([]float32, []int) {
		x, y := clusters(rng, n, d, classes, 3)
		for i := range n {
			x[i*d+5] = 0.5 // a constant feature: standardising must not divide by zero
		}
		return x, y
	}
	xtr, ytr := sample(300)
	xte, yte := sample(200)
	names := []string{"a", "b", "c"}
	p, err := TrainProbe(context.Background(), xtr, d, ytr, names, ProbeOptions{Epochs: 10, LR: 1e-2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := p.Evaluate(xte, yte)
	if r.Accuracy < 0.85 || r.MeanAUROC < 0.95 || len(r.PerClass) != classes {
		t.Errorf("separable clusters: accuracy %.3f, mean AUROC %.3f, %d classes", r.Accuracy, r.MeanAUROC,
			len(r.PerClass))
	}
	shuffled := append([]int(nil), ytr...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	p, err = TrainProbe(context.Background(), xtr, d, shuffled, names, ProbeOptions{Epochs: 10, LR: 1e-2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Evaluate(xte, yte); r.Accuracy > 0.6 {
		t.Errorf("shuffled labels: accuracy %.3f, want near chance", r.Accuracy)
	}
	if _, err := TrainProbe(context.Background(), xtr, d, append(ytr[:299:299], 3), names, ProbeOptions{}); err == nil {
		t.Error("a label outside the classes was accepted")
	}
}

func TestTuneProbe(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	const n, d, classes = 600, 8, 4
	x, y := clusters(rng, n, d, classes, 1.5)
	names := []string{"a", "b", "c", "d"}
	// One epoch at a tiny learning rate barely moves the weights; thirty do. A penalty of 10 flattens them.
	o, scores, err := TuneProbe(context.Background(), x, d, y, names, ProbeOptions{LR: 1e-3, Seed: 2}, []int{1, 30},
		[]float64{0, 10}, nil, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 4 {
		t.Fatalf("%d settings scored, want 4", len(scores))
	}
	best := scores[0]
	for _, s := range scores {
		if s.ValAccuracy > best.ValAccuracy {
			best = s
		}
	}
	if o.Epochs != best.Epochs || o.L2 != best.L2 || o.Epochs != 30 || o.L2 != 0 {
		t.Errorf("chose %d epochs, l2 %g from %+v; want the best, 30 epochs without penalty", o.Epochs, o.L2, scores)
	}
	if best.ValAccuracy < 0.6 {
		t.Errorf("best validation accuracy %.3f on separable clusters", best.ValAccuracy)
	}
	for _, bad := range []float64{0, 1, math.NaN()} {
		if _, _, err := TuneProbe(context.Background(), x, d, y, names, ProbeOptions{}, []int{1}, []float64{0}, nil, bad); err == nil {
			t.Errorf("validation share %v was accepted", bad)
		}
	}
	if _, _, err := TuneProbe(context.Background(), x, d, y, names, ProbeOptions{}, []int{0}, []float64{0}, nil, 0.25); err == nil ||
		!strings.Contains(err.Error(), "epoch count 0") {
		t.Errorf("0 epochs: %v, want an error naming it", err)
	}
	if _, _, err := TuneProbe(context.Background(), x, d, y, names, ProbeOptions{}, []int{1}, []float64{-1}, nil, 0.25); err == nil ||
		!strings.Contains(err.Error(), "penalty -1") {
		t.Errorf("penalty -1: %v, want an error naming it", err)
	}
	// Far-apart clusters: every setting scores 100%, and the tie goes to the fewest epochs, strongest penalty.
	for i := range n {
		x[i*d+y[i]] += 20
	}
	o, scores, err = TuneProbe(context.Background(), x, d, y, names, ProbeOptions{LR: 1e-2, Seed: 2}, []int{30, 10},
		[]float64{0, 0.01}, []float64{0.02, 0.01}, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scores {
		if s.ValAccuracy != 1 {
			t.Fatalf("setting %+v below 100%% on far-apart clusters", s)
		}
	}
	if o.Epochs != 10 || o.L2 != 0.01 || o.LR != 0.01 {
		t.Errorf("tie went to %d epochs, l2 %g, lr %g; want 10 epochs, l2 0.01, lr 0.01", o.Epochs, o.L2, o.LR)
	}
	if _, _, err := TuneProbe(context.Background(), x, d, y, names, ProbeOptions{}, []int{1}, []float64{0}, []float64{0}, 0.25); err == nil ||
		!strings.Contains(err.Error(), "learning rate 0") {
		t.Errorf("learning rate 0: %v, want an error naming it", err)
	}
}

// The exact probe reaches the optimum of its convex problem: the gradient vanishes, and on overlapping clusters it
// scores at least as well as a short Adam run of the same problem.
func TestExactProbe(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const n, d = 400, 5
	x := make([]float64, n*d)
	y := make([]bool, n)
	for i := range n {
		y[i] = rng.IntN(2) == 0
		for j := range d {
			x[i*d+j] = rng.NormFloat64()
		}
		if y[i] {
			x[i*d] += 1
			x[i*d+1] -= 0.5
		}
	}
	for _, l2 := range []float64{0, 0.1} {
		w, iters := fitLogistic(x, n, d, y, l2, 500)
		g := make([]float64, d+1)
		logisticLoss(x, n, d, y, l2, w, g)
		if gn := math.Sqrt(dot64(g, g)); gn > 1e-5 || iters >= 500 {
			t.Errorf("l2 %v: gradient norm %g after %d iterations", l2, gn, iters)
		}
		if w[0] <= 0 || w[1] >= 0 {
			t.Errorf("l2 %v: w = %v, want w0 > 0 and w1 < 0", l2, w)
		}
		// Any other point has a loss at least as high.
		f := logisticLoss(x, n, d, y, l2, w, g)
		for k := range d + 1 {
			w2 := append([]float64(nil), w...)
			w2[k] += 0.01
			if f2 := logisticLoss(x, n, d, y, l2, w2, g); f2 < f {
				t.Errorf("l2 %v: moving w[%d] lowers the loss %v → %v", l2, k, f, f2)
			}
		}
	}
	// Through TrainProbe: three classes.
	xs, labels := clusters(rng, 300, 4, 3, 2)
	p, err := TrainProbe(context.Background(), xs, 4, labels, []string{"a", "b", "c"}, ProbeOptions{Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Evaluate(xs, labels); r.Accuracy < 0.8 {
		t.Errorf("exact probe: training accuracy %.3f on separated clusters", r.Accuracy)
	}
}

// X0Trace gives one MSE per decoding step, for Diff-AE and for a baseline; its last entry is the MSE of the
// reconstruction itself (the last DDIM step returns its x̂0), computed here from Encode and Decode directly.
func TestX0Trace(t *testing.T) {
	cfg := tinyConfig(t, false)
	cfg.Dropout = 0
	m := New(cpu, cfg, 1)
	b := New(cpu, cfg.Baseline(), 2)
	const n, steps = 3, 4
	x0 := newFixedImages(rand.New(rand.NewPCG(1, 1)), n, m.ImageSize()).data
	ctx := context.Background()
	for _, mod := range []*Model{m, b} {
		tr, err := X0Trace(ctx, mod, x0, n, steps, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(tr) != steps {
			t.Fatalf("%d entries, want %d", len(tr), steps)
		}
		var z, xT []float32
		if mod.Enc != nil {
			z, xT, err = mod.Encode(ctx, x0, n, EncodeOptions{Steps: steps, Batch: 2})
		} else {
			xT, err = mod.Invert(ctx, x0, n, EncodeOptions{Steps: steps, Batch: 2})
		}
		if err != nil {
			t.Fatal(err)
		}
		rec, err := mod.Decode(ctx, z, xT, n, DecodeOptions{Steps: steps, Batch: 2})
		if err != nil {
			t.Fatal(err)
		}
		want := 0.0
		for i, v := range rec {
			d := float64(v-x0[i]) / 2
			want += d * d
		}
		want /= float64(len(rec))
		if math.Abs(tr[steps-1]-want) > 1e-9*(1+want) {
			t.Errorf("last step's x̂0 MSE %g, reconstruction's %g", tr[steps-1], want)
		}
		for i, v := range tr {
			if !(v >= 0) {
				t.Errorf("step %d: MSE %v", i, v)
			}
		}
	}
	if _, err := X0Trace(ctx, m, x0[:10], n, steps, 2); err == nil {
		t.Error("a short x0 was accepted")
	}
}
