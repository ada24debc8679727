package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"dae/dataset"
	"dae/diffae"
	"dae/tensor"
)

// Reconstruction kinds `eval probe --images` can score.
const (
	probeRandomXT  = "random-xt"
	probeEncodedXT = "encoded-xt"
)

// probeReport is the JSON form of `dae eval probe`.
type probeReport struct {
	Model    string        `json:"model"`
	ModelID  string        `json:"model_id"`
	Train    string        `json:"train"`
	Test     string        `json:"test"`
	NTrain   int           `json:"n_train"`
	NTest    int           `json:"n_test"`
	Probe    string        `json:"probe"`
	ZSem     probeResult   `json:"z_sem"`
	Pixels   probeResult   `json:"pixels"`
	Recons   []reconProbe  `json:"reconstructions,omitempty"`
	Classes  []string      `json:"classes"`
	Seconds  float64       `json:"seconds"`
	Settings probeSettings `json:"settings"`
}

type probeSettings struct {
	Epochs int     `json:"epochs"`
	LR     float64 `json:"lr"`
	L2     float64 `json:"l2"`
	Batch  int     `json:"batch"`
	Seed   uint64  `json:"seed"`
	// PixelMinStd floors the std that standardises pixels (see diffae.ProbeOptions.MinStd).
	PixelMinStd float64 `json:"pixel_min_std"`
}

type probeResult struct {
	Accuracy     jfloat       `json:"accuracy"`
	MeanAUROC    jfloat       `json:"mean_auroc"`
	MeanBinary   jfloat       `json:"mean_binary_accuracy"`
	PerClass     []classScore `json:"per_class"`
	TrainSeconds jfloat       `json:"train_seconds"`
	// Epochs and L2 are the settings this probe was trained with; Tuning, with --tune, the validation accuracy of
	// every setting tried.
	Epochs int                   `json:"epochs"`
	L2     float64               `json:"l2"`
	LR     float64               `json:"lr"`
	Solver string                `json:"solver"` // "adam" (minibatch, for the epochs) or "lbfgs" (to convergence)
	Tuning []diffae.ProbeSetting `json:"tuning,omitempty"`
}

type classScore struct {
	Class    string `json:"class"`
	AUROC    jfloat `json:"auroc"`
	Accuracy jfloat `json:"accuracy"`
}

// reconProbe is the probes' accuracy on reconstructions of the first N test images, next to their accuracy on
// the same N originals: a reconstruction that keeps the class keeps the accuracy.
type reconProbe struct {
	Kind string `json:"kind"`
	T    int    `json:"T"`
	N    int    `json:"n"`
	// ZSem is the z_sem probe on the reconstructions re-encoded; ZSemOriginal the same probe on the originals.
	ZSem         jfloat `json:"z_sem_accuracy"`
	ZSemOriginal jfloat `json:"z_sem_accuracy_originals"`
	// Pixels is the pixel probe on the reconstructions; PixelsOriginal on the originals.
	Pixels         jfloat `json:"pixels_accuracy"`
	PixelsOriginal jfloat `json:"pixels_accuracy_originals"`
	// Agreement is the share of reconstructions the z_sem probe puts in the class it gives the original.
	Agreement jfloat `json:"z_sem_agreement"`
}

func runEvalProbe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval probe", flag.ContinueOnError)
	model := fs.String("model", "", "Diff-AE checkpoint")
	trainDir := fs.String("train", "", "labelled training images: Fashion-MNIST IDX folder (train split) or a folder (default: Debian Fashion-MNIST)")
	testDir := fs.String("test", "", "labelled test images: Fashion-MNIST IDX folder (test split) or a folder (default: Debian Fashion-MNIST)")
	nTrain := fs.Int("n-train", 10000, "train the probes on the first N training images (0: all)")
	nTest := fs.Int("n-test", 0, "test on the first N test images (0: all)")
	epochs := fs.Int("epochs", 20, "probe training epochs")
	lr := fs.Float64("lr", 1e-3, "probe Adam learning rate")
	l2 := fs.Float64("l2", 0, "ridge penalty l2/2·‖w‖² of the probes (0: none)")
	tune := fs.Bool("tune", false, "choose epochs and l2 for each feature set by its accuracy on a validation share of the training images "+
		"(from --tune-epochs × --tune-l2), then train on all of them")
	tuneEpochs := fs.String("tune-epochs", "20,60,200", "epoch counts tried by --tune")
	tuneL2 := fs.String("tune-l2", "0,0.001,0.01", "ridge penalties tried by --tune")
	tuneLR := fs.String("tune-lr", "", "Adam learning rates tried by --tune (default: --lr only)")
	exact := fs.Bool("exact", false, "solve each probe to convergence by L-BFGS instead of --epochs of Adam (with --tune, only --tune-l2 is tried)")
	valShare := fs.Float64("val-share", 0.2, "share of the training images --tune validates on")
	batch := fs.Int("batch", 64, "probe minibatch")
	minStd := fs.Float64("pixel-min-std", 0.05, "floor of the per-pixel std that standardises the pixel probe's input "+
		"(pixel values in [-1,1]); keeps near-constant border pixels from dominating on reconstructions")
	seed := fs.Uint64("seed", 1, "seed of the probes' shuffling and of the random x_T")
	images := fs.String("images", probeRandomXT, "also score reconstructions of test images: comma list of "+
		probeRandomXT+", "+probeEncodedXT+" (empty: none)")
	reconSteps := fs.Int("recon-steps", 20, "T of the reconstructions")
	nRecon := fs.Int("n-recon", 500, "reconstruct the first N test images")
	encBatch := fs.Int("encode-batch", 64, "images per network evaluation")
	jsonPath := fs.String("json", "", "also write the results as JSON here")
	threads := fs.Int("threads", 0, "CPU threads (0: all)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: dae eval probe --model M.safetensors [--train DIR] [--test DIR] [--n-train N] [--n-test N] [--images random-xt]

The paper's Appendix E analogue: one-vs-rest logistic regressions (BCE, Adam, on features standardised by the
training set) of each class on z_sem, and the same on raw pixels; reports per-class AUROC and accuracy on the
test images and the 10-class accuracy of the argmax of the probes. With --images it also scores reconstructions
of test images (decoded from z_sem with random or encoded x_T): the z_sem probe on the re-encoded reconstruction
and the pixel probe on its pixels.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *l2 < 0 || math.IsNaN(*l2) || math.IsInf(*l2, 0) {
		return fmt.Errorf("%w: --l2 %v: want a finite number ≥ 0", errUsage, *l2)
	}
	if err := onlyWith(fs, *tune, "--tune", "tune-epochs", "tune-l2", "tune-lr", "val-share"); err != nil {
		return err
	}
	if err := firstError(atLeast("n-train", *nTrain, 0), atLeast("n-test", *nTest, 0), atLeast("epochs", *epochs, 1),
		positive("lr", *lr), atLeast("batch", *batch, 1), nonNegative("pixel-min-std", *minStd),
		within("recon-steps", *reconSteps, 1, diffae.NumTrainSteps), atLeast("n-recon", *nRecon, 0),
		atLeast("encode-batch", *encBatch, 1), atLeast("threads", *threads, 0)); err != nil {
		return err
	}
	var tg *probeGrid
	if *tune {
		var err error
		if tg, err = parseProbeGrid(*tuneEpochs, *tuneL2, *tuneLR, *valShare); err != nil {
			return err
		}
	}
	if *model == "" {
		return fmt.Errorf("%w: --model is required", errUsage)
	}
	var kinds []string
	for _, k := range strings.Split(*images, ",") {
		switch k = strings.TrimSpace(k); k {
		case "":
		case probeRandomXT, probeEncodedXT:
			kinds = append(kinds, k)
		default:
			return fmt.Errorf("%w: --images %q: want %s or %s", errUsage, k, probeRandomXT, probeEncodedXT)
		}
	}
	dev := tensor.NewCPU(*threads)
	m, desc, err := loadEvalModel(dev, *model)
	if err != nil {
		return err
	}
	if m.Enc == nil {
		return fmt.Errorf("%w: %s is a DDIM baseline: it has no z_sem to probe", errUsage, *model)
	}
	start := time.Now()
	train, err := labelledImages(*trainDir, "train", *nTrain, m)
	if err != nil {
		return err
	}
	test, err := labelledImages(*testDir, "test", *nTest, m)
	if err != nil {
		return err
	}
	if len(train.ClassNames) != len(test.ClassNames) {
		return fmt.Errorf("%w: the training images have %d classes, the test images %d", errUsage,
			len(train.ClassNames), len(test.ClassNames))
	}
	po := diffae.ProbeOptions{Epochs: *epochs, LR: *lr, Batch: *batch, Seed: *seed, L2: *l2, Exact: *exact}
	rep := probeReport{Model: desc, ModelID: m.ID, Train: dirName(*trainDir), Test: dirName(*testDir),
		NTrain: train.N, NTest: test.N, Classes: train.ClassNames,
		Probe:    "one-vs-rest logistic regression (BCE, " + map[bool]string{false: "Adam", true: "L-BFGS"}[*exact] + ") on standardised features; accuracy of p>0.5 per class, argmax over classes for the 10-class accuracy",
		Settings: probeSettings{Epochs: *epochs, LR: *lr, L2: *l2, Batch: *batch, Seed: *seed, PixelMinStd: *minStd}}

	ztr, err := encodeSem(ctx, m, train, *encBatch, "encoding training images")
	if err != nil {
		return err
	}
	zte, err := encodeSem(ctx, m, test, *encBatch, "encoding test images")
	if err != nil {
		return err
	}
	e := m.Cfg.ZDim()
	zProbe, zRes, err := trainAndTest(ctx, "z_sem", ztr, zte, e, train, test, po, tg)
	if err != nil {
		return err
	}
	pxo := po
	pxo.MinStd = *minStd
	pxProbe, pxRes, err := trainAndTest(ctx, "pixels", train.Data, test.Data, train.Size(), train, test, pxo, tg)
	if err != nil {
		return err
	}
	rep.ZSem, rep.Pixels = zRes, pxRes

	if k := min(*nRecon, test.N); len(kinds) > 0 && k > 0 {
		per := test.Size()
		x0 := test.Data[:k*per]
		labels := test.Labels[:k]
		zOrig := zte[:k*e]
		for _, kind := range kinds {
			xT := make([]float32, k*per)
			if kind == probeRandomXT {
				rng := rand.New(rand.NewPCG(*seed, 0x7a5d0e))
				for i := range xT {
					xT[i] = float32(rng.NormFloat64())
				}
			} else {
				pr := newProgress(fmt.Sprintf("encoding x_T of %d test images (T=%d)", k, *reconSteps))
				_, xT, err = m.Encode(ctx, x0, k, diffae.EncodeOptions{Steps: *reconSteps, Batch: *encBatch,
					Progress: pr.update})
				pr.finish()
				if err != nil {
					return err
				}
			}
			pr := newProgress(fmt.Sprintf("decoding %d test images with %s (T=%d)", k, kind, *reconSteps))
			xr, err := m.Decode(ctx, zOrig, xT, k, diffae.DecodeOptions{Steps: *reconSteps, Batch: *encBatch,
				Progress: pr.update})
			pr.finish()
			if err != nil {
				return err
			}
			zr, _, err := m.Encode(ctx, xr, k, diffae.EncodeOptions{SemanticOnly: true, Batch: *encBatch})
			if err != nil {
				return err
			}
			predR, predO := zProbe.Predict(zr), zProbe.Predict(zOrig)
			agree := 0
			for i := range predR {
				if predR[i] == predO[i] {
					agree++
				}
			}
			rep.Recons = append(rep.Recons, reconProbe{Kind: kind, T: *reconSteps, N: k,
				ZSem: jfloat(accuracy(predR, labels)), ZSemOriginal: jfloat(accuracy(predO, labels)),
				Pixels:         jfloat(accuracy(pxProbe.Predict(xr), labels)),
				PixelsOriginal: jfloat(accuracy(pxProbe.Predict(x0), labels)),
				Agreement:      jfloat(float64(agree) / float64(k))})
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	printProbe(os.Stdout, &rep)
	if *jsonPath != "" {
		if err := writeJSON(*jsonPath, rep); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *jsonPath)
	}
	return nil
}

func dirName(d string) string {
	if d == "" {
		return "Fashion-MNIST (default folder)"
	}
	return d
}

// labelledImages loads the first n (0: all) images of a split and insists on labels.
func labelledImages(dir, split string, n int, m *diffae.Model) (*dataset.Images, error) {
	imgs, err := loadImages(dir, split, m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return nil, err
	}
	if imgs.Labels == nil || len(imgs.ClassNames) < 2 {
		return nil, fmt.Errorf("%w: %s images of %s have no class labels to probe", errUsage, split, dirName(dir))
	}
	if n > 0 && n < imgs.N {
		imgs.N = n
		imgs.Data = imgs.Data[:n*imgs.Size()]
		imgs.Labels = imgs.Labels[:n]
	}
	return imgs, nil
}

func encodeSem(ctx context.Context, m *diffae.Model, imgs *dataset.Images, batch int, what string) ([]float32, error) {
	pr := newProgress(fmt.Sprintf("%s (%d)", what, imgs.N))
	z, _, err := m.Encode(ctx, imgs.Data, imgs.N, diffae.EncodeOptions{SemanticOnly: true, Batch: batch,
		Progress: pr.update})
	pr.finish()
	return z, err
}

// probeGrid is what --tune tries.
type probeGrid struct {
	epochs   []int
	l2, lr   []float64
	valShare float64
}

func parseProbeGrid(epochs, l2, lr string, valShare float64) (*probeGrid, error) {
	g := &probeGrid{valShare: valShare}
	es, err := parseFloats(epochs)
	if err != nil {
		return nil, fmt.Errorf("%w: --tune-epochs: %v", errUsage, err)
	}
	for _, e := range es {
		if e < 1 || e != math.Trunc(e) {
			return nil, fmt.Errorf("%w: --tune-epochs: %v is not a whole number of epochs", errUsage, e)
		}
		g.epochs = append(g.epochs, int(e))
	}
	if g.l2, err = parseFloats(l2); err != nil {
		return nil, fmt.Errorf("%w: --tune-l2: %v", errUsage, err)
	}
	for _, v := range g.l2 {
		if v < 0 {
			return nil, fmt.Errorf("%w: --tune-l2: %v is negative", errUsage, v)
		}
	}
	if lr != "" {
		if g.lr, err = parseFloats(lr); err != nil {
			return nil, fmt.Errorf("%w: --tune-lr: %v", errUsage, err)
		}
		for _, v := range g.lr {
			if v <= 0 {
				return nil, fmt.Errorf("%w: --tune-lr: %v is not positive", errUsage, v)
			}
		}
	}
	if !(valShare > 0 && valShare < 1) {
		return nil, fmt.Errorf("%w: --val-share %v: want a share in (0, 1)", errUsage, valShare)
	}
	return g, nil
}

func trainAndTest(ctx context.Context, name string, xtr, xte []float32, d int, train, test *dataset.Images,
	o diffae.ProbeOptions, g *probeGrid) (*diffae.Probe, probeResult, error) {
	start := time.Now()
	var tuning []diffae.ProbeSetting
	if g != nil {
		fmt.Fprintf(os.Stderr, "tuning the %s probe: %d settings on a %.0f%% validation share…\n", name,
			settings(o, g), 100*g.valShare)
		var err error
		if o, tuning, err = diffae.TuneProbe(ctx, xtr, d, train.Labels, train.ClassNames, o, g.epochs, g.l2, g.lr, g.valShare); err != nil {
			return nil, probeResult{}, fmt.Errorf("%s probe: %w", name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "training the %s probe (%d classes, %d examples of %d features, %d epochs, l2 %g, lr %g)…\n", name,
		len(train.ClassNames), train.N, d, o.Epochs, o.L2, o.LR)
	p, err := diffae.TrainProbe(ctx, xtr, d, train.Labels, train.ClassNames, o)
	if err != nil {
		return nil, probeResult{}, fmt.Errorf("%s probe: %w", name, err)
	}
	r := p.Evaluate(xte, test.Labels)
	out := probeResult{Accuracy: jfloat(r.Accuracy), MeanAUROC: jfloat(r.MeanAUROC), MeanBinary: jfloat(r.MeanAccuracy),
		TrainSeconds: jfloat(time.Since(start).Seconds()), Epochs: o.Epochs, L2: o.L2, LR: o.LR, Solver: solverName(o), Tuning: tuning}
	for _, c := range r.PerClass {
		out.PerClass = append(out.PerClass, classScore{Class: c.Class, AUROC: jfloat(c.AUROC), Accuracy: jfloat(c.Accuracy)})
	}
	return p, out, nil
}

func accuracy(pred, labels []int) float64 {
	ok := 0
	for i := range pred {
		if pred[i] == labels[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(pred))
}

func printProbe(w io.Writer, r *probeReport) {
	fmt.Fprintf(w, "Linear probe of %s\n", r.Model)
	fmt.Fprintf(w, "trained on the first %d images of %s (train), tested on the first %d of %s (test)\n", r.NTrain,
		r.Train, r.NTest, r.Test)
	switch {
	case r.ZSem.Solver == "lbfgs" && len(r.ZSem.Tuning) > 0:
		fmt.Fprintf(w, "%s; each problem solved to convergence (L-BFGS), l2 tuned per feature set (z_sem %g, pixels %g)\n\n",
			r.Probe, r.ZSem.L2, r.Pixels.L2)
	case r.ZSem.Solver == "lbfgs":
		fmt.Fprintf(w, "%s; each problem solved to convergence (L-BFGS), l2 %g\n\n", r.Probe, r.Settings.L2)
	case len(r.ZSem.Tuning) > 0:
		fmt.Fprintf(w, "%s; epochs, l2 and lr tuned per feature set (z_sem: %d, %g, %g; pixels: %d, %g, %g), batch %d\n\n", r.Probe,
			r.ZSem.Epochs, r.ZSem.L2, r.ZSem.LR, r.Pixels.Epochs, r.Pixels.L2, r.Pixels.LR, r.Settings.Batch)
	default:
		fmt.Fprintf(w, "%s; %d epochs, lr %g, l2 %g, batch %d\n\n", r.Probe, r.Settings.Epochs, r.Settings.LR, r.Settings.L2, r.Settings.Batch)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "class\tz_sem AUROC\tz_sem acc\tpixels AUROC\tpixels acc\t")
	for i, c := range r.ZSem.PerClass {
		p := r.Pixels.PerClass[i]
		fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%.4f\t%.4f\t\n", c.Class, c.AUROC, c.Accuracy, p.AUROC, p.Accuracy)
	}
	fmt.Fprintf(tw, "mean\t%.4f\t%.4f\t%.4f\t%.4f\t\n", r.ZSem.MeanAUROC, r.ZSem.MeanBinary, r.Pixels.MeanAUROC,
		r.Pixels.MeanBinary)
	tw.Flush()
	verdict := "z_sem beats pixels"
	if r.ZSem.Accuracy <= r.Pixels.Accuracy {
		verdict = "z_sem does NOT beat pixels"
	}
	fmt.Fprintf(w, "\n%d-class accuracy (argmax of the probes): z_sem %.4f, pixels %.4f — %s\n", len(r.Classes),
		r.ZSem.Accuracy, r.Pixels.Accuracy, verdict)
	for _, pr := range []struct {
		name string
		r    *probeResult
	}{{"z_sem", &r.ZSem}, {"pixels", &r.Pixels}} {
		if len(pr.r.Tuning) == 0 {
			continue
		}
		chosen := fmt.Sprintf("%d epochs, l2 %g, lr %g", pr.r.Epochs, pr.r.L2, pr.r.LR)
		if pr.r.Solver == "lbfgs" {
			chosen = fmt.Sprintf("l2 %g", pr.r.L2)
		}
		fmt.Fprintf(w, "\n%s probe tuned on a validation share of the training images: %s chosen; validation accuracy of each setting:\n",
			pr.name, chosen)
		for _, s := range pr.r.Tuning {
			if pr.r.Solver == "lbfgs" {
				fmt.Fprintf(w, "  l2 %-6g %.4f\n", s.L2, s.ValAccuracy)
				continue
			}
			fmt.Fprintf(w, "  %4d epochs, l2 %-6g lr %-6g %.4f\n", s.Epochs, s.L2, s.LR, s.ValAccuracy)
		}
	}
	for _, rc := range r.Recons {
		fmt.Fprintf(w, "\nreconstructions with %s (T=%d) of the first %d test images:\n", rc.Kind, rc.T, rc.N)
		fmt.Fprintf(w, "  z_sem probe on the re-encoded reconstructions: accuracy %.4f (originals %.4f); same class as the original's code %.4f\n",
			rc.ZSem, rc.ZSemOriginal, rc.Agreement)
		fmt.Fprintf(w, "  pixel probe on the reconstructions:            accuracy %.4f (originals %.4f)\n",
			rc.Pixels, rc.PixelsOriginal)
	}
}

func solverName(o diffae.ProbeOptions) string {
	if o.Exact {
		return "lbfgs"
	}
	return "adam"
}

// settings is the number of settings --tune tries: the penalties only when the problems are solved exactly.
func settings(o diffae.ProbeOptions, g *probeGrid) int {
	if o.Exact {
		return len(g.l2)
	}
	return len(g.epochs) * len(g.l2) * max(1, len(g.lr))
}
