package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dae/diffae"
	"dae/nn"
	"dae/tensor"
)

// writeIDX writes a Fashion-MNIST-shaped split (28×28 grey, labels 0–9) of n images: class c is a bright
// horizontal bar at row 2c, so that the classes differ.
func writeIDX(t *testing.T, dir, prefix string, n int) {
	t.Helper()
	img := binary.BigEndian.AppendUint32(nil, 0x803)
	img = binary.BigEndian.AppendUint32(img, uint32(n))
	img = binary.BigEndian.AppendUint32(img, 28)
	img = binary.BigEndian.AppendUint32(img, 28)
	lbl := binary.BigEndian.AppendUint32(nil, 0x801)
	lbl = binary.BigEndian.AppendUint32(lbl, uint32(n))
	for i := range n {
		c := i % 10
		pix := make([]byte, 28*28)
		for x := range 28 {
			pix[(2*c+4)*28+x] = 255
			pix[(2*c+5)*28+x] = byte(20 * i)
		}
		img = append(img, pix...)
		lbl = append(lbl, byte(c))
	}
	for name, b := range map[string][]byte{prefix + "-images-idx3-ubyte": img, prefix + "-labels-idx1-ubyte": lbl} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tinyGrey32 writes a random tiny model for 32×32 grey images (the shape of padded Fashion-MNIST), or its DDIM
// baseline.
func tinyGrey32(t *testing.T, path string, baseline bool) {
	t.Helper()
	cfg, err := diffae.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ImageSize, cfg.InChannels, cfg.OutChannels = 32, 1, 1
	cfg.AttentionResolutions = []int{16}
	if baseline {
		cfg = cfg.Baseline()
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := diffae.New(tensor.NewCPU(1), cfg, 3).Save(path, "F32", nil); err != nil {
		t.Fatal(err)
	}
}

func trainStep(t *testing.T, path string) int {
	t.Helper()
	f, err := nn.ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	var st diffae.TrainState
	if err := json.Unmarshal([]byte(f.Meta[diffae.MetaTrainState]), &st); err != nil {
		t.Fatal(err)
	}
	return st.Step
}

// TestEvalCommandsTiny runs train-latent (with a resume that must use the code cache), eval recon, eval probe and
// plot-loss end to end on a random tiny model and a synthetic Fashion-MNIST folder.
func TestEvalCommandsTiny(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := filepath.Join(dir, "fmnist")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	writeIDX(t, data, "train", 20)
	writeIDX(t, data, "t10k", 10)
	model, base := filepath.Join(dir, "ae.safetensors"), filepath.Join(dir, "ddim.safetensors")
	tinyGrey32(t, model, false)
	tinyGrey32(t, base, true)

	out := filepath.Join(dir, "lat.safetensors")
	latent := func(steps string) {
		t.Helper()
		if err := runTrainLatent(ctx, []string{"--model", model, "--data", data, "--out", out, "--n", "16",
			"--steps", steps, "--batch", "4", "--checkpoint-every", "2", "--threads", "1"}); err != nil {
			t.Fatal(err)
		}
	}
	latent("3")
	// A resume refuses the run's settings given otherwise (they would be ignored), naming each with the run's value,
	// and trains nothing; latent() gives --batch 4, the run's, and resumes below.
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--batch", "8"}, "--batch 8 (the run has 4)"},
		{[]string{"--lr", "0.5"}, "--lr 0.5 (the run has 0.0001)"},
		{[]string{"--weight-decay", "0"}, "--weight-decay 0 (the run has 0.01)"},
		{[]string{"--seed", "9"}, "--seed 9 (the run has 1)"},
	} {
		err := runTrainLatent(ctx, append([]string{"--model", model, "--data", data, "--out", out, "--n", "16", "--steps", "4",
			"--checkpoint-every", "2", "--threads", "1"}, tc.args...))
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), out) {
			t.Errorf("resume with %q: %v, want a usage error naming %s and saying %q", tc.args, err, out, tc.says)
		}
	}
	if got := trainStep(t, out); got != 3 {
		t.Fatalf("a refused resume trained: latent checkpoint at step %d, want 3", got)
	}
	cache := out + ".zsem.safetensors"
	st, err := os.Stat(cache)
	if err != nil {
		t.Fatal(err)
	}
	if got := trainStep(t, out); got != 3 {
		t.Fatalf("latent checkpoint at step %d, want 3", got)
	}
	// Hide the data: the resume must take the codes from the cache.
	if err := os.Rename(data, data+".away"); err != nil {
		t.Fatal(err)
	}
	latent("5")
	if err := os.Rename(data+".away", data); err != nil {
		t.Fatal(err)
	}
	if got := trainStep(t, out); got != 5 {
		t.Errorf("resumed latent checkpoint at step %d, want 5", got)
	}
	if st2, err := os.Stat(cache); err != nil || !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("the code cache was rewritten on resume (%v)", err)
	}
	m, err := diffae.Load(tensor.NewCPU(1), out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Stats == nil || m.Latent == nil {
		t.Fatal("the latent checkpoint has no statistics or latent net")
	}
	if _, err := os.Stat(out + ".loss.png"); err != nil {
		t.Errorf("no loss curve: %v", err)
	}

	js := filepath.Join(dir, "recon.json")
	if err := runEvalRecon(ctx, []string{"--model", out, "--baseline", base, "--data", data, "--n", "2",
		"--steps", "2,3", "--json", js, "--grid", filepath.Join(dir, "grid.png"), "--threads", "1", "--x0-trace", "3"}); err != nil {
		t.Fatal(err)
	}
	var rep reconReport
	if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("recon JSON: %v", err)
	}
	if len(rep.Rows) != 6 || rep.N != 2 || len(rep.Checks) != 2 {
		t.Errorf("recon report: %d rows, n %d, %d checks; want 6, 2, 2", len(rep.Rows), rep.N, len(rep.Checks))
	}
	// The x̂0 trace at T = 3: three steps for each model, the last one the T = 3 reconstruction's MSE.
	if tr := rep.X0Trace; tr == nil || tr.T != 3 || len(tr.DiffAE) != 3 || len(tr.Baseline) != 3 {
		t.Errorf("x0 trace %+v: want 3 steps for Diff-AE and the baseline", tr)
	} else {
		for _, row := range rep.Rows {
			if row.T == 3 && row.Method == diffae.ReconEncoded && math.Abs(tr.DiffAE[2]-float64(row.MSE)) > 1e-6 {
				t.Errorf("x0 trace ends at %g, the T=3 reconstruction's MSE is %g", tr.DiffAE[2], float64(row.MSE))
			}
			if row.T == 3 && row.Method == diffae.ReconBaseline && math.Abs(tr.Baseline[2]-float64(row.MSE)) > 1e-6 {
				t.Errorf("baseline x0 trace ends at %g, its T=3 reconstruction's MSE is %g", tr.Baseline[2], float64(row.MSE))
			}
		}
	}
	if err := runEvalRecon(ctx, []string{"--model", out, "--data", data, "--x0-trace", "-1"}); err == nil ||
		!strings.Contains(err.Error(), "--x0-trace") {
		t.Errorf("--x0-trace -1: %v, want an error naming the flag", err)
	}

	js = filepath.Join(dir, "probe.json")
	if err := runEvalProbe(ctx, []string{"--model", out, "--train", data, "--test", data, "--epochs", "3",
		"--n-recon", "2", "--recon-steps", "2", "--images", "random-xt,encoded-xt", "--json", js,
		"--threads", "1"}); err != nil {
		t.Fatal(err)
	}
	var pr probeReport
	if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &pr) != nil {
		t.Fatalf("probe JSON: %v", err)
	}
	if pr.NTrain != 20 || pr.NTest != 10 || len(pr.ZSem.PerClass) != 10 || len(pr.Recons) != 2 {
		t.Errorf("probe report: n %d/%d, %d classes, %d reconstruction rows", pr.NTrain, pr.NTest,
			len(pr.ZSem.PerClass), len(pr.Recons))
	}

	// --tune: each feature set gets its own choice from the grid, recorded with every setting's score.
	if err := runEvalProbe(ctx, []string{"--model", out, "--train", data, "--test", data, "--tune", "--tune-epochs", "1,2",
		"--tune-l2", "0,0.1", "--tune-lr", "0.001", "--val-share", "0.25", "--images", "", "--json", js, "--threads", "1"}); err != nil {
		t.Fatal(err)
	}
	pr = probeReport{}
	if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &pr) != nil {
		t.Fatalf("probe JSON: %v", err)
	}
	for _, r := range []probeResult{pr.ZSem, pr.Pixels} {
		if len(r.Tuning) != 4 || (r.Epochs != 1 && r.Epochs != 2) || (r.L2 != 0 && r.L2 != 0.1) {
			t.Errorf("tuned probe: %d settings scored, chose %d epochs, l2 %g", len(r.Tuning), r.Epochs, r.L2)
		}
	}
	// --exact --tune: L-BFGS to convergence, only the penalty tuned.
	if err := runEvalProbe(ctx, []string{"--model", out, "--train", data, "--test", data, "--exact", "--tune", "--tune-l2", "0,0.1",
		"--val-share", "0.25", "--images", "", "--json", js, "--threads", "1"}); err != nil {
		t.Fatal(err)
	}
	pr = probeReport{}
	if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &pr) != nil {
		t.Fatalf("probe JSON: %v", err)
	}
	if pr.ZSem.Solver != "lbfgs" || len(pr.ZSem.Tuning) != 2 || len(pr.Pixels.Tuning) != 2 {
		t.Errorf("exact tuned probe: solver %q, %d and %d settings scored", pr.ZSem.Solver, len(pr.ZSem.Tuning), len(pr.Pixels.Tuning))
	}
	for _, bad := range [][]string{{"--tune", "--tune-epochs", "1.5"}, {"--tune", "--tune-l2", "-1"}, {"--tune", "--val-share", "1"},
		{"--tune", "--tune-l2", "NaN"}, {"--tune", "--tune-lr", "0"}, {"--val-share", "0.3"}, {"--tune-lr", "0.01"}, {"--l2", "-1"}} {
		args := append([]string{"--model", out, "--train", data, "--test", data}, bad...)
		if err := runEvalProbe(ctx, args); err == nil || !strings.Contains(err.Error(), bad[len(bad)-2]) {
			t.Errorf("%v: %v, want an error naming the flag", bad, err)
		}
	}

	png := filepath.Join(dir, "loss.png")
	if err := runPlotLoss(ctx, []string{out + ".loss.csv", png}); err != nil {
		t.Fatal(err)
	}
	if err := runPlotLoss(ctx, []string{filepath.Join(dir, "missing.csv"), png}); err == nil {
		t.Error("plot-loss of a missing log did not fail")
	}
	// A baseline has no encoder to train a latent DDIM on or to probe.
	if err := runTrainLatent(ctx, []string{"--model", base, "--data", data, "--out", filepath.Join(dir, "x.st")}); err == nil {
		t.Error("train-latent accepted a DDIM baseline")
	}
	if err := runEvalProbe(ctx, []string{"--model", base, "--train", data, "--test", data}); err == nil {
		t.Error("eval probe accepted a DDIM baseline")
	}
}

func TestReadLossLog(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, text string
		steps      int
		last       float64
		ok         bool
	}{
		{"plain", "step,loss,images_per_s\n1,0.5,10\n2,0.4,11\n", 2, 0.4, true},
		{"resumed repeats a step", "step,loss,images_per_s\n1,0.5,10\n2,0.4,11\n2,0.3,9\n3,0.2,9\n", 3, 0.2, true},
		{"line being written", "step,loss,images_per_s\n1,0.5,10\n2,0.4,11\n3,0.", 3, 0, true},
		{"wrong header", "a,b\n1,2\n", 0, 0, false},
		{"no rows", "step,loss,images_per_s\n", 0, 0, false},
		{"not a number", "step,loss\nx,1\n", 0, 0, false},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.name+".csv")
		if err := os.WriteFile(p, []byte(tt.text), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := readLossLog(p)
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
			continue
		}
		if err == nil && (len(l.step) != tt.steps || l.loss[len(l.loss)-1] != tt.last) {
			t.Errorf("%s: %d steps ending at %v, want %d ending at %v", tt.name, len(l.step), l.loss[len(l.loss)-1],
				tt.steps, tt.last)
		}
	}
	if got := movingAverage([]float64{1, 2, 3, 4, 5}, 3); got[2] != 3 || got[0] != 1.5 || got[4] != 4.5 {
		t.Errorf("movingAverage = %v", got)
	}
}
