package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"dae/diffae"
	"dae/imageio"
	"dae/tensor"
)

// ssimConvention is stated with every table: SSIM numbers are only comparable under the same window handling.
const ssimConvention = "SSIM: 11×11 Gaussian window (σ 1.5), zero padding, mean over all H×W positions — the " +
	"authors' convention (pytorch-ssim); MSE on images mapped to [0,1]; PSNR the mean of per-image dB"

var methodNames = map[string]string{
	diffae.ReconEncoded:  "Diff-AE, encoded x_T",
	diffae.ReconRandom:   "Diff-AE, random x_T",
	diffae.ReconBaseline: "DDIM baseline, inverted x_T",
}

// reconReport is the JSON form of `dae eval recon`.
type reconReport struct {
	Model      string      `json:"model,omitempty"`
	ModelID    string      `json:"model_id,omitempty"`
	Baseline   string      `json:"baseline,omitempty"`
	BaselineID string      `json:"baseline_id,omitempty"`
	Data       string      `json:"data"`
	Split      string      `json:"split"`
	N          int         `json:"n"`
	Seed       uint64      `json:"seed"`
	Metrics    string      `json:"metrics"`
	Rows       []reconRow  `json:"rows"`
	Checks     []claimLine `json:"checks,omitempty"`
	Seconds    float64     `json:"seconds"`
	// Interrupted marks a report cut short (Ctrl-C): Rows holds the T finished before.
	Interrupted bool `json:"interrupted,omitempty"`
	// X0Trace (--x0-trace T): per decoding step, the MSE between the x̂0 predicted there and the input.
	X0Trace *x0Trace `json:"x0_trace,omitempty"`
}

type x0Trace struct {
	T        int       `json:"T"`
	DiffAE   []float64 `json:"diffae,omitempty"`
	Baseline []float64 `json:"baseline,omitempty"`
}

type reconRow struct {
	Method  string `json:"method"`
	T       int    `json:"T"`
	N       int    `json:"n"`
	MSE     jfloat `json:"mse"`
	SSIM    jfloat `json:"ssim"`
	PSNR    jfloat `json:"psnr"`
	MSESE   jfloat `json:"mse_se"`
	SSIMSE  jfloat `json:"ssim_se"`
	PSNRSE  jfloat `json:"psnr_se"`
	Seconds jfloat `json:"seconds"`
}

// claimLine is one of the paper's claims checked on this run's numbers.
type claimLine struct {
	Claim string `json:"claim"`
	MSE   bool   `json:"mse"`
	SSIM  bool   `json:"ssim"`
	PSNR  bool   `json:"psnr"`
}

func runEvalRecon(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval recon", flag.ContinueOnError)
	model := fs.String("model", "", "Diff-AE checkpoint")
	baseline := fs.String("baseline", "", "DDIM baseline checkpoint (optional)")
	data := fs.String("data", "", "Fashion-MNIST IDX folder, or a folder of images (default: the Debian Fashion-MNIST)")
	split := fs.String("split", "test", "Fashion-MNIST split: test or train")
	n := fs.Int("n", 100, "evaluate the first N images")
	stepsFlag := fs.String("steps", "10,20,50,100", "comma-separated T (DDIM steps of encoding and decoding)")
	batch := fs.Int("batch", 64, "images per network evaluation")
	seed := fs.Uint64("seed", 1, "seed of the random x_T")
	jsonPath := fs.String("json", "", "also write the results as JSON here")
	gridPath := fs.String("grid", "", "also write a contact sheet here: the first 8 images in columns; rows: originals, then for each T "+
		"Diff-AE encoded x_T, Diff-AE random x_T, baseline (those evaluated)")
	threads := fs.Int("threads", 0, "CPU threads (0: all)")
	traceT := fs.Int("x0-trace", 0, "also encode and decode with T steps and print, per decoding step, the MSE of the predicted x̂0 against the input (the paper's Section 5.5 / Figure 6); 0: off")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: dae eval recon --model M.safetensors [--baseline B.safetensors] [--data DIR] [--n N] [--steps 10,20,50,100] [--json OUT.json]

The paper's Table 2 analogue: reconstructs the first N images of the split at each T with Diff-AE (x_T from its
stochastic encoder, and x_T ~ N(0,I)) and with the DDIM baseline (x_T from inverting it), and prints MSE, SSIM
and PSNR with their standard errors.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *model == "" && *baseline == "" {
		return fmt.Errorf("%w: give --model, --baseline or both", errUsage)
	}
	steps, err := parseSteps(*stepsFlag)
	if err != nil {
		return fmt.Errorf("%w: --steps: %v", errUsage, err)
	}
	if err := firstError(atLeast("n", *n, 1), atLeast("batch", *batch, 1), atLeast("threads", *threads, 0)); err != nil {
		return err
	}
	if *traceT < 0 || *traceT > 1000 {
		return fmt.Errorf("%w: --x0-trace %d: want 0 (off) or a number of steps up to 1000", errUsage, *traceT)
	}
	dev := tensor.NewCPU(*threads)
	rep := reconReport{Split: *split, Seed: *seed, Metrics: ssimConvention, Data: *data}
	if rep.Data == "" {
		rep.Data = "Fashion-MNIST (default folder)"
	}
	var m, b *diffae.Model
	if *model != "" {
		if m, rep.Model, err = loadEvalModel(dev, *model); err != nil {
			return err
		}
		rep.ModelID = m.ID
	}
	if *baseline != "" {
		if b, rep.Baseline, err = loadEvalModel(dev, *baseline); err != nil {
			return err
		}
		rep.BaselineID = b.ID
	}
	ref := m
	if ref == nil {
		ref = b
	}
	imgs, err := loadImages(*data, *split, ref.Cfg.ImageSize, ref.Cfg.InChannels)
	if err != nil {
		return err
	}
	rep.N = min(*n, imgs.N)
	x0 := imgs.Data[:rep.N*imgs.Size()]

	work := diffae.ReconWork(m, b, rep.N, steps)
	fmt.Fprintf(os.Stderr, "reconstructing %d images at T=%v: %d image network evaluations\n", rep.N, steps, work)
	sheet := newReconSheet(x0, imgs.Size(), min(8, rep.N), ref)
	pr := newProgress("eval recon")
	start := time.Now()
	scores, err := diffae.EvalRecon(ctx, m, b, x0, rep.N, diffae.ReconOptions{Steps: steps, Batch: *batch,
		Seed: *seed, Progress: pr.update, Keep: sheet.keep})
	pr.finish()
	if err != nil && len(scores) == 0 {
		return err
	}
	if err != nil {
		// Interrupted: report the rows that are done, then the error.
		fmt.Fprintf(os.Stderr, "stopped early (%v); the rows finished so far follow\n", err)
		rep.Interrupted = true
	}
	rep.Seconds = time.Since(start).Seconds()
	for _, s := range scores {
		rep.Rows = append(rep.Rows, reconRow{Method: s.Method, T: s.Steps, N: s.N, MSE: jfloat(s.MSE),
			SSIM: jfloat(s.SSIM), PSNR: jfloat(s.PSNR), MSESE: jfloat(s.MSESE), SSIMSE: jfloat(s.SSIMSE),
			PSNRSE: jfloat(s.PSNRSE), Seconds: jfloat(s.Seconds)})
	}
	rep.Checks = reconClaims(scores)
	if *traceT > 0 && err == nil {
		tr := &x0Trace{T: *traceT}
		fmt.Fprintf(os.Stderr, "x̂0 trace at T=%d\n", *traceT)
		if m != nil {
			if tr.DiffAE, err = diffae.X0Trace(ctx, m, x0, rep.N, *traceT, *batch); err != nil {
				return err
			}
		}
		if b != nil {
			if tr.Baseline, err = diffae.X0Trace(ctx, b, x0, rep.N, *traceT, *batch); err != nil {
				return err
			}
		}
		rep.X0Trace = tr
	}
	printRecon(os.Stdout, &rep)
	if *jsonPath != "" {
		if err := writeJSON(*jsonPath, rep); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *jsonPath)
	}
	if *gridPath != "" {
		if err := imageio.WritePNG(*gridPath, sheet.image()); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *gridPath)
	}
	return err
}

// parseSteps reads "10,20,50,100".
func parseSteps(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 || v > diffae.NumTrainSteps {
			return nil, fmt.Errorf("%q is not a step count in [1, %d]", f, diffae.NumTrainSteps)
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%q names no T", s)
	}
	return out, nil
}

// reconClaims checks the paper's Table 2 claims on the scores: Diff-AE with encoded x_T beats the baseline at the
// same T, and Diff-AE at T=20 beats the baseline at T=100. Lower MSE, higher SSIM and PSNR are better.
func reconClaims(scores []diffae.ReconScore) []claimLine {
	find := func(method string, t int) *diffae.ReconScore {
		for i := range scores {
			if scores[i].Method == method && scores[i].Steps == t {
				return &scores[i]
			}
		}
		return nil
	}
	beats := func(claim string, a, b *diffae.ReconScore) claimLine {
		return claimLine{Claim: claim, MSE: a.MSE < b.MSE, SSIM: a.SSIM > b.SSIM, PSNR: a.PSNR > b.PSNR}
	}
	var out []claimLine
	var ts []int
	for _, s := range scores {
		if !slices.Contains(ts, s.Steps) {
			ts = append(ts, s.Steps)
		}
	}
	for _, t := range ts {
		a, b := find(diffae.ReconEncoded, t), find(diffae.ReconBaseline, t)
		if a != nil && b != nil {
			out = append(out, beats(fmt.Sprintf("Diff-AE (encoded x_T) beats the DDIM baseline at T=%d", t), a, b))
		}
	}
	if a, b := find(diffae.ReconEncoded, 20), find(diffae.ReconBaseline, 100); a != nil && b != nil {
		out = append(out, beats("Diff-AE at T=20 beats the DDIM baseline at T=100", a, b))
	}
	return out
}

func printRecon(w io.Writer, r *reconReport) {
	fmt.Fprintf(w, "Reconstruction of the first %d images of %s (%s split), seed %d\n", r.N, r.Data, r.Split, r.Seed)
	if r.Model != "" {
		fmt.Fprintf(w, "model:    %s\n", r.Model)
	}
	if r.Baseline != "" {
		fmt.Fprintf(w, "baseline: %s\n", r.Baseline)
	}
	fmt.Fprintf(w, "%s; ± is the standard error of the mean\n", r.Metrics)
	if r.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: only the rows below were finished")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "T\tmethod\tMSE\tSSIM\tPSNR (dB)\ttime\t")
	last := -1
	for _, row := range r.Rows {
		if row.T != last && last != -1 {
			fmt.Fprintln(tw, "\t\t\t\t\t\t")
		}
		last = row.T
		fmt.Fprintf(tw, "%d\t%s\t%.5f ± %.5f\t%.4f ± %.4f\t%.2f ± %.2f\t%s\t\n", row.T, methodNames[row.Method],
			row.MSE, row.MSESE, row.SSIM, row.SSIMSE, row.PSNR, row.PSNRSE,
			(time.Duration(float64(row.Seconds) * float64(time.Second))).Round(time.Second))
	}
	tw.Flush()
	if len(r.Checks) > 0 {
		fmt.Fprintln(w, "\nPaper's claims on these numbers (lower MSE, higher SSIM and PSNR):")
		for _, c := range r.Checks {
			fmt.Fprintf(w, "  %-55s MSE %s  SSIM %s  PSNR %s\n", c.Claim, yesNo(c.MSE), yesNo(c.SSIM), yesNo(c.PSNR))
		}
	}
	if tr := r.X0Trace; tr != nil {
		fmt.Fprintf(w, "\nx̂0 predicted at each step of a T=%d decoding from the encoded x_T, MSE against the input (images in [0,1]):\n", tr.T)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "step\tDiff-AE\tDDIM baseline\t")
		for i := range tr.T {
			cell := func(v []float64) string {
				if v == nil {
					return "–"
				}
				return fmt.Sprintf("%.5f", v[i])
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t\n", i+1, cell(tr.DiffAE), cell(tr.Baseline))
		}
		tw.Flush()
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO "
}

// reconSheet collects the first few images of every method and T for a contact sheet a person can look at.
type reconSheet struct {
	k, per int
	m      *diffae.Model
	rows   [][]image.Image
}

func newReconSheet(x0 []float32, per, k int, m *diffae.Model) *reconSheet {
	s := &reconSheet{k: k, per: per, m: m}
	s.rows = append(s.rows, s.images(x0))
	return s
}

func (s *reconSheet) images(x []float32) []image.Image {
	out := make([]image.Image, s.k)
	c, h := s.m.Cfg.InChannels, s.m.Cfg.ImageSize
	for i := range out {
		out[i] = imageio.FromCHW(x[i*s.per:(i+1)*s.per], c, h, h)
	}
	return out
}

func (s *reconSheet) keep(_ string, _ int, x []float32) { s.rows = append(s.rows, s.images(x)) }

func (s *reconSheet) image() image.Image { return imageio.Grid(s.rows, 2, 2) }
