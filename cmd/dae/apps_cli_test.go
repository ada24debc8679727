package main

import (
	"context"
	"dae/schema"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"dae/dataset"
	"dae/diffae"
	"dae/imageio"
	"dae/tensor"
)

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args   []string
		frames int
		pos    []string
	}{
		{[]string{"a", "b", "--frames", "5"}, 5, []string{"a", "b"}},
		{[]string{"--frames", "4", "a", "b"}, 4, []string{"a", "b"}},
		{[]string{"a", "--frames=3", "b"}, 3, []string{"a", "b"}},
		{[]string{"a", "--", "--frames"}, 9, []string{"a", "--frames"}},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		frames := fs.Int("frames", 9, "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if *frames != tc.frames || !slices.Equal(pos, tc.pos) {
			t.Errorf("%v: frames %d, positional %q; want %d, %q", tc.args, *frames, pos, tc.frames, tc.pos)
		}
	}
}

// tinyLatentModel writes a random tiny model with latent statistics (as `dae train-latent` leaves it).
func tinyLatentModel(t *testing.T, dir string, seed uint64) string {
	t.Helper()
	cfg, err := diffae.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	m := diffae.New(tensor.NewCPU(1), cfg, seed)
	e := cfg.ZDim()
	m.Stats = &diffae.LatentStats{Mean: make([]float32, e), Std: make([]float32, e)}
	for j := range e {
		m.Stats.Std[j] = 1
	}
	path := filepath.Join(dir, fmt.Sprintf("tinylat%d.safetensors", seed))
	if err := m.Save(path, "F32", nil); err != nil {
		t.Fatal(err)
	}
	return path
}

func pngSize(t *testing.T, path string) (w, h int) {
	t.Helper()
	img, err := imageio.DecodeFile(path, imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return img.Bounds().Dx(), img.Bounds().Dy()
}

// TestAppsTiny runs classify (CSV labels), manipulate, interpolate and sample on a random tiny model: the files
// and contact sheets have the documented layout and the flag errors are caught.
func TestAppsTiny(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := tinyLatentModel(t, dir, 1)
	imgs := testImages(t, dir, 8, 16, 16)
	codesPath := filepath.Join(dir, "codes.safetensors")
	if err := runEncode(ctx, append([]string{"--model", model, "--semantic-only", "--out", codesPath}, imgs...)); err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("file,attribute,label\n")
	for i, p := range imgs {
		fmt.Fprintf(&csv, "%s,odd,%d\n", filepath.Base(p), i%2)
	}
	labels := filepath.Join(dir, "labels.csv")
	if err := os.WriteFile(labels, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cls := filepath.Join(dir, "cls.json")
	if err := runClassify(ctx, []string{"--model", model, "--codes", codesPath, "--labels", labels, "--holdout", "0",
		"--epochs", "5", "--out", cls}); err != nil {
		t.Fatal(err)
	}
	c, err := diffae.LoadClassifier(cls, "odd")
	if err != nil {
		t.Fatal(err)
	}
	m, err := diffae.Load(tensor.NewCPU(1), model)
	if err != nil {
		t.Fatal(err)
	}
	if c.ModelID != m.ID || c.Metrics["n_train"] != 8 {
		t.Errorf("classifier for model %q on %v codes, want %q and 8", c.ModelID, c.Metrics["n_train"], m.ID)
	}

	cell := 16*3 + 2 // contact sheets scale 16×16 images by 3 with 2 pixels of padding
	t.Run("manipulate", func(t *testing.T) {
		out := filepath.Join(dir, "man")
		for _, edit := range [][]string{{"--scale", "0.5"}, {"--target", "median"}, {"--target", "p90"}, {"--target-logit", "2"},
			{"--scale", "0.5", "--encode-steps", "3"}, {"--target", "median", "--direction", "weight"}} {
			args := append([]string{"--model", model, "--classifier", cls, "--attribute", "odd", "--steps", "2", "--out", out}, edit...)
			if err := runManipulate(ctx, append(args, imgs[:2]...)); err != nil {
				t.Fatalf("%v: %v", edit, err)
			}
		}
		args := []string{"--model", model, "--classifier", cls, "--attribute", "odd", "--steps", "2", "--out", out, "--scale", "1"}
		if err := runManipulate(ctx, append(append(args, "--direction", "sideways"), imgs[:2]...)); err == nil ||
			!strings.Contains(err.Error(), "sideways") {
			t.Errorf("--direction sideways: %v, want an error naming it", err)
		}
		// A classifier file from before patterns were recorded: the default direction names the way out.
		old := filepath.Join(dir, "old.json")
		c2 := *c
		c2.Pattern = nil
		if err := c2.Save(old); err != nil {
			t.Fatal(err)
		}
		args[3] = old
		if err := runManipulate(ctx, append(args, imgs[:2]...)); err == nil || !strings.Contains(err.Error(), "no pattern") {
			t.Errorf("classifier without a pattern: %v, want an error saying so", err)
		}
		if err := runManipulate(ctx, append(append(args, "--direction", "weight"), imgs[:2]...)); err != nil {
			t.Errorf("classifier without a pattern, --direction weight: %v", err)
		}
		// One from before the quantiles were recorded: --target p90 says what is missing, median still works.
		c3 := *c
		c3.Metrics = map[string]float64{diffae.MetricMedianPositiveLogit: c.Metrics[diffae.MetricMedianPositiveLogit]}
		if err := c3.Save(old); err != nil {
			t.Fatal(err)
		}
		args = []string{"--model", model, "--classifier", old, "--attribute", "odd", "--steps", "2", "--out", out, "--target"}
		if err := runManipulate(ctx, append(args, append([]string{"p90"}, imgs[:2]...)...)); err == nil || !strings.Contains(err.Error(), "records no p90") {
			t.Errorf("classifier without quantiles, --target p90: %v, want an error saying so", err)
		}
		if err := runManipulate(ctx, append(args, append([]string{"median"}, imgs[:2]...)...)); err != nil {
			t.Errorf("classifier without quantiles, --target median: %v", err)
		}
		for _, n := range []string{"in0.png", "in1.png"} {
			if _, err := os.Stat(filepath.Join(out, n)); err != nil {
				t.Error(err)
			}
		}
		// Columns: input, reconstruction, 0.25, 0.5, 0.75, 1.
		if w, h := pngSize(t, filepath.Join(out, "sheet.png")); w != 2+6*cell || h != 2+2*cell {
			t.Errorf("sheet %d×%d, want %d×%d", w, h, 2+6*cell, 2+2*cell)
		}
		// Three rounds: two more columns, the second and third rounds.
		args = []string{"--model", model, "--classifier", cls, "--attribute", "odd", "--steps", "2", "--encode-steps", "3", "--out", out,
			"--target", "median", "--rounds", "3"}
		if err := runManipulate(ctx, append(args, imgs[:2]...)); err != nil {
			t.Fatalf("--rounds 3: %v", err)
		}
		if w, h := pngSize(t, filepath.Join(out, "sheet.png")); w != 2+8*cell || h != 2+2*cell {
			t.Errorf("sheet of three rounds %d×%d, want %d×%d", w, h, 2+8*cell, 2+2*cell)
		}
	})

	t.Run("interpolate", func(t *testing.T) {
		out := filepath.Join(dir, "strip.png")
		if err := runInterpolate(ctx, []string{imgs[0], imgs[1], "--model", model, "--frames", "3", "--steps", "2", "--out", out}); err != nil {
			t.Fatal(err)
		}
		// Input, three frames, input.
		if w, h := pngSize(t, out); w != 2+5*cell || h != 2+cell {
			t.Errorf("strip %d×%d, want %d×%d", w, h, 2+5*cell, 2+cell)
		}
	})

	t.Run("sample", func(t *testing.T) {
		out := filepath.Join(dir, "samples")
		if err := runSample(ctx, []string{"--model", model, "--n", "3", "--steps-latent", "2", "--steps", "2", "--out", out}); err != nil {
			t.Fatal(err)
		}
		if err := runSample(ctx, []string{"--model", model, "--n", "2", "--steps-latent", "2", "--steps", "2", "--out", out,
			"--condition", "odd=positive", "--classifier", cls}); err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(out, "sample_*.png"))
		if len(files) != 3 {
			t.Errorf("%d sample files, want 3", len(files))
		}
	})

	other := tinyLatentModel(t, dir, 2)
	noStats := tinyModel(t, dir, 3, nil)
	classify := func(extra ...string) []string {
		return append([]string{"--model", model, "--codes", codesPath, "--labels", labels, "--holdout", "0", "--epochs", "1",
			"--out", filepath.Join(dir, "bad.json")}, extra...)
	}
	errTests := []struct {
		name string
		run  func(context.Context, []string) error
		args []string
		want string
	}{
		{"two edits", runManipulate, []string{"--model", model, "--classifier", cls, "--scale", "1", "--target-logit", "1", imgs[0]}, "exactly one"},
		{"no edit", runManipulate, []string{"--model", model, "--classifier", cls, imgs[0]}, "exactly one"},
		{"rounds of a scale", runManipulate, []string{"--model", model, "--classifier", cls, "--scale", "1", "--rounds", "2", imgs[0]}, "--rounds 2"},
		{"too many rounds", runManipulate, []string{"--model", model, "--classifier", cls, "--target", "median", "--rounds", "9", imgs[0]}, "1..8"},
		{"unknown target", runManipulate, []string{"--model", model, "--classifier", cls, "--target", "mean", imgs[0]}, "median, p75, p90, p95"},
		{"threshold without condition", runSample, []string{"--model", model, "--min-prob", "0.9"}, "--min-prob without --condition"},
		{"threshold", runSample, []string{"--model", model, "--condition", "odd=positive", "--classifier", cls, "--min-prob", "1"}, "--min-prob 1"},
		{"unknown attribute", runManipulate, []string{"--model", model, "--classifier", cls, "--attribute", "even", "--scale", "1", imgs[0]}, "no classifier"},
		{"other model", runManipulate, []string{"--model", other, "--classifier", cls, "--scale", "1", imgs[0]}, "trained on model"},
		{"one input", runInterpolate, []string{"--model", model, imgs[0]}, "usage"},
		{"bad condition", runSample, []string{"--model", model, "--condition", "odd", "--classifier", cls}, "attribute=positive"},
		{"stray argument", runSample, []string{"--model", model, "--n", "1", "--steps", "1", "--steps-latent", "1", "--out", filepath.Join(dir, "x"), "stray"}, "unexpected arguments"},
		{"too many latent steps", runSample, []string{"--model", model, "--n", "1", "--steps", "1", "--steps-latent", "5000", "--out", filepath.Join(dir, "x")}, "--steps-latent 5000: want 1..1000"},
		{"no latent steps", runSample, []string{"--model", model, "--n", "1", "--steps", "1", "--steps-latent", "0", "--out", filepath.Join(dir, "x")}, "--steps-latent 0: want 1..1000"},
		{"no latent stats", runSample, []string{"--model", noStats, "--n", "1", "--steps", "2", "--steps-latent", "2", "--out", filepath.Join(dir, "x")}, "latent"},
		{"mode", runClassify, []string{"--model", model, "--mode", "semi", "--out", cls}, "binary or pu"},
		// Positional arguments where none are taken, numbers out of range and flags that would be ignored: each
		// named, before any work (a classifier that would be written goes to bad.json, not over cls).
		{"classify stray argument", runClassify, classify("stray", "--epochs", "2"), `unexpected arguments ["stray" "--epochs" "2"]`},
		{"classify no epochs", runClassify, classify("--epochs", "0"), "--epochs 0: want at least 1"},
		{"classify lr", runClassify, classify("--lr", "-1"), "--lr -1: want a finite number above 0"},
		{"classify hold-out", runClassify, classify("--holdout", "1"), "--holdout 1: want a share in [0, 1)"},
		{"classify hold-out NaN", runClassify, classify("--holdout", "NaN"), "--holdout NaN"},
		{"classify few-shot", runClassify, classify("--few-shot", "-1"), "--few-shot -1: want at least 0"},
		{"classify n with codes", runClassify, classify("--n", "5"), "--n applies only with Fashion-MNIST images, not with --codes"},
		{"classify cache with codes", runClassify, classify("--cache", dir, "--test-n", "3"), "--cache, --test-n apply only with Fashion-MNIST"},
		{"eval sample stray argument", runEvalSample, []string{"--model", model, "--probe", cls, "--n", "1", "stray"}, `unexpected arguments ["stray"]`},
		{"eval sample no samples", runEvalSample, []string{"--model", model, "--probe", cls, "--n", "0"}, "--n 0: want at least 1"},
		{"eval sample negative samples", runEvalSample, []string{"--model", model, "--probe", cls, "--n", "-2"}, "--n -2: want at least 1"},
		{"eval sample latent steps", runEvalSample, []string{"--model", model, "--probe", cls, "--steps-latent", "0"}, "--steps-latent 0: want 1..1000"},
		{"eval sample data without pixel probe", runEvalSample, []string{"--model", model, "--probe", cls, "--n", "1", "--data", dir},
			"--data applies only with --pixel-probe"},
		{"eval manipulate stray argument", runEvalManipulate, []string{"--model", model, "--classifier", cls, "--scale", "1", "stray"},
			`unexpected arguments ["stray"]`},
		{"eval manipulate no images", runEvalManipulate, []string{"--model", model, "--classifier", cls, "--scale", "1", "--n", "0"},
			"--n 0: want at least 1"},
		{"eval manipulate negative images", runEvalManipulate, []string{"--model", model, "--classifier", cls, "--scale", "1", "--n", "-1"},
			"--n -1: want at least 1"},
		{"eval interpolate stray argument", runEvalInterpolate, []string{"--model", model, "--baseline", model, "stray"}, `unexpected arguments ["stray"]`},
		{"encode steps", runManipulate, []string{"--model", model, "--classifier", cls, "--scale", "1", "--encode-steps", "5000", imgs[0]},
			"--encode-steps 5000: want 0..1000"},
	}
	for _, tc := range errTests {
		err := tc.run(ctx, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestFewShot(t *testing.T) {
	// Two classes of 6 codes each; k = 2 keeps two of each.
	var labels [2][]bool
	var known [2][]bool
	for a := range 2 {
		labels[a] = make([]bool, 12)
		known[a] = make([]bool, 12)
		for i := range 12 {
			labels[a][i] = i%2 == a
			known[a][i] = true
		}
	}
	got := fewShot(known[:], labels[:], 2, newTestRand())
	for a := range 2 {
		var kept, pos int
		for i := range 12 {
			if got[a][i] {
				kept++
				if labels[a][i] {
					pos++
				}
			}
		}
		if kept != 4 || pos != 2 {
			t.Errorf("class %d: kept %d labelled codes with %d positives, want 4 and 2", a, kept, pos)
		}
	}
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

// TestEvalAppsTiny runs classify on Fashion-MNIST codes and the three application evaluations with random tiny
// grey 32×32 models, checking the reports and images appear (the numbers of a random model mean nothing).
func TestEvalAppsTiny(t *testing.T) {
	if !isIDXDir(dataset.DefaultFashionMNISTDir) {
		t.Skip("Fashion-MNIST not installed")
	}
	ctx := context.Background()
	dir := t.TempDir()
	cfg, _ := diffae.Preset("tiny")
	cfg.ImageSize, cfg.InChannels, cfg.OutChannels, cfg.AttentionResolutions = 32, 1, 1, []int{16}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := diffae.New(tensor.NewCPU(1), cfg, 4)
	m.Stats = &diffae.LatentStats{Mean: make([]float32, cfg.ZDim()), Std: slices.Repeat([]float32{1}, cfg.ZDim())}
	model := filepath.Join(dir, "grey.safetensors")
	if err := m.Save(model, "F32", nil); err != nil {
		t.Fatal(err)
	}
	baseline := filepath.Join(dir, "base.safetensors")
	if err := diffae.New(tensor.NewCPU(1), cfg.Baseline(), 5).Save(baseline, "F32", nil); err != nil {
		t.Fatal(err)
	}
	cls := filepath.Join(dir, "cls.json")
	if err := runClassify(ctx, []string{"--model", model, "--n", "300", "--test-n", "100", "--epochs", "3",
		"--cache", dir, "--out", cls}); err != nil {
		t.Fatal(err)
	}
	cs, err := diffae.LoadClassifiers(cls)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 10 || cs[1].Attribute != "Trouser" || cs[1].Metrics["n_test"] != 100 {
		t.Fatalf("%d classifiers, second %q on %v test codes; want the 10 classes, 100 test codes", len(cs), cs[1].Attribute, cs[1].Metrics["n_test"])
	}
	pu := filepath.Join(dir, "pu.json")
	if err := runClassify(ctx, []string{"--model", model, "--n", "300", "--test-n", "0", "--epochs", "2", "--mode", "pu",
		"--few-shot", "5", "--attributes", "Trouser", "--cache", dir, "--out", pu}); err != nil {
		t.Fatal(err)
	}
	c, err := diffae.LoadClassifier(pu, "")
	if err != nil {
		t.Fatal(err)
	}
	// PU trains on every code; 5 positives minus the held-out share.
	if c.Metrics["n_train"]+c.Metrics["n_holdout"] != 300 || c.Metrics["n_train_positive"] > 5 {
		t.Errorf("PU classifier on %v+%v codes with %v positives; want 300 codes and at most 5", c.Metrics["n_train"], c.Metrics["n_holdout"], c.Metrics["n_train_positive"])
	}
	img := filepath.Join(dir, "img")
	steps := []string{"--model", model, "--steps", "2"}
	runs := []struct {
		run  func(context.Context, []string) error
		args []string
		want string
	}{
		{runEvalManipulate, []string{"--classifier", cls, "--probe", cls, "--attributes", "Trouser,Bag", "--n", "3", "--target", "median", "--sheets", img, "--pixel-probe", "200"}, "manipulate-Bag.png"},
		{runEvalInterpolate, []string{"--baseline", baseline, "--pairs", "2", "--frames", "3", "--strips", img}, "interpolate-1.png"},
		{runManipulate, []string{"--classifier", cls, "--attribute", "Bag", "--scale", "0.5", "--from-test", "0,1", "--out", img}, "test_00001_Pullover.png"},
		{runInterpolate, []string{"--from-test", "2,3", "--frames", "3", "--out", filepath.Join(img, "strip.png")}, "strip.png"},
		{runEvalSample, []string{"--probe", cls, "--n", "3", "--steps-latent", "2", "--condition", "Trouser=positive", "--classifier", pu, "--sheet", filepath.Join(img, "s.png"), "--pixel-probe", "200"}, "s.png"},
	}
	for _, r := range runs {
		if err := r.run(ctx, append(slices.Clone(steps), r.args...)); err != nil {
			t.Fatalf("%v: %v", r.args, err)
		}
		if _, err := os.Stat(filepath.Join(img, r.want)); err != nil {
			t.Error(err)
		}
	}
	if err := runEval(ctx, []string{"sample"}); err == nil || !strings.Contains(err.Error(), "--probe") {
		t.Errorf("dae eval sample without --probe: %v", err)
	}
	// Three rounds: the table gains the share after each round, three of them.
	out := stdoutOf(t, func() error {
		return runEvalManipulate(ctx, append(slices.Clone(steps), "--classifier", cls, "--attributes", "Bag", "--n", "3",
			"--target", "median", "--rounds", "3", "--encode-steps", "2"))
	})
	if !strings.Contains(out, "after each round") || !regexp.MustCompile(`\| \d+% → \d+% → \d+% \|`).MatchString(out) {
		t.Errorf("eval manipulate --rounds 3 printed no share per round:\n%s", out)
	}
}

// stdoutOf runs fn with os.Stdout going to a pipe and returns what it printed (the tests of this package do not
// run in parallel).
func stdoutOf(t *testing.T, fn func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	err = fn()
	os.Stdout = saved
	w.Close()
	out := <-done
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// The targets a manipulate job may name are the ones classifiers record.
func TestManipulateTargetsMatch(t *testing.T) {
	if got, want := schema.ManipulateTargets, diffae.TargetNames(); !slices.Equal(got, want) {
		t.Errorf("schema.ManipulateTargets %v, diffae.TargetNames %v", got, want)
	}
	if schema.MaxRounds != diffae.MaxEditRounds {
		t.Errorf("schema.MaxRounds %d, diffae.MaxEditRounds %d", schema.MaxRounds, diffae.MaxEditRounds)
	}
}
