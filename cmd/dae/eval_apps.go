package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"dae/diffae"
	"dae/imageio"
)

// The application evaluations hang off `dae eval` (cmd_eval.go dispatches through evalCommands); registering
// them here keeps that file untouched.
func init() {
	evalCommands["manipulate"] = runEvalManipulate
	evalCommands["interpolate"] = runEvalInterpolate
	evalCommands["sample"] = runEvalSample
}

// probeClass returns, per code, the index into probe of the classifier with the highest logit: the one-vs-rest
// probe's class.
func probeClass(probe []*diffae.Classifier, z []float32) []int {
	d := probe[0].Dim()
	out := make([]int, len(z)/d)
	for i := range out {
		best := math.Inf(-1)
		for k, c := range probe {
			if l := c.Logit(z[i*d : (i+1)*d]); l > best {
				best, out[i] = l, k
			}
		}
	}
	return out
}

// loadProbe reads a classifier file holding one classifier per class (`dae classify` with all labels) for m.
func loadProbe(path string, m *diffae.Model, anyModel bool) ([]*diffae.Classifier, error) {
	cs, err := diffae.LoadClassifiers(path)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if anyModel {
			c.ModelID = ""
		}
		if err := c.CheckModel(m); err != nil {
			return nil, fmt.Errorf("probe %s: %w (--any-model uses it anyway)", path, err)
		}
	}
	if len(cs) < 2 {
		return nil, fmt.Errorf("probe %s holds %d classifier; a probe needs one per class", path, len(cs))
	}
	return cs, nil
}

func semanticCodes(ctx context.Context, m *diffae.Model, x []float32, n, batch int) ([]float32, error) {
	z, _, err := encodeImages(ctx, m, x, n, 1, batch, true)
	return z, err
}

func runEvalManipulate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval manipulate", flag.ContinueOnError)
	mf := addModelFlags(fs)
	ef := addEditFlags(fs)
	clsPath := fs.String("classifier", "", "classifier file (one classifier per attribute)")
	attrs := fs.String("attributes", "", "comma-separated attributes to move towards (default: every one in the file)")
	n := fs.Int("n", 50, "test images per attribute (taken from outside the attribute's class)")
	probePath := fs.String("probe", "", "optional classifier file with one classifier per class: also report the probe's verdict")
	data := fs.String("data", "", "Fashion-MNIST IDX directory (default: the Debian package's)")
	sheets := fs.String("sheets", "", "directory for one contact sheet per attribute (6 inputs; columns: input, reconstruction, "+
		"a quarter to all of the edit, then each further --rounds)")
	anyModel := fs.Bool("any-model", false, "use classifiers trained on another checkpoint of the same network")
	pixelProbe := fs.Int("pixel-probe", 0, "also judge the decoded edits by a ten-class linear probe on raw pixels, trained on this many "+
		"training images (solved exactly, ridge 0.01): a verdict that does not go through the encoder the edits were steered by")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if *clsPath == "" {
		return fmt.Errorf("%w: dae eval manipulate --model M --classifier C (--target median|p90 | --target-logit L | --scale S)", errUsage)
	}
	if *pixelProbe < 0 {
		return fmt.Errorf("%w: --pixel-probe %d: want a number of training images (0: none)", errUsage, *pixelProbe)
	}
	if err := atLeast("n", *n, 1); err != nil {
		return err
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	all, err := diffae.LoadClassifiers(*clsPath)
	if err != nil {
		return err
	}
	var probe []*diffae.Classifier
	if *probePath != "" {
		if probe, err = loadProbe(*probePath, m, *anyModel); err != nil {
			return err
		}
	}
	imgs, err := loadImages(*data, "test", m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return err
	}
	var px *diffae.Probe
	if *pixelProbe > 0 {
		if px, err = trainPixelJudge(ctx, *data, m, *pixelProbe); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(all))
	for _, c := range all {
		names = append(names, c.Attribute)
	}
	if *attrs != "" {
		names = strings.Split(*attrs, ",")
	}
	per := m.ImageSize()
	scaleCol := "scale (mean)"
	if *ef.rounds > 1 {
		scaleCol = "scale (mean, summed over the rounds)"
	}
	head, rule := "", ""
	if *ef.rounds > 1 {
		head, rule = " in target after each round (classifier) |", "---|"
	}
	fmt.Println("| attribute | n | " + scaleCol + " | re-encoded in target (classifier) | re-encoded in target (probe) | logit before → after (re-encoded) | pixel MSE recon–edit | off-direction change | edit in target (pixel probe) |" + head)
	fmt.Println("|---|---|---|---|---|---|---|---|---|" + rule)
	for _, name := range names {
		c, err := classifierFor(*clsPath, name, m, *anyModel)
		if err != nil {
			return err
		}
		e, err := ef.edit(c)
		if err != nil {
			return err
		}
		// Inputs: the first n test images outside the class (by label when the attribute is a class name).
		class := indexOf(imgs.ClassNames, name)
		if class < 0 {
			return fmt.Errorf("attribute %q is not a class of the test set %v", name, imgs.ClassNames)
		}
		x0 := make([]float32, 0, *n*per)
		for i := 0; i < imgs.N && len(x0) < *n*per; i++ {
			if imgs.Labels[i] != class {
				x0 = append(x0, imgs.Image(i)...)
			}
		}
		k := len(x0) / per
		z, xT, err := encodeImages(ctx, m, x0, k, ef.encSteps(*mf.steps), *mf.batch, false)
		if err != nil {
			return err
		}
		r, err := manipulateAt(ctx, m, c, z, xT, k, e, []float64{0, 1}, *mf.steps, *mf.batch)
		if err != nil {
			return err
		}
		// Re-encode the reconstructions and the edits, so both sides of every comparison went through the decoder.
		edits := r.X[(r.columns()-1)*k*per : r.columns()*k*per]
		zr, err := semanticCodes(ctx, m, append(slices.Clip(r.X[:k*per]), edits...), 2*k, *mf.batch)
		if err != nil {
			return err
		}
		d := c.Dim()
		zRec, zEdit := zr[:k*d], zr[k*d:]
		var succ, probeSucc, before, after, mse, off, scale float64
		var pc []int
		if probe != nil {
			pc = probeClass(probe, zEdit)
		}
		u, err := c.Direction(e.Along)
		if err != nil {
			return err
		}
		for i := range k {
			if c.Prob(zEdit[i*d:(i+1)*d]) >= 0.5 {
				succ++
			}
			if pc != nil && probe[pc[i]].Attribute == name {
				probeSucc++
			}
			before += c.Logit(zRec[i*d:(i+1)*d]) / float64(k)
			after += c.Logit(zEdit[i*d:(i+1)*d]) / float64(k)
			scale += r.Scales[i] / float64(k)
			a, b := r.X[i*per:(i+1)*per], edits[i*per:(i+1)*per]
			for j := range a {
				mse += float64(a[j]-b[j]) * float64(a[j]-b[j]) / float64(per*k)
			}
			off += offDirection(c, u, zRec[i*d:(i+1)*d], zEdit[i*d:(i+1)*d]) / float64(k)
		}
		ps := "–"
		if probe != nil {
			ps = fmt.Sprintf("%.1f%%", 100*probeSucc/float64(k))
		}
		pxs := "–"
		if px != nil {
			pxs = fmt.Sprintf("%.1f%%", 100*shareOf(px.Predict(edits), slices.Index(px.Classes, name)))
		}
		byRound := ""
		if r.Rounds > 0 {
			// Every earlier round's edits re-encoded (z_sem only) and judged by the classifier, then the last
			// round's share from above: how the share grows.
			var shares []string
			for col := len(r.Fractions) - 1; col < r.columns()-1; col++ {
				zc, err := semanticCodes(ctx, m, r.X[col*k*per:(col+1)*k*per], k, *mf.batch)
				if err != nil {
					return err
				}
				hit := 0
				for i := range k {
					if c.Prob(zc[i*d:(i+1)*d]) >= 0.5 {
						hit++
					}
				}
				shares = append(shares, fmt.Sprintf("%.0f%%", 100*float64(hit)/float64(k)))
			}
			shares = append(shares, fmt.Sprintf("%.0f%%", 100*succ/float64(k)))
			byRound = " " + strings.Join(shares, " → ") + " |"
		}
		fmt.Printf("| %s | %d | %.3f | %.1f%% | %s | %.2f → %.2f | %.4f | %.3f | %s |%s\n", name, k, scale, 100*succ/float64(k), ps,
			before, after, mse, off, pxs, byRound)
		if *sheets != "" {
			if err := writeEditSheet(ctx, *sheets, m, c, e, x0, z, xT, k, *mf.steps, *mf.batch); err != nil {
				return err
			}
		}
	}
	fmt.Println("\noff-direction change: ‖Δ − (Δ·u)u‖ / ‖z_rec‖ of the re-encoded edit against the re-encoded reconstruction, in the classifier's normalised space (u the direction moved along); lower means the rest of the content stayed put")
	return nil
}

// shareOf is the share of the predictions that are class k.
func shareOf(pred []int, k int) float64 {
	hit := 0
	for _, c := range pred {
		if c == k {
			hit++
		}
	}
	return float64(hit) / float64(len(pred))
}

// trainPixelJudge fits the ten-class pixel probe that judges edited images without the encoder: one-vs-rest
// logistic regressions on the first n training images' pixels, solved to convergence, with the ridge penalty and
// std floor that `dae eval probe` found best for pixels.
func trainPixelJudge(ctx context.Context, data string, m *diffae.Model, n int) (*diffae.Probe, error) {
	train, err := loadImages(data, "train", m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return nil, err
	}
	n = min(n, train.N)
	per := train.Size()
	fmt.Fprintf(os.Stderr, "training the pixel probe on %d training images…\n", n)
	return diffae.TrainProbe(ctx, train.Data[:n*per], per, train.Labels[:n], train.ClassNames,
		diffae.ProbeOptions{Exact: true, L2: 0.01, MinStd: 0.05})
}

// offDirection is the share of a code's normalised length by which an edit moved it off the attribute direction u.
func offDirection(c *diffae.Classifier, u []float32, zRec, zEdit []float32) float64 {
	var along, norm float64
	dn := make([]float64, len(u))
	for j := range u {
		a := float64((zRec[j] - c.Mean[j]) / c.Std[j])
		b := float64((zEdit[j] - c.Mean[j]) / c.Std[j])
		dn[j] = b - a
		along += dn[j] * float64(u[j])
		norm += a * a
	}
	var off float64
	for j := range u {
		v := dn[j] - along*float64(u[j])
		off += v * v
	}
	return math.Sqrt(off / norm)
}

// writeEditSheet writes the contact sheet of the first few inputs: input, reconstruction and the edit at a quarter,
// half, three quarters and all of its full scale, then the edit's further rounds (Edit.Rounds), if any.
func writeEditSheet(ctx context.Context, dir string, m *diffae.Model, c *diffae.Classifier, e diffae.Edit,
	x0, z, xT []float32, k, steps, batch int) error {
	k = min(k, 6)
	per, d := m.ImageSize(), c.Dim()
	fr := []float64{0, 0.25, 0.5, 0.75, 1}
	r, err := manipulateAt(ctx, m, c, z[:k*d], xT[:k*per], k, e, fr, steps, batch)
	if err != nil {
		return err
	}
	rows := make([][]image.Image, k)
	for i := range k {
		rows[i] = []image.Image{toImage(m, x0, i)}
		for j := range r.columns() {
			rows[i] = append(rows[i], toImage(m, r.X, j*k+i))
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "manipulate-"+fileName(c.Attribute)+".png")
	return imageio.WritePNG(path, imageio.Grid(rows, 2, 3))
}

func fileName(s string) string { return strings.NewReplacer("/", "-", " ", "_").Replace(s) }

func runEvalInterpolate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval interpolate", flag.ContinueOnError)
	mf := addModelFlags(fs)
	baseline := fs.String("baseline", "", "DDIM baseline checkpoint")
	pairs := fs.Int("pairs", 10, "random pairs of test images")
	frames := fs.Int("frames", 10, "frames per interpolation, ends included")
	seed := fs.Uint64("seed", 1, "seed of the pair choice")
	data := fs.String("data", "", "Fashion-MNIST IDX directory (default: the Debian package's)")
	strips := fs.String("strips", "", "directory for the strips of the first three pairs (Diff-AE row over DDIM row)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if *baseline == "" || *frames < 3 || *pairs < 1 {
		return fmt.Errorf("%w: dae eval interpolate --model M --baseline B [--pairs P] [--frames K≥3]", errUsage)
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	b, err := diffae.Load(m.Dev, *baseline) // the same device as the model
	if err != nil {
		return err
	}
	imgs, err := loadImages(*data, "test", m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(*seed, 0x1e7))
	type acc struct{ mean, variance, cv float64 }
	res := map[string]*acc{"Diff-AE": {}, "DDIM": {}}
	smoother := 0
	for p := range *pairs {
		i, j := rng.IntN(imgs.N), rng.IntN(imgs.N)
		var rows [][]image.Image
		var vars []float64
		for _, mm := range []*diffae.Model{m, b} {
			x, err := interpolation(ctx, mm, imgs.Image(i), imgs.Image(j), *frames, *mf.steps, *mf.batch)
			if err != nil {
				return err
			}
			mean, v := frameStats(mm, x, *frames)
			a := res[kindName(mm)]
			a.mean += mean / float64(*pairs)
			a.variance += v / float64(*pairs)
			a.cv += math.Sqrt(v) / mean / float64(*pairs)
			vars = append(vars, v)
			var row []image.Image
			for f := range *frames {
				row = append(row, toImage(mm, x, f))
			}
			rows = append(rows, row)
		}
		if vars[0] < vars[1] {
			smoother++
		}
		if *strips != "" && p < 3 {
			if err := os.MkdirAll(*strips, 0o755); err != nil {
				return err
			}
			path := filepath.Join(*strips, fmt.Sprintf("interpolate-%d.png", p))
			if err := imageio.WritePNG(path, imageio.Grid(rows, 2, 3)); err != nil {
				return err
			}
		}
	}
	fmt.Printf("%d pairs, %d frames, %d DDIM steps\n\n", *pairs, *frames, *mf.steps)
	fmt.Println("| model | mean consecutive-frame MSE | variance of consecutive-frame MSE | coefficient of variation |")
	fmt.Println("|---|---|---|---|")
	for _, k := range []string{"Diff-AE", "DDIM"} {
		a := res[k]
		fmt.Printf("| %s | %.5f | %.3g | %.3f |\n", k, a.mean, a.variance, a.cv)
	}
	fmt.Printf("\nDiff-AE's frame differences vary less than DDIM's in %d of %d pairs\n", smoother, *pairs)
	return nil
}

func runEvalSample(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval sample", flag.ContinueOnError)
	mf := addModelFlags(fs)
	sf := addSampleFlags(fs, 100)
	probePath := fs.String("probe", "", "classifier file with one classifier per class (dae classify with all labels)")
	sheet := fs.String("sheet", "", "write the conditional (else unconditional) samples' contact sheet here")
	data := fs.String("data", "", "Fashion-MNIST IDX directory for --pixel-probe (default: the Debian package's)")
	pixelProbe := fs.Int("pixel-probe", 0, "also judge the samples by a ten-class linear probe on raw pixels, trained on this many "+
		"training images: a verdict that does not go through the encoder")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if *probePath == "" {
		return fmt.Errorf("%w: dae eval sample --model M --probe P [--n N] [--condition attr=positive --classifier C]", errUsage)
	}
	if *pixelProbe < 0 {
		return fmt.Errorf("%w: --pixel-probe %d: want a number of training images (0: none)", errUsage, *pixelProbe)
	}
	if err := firstError(sf.check(), onlyWith(fs, *pixelProbe > 0, "--pixel-probe", "data")); err != nil {
		return err
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	probe, err := loadProbe(*probePath, m, *sf.anyModel)
	if err != nil {
		return err
	}
	cond, err := sf.conditionClassifier(m)
	if err != nil {
		return err
	}
	var px *diffae.Probe
	if *pixelProbe > 0 {
		if px, err = trainPixelJudge(ctx, *data, m, *pixelProbe); err != nil {
			return err
		}
	}
	n := *sf.n
	// pixelShare is the pixel probe's share of class name among the decoded samples x.
	pixelShare := func(x []float32, name string) float64 {
		return shareOf(px.Predict(x), slices.Index(px.Classes, name))
	}
	share := func(x []float32) ([]float64, error) {
		z, err := semanticCodes(ctx, m, x, n, *mf.batch)
		if err != nil {
			return nil, err
		}
		h := make([]float64, len(probe))
		for _, k := range probeClass(probe, z) {
			h[k] += 1 / float64(n)
		}
		return h, nil
	}
	// codeShare is the share of the probe's class k among the sampled codes themselves, before decoding: what the
	// decoder with random x_T keeps of it shows in the re-encoded shares.
	codeShare := func(z []float32, k int) float64 { return shareOf(probeClass(probe, z), k) }
	zu, xu, _, err := sf.draw(ctx, m, nil, n, *mf.steps, *mf.batch)
	if err != nil {
		return err
	}
	hu, err := share(xu)
	if err != nil {
		return err
	}
	var hc []float64
	var zc, xc []float32
	xs := xu
	if cond != nil {
		var drawn int
		zc, xc, drawn, err = sf.draw(ctx, m, cond, n, *mf.steps, *mf.batch)
		if err != nil {
			return err
		}
		if hc, err = share(xc); err != nil {
			return err
		}
		xs = xc
		fmt.Printf("conditional on %q: accepted %d of %d latent samples (%.1f%%)\n\n", cond.Attribute, n, drawn, 100*float64(n)/float64(drawn))
	}
	fmt.Printf("class shares of %d samples by the probe (re-encoded)\n\n", n)
	if cond != nil {
		fmt.Println("| class | unconditional | conditional |")
		fmt.Println("|---|---|---|")
	} else {
		fmt.Println("| class | unconditional |")
		fmt.Println("|---|---|")
	}
	var entropy float64
	for k, c := range probe {
		if hu[k] > 0 {
			entropy -= hu[k] * math.Log(hu[k])
		}
		mark := ""
		if cond != nil && c.Attribute == cond.Attribute {
			mark = " (target)"
		}
		if cond != nil {
			fmt.Printf("| %s%s | %.1f%% | %.1f%% |\n", c.Attribute, mark, 100*hu[k], 100*hc[k])
		} else {
			fmt.Printf("| %s | %.1f%% |\n", c.Attribute, 100*hu[k])
		}
	}
	fmt.Printf("\nunconditional balance: entropy %.3f of a uniform %.3f\n", entropy, math.Log(float64(len(probe))))
	if cond != nil {
		for k, c := range probe {
			if c.Attribute == cond.Attribute {
				fmt.Printf("target %q: %.1f%% of conditional samples against %.1f%% unconditionally\n", c.Attribute, 100*hc[k], 100*hu[k])
				fmt.Printf("the probe on the sampled codes themselves (before decoding): %.1f%% conditional, %.1f%% unconditional\n",
					100*codeShare(zc, k), 100*codeShare(zu, k))
				if px != nil {
					fmt.Printf("the pixel probe on the decoded samples (no encoder): %.1f%% conditional, %.1f%% unconditional\n",
						100*pixelShare(xc, c.Attribute), 100*pixelShare(xu, c.Attribute))
				}
			}
		}
	}
	if *sheet != "" {
		if err := imageio.WritePNG(*sheet, imageio.Grid(gridOf(m, xs, min(n, 64)), 2, 2)); err != nil {
			return err
		}
	}
	return nil
}
