package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"os"
	"path/filepath"

	"dae/diffae/metrics"
	"dae/imageio"
)

func init() {
	register(command{"reconstruct", "encode then decode images, writing input | reconstruction side by side", runReconstruct})
}

func runReconstruct(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("reconstruct", flag.ContinueOnError)
	mf := addModelFlags(fs)
	randomXt := fs.Bool("random-xt", false, "also decode z_sem with a random x_T (third column)")
	seed := fs.Uint64("seed", 1, "seed of the random x_T")
	out := fs.String("out", "", "folder for the side-by-side PNGs")
	scale := fs.Int("scale", 0, "enlarge the images by this integer factor (0: to about 128 pixels)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae reconstruct --model M.safetensors [--steps T] [--random-xt] --out DIR IMAGE...\n\n"+
			"Encodes each image and decodes it again with the same number of DDIM steps, writing DIR/NAME.png with the\n"+
			"input (at the model's size) and its reconstruction side by side, and printing MSE and PSNR per image.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if *scale < 0 {
		return fmt.Errorf("%w: --scale %d: want 0 (automatic) or more", errUsage, *scale)
	}
	inputs := fs.Args()
	if len(inputs) == 0 {
		return fmt.Errorf("%w: no images to reconstruct", errUsage)
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	n := len(inputs)
	x0, err := readInputs(inputs, m)
	if err != nil {
		return err
	}
	z, xT, err := encodeImages(ctx, m, x0, n, *mf.steps, *mf.batch, false)
	if err != nil {
		return err
	}
	rec, err := decodeImages(ctx, m, z, xT, n, *mf.steps, *mf.batch)
	if err != nil {
		return err
	}
	var rnd []float32
	if *randomXt {
		if rnd, err = decodeImages(ctx, m, z, randomXT(m, n, *seed), n, *mf.steps, *mf.batch); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	c, s, per := m.Cfg.InChannels, m.Cfg.ImageSize, m.ImageSize()
	if *scale == 0 {
		*scale = max(1, 128/s)
	}
	d := metrics.Dims{N: n, C: c, H: s, W: s}
	mse, psnr := metrics.MSE(x0, rec, d), metrics.PSNR(x0, rec, d)
	names := outputNames(inputs, n)
	for i, name := range names {
		row := []image.Image{imageio.FromCHW(x0[i*per:(i+1)*per], c, s, s), imageio.FromCHW(rec[i*per:(i+1)*per], c, s, s)}
		if rnd != nil {
			row = append(row, imageio.FromCHW(rnd[i*per:(i+1)*per], c, s, s))
		}
		if err := imageio.WritePNG(filepath.Join(*out, name), imageio.Strip(row, 2, *scale)); err != nil {
			return err
		}
		fmt.Printf("%s\tmse %.5f\tpsnr %.2f dB\n", inputs[i], mse[i], psnr[i])
	}
	fmt.Printf("mean\tmse %.5f\tpsnr %.2f dB\n", metrics.Mean(mse), metrics.Mean(psnr))
	fmt.Fprintf(os.Stderr, "wrote %d reconstructions to %s\n", n, *out)
	return nil
}
