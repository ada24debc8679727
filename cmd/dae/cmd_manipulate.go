package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"dae/diffae"
	"dae/imageio"
)

func init() {
	register(command{"manipulate", "move images along an attribute classifier's direction in z_sem (keeping x_T) and decode", runManipulate})
}

// parseInterspersed parses flags that may come before, between or after the positional arguments (`dae
// interpolate A B --frames 9`), which the flag package alone stops at, and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// testInputs are images given by index into the Fashion-MNIST test split instead of as files: --from-test 0,1,2.
type testInputs struct{ indices, data *string }

func addTestInputFlags(fs *flag.FlagSet) testInputs {
	return testInputs{
		indices: fs.String("from-test", "", "comma-separated indices of Fashion-MNIST test images to use instead of files"),
		data:    fs.String("data", "", "Fashion-MNIST IDX directory for --from-test (default: the Debian package's)"),
	}
}

// read returns the model inputs and their names: the files, or the test images --from-test names.
func (f testInputs) read(m *diffae.Model, files []string) ([]float32, []string, error) {
	if *f.indices == "" {
		x, err := readInputs(files, m)
		return x, files, err
	}
	if len(files) > 0 {
		return nil, nil, fmt.Errorf("%w: give image files or --from-test, not both", errUsage)
	}
	imgs, err := loadImages(*f.data, "test", m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return nil, nil, err
	}
	var x []float32
	var names []string
	for s := range strings.SplitSeq(*f.indices, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || i < 0 || i >= imgs.N {
			return nil, nil, fmt.Errorf("%w: --from-test: %q is not an index below %d", errUsage, s, imgs.N)
		}
		x = append(x, imgs.Image(i)...)
		name := fmt.Sprintf("test_%05d", i)
		if imgs.Labels != nil {
			name += "_" + fileName(imgs.ClassNames[imgs.Labels[i]])
		}
		names = append(names, name+".png")
	}
	return x, names, nil
}

// parseFloats parses a comma-separated list of finite numbers.
func parseFloats(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%q is not a finite number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// optFloat is a float flag that can be left unset (its help shows no default).
type optFloat struct {
	v   float64
	set bool
}

func (f *optFloat) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatFloat(f.v, 'g', -1, 64)
}

func (f *optFloat) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%q is not a finite number", s)
	}
	f.v, f.set = v, true
	return nil
}

// editFlags are how far to move: --scale, --target-logit or --target median, shared by manipulate and its eval.
type editFlags struct {
	scale, targetLogit *optFloat
	target             *string
	encodeSteps        *int
	rounds             *int
	along              *string
}

// encSteps is the number of DDIM steps of the stochastic encoding: --encode-steps, else the decoder's.
func (f editFlags) encSteps(steps int) int {
	if *f.encodeSteps > 0 {
		return *f.encodeSteps
	}
	return steps
}

func addEditFlags(fs *flag.FlagSet) editFlags {
	f := editFlags{scale: &optFloat{}, targetLogit: &optFloat{}}
	fs.Var(f.scale, "scale", "move by s·√d along the unit --direction in the normalised z space (with --direction weight, the reference's manipulation)")
	fs.Var(f.targetLogit, "target-logit", "move each code so that its logit equals this (paper Eq. 11)")
	f.target = fs.String("target", "", "median: move each code to the median logit of the classifier's training positives (Eq. 11); "+
		"p75, p90, p95: to that quantile of them, deeper inside the class")
	f.along = fs.String("direction", string(diffae.AlongPattern), "direction to move along in the normalised z space: "+
		"pattern (Σw, where the codes move as the logit grows; edits the image) or weight (w/‖w‖, the reference's)")
	f.encodeSteps = fs.Int("encode-steps", 0, "DDIM steps of the stochastic encoding of the inputs (x_T); 0: as --steps "+
		"(the authors' manipulation encodes with 250 and renders with 100)")
	f.rounds = fs.Int("rounds", 1, fmt.Sprintf("with a target: encode each decoded edit again (z_sem and x_T) and move it to the target again, "+
		"this many rounds in all (1..%d; 1: the paper's single edit)", diffae.MaxEditRounds))
	return f
}

// edit turns the flags into a diffae.Edit for c; exactly one of them must be given.
func (f editFlags) edit(c *diffae.Classifier) (diffae.Edit, error) {
	given := 0
	for _, set := range []bool{f.scale.set, f.targetLogit.set, *f.target != ""} {
		if set {
			given++
		}
	}
	if given != 1 {
		return diffae.Edit{}, fmt.Errorf("%w: give exactly one of --scale, --target-logit, --target median|p75|p90|p95", errUsage)
	}
	along, err := diffae.ParseAlong(*f.along)
	if err != nil {
		return diffae.Edit{}, fmt.Errorf("%w: --direction: %v", errUsage, err)
	}
	if _, err := c.Direction(along); err != nil {
		return diffae.Edit{}, fmt.Errorf("%w: --direction %s: %v (--direction weight)", errUsage, along, err)
	}
	var e diffae.Edit
	switch {
	case f.scale.set:
		e = diffae.Edit{Scale: f.scale.v, Along: along}
	case f.targetLogit.set:
		e = diffae.Edit{ToLogit: true, TargetLogit: f.targetLogit.v, Along: along}
	default:
		if _, err := diffae.TargetMetric(*f.target); err != nil {
			return diffae.Edit{}, fmt.Errorf("%w: --target: %v", errUsage, err)
		}
		v, err := c.TargetLogit(*f.target)
		if err != nil {
			return diffae.Edit{}, fmt.Errorf("%v, or use --target-logit", err)
		}
		e = diffae.Edit{ToLogit: true, TargetLogit: v, Along: along}
	}
	e.Rounds, e.EncodeSteps = *f.rounds, *f.encodeSteps
	switch {
	case e.Rounds < 1 || e.Rounds > diffae.MaxEditRounds:
		return diffae.Edit{}, fmt.Errorf("%w: --rounds %d: want 1..%d", errUsage, e.Rounds, diffae.MaxEditRounds)
	case e.Rounds > 1 && !e.ToLogit:
		return diffae.Edit{}, fmt.Errorf("%w: --rounds %d: only an edit to a target (--target, --target-logit) can be repeated", errUsage, e.Rounds)
	case e.EncodeSteps < 0 || e.EncodeSteps > diffae.NumTrainSteps:
		return diffae.Edit{}, fmt.Errorf("%w: --encode-steps %d: want 0..%d (0: as --steps)", errUsage, e.EncodeSteps,
			diffae.NumTrainSteps)
	}
	if err := e.Check(); err != nil {
		return diffae.Edit{}, err
	}
	return e, nil
}

// manipulation is the result of editing n codes at several fractions of the full edit.
type manipulation struct {
	Fractions []float64
	Scales    []float64 // the full scale per code, summed over the rounds (each round moves from its re-encoded code)
	// X holds, for fraction j and code i, image X[(j*n+i)*per:...]: fraction 0 is the reconstruction.
	X      []float32
	ZFinal []float32 // codes of the last column
	Rounds int       // further rounds (--rounds − 1): the columns after the fractions
}

// columns is the number of images per code in X.
func (r *manipulation) columns() int { return len(r.Fractions) + r.Rounds }

// manipulateAt decodes each code at every fraction of its full edit (diffae.Edit), in one batch of decodes.
func manipulateAt(ctx context.Context, m *diffae.Model, c *diffae.Classifier, z, xT []float32, n int, e diffae.Edit,
	fractions []float64, steps, batch int) (*manipulation, error) {
	d := c.Dim()
	_, scales, err := e.Apply(c, z)
	if err != nil {
		return nil, err
	}
	r := &manipulation{Fractions: fractions, Scales: scales}
	zs := make([]float32, 0, len(fractions)*n*d)
	xs := make([]float32, 0, len(fractions)*len(xT))
	for _, f := range fractions {
		for i := range n {
			zi, err := c.Shift(z[i*d:(i+1)*d], f*r.Scales[i], e.Along)
			if err != nil {
				return nil, err
			}
			zs = append(zs, zi...)
			if f == 1 {
				r.ZFinal = append(r.ZFinal, zi...)
			}
		}
		xs = append(xs, xT...)
	}
	if r.X, err = decodeImages(ctx, m, zs, xs, len(fractions)*n, steps, batch); err != nil {
		return nil, err
	}
	// Further rounds (--rounds) start from the full edit; each is one more column of X.
	if e.Rounds > 1 && fractions[len(fractions)-1] != 1 {
		return nil, fmt.Errorf("manipulate: %d rounds need the full edit as the last fraction, not %v", e.Rounds, fractions)
	}
	for round := 2; round <= e.Rounds; round++ {
		prev := r.X[len(r.X)-n*m.ImageSize():]
		p := newProgress(fmt.Sprintf("round %d of %d: encoding and editing %d images again", round, e.Rounds, n))
		x, zf, s, err := m.RefineEdit(ctx, c, prev, n, e, diffae.DecodeOptions{Steps: steps, Batch: batch, Progress: p.update})
		p.finish()
		if err != nil {
			return nil, err
		}
		r.X, r.ZFinal = append(r.X, x...), zf
		r.Rounds++
		for i := range n {
			r.Scales[i] += s[i]
		}
	}
	return r, nil
}

func toImage(m *diffae.Model, x []float32, i int) image.Image {
	per, ch, s := m.ImageSize(), m.Cfg.InChannels, m.Cfg.ImageSize
	return imageio.FromCHW(x[i*per:(i+1)*per], ch, s, s)
}

func runManipulate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("manipulate", flag.ContinueOnError)
	mf := addModelFlags(fs)
	ef := addEditFlags(fs)
	clsPath := fs.String("classifier", "", "classifier file written by dae classify")
	attr := fs.String("attribute", "", "attribute (class) to move towards; may be omitted if the file holds one")
	fracs := fs.String("sheet-fractions", "0.25,0.5,0.75,1", "fractions of the full edit shown on the contact sheet")
	out := fs.String("out", "manipulated", "output directory: one PNG per input (the full edit) and sheet.png")
	anyModel := fs.Bool("any-model", false, "use a classifier trained on another checkpoint of the same network")
	ti := addTestInputFlags(fs)
	inputs, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if (len(inputs) == 0 && *ti.indices == "") || *clsPath == "" {
		return fmt.Errorf("%w: dae manipulate --model M --classifier C --attribute A (--scale S | --target-logit L | --target median|p90) INPUT…", errUsage)
	}
	fractions, err := parseFloats(*fracs)
	if err != nil {
		return fmt.Errorf("%w: --sheet-fractions: %v", errUsage, err)
	}
	fractions = append([]float64{0}, fractions...)
	if fractions[len(fractions)-1] != 1 {
		fractions = append(fractions, 1)
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	if m.Enc == nil {
		return fmt.Errorf("%s is a DDIM baseline: it has no z_sem to manipulate", *mf.model)
	}
	c, err := classifierFor(*clsPath, *attr, m, *anyModel)
	if err != nil {
		return err
	}
	e, err := ef.edit(c)
	if err != nil {
		return err
	}
	x0, inputs, err := ti.read(m, inputs)
	if err != nil {
		return err
	}
	n := len(inputs)
	z, xT, err := encodeImages(ctx, m, x0, n, ef.encSteps(*mf.steps), *mf.batch, false)
	if err != nil {
		return err
	}
	r, err := manipulateAt(ctx, m, c, z, xT, n, e, fractions, *mf.steps, *mf.batch)
	if err != nil {
		return err
	}
	last := r.columns() - 1
	names := outputNames(inputs, n)
	if err := writePNGs(*out, names, m, r.X[last*n*m.ImageSize():]); err != nil {
		return err
	}
	sheet := make([][]image.Image, n)
	d := c.Dim()
	for i := range n {
		sheet[i] = []image.Image{toImage(m, x0, i)}
		for j := range r.columns() {
			sheet[i] = append(sheet[i], toImage(m, r.X, j*n+i))
		}
		fmt.Printf("%s: logit %.3f → %.3f (p %.3f → %.3f), scale %.4f\n", names[i], c.Logit(z[i*d:(i+1)*d]),
			c.Logit(r.ZFinal[i*d:(i+1)*d]), c.Prob(z[i*d:(i+1)*d]), c.Prob(r.ZFinal[i*d:(i+1)*d]), r.Scales[i])
	}
	sheetPath := filepath.Join(*out, "sheet.png")
	if err := imageio.WritePNG(sheetPath, imageio.Grid(sheet, 2, 3)); err != nil {
		return err
	}
	more := ""
	if r.Rounds > 0 {
		more = fmt.Sprintf(", then rounds 2..%d of the edit", r.Rounds+1)
	}
	fmt.Fprintf(os.Stderr, "wrote %d images and %s (columns: input, reconstruction, edits at %v of the full edit towards %q%s)\n",
		n, sheetPath, fractions[1:], c.Attribute, more)
	return nil
}
