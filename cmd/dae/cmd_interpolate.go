package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"os"

	"dae/diffae"
	"dae/imageio"
)

func init() {
	register(command{"interpolate", "interpolate between two images (lerp z_sem, slerp x_T) into a strip; --baseline adds the DDIM-only one", runInterpolate})
}

// interpolation decodes frames images between images a and b (model's input layout) with m: for a Diff-AE by
// encoding both and interpolating (z_sem, x_T); for the DDIM baseline by inverting both and slerping x_T.
func interpolation(ctx context.Context, m *diffae.Model, a, b []float32, frames, steps, batch int) ([]float32, error) {
	x0 := append(append([]float32{}, a...), b...)
	z, xT, err := encodeImages(ctx, m, x0, 2, steps, batch, false)
	if err != nil {
		return nil, err
	}
	per, e := m.ImageSize(), m.Cfg.ZDim()
	var zA, zB []float32
	if z != nil {
		zA, zB = z[:e], z[e:]
	}
	p := newProgress(fmt.Sprintf("decoding %d frames", frames))
	defer p.finish()
	return m.Interpolate(ctx, zA, xT[:per], zB, xT[per:], frames, diffae.DecodeOptions{Steps: steps, Batch: batch, Progress: p.update})
}

// frameStats is the smoothness of one interpolation: mean and variance of consecutive-frame MSEs.
func frameStats(m *diffae.Model, x []float32, frames int) (mean, variance float64) {
	return diffae.MeanVar(diffae.FrameDiffs(x, frames, m.ImageSize()))
}

func runInterpolate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("interpolate", flag.ContinueOnError)
	mf := addModelFlags(fs)
	frames := fs.Int("frames", 9, "frames, the two ends included")
	baseline := fs.String("baseline", "", "DDIM baseline checkpoint: add its interpolation (slerp of inverted x_T) as a second row")
	out := fs.String("out", "interpolation.png", "strip (PNG)")
	ti := addTestInputFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 && *ti.indices == "" {
		return fmt.Errorf("%w: dae interpolate --model M [--baseline B] [--frames K] (A B | --from-test I,J)", errUsage)
	}
	if *frames < 2 {
		return fmt.Errorf("%w: --frames %d: want at least 2", errUsage, *frames)
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	x0, pos, err := ti.read(m, pos)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: interpolate takes two images, got %d", errUsage, len(pos))
	}
	rows, err := interpolationRows(ctx, m, *baseline, x0, *frames, *mf.steps, *mf.batch)
	if err != nil {
		return err
	}
	if err := imageio.WritePNG(*out, imageio.Grid(rows, 2, 3)); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", *out)
	return nil
}

// interpolationRows makes the strip rows (inputs at both ends) for m and, when baseline is set, the baseline, and
// prints each row's frame-difference statistics.
func interpolationRows(ctx context.Context, m *diffae.Model, baseline string, x0 []float32, frames, steps, batch int) ([][]image.Image, error) {
	per := m.ImageSize()
	models := []*diffae.Model{m}
	if baseline != "" {
		b, err := diffae.Load(m.Dev, baseline) // the same device as the model
		if err != nil {
			return nil, err
		}
		if b.ImageSize() != per {
			return nil, fmt.Errorf("baseline %s makes images of %d values, the model %d", baseline, b.ImageSize(), per)
		}
		models = append(models, b)
	}
	var rows [][]image.Image
	for _, mm := range models {
		x, err := interpolation(ctx, mm, x0[:per], x0[per:], frames, steps, batch)
		if err != nil {
			return nil, err
		}
		row := []image.Image{toImage(m, x0, 0)}
		for i := range frames {
			row = append(row, toImage(m, x, i))
		}
		rows = append(rows, append(row, toImage(m, x0, 1)))
		mean, v := frameStats(mm, x, frames)
		fmt.Printf("%-10s consecutive-frame MSE: mean %.5f, variance %.3g\n", kindName(mm), mean, v)
	}
	return rows, nil
}

func kindName(m *diffae.Model) string {
	if m.Enc == nil {
		return "DDIM"
	}
	return "Diff-AE"
}
