package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"dae/diffae"
	"dae/nn"
	"dae/tensor"
)

func init() {
	register(command{"train-latent", "train the latent DDIM on z_sem of the training set (frozen encoder)", runTrainLatent})
}

func runTrainLatent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("train-latent", flag.ContinueOnError)
	model := fs.String("model", "", "trained Diff-AE checkpoint (its weights are the EMA ones) to start from")
	data := fs.String("data", "", "Fashion-MNIST IDX folder, or a folder of images (default: the Debian Fashion-MNIST)")
	limit := fs.Int("n", 0, "encode only the first N training images (0: all)")
	out := fs.String("out", "", "checkpoint to write (and to resume from if it exists); default MODEL-latent.safetensors")
	zcache := fs.String("zcache", "", "cache of the encoded z_sem; default OUT.zsem.safetensors")
	steps := fs.Int("steps", 20000, "train until this many steps in all")
	minutes := fs.Float64("minutes", 0, "stop after this many minutes (0: no limit), checkpointing first")
	batch := fs.Int("batch", 256, "codes per step")
	lr := fs.Float64("lr", 1e-4, "AdamW learning rate")
	wd := fs.Float64("weight-decay", 0.01, "AdamW decoupled weight decay (0: plain Adam)")
	every := fs.Int("checkpoint-every", 1000, "write the checkpoint every N steps")
	seed := fs.Uint64("seed", 1, "seed of data order and noise")
	encBatch := fs.Int("encode-batch", 64, "images per encoder pass")
	logPath := fs.String("log", "", "loss log (CSV: step,loss,images_per_s); default OUT.loss.csv")
	export := fs.String("export", "", "also write the finished model (EMA weights, no training state) here")
	dtype := fs.String("export-dtype", "F16", "storage of --export: F16 or F32")
	threads := fs.Int("threads", 0, "CPU threads (0: all)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: dae train-latent --model MODEL.safetensors [--out OUT.safetensors] [--data DIR] [--n N] [--steps S]

Encodes the training set with the frozen semantic encoder (z_sem only), stores the per-dimension mean and
unbiased std of z_sem in the model, and trains the latent DDIM (L1 loss on ε, constant betas 0.008) on the
normalised codes with AdamW. OUT holds the whole model: decoder, encoder, latent net and statistics. Writes a
checkpoint every N steps and on Ctrl-C, and resumes exactly from OUT when it exists; the encoded codes are
cached (OUT.zsem.safetensors) so that a resume does not encode again.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *model == "" && *out == "" {
		return fmt.Errorf("%w: --model is required (or --out of a run to resume)", errUsage)
	}
	if *out == "" {
		*out = strings.TrimSuffix(*model, ".safetensors") + "-latent.safetensors"
	}
	if *zcache == "" {
		*zcache = *out + ".zsem.safetensors"
	}
	if *logPath == "" {
		*logPath = *out + ".loss.csv"
	}
	if *dtype != "F16" && *dtype != "F32" {
		return fmt.Errorf("%w: --export-dtype %q: want F16 or F32", errUsage, *dtype)
	}
	if err := firstError(checkTrainFlags(*steps, *every, *minutes, *batch, *lr), atLeast("n", *limit, 0),
		nonNegative("weight-decay", *wd), atLeast("encode-batch", *encBatch, 1), atLeast("threads", *threads, 0),
		onlyWith(fs, *export != "", "--export", "export-dtype")); err != nil {
		return err
	}
	dev := tensor.NewCPU(*threads)

	// A run that exists resumes: its file holds the encoder it was started with (the image checkpoint it came
	// from may have been overwritten by further training since).
	resume := false
	src := *model
	if _, err := os.Stat(*out); err == nil {
		src, resume = *out, true
	}
	m, err := diffae.Load(dev, src)
	if err != nil {
		return err
	}
	if resume {
		if err := checkLatentResumeFlags(fs, *out, m); err != nil {
			return err
		}
	}
	if m.Enc == nil {
		return fmt.Errorf("%w: %s is a DDIM baseline: it has no semantic encoder", errUsage, src)
	}
	if m.Latent == nil {
		return fmt.Errorf("%w: %s: its configuration has no latent_net_conf, so there is no latent DDIM to train",
			errUsage, src)
	}
	if !resume {
		// Start the latent net fresh even if the source already holds one (retraining).
		fresh := diffae.New(dev, m.Cfg, *seed)
		m.Latent = fresh.Latent
	}
	fmt.Fprintf(os.Stderr, "model %s (from %s)\n", m.Describe(), src)

	z, n, err := encodedCodes(ctx, m, *zcache, *data, *limit, *encBatch)
	if err != nil {
		return err
	}
	e := m.Cfg.ZDim()
	if !resume {
		mean, std := diffae.LatentMeanStd(z, e)
		m.Stats = &diffae.LatentStats{Mean: mean, Std: std}
		fmt.Fprintf(os.Stderr, "z_sem statistics over %d codes: mean |μ| %.4f, mean σ %.4f\n", n, meanAbs(mean),
			meanAbs(std))
	} else if m.Stats == nil {
		return fmt.Errorf("%s: a latent run without latent statistics; remove it to start again", *out)
	}
	tr, err := diffae.NewLatentTrainer(m, z, n, diffae.TrainOptions{Batch: *batch, LR: *lr, WeightDecay: *wd,
		Seed: *seed})
	if err != nil {
		return err
	}
	if resume {
		if err := tr.Resume(*out); err != nil {
			return err
		}
		// The options of the run win (checkLatentResumeFlags refused flags that say otherwise).
		fmt.Fprintf(os.Stderr, "resuming %s at step %d\n", *out, tr.State.Step)
	}
	opt := "AdamW"
	if tr.Opts.WeightDecay == 0 {
		opt = "Adam"
	}
	what := fmt.Sprintf("latent DDIM (%d parameters, %s lr %g wd %g, L1, const β 0.008) on %d codes on %s",
		m.Latent.Params.Count(), opt, tr.Opts.LR, tr.Opts.WeightDecay, n, dev.Name())
	if err := trainLoop(ctx, tr, *out, *logPath, *steps, *every, *minutes, what); err != nil {
		return err
	}
	if *export != "" && ctx.Err() == nil {
		tr.ApplyEMA()
		delete(m.Meta, diffae.MetaTrainState)
		if err := m.Save(*export, *dtype, nil); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "exported %s (%s)\n", *export, *dtype)
	}
	return nil
}

// checkLatentResumeFlags refuses the flags of a new latent run that were set on the command line and differ from the
// run stored in out (loaded as m), which a resume continues unchanged.
func checkLatentResumeFlags(fs *flag.FlagSet, out string, m *diffae.Model) error {
	st, err := storedTrainState(m, out)
	if err != nil {
		return err
	}
	o := st.Options
	return refuseChangedFlags(fs, out, map[string]storedFlag{
		"batch":        {value: strconv.Itoa(o.Batch)},
		"lr":           storedFloat(o.LR),
		"weight-decay": storedFloat(o.WeightDecay),
		"seed":         {value: strconv.FormatUint(o.Seed, 10)},
	})
}

// Metadata of the z_sem cache: which encoder and which images the codes come from.
const (
	zcacheEncoder = "encoder_sha256"
	zcacheData    = "data"
	zcacheN       = "n"
	zcacheAll     = "whole_set" // "true" when the codes cover every image of the set
)

// encodedCodes returns z_sem of the first limit (0: all) training images, from the cache when it holds the codes
// of this encoder and these images, otherwise by encoding and then writing the cache.
func encodedCodes(ctx context.Context, m *diffae.Model, cache, data string, limit, batch int) ([]float32, int, error) {
	enc := encoderHash(m)
	if z, n, err := readZCache(cache, enc, data, limit, m.Cfg.ZDim()); err == nil {
		fmt.Fprintf(os.Stderr, "using %d cached codes from %s\n", n, cache)
		return z, n, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "not using the code cache: %v\n", err)
	}
	imgs, err := loadImages(data, "train", m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return nil, 0, err
	}
	n := imgs.N
	if limit > 0 {
		n = min(n, limit)
	}
	pr := newProgress(fmt.Sprintf("encoding %d training images", n))
	z, _, err := m.Encode(ctx, imgs.Data[:n*imgs.Size()], n, diffae.EncodeOptions{SemanticOnly: true, Batch: batch,
		Progress: pr.update})
	pr.finish()
	if err != nil {
		return nil, 0, err
	}
	meta := map[string]string{zcacheEncoder: enc, zcacheData: data, zcacheN: strconv.Itoa(n),
		zcacheAll: strconv.FormatBool(n == imgs.N)}
	if err := nn.WriteSafetensors(cache, []nn.STTensor{{Name: "z_sem", Shape: []int{n, m.Cfg.ZDim()}, Data: z}},
		"F32", meta); err != nil {
		return nil, 0, fmt.Errorf("code cache: %w", err)
	}
	fmt.Fprintf(os.Stderr, "wrote the codes to %s\n", cache)
	return z, n, nil
}

func readZCache(path, enc, data string, limit, e int) ([]float32, int, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, 0, err
	}
	f, err := nn.ReadSafetensors(path)
	if err != nil {
		return nil, 0, err
	}
	if f.Meta[zcacheEncoder] != enc {
		return nil, 0, fmt.Errorf("%s holds codes of another encoder", path)
	}
	if f.Meta[zcacheData] != data {
		return nil, 0, fmt.Errorf("%s holds codes of --data %q, not %q", path, f.Meta[zcacheData], data)
	}
	z, shape, err := f.Get("z_sem")
	if err != nil {
		return nil, 0, err
	}
	if len(shape) != 2 || shape[1] != e {
		return nil, 0, fmt.Errorf("%s: codes of shape %v, want [n, %d]", path, shape, e)
	}
	n := shape[0]
	if f.Meta[zcacheN] != strconv.Itoa(n) {
		return nil, 0, fmt.Errorf("%s: metadata and tensor disagree on the count", path)
	}
	switch {
	case limit > 0 && limit <= n:
		return z[:limit*e], limit, nil
	case limit > n:
		return nil, 0, fmt.Errorf("%s holds %d codes, --n asks for %d", path, n, limit)
	case f.Meta[zcacheAll] != "true":
		return nil, 0, fmt.Errorf("%s holds the first %d codes only, not the whole set", path, n)
	}
	return z, n, nil
}

// encoderHash identifies the encoder's weights, whatever file they were loaded from.
func encoderHash(m *diffae.Model) string {
	h := sha256.New()
	var buf [4]byte
	for _, p := range m.Enc.Params.List {
		h.Write([]byte(p.Name))
		for _, v := range p.W.Host() {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			h.Write(buf[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func meanAbs(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += math.Abs(float64(x))
	}
	return s / float64(len(v))
}
