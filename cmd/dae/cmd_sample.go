package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"strings"

	"dae/diffae"
	"dae/imageio"
)

func init() {
	register(command{"sample", "sample images through the latent DDIM; --condition attr=positive samples a class by rejection (§5.6)", runSample})
}

// sampleFlags are shared by sample and its eval.
type sampleFlags struct {
	n, latentSteps *int
	seed           *uint64
	condition      *string
	classifier     *string
	anyModel       *bool
	minProb        *float64
}

func addSampleFlags(fs *flag.FlagSet, n int) sampleFlags {
	return sampleFlags{
		n:           fs.Int("n", n, "images"),
		latentSteps: fs.Int("steps-latent", diffae.DefaultSteps, "DDIM steps of the latent DDIM"),
		seed:        fs.Uint64("seed", 1, "seed of the latent noise, x_T and the acceptance draws"),
		condition:   fs.String("condition", "", "attribute=positive: sample only that attribute, by rejection with --classifier"),
		classifier:  fs.String("classifier", "", "classifier file (a PU classifier from a few positives is the paper's setting)"),
		anyModel:    fs.Bool("any-model", false, "use a classifier trained on another checkpoint of the same network"),
		minProb: fs.Float64("min-prob", diffae.DefaultMinProb, "with --condition: reject codes the classifier gives a lower "+
			"probability (the paper's 0.5); above it a code is accepted with its probability"),
	}
}

// check checks the sampling flags; the commands call it before they load anything.
func (f sampleFlags) check() error {
	if err := firstError(atLeast("n", *f.n, 1), within("steps-latent", *f.latentSteps, 1, diffae.NumTrainSteps)); err != nil {
		return err
	}
	if !(*f.minProb > 0 && *f.minProb < 1) {
		return fmt.Errorf("%w: --min-prob %g: want a probability strictly between 0 and 1", errUsage, *f.minProb)
	}
	if *f.condition == "" {
		if *f.minProb != diffae.DefaultMinProb {
			return fmt.Errorf("%w: --min-prob without --condition attribute=positive", errUsage)
		}
		if *f.classifier != "" {
			return fmt.Errorf("%w: --classifier without --condition attribute=positive", errUsage)
		}
		return nil
	}
	attr, val, ok := strings.Cut(*f.condition, "=")
	if !ok || val != "positive" || attr == "" {
		return fmt.Errorf("%w: --condition %q: want attribute=positive", errUsage, *f.condition)
	}
	if *f.classifier == "" {
		return fmt.Errorf("%w: --condition needs --classifier", errUsage)
	}
	return nil
}

// conditionClassifier returns the classifier named by --condition (flags that check accepted), or nil for
// unconditional sampling.
func (f sampleFlags) conditionClassifier(m *diffae.Model) (*diffae.Classifier, error) {
	if *f.condition == "" {
		return nil, nil
	}
	attr, _, _ := strings.Cut(*f.condition, "=")
	return classifierFor(*f.classifier, attr, m, *f.anyModel)
}

// draw samples n images, conditionally when c is non-nil; it returns codes, images and the latent draws made.
func (f sampleFlags) draw(ctx context.Context, m *diffae.Model, c *diffae.Classifier, n, steps, batch int) (z, x []float32, drawn int, err error) {
	p := newProgress(fmt.Sprintf("sampling %d images", n))
	defer p.finish()
	o := diffae.SampleOptions{LatentSteps: *f.latentSteps, Steps: steps, Batch: batch, Seed: *f.seed, MinProb: *f.minProb, Progress: p.update}
	if c == nil {
		z, _, x, err = m.Sample(ctx, n, o)
		return z, x, n, err
	}
	z, _, x, drawn, err = m.SampleConditional(ctx, c, n, o)
	return z, x, drawn, err
}

func runSample(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sample", flag.ContinueOnError)
	mf := addModelFlags(fs)
	sf := addSampleFlags(fs, 16)
	out := fs.String("out", "samples", "output directory: one PNG per sample and sheet.png")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := firstError(noArgs(pos), sf.check()); err != nil {
		return err
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	c, err := sf.conditionClassifier(m)
	if err != nil {
		return err
	}
	_, x, drawn, err := sf.draw(ctx, m, c, *sf.n, *mf.steps, *mf.batch)
	if err != nil {
		return err
	}
	names := make([]string, *sf.n)
	for i := range names {
		names[i] = fmt.Sprintf("sample_%04d.png", i)
	}
	if err := writePNGs(*out, names, m, x); err != nil {
		return err
	}
	sheetPath := filepath.Join(*out, "sheet.png")
	if err := imageio.WritePNG(sheetPath, imageio.Grid(gridOf(m, x, *sf.n), 2, 2)); err != nil {
		return err
	}
	if c != nil {
		fmt.Printf("accepted %d of %d latent samples (%.1f%%) for %q\n", *sf.n, drawn, 100*float64(*sf.n)/float64(drawn), c.Attribute)
	}
	fmt.Fprintf(os.Stderr, "wrote %d samples and %s\n", *sf.n, sheetPath)
	return nil
}

// gridOf lays n images out in a near-square grid.
func gridOf(m *diffae.Model, x []float32, n int) [][]image.Image {
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	var rows [][]image.Image
	for i := range n {
		if i%cols == 0 {
			rows = append(rows, nil)
		}
		rows[len(rows)-1] = append(rows[len(rows)-1], toImage(m, x, i))
	}
	return rows
}
