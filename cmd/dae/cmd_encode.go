package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"dae/diffae"
	"dae/imageio"
	"dae/tensor"
)

func init() {
	register(command{"encode", "encode image files to codes (z_sem and the stochastic x_T)", runEncode})
}

// modelFlags are the flags every command that runs a model takes.
type modelFlags struct {
	model   *string
	steps   *int
	batch   *int
	threads *int
}

func addModelFlags(fs *flag.FlagSet) modelFlags {
	return modelFlags{
		model:   fs.String("model", "", "checkpoint (.safetensors) of the model"),
		steps:   fs.Int("steps", diffae.DefaultSteps, "DDIM steps"),
		batch:   fs.Int("batch", 16, "images per forward pass"),
		threads: fs.Int("threads", 0, "CPU threads (0: all)"),
	}
}

// load checks the flags and loads the model.
func (f modelFlags) load() (*diffae.Model, error) {
	if *f.model == "" {
		return nil, fmt.Errorf("%w: --model is required", errUsage)
	}
	if *f.steps < 1 || *f.steps > diffae.NumTrainSteps {
		return nil, fmt.Errorf("%w: --steps %d: want 1..%d", errUsage, *f.steps, diffae.NumTrainSteps)
	}
	if *f.batch < 1 {
		return nil, fmt.Errorf("%w: --batch %d: want at least 1", errUsage, *f.batch)
	}
	if *f.threads < 0 {
		return nil, fmt.Errorf("%w: --threads %d: want 0 (all) or more", errUsage, *f.threads)
	}
	// diffae.Load's errors wrap diffae.ErrCheckpoint and name the file.
	return diffae.Load(tensor.NewCPU(*f.threads), *f.model)
}

// readInputs decodes image files into the model's input: resized and centre-cropped to its size, grey or RGB as it
// needs, in [-1,1], one C×H×W block per file. An unreadable or corrupt file fails the whole command, naming it.
func readInputs(paths []string, m *diffae.Model) ([]float32, error) {
	per := m.ImageSize()
	x0 := make([]float32, len(paths)*per)
	for i, p := range paths {
		img, err := imageio.DecodeFile(p, imageio.Limits{})
		if err != nil {
			return nil, err
		}
		imageio.ToCHW(img, m.Cfg.ImageSize, m.Cfg.InChannels, x0[i*per:(i+1)*per])
	}
	return x0, nil
}

// encodeImages computes the codes of x0 (n images): z_sem and, unless semanticOnly, x_T by the reverse DDIM; for
// the DDIM baseline, x_T only, by inverting the unconditional model.
func encodeImages(ctx context.Context, m *diffae.Model, x0 []float32, n, steps, batch int, semanticOnly bool) (z, xT []float32, err error) {
	what := "encoding"
	if semanticOnly {
		what = "semantic encoding"
	}
	p := newProgress(fmt.Sprintf("%s %d images", what, n))
	defer p.finish()
	o := diffae.EncodeOptions{Steps: steps, Batch: batch, SemanticOnly: semanticOnly, Progress: p.update}
	if m.Enc == nil {
		xT, err = m.Invert(ctx, x0, n, o)
	} else {
		z, xT, err = m.Encode(ctx, x0, n, o)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("encoding: %w", err)
	}
	return z, xT, nil
}

func runEncode(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("encode", flag.ContinueOnError)
	mf := addModelFlags(fs)
	semOnly := fs.Bool("semantic-only", false, "compute z_sem only, not the stochastic x_T (fast: one encoder pass)")
	out := fs.String("out", "", "codes file to write (.safetensors)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae encode --model M.safetensors [--steps T] [--batch B] [--semantic-only] --out CODES.safetensors IMAGE...\n\n"+
			"Encodes PNG/JPEG/GIF images (resized and centre-cropped to the model's size) to float32 z_sem [N,d] and\n"+
			"x_T [N,C,H,W], with the input names and the model's ID and configuration in the metadata.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	inputs := fs.Args()
	if len(inputs) == 0 {
		return fmt.Errorf("%w: no images to encode", errUsage)
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	if *semOnly && m.Enc == nil {
		return fmt.Errorf("%w: --semantic-only: %s is a DDIM baseline, it has no semantic encoder", errUsage, *mf.model)
	}
	x0, err := readInputs(inputs, m)
	if err != nil {
		return err
	}
	z, xT, err := encodeImages(ctx, m, x0, len(inputs), *mf.steps, *mf.batch, *semOnly)
	if err != nil {
		return err
	}
	if err := writeCodes(*out, newCodes(m, inputs, *mf.steps, z, xT)); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %d codes to %s\n", len(inputs), *out)
	return nil
}
