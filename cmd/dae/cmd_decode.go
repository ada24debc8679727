package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"dae/diffae"
	"dae/imageio"
	"dae/nn"
)

func init() {
	register(command{"decode", "decode codes to images (with their x_T or a random one)", runDecode})
}

// rawTensor is the name of the decoded images in a --raw file.
const rawTensor = "x0"

// randomXT draws n x_T ~ N(0, I) for m from seed, the same values on every machine.
func randomXT(m *diffae.Model, n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 0x5851f42d4c957f2d))
	xT := make([]float32, n*m.ImageSize())
	for i := range xT {
		xT[i] = float32(rng.NormFloat64())
	}
	return xT
}

// decodeImages runs the conditional DDIM from xT given z (nil for the baseline) and returns n images in [-1,1].
func decodeImages(ctx context.Context, m *diffae.Model, z, xT []float32, n, steps, batch int) ([]float32, error) {
	p := newProgress(fmt.Sprintf("decoding %d images", n))
	defer p.finish()
	x0, err := m.Decode(ctx, z, xT, n, diffae.DecodeOptions{Steps: steps, Batch: batch, Progress: p.update})
	if err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return x0, nil
}

// writePNGs writes n images of m's shape (in [-1,1]) as dir/names[i].
func writePNGs(dir string, names []string, m *diffae.Model, x0 []float32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	per, c, s := m.ImageSize(), m.Cfg.InChannels, m.Cfg.ImageSize
	for i, name := range names {
		if err := imageio.WritePNG(filepath.Join(dir, name), imageio.FromCHW(x0[i*per:(i+1)*per], c, s, s)); err != nil {
			return err
		}
	}
	return nil
}

func runDecode(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	mf := addModelFlags(fs)
	codesPath := fs.String("codes", "", "codes file written by dae encode")
	randomXt := fs.Bool("random-xt", false, "decode z_sem with x_T ~ N(0,I) instead of the encoded x_T")
	seed := fs.Uint64("seed", 1, "seed of the random x_T")
	out := fs.String("out", "", "folder for the PNG images")
	raw := fs.String("raw", "", "also write the decoded float32 images in [-1,1] to this safetensors file, as \"x0\" [N,C,H,W]")
	anyModel := fs.Bool("any-model", false, "decode codes encoded by other weights of the same shape")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae decode --model M.safetensors --codes CODES.safetensors [--steps T] [--random-xt --seed S] --out DIR [--raw OUT.safetensors]\n\n"+
			"Decodes codes with the conditional DDIM to one PNG per code, named after the encoded images.\n"+
			"--steps defaults to the steps the codes were encoded with.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *codesPath == "" || *out == "" {
		return fmt.Errorf("%w: --codes and --out are required", errUsage)
	}
	if err := onlyWith(fs, *randomXt, "--random-xt", "seed"); err != nil {
		return err
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	c, err := readCodes(*codesPath)
	if err != nil {
		return err
	}
	if err := c.checkModel(*codesPath, m, *anyModel); err != nil {
		return err
	}
	steps := *mf.steps
	if len(givenFlags(fs, "steps")) == 0 && c.Steps > 0 {
		steps = c.Steps
	}
	xT := c.XT
	if *randomXt {
		xT = randomXT(m, c.N, *seed)
	} else if xT == nil {
		return fmt.Errorf("%w: %s holds no x_T (encoded with --semantic-only): decode with --random-xt", errUsage, *codesPath)
	}
	x0, err := decodeImages(ctx, m, c.Z, xT, c.N, steps, *mf.batch)
	if err != nil {
		return err
	}
	if err := writePNGs(*out, outputNames(c.Inputs, c.N), m, x0); err != nil {
		return err
	}
	if *raw != "" {
		names, _ := json.Marshal(c.Inputs)
		meta := map[string]string{codesMetaModel: m.ID, codesMetaInputs: string(names), codesMetaSteps: strconv.Itoa(steps)}
		if *randomXt {
			meta["random_xt_seed"] = strconv.FormatUint(*seed, 10)
		}
		ts := []nn.STTensor{{Name: rawTensor, Shape: []int{c.N, m.Cfg.InChannels, m.Cfg.ImageSize, m.Cfg.ImageSize}, Data: x0}}
		if err := nn.WriteSafetensors(*raw, ts, "F32", meta); err != nil {
			return fmt.Errorf("writing --raw: %w", err)
		}
	}
	fmt.Fprintf(os.Stderr, "decoded %d codes to %s\n", c.N, *out)
	return nil
}
