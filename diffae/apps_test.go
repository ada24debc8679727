package diffae

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func trainedSynth(t *testing.T, d int) (*Classifier, []float32, []bool) {
	t.Helper()
	z, labels, _ := synthCodes(600, d, 1.5, 0.5, 11)
	c, err := TrainClassifier("a", z, d, labels, ClassifierOptions{Epochs: 30, Seed: 3}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, z, labels
}

func TestShift(t *testing.T) {
	const d = 12
	c, z, _ := trainedSynth(t, d)
	for _, a := range []Along{AlongWeight, AlongPattern} {
		u, err := c.Direction(a)
		if err != nil {
			t.Fatal(err)
		}
		var wu float64
		for j := range d {
			wu += float64(c.W[j]) * float64(u[j])
		}
		slope := math.Sqrt(d) * wu
		for _, s := range []float64{-1, -0.2, 0, 0.3, 2} {
			z2, err := c.Shift(z[:5*d], s, a)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				got := c.Logit(z2[i*d : (i+1)*d])
				want := c.Logit(z[i*d:(i+1)*d]) + s*slope
				if math.Abs(got-want) > 1e-3*(1+math.Abs(want)) {
					t.Errorf("%s s=%v code %d: logit %v, want %v", a, s, i, got, want)
				}
			}
		}
		// The move is s·√d in the normalised space, along u only.
		z2, _ := c.Shift(z[:d], 0.5, a)
		var along, orth float64
		for j := range d {
			dn := float64((z2[j] - z[j]) / c.Std[j])
			along += dn * float64(u[j])
		}
		for j := range d {
			dn := float64((z2[j]-z[j])/c.Std[j]) - along*float64(u[j])
			orth += dn * dn
		}
		if math.Abs(along-0.5*math.Sqrt(d)) > 1e-4 || orth > 1e-8 {
			t.Errorf("%s: normalised move %v along u (want %v), %v across", a, along, 0.5*math.Sqrt(d), orth)
		}
	}
	// A pattern that lowers the logit (or does not move it) cannot come from this w.
	bad := *c
	bad.Pattern = make([]float32, d)
	for j, v := range c.Pattern {
		bad.Pattern[j] = -v
	}
	if err := bad.Validate(); err == nil {
		t.Error("a reversed pattern passed Validate")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("a trained classifier fails Validate: %v", err)
	}
	old := *c
	old.Pattern = nil // a classifier saved before patterns were recorded
	if _, err := old.Shift(z[:d], 1, AlongPattern); err == nil {
		t.Error("a move along a missing pattern was accepted")
	}
	if _, err := old.Shift(z[:d], 1, ""); err != nil {
		t.Errorf("the zero direction (the weight) failed: %v", err)
	}
}

// The pattern is Σw/‖Σw‖ over the normalised training codes; on codes whose classes differ along a wide
// dimension and are separated best by a narrow one, it leans to the wide one where w leans to the narrow one.
func TestPattern(t *testing.T) {
	const n, d = 800, 3
	rng := rand.New(rand.NewPCG(5, 6))
	z := make([]float32, n*d)
	labels := make([]bool, n)
	for i := range n {
		labels[i] = i%2 == 0
		y := -1.0
		if labels[i] {
			y = 1
		}
		shared := rng.NormFloat64()
		z[i*d] = float32(y*2 + 2*rng.NormFloat64())             // wide: the classes' means differ most here
		z[i*d+1] = float32(y*0.4 + 0.3*shared)                  // narrow and correlated with dimension 2
		z[i*d+2] = float32(0.6*shared + 0.05*rng.NormFloat64()) // lets a filter cancel dimension 1's noise
	}
	c, err := TrainClassifier("a", z, d, labels, ClassifierOptions{Epochs: 100, LR: 1e-2, L2: -1, Seed: 1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Σw by brute force in the classifier's normalisation.
	zn := make([][]float64, n)
	mu := make([]float64, d)
	for i := range n {
		zn[i] = make([]float64, d)
		for j := range d {
			zn[i][j] = float64((z[i*d+j] - c.Mean[j]) / c.Std[j])
			mu[j] += zn[i][j] / n
		}
	}
	want := make([]float64, d)
	for i := range n {
		var s float64
		for j := range d {
			s += (zn[i][j] - mu[j]) * float64(c.W[j])
		}
		for j := range d {
			want[j] += s * (zn[i][j] - mu[j])
		}
	}
	var norm float64
	for _, v := range want {
		norm += v * v
	}
	for j := range d {
		if got := float64(c.Pattern[j]); math.Abs(got-want[j]/math.Sqrt(norm)) > 1e-4 {
			t.Errorf("pattern[%d] = %v, want %v", j, got, want[j]/math.Sqrt(norm))
		}
	}
	u, _ := c.Direction(AlongWeight)
	p, _ := c.Direction(AlongPattern)
	// Dimension 2 carries no class information: a filter uses it to cancel noise, a pattern barely moves it.
	if math.Abs(float64(u[2])) < 0.3 || math.Abs(float64(p[2])) > math.Abs(float64(u[2]))/2 {
		t.Errorf("weight %v, pattern %v: want the weight to use the noise dimension and the pattern not", u, p)
	}
	if float64(p[0]) < 0.5 {
		t.Errorf("pattern %v: want it to lean on the wide dimension 0", p)
	}
	t.Logf("weight %v, pattern %v", u, p)
}

func TestQuantileLogits(t *testing.T) {
	// The logit is the first value of each code (unit weight, no bias, unit normalisation).
	c := &Classifier{W: []float32{1, 0}, Mean: []float32{0, 0}, Std: []float32{1, 1}}
	z := []float32{4, 9, 1, 9, 3, 9, 2, 9, 0, 9} // logits 4 1 3 2 0
	got := c.QuantileLogits(z, 0, 0.5, 0.9, 1, 1.5)
	want := []float64{0, 2, 3.6, 4}
	for i, w := range want {
		if math.Abs(got[i]-w) > 1e-12 {
			t.Errorf("quantile %d: %v, want %v", i, got[i], w)
		}
	}
	if !math.IsNaN(got[4]) {
		t.Errorf("quantile 1.5: %v, want NaN", got[4])
	}
	if m := c.MedianLogit(z[:8]); m != 2.5 {
		t.Errorf("median of an even count: %v, want 2.5", m)
	}
	if m := c.MedianLogit(nil); !math.IsNaN(m) {
		t.Errorf("median of nothing: %v, want NaN", m)
	}
	// A trained classifier records them, in order, above its median.
	tc, _, _ := trainedSynth(t, 6)
	prev := tc.Metrics[MetricMedianPositiveLogit]
	for _, q := range PositiveLogitQuantiles {
		v, ok := tc.Metrics[MetricPositiveLogitQuantile(q)]
		if !ok || !(v >= prev) {
			t.Errorf("%s = %v (recorded %v), want ≥ %v", MetricPositiveLogitQuantile(q), v, ok, prev)
		}
		prev = v
	}
	if k := MetricPositiveLogitQuantile(0.95); k != "positive_logit_p95" {
		t.Errorf("metric name %q", k)
	}
}

func TestShiftToLogit(t *testing.T) {
	const d = 12
	c, z, labels := trainedSynth(t, d)
	var pos []float32
	for i, l := range labels {
		if l {
			pos = append(pos, z[i*d:(i+1)*d]...)
		}
	}
	med := c.MedianLogit(pos)
	if med <= 0 {
		t.Fatalf("median logit of positives %v, want > 0 for a working classifier", med)
	}
	for _, a := range []Along{AlongWeight, AlongPattern} {
		for _, target := range []float64{med, -med, 0, 7.5} {
			z2, scales, err := c.ShiftToLogit(z[:20*d], target, a)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				if got := c.Logit(z2[i*d : (i+1)*d]); math.Abs(got-target) > 1e-3*(1+math.Abs(target)) {
					t.Errorf("%s target %v code %d: logit %v (scale %v)", a, target, i, got, scales[i])
				}
			}
		}
	}
}

func TestAccept(t *testing.T) {
	tests := []struct {
		p, u, min float64
		want      bool
	}{
		{0.49, 0, 0.5, false},  // below one half: always rejected
		{0.5, 0.49, 0.5, true}, // at one half: accepted with probability p
		{0.5, 0.5, 0.5, false},
		{0.9, 0.89, 0.5, true},
		{0.9, 0.91, 0.5, false},
		{1, 0.999, 0.5, true},
		{0.85, 0, 0.9, false}, // a stricter threshold rejects what one half accepts
		{0.9, 0.89, 0.9, true},
		{0.95, 0.96, 0.9, false}, // above it, still accepted with probability p
	}
	for _, tc := range tests {
		if got := Accept(tc.p, tc.u, tc.min); got != tc.want {
			t.Errorf("Accept(%v, %v, %v) = %v, want %v", tc.p, tc.u, tc.min, got, tc.want)
		}
	}
}

// With codes whose first value is uniform on [0,1) and p(c|z) equal to it, the rule with threshold m accepts with
// rate ∫_m^1 p dp = (1−m²)/2 and the accepted p have density ∝ p on [m, 1), mean (2/3)(1−m³)/(1−m²): for the
// paper's m = ½, 3/8 and 7/9; for m = 0.9, 0.095 and 0.9509.
func TestRejectionSample(t *testing.T) {
	for _, tc := range []struct{ min, rate, mean float64 }{{0.5, 3.0 / 8, 7.0 / 9}, {0.9, 0.095, 0.0903333 / 0.095}} {
		t.Run(fmt.Sprint(tc.min), func(t *testing.T) { testRejectionSample(t, tc.min, tc.rate, tc.mean) })
	}
}

func testRejectionSample(t *testing.T, minProb, wantRate, wantMean float64) {
	const d, n = 3, 4000
	src := rand.New(rand.NewPCG(1, 1))
	draw := func(k int) ([]float32, error) {
		v := make([]float32, k*d)
		for i := range v {
			v[i] = float32(src.Float64())
		}
		return v, nil
	}
	prob := func(z []float32) float64 { return float64(z[0]) }
	z, drawn, err := RejectionSample(context.Background(), n, d, draw, prob, rand.New(rand.NewPCG(2, 2)), 64, 100*n, minProb)
	if err != nil {
		t.Fatal(err)
	}
	if len(z) != n*d {
		t.Fatalf("%d values, want %d", len(z), n*d)
	}
	var mean float64
	for i := range n {
		p := float64(z[i*d])
		if p < minProb {
			t.Fatalf("accepted p = %v < %v", p, minProb)
		}
		mean += p / n
	}
	if rate := float64(n) / float64(drawn); math.Abs(rate-wantRate) > 0.05*wantRate {
		t.Errorf("acceptance rate %v, want %v", rate, wantRate)
	}
	if math.Abs(mean-wantMean) > 0.01 {
		t.Errorf("mean accepted p %v, want %v", mean, wantMean)
	}

	never := func([]float32) float64 { return minProb - 0.01 }
	if _, drawn, err := RejectionSample(context.Background(), 5, d, draw, never, src, 64, 500, minProb); !errors.Is(err, ErrRejectionExhausted) || drawn != 500 {
		t.Errorf("never-accepting classifier: drawn %d, err %v; want an error after 500 draws", drawn, err)
	}
}

func TestFrameDiffs(t *testing.T) {
	x := []float32{0, 0, 1, 1, 1, 3}
	got := FrameDiffs(x, 3, 2)
	want := []float64{1, 2}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("FrameDiffs[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if m, v := MeanVar(got); m != 1.5 || v != 0.25 {
		t.Errorf("MeanVar = %v, %v; want 1.5, 0.25", m, v)
	}
}

func tinyModel(t *testing.T) *Model {
	t.Helper()
	cfg, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	m := New(cpu, cfg, 5)
	randomize(m.Params(), rand.New(rand.NewPCG(5, 6)), 0.1)
	e := cfg.ZDim()
	m.Stats = &LatentStats{Mean: make([]float32, e), Std: make([]float32, e)}
	for j := range e {
		m.Stats.Mean[j], m.Stats.Std[j] = 0.1, 2
	}
	return m
}

func TestModelApps(t *testing.T) {
	m := tinyModel(t)
	ctx := context.Background()
	per, e := m.ImageSize(), m.Cfg.ZDim()
	rng := rand.New(rand.NewPCG(9, 9))
	x0 := normals(rng, 2*per)
	z, xT, err := m.Encode(ctx, x0, 2, EncodeOptions{Steps: 2})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("interpolate", func(t *testing.T) {
		frames, err := m.Interpolate(ctx, z[:e], xT[:per], z[e:], xT[per:], 4, DecodeOptions{Steps: 2})
		if err != nil {
			t.Fatal(err)
		}
		ends, err := m.Decode(ctx, z, xT, 2, DecodeOptions{Steps: 2})
		if err != nil {
			t.Fatal(err)
		}
		for j := range per {
			if math.Abs(float64(frames[j]-ends[j])) > 1e-4 || math.Abs(float64(frames[3*per+j]-ends[per+j])) > 1e-4 {
				t.Fatalf("end frames differ from the decoded end codes at %d", j)
			}
		}
		if _, err := m.Interpolate(ctx, z[:e], xT[:per], z[e:], xT[per:], 1, DecodeOptions{Steps: 2}); err == nil {
			t.Error("one frame accepted")
		}
	})

	zc := normals(rng, 200*e)
	labels := make([]bool, 200)
	for i := range labels {
		labels[i] = zc[i*e] > 0
	}
	c, err := TrainClassifier("first", zc, e, labels, ClassifierOptions{Epochs: 20}, m.Stats.Mean, m.Stats.Std)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("manipulate", func(t *testing.T) {
		x, z2, scales, err := m.Manipulate(ctx, c, z, xT, 2, Edit{ToLogit: true, TargetLogit: 3}, DecodeOptions{Steps: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(x) != 2*per || len(scales) != 2 {
			t.Fatalf("%d values, %d scales", len(x), len(scales))
		}
		for i := range 2 {
			if l := c.Logit(z2[i*e : (i+1)*e]); math.Abs(l-3) > 1e-3 {
				t.Errorf("edited logit %v, want 3", l)
			}
		}
		// Two rounds: the first round's edit, encoded again (z_sem and x_T) and moved to the target again.
		e2 := Edit{ToLogit: true, TargetLogit: 3, Rounds: 2, EncodeSteps: 3}
		x2, z22, scales2, err := m.Manipulate(ctx, c, z, xT, 2, e2, DecodeOptions{Steps: 2})
		if err != nil {
			t.Fatal(err)
		}
		zr, xTr, err := m.Encode(ctx, x, 2, EncodeOptions{Steps: 3})
		if err != nil {
			t.Fatal(err)
		}
		zm, sm, err := e2.Apply(c, zr)
		if err != nil {
			t.Fatal(err)
		}
		xm, err := m.Decode(ctx, zm, xTr, 2, DecodeOptions{Steps: 2})
		if err != nil {
			t.Fatal(err)
		}
		for j := range xm {
			if math.Abs(float64(x2[j]-xm[j])) > 1e-5 {
				t.Fatalf("two rounds differ from the edit encoded and edited again at %d: %v vs %v", j, x2[j], xm[j])
			}
		}
		for i := range 2 {
			if l := c.Logit(z22[i*e : (i+1)*e]); math.Abs(l-3) > 1e-3 {
				t.Errorf("second round's logit %v, want 3", l)
			}
			if want := scales[i] + sm[i]; math.Abs(scales2[i]-want) > 1e-9 {
				t.Errorf("scale of two rounds %v, want the sum %v", scales2[i], want)
			}
		}
		for _, bad := range []Edit{{Scale: 1, Rounds: 2}, {ToLogit: true, TargetLogit: 3, Rounds: MaxEditRounds + 1}, {ToLogit: true, TargetLogit: math.NaN()}} {
			if _, _, _, err := m.Manipulate(ctx, c, z, xT, 2, bad, DecodeOptions{Steps: 2}); err == nil {
				t.Errorf("edit %+v accepted", bad)
			}
		}

		other := *c
		other.ModelID = "someone-else"
		m2 := *m
		m2.ID = "this-one"
		if _, _, _, err := m2.Manipulate(ctx, &other, z, xT, 2, Edit{Scale: 1}, DecodeOptions{Steps: 2}); err == nil {
			t.Error("classifier of another model accepted")
		}
	})

	t.Run("sample", func(t *testing.T) {
		z, xT, x, err := m.Sample(ctx, 3, SampleOptions{LatentSteps: 2, Steps: 2, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(z) != 3*e || len(xT) != 3*per || len(x) != 3*per {
			t.Fatalf("sizes %d %d %d", len(z), len(xT), len(x))
		}
		zc, _, _, drawn, err := m.SampleConditional(ctx, c, 3, SampleOptions{LatentSteps: 2, Steps: 2, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if drawn < 3 {
			t.Errorf("drawn %d < 3", drawn)
		}
		for i := range 3 {
			if p := c.Prob(zc[i*e : (i+1)*e]); p < 0.5 {
				t.Errorf("accepted sample with p = %v", p)
			}
		}
	})
}
