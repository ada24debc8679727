package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"dae/diffae"
	"dae/nn"
)

func init() {
	register(command{"classify", "train attribute classifiers on z_sem (labels CSV or Fashion-MNIST; binary or PU; few-shot)", runClassify})
}

// labelledCodes are z_sem codes of a labelled set: Fashion-MNIST class indices or, from a CSV, per-attribute labels.
type labelledCodes struct {
	N, D  int
	Z     []float32
	Class []int    // Fashion-MNIST: class index per code; nil for CSV labels
	Names []string // class names (Fashion-MNIST) or attributes (CSV), in order
	// Attr holds CSV labels: Attr[attribute][i] is +1, 0 (positive, negative) or −1 (no label) for code i.
	Attr map[string][]int8
}

// binary returns the labels of attribute name for every code and whether each is labelled.
func (l *labelledCodes) binary(name string) (labels, known []bool) {
	labels, known = make([]bool, l.N), make([]bool, l.N)
	if l.Class != nil {
		c := indexOf(l.Names, name)
		for i, k := range l.Class {
			labels[i], known[i] = k == c, true
		}
		return labels, known
	}
	for i, v := range l.Attr[name] {
		labels[i], known[i] = v == 1, v >= 0
	}
	return labels, known
}

func indexOf(names []string, s string) int {
	for i, n := range names {
		if n == s {
			return i
		}
	}
	return -1
}

// fashionCodes encodes (semantic only) the first n images of a Fashion-MNIST split, reusing cache (a safetensors
// file, "" for none) when it holds the codes of this model for these images.
func fashionCodes(ctx context.Context, m *diffae.Model, data, split string, n, batch int, cache string) (*labelledCodes, error) {
	imgs, err := loadImages(data, split, m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return nil, err
	}
	if imgs.Labels == nil {
		return nil, fmt.Errorf("--data %s has no labels (use --labels with --codes)", data)
	}
	if n <= 0 || n > imgs.N {
		n = imgs.N
	}
	e := m.Cfg.ZDim()
	l := &labelledCodes{N: n, D: e, Class: imgs.Labels[:n], Names: imgs.ClassNames}
	key := fmt.Sprintf("%s/%s/%d", m.ID, split, n)
	if cache != "" {
		if f, err := nn.ReadSafetensors(cache); err == nil && f.Meta["key"] == key {
			if z, shape, err := f.Get("z_sem"); err == nil && len(shape) == 2 && shape[0] == n && shape[1] == e {
				fmt.Fprintf(os.Stderr, "using %d cached %s codes from %s\n", n, split, cache)
				l.Z = z
				return l, nil
			}
		}
	}
	p := newProgress(fmt.Sprintf("encoding %d %s images (z_sem)", n, split))
	l.Z, _, err = m.Encode(ctx, imgs.Data[:n*imgs.Size()], n, diffae.EncodeOptions{SemanticOnly: true, Batch: batch, Progress: p.update})
	p.finish()
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", split, err)
	}
	if cache != "" {
		err := nn.WriteSafetensors(cache, []nn.STTensor{{Name: "z_sem", Shape: []int{n, e}, Data: l.Z}}, "F32",
			map[string]string{"key": key})
		if err != nil {
			return nil, fmt.Errorf("code cache: %w", err)
		}
	}
	return l, nil
}

// csvCodes joins a codes file (from `dae encode`) with a CSV of name,attribute,label rows by the inputs' base
// names. Labels are 1/0, true/false, yes/no, positive/negative or +1/−1; a header row is skipped.
func csvCodes(codesPath, labelsPath string) (*labelledCodes, *codes, error) {
	c, err := readCodes(codesPath)
	if err != nil {
		return nil, nil, err
	}
	if c.Z == nil {
		return nil, nil, fmt.Errorf("codes %s hold no z_sem", codesPath)
	}
	if c.Inputs == nil {
		return nil, nil, fmt.Errorf("codes %s do not name their inputs; cannot join them with %s", codesPath, labelsPath)
	}
	byName := map[string]int{}
	for i, in := range c.Inputs {
		b := filepath.Base(in)
		byName[b] = i
		byName[strings.TrimSuffix(b, filepath.Ext(b))] = i
	}
	f, err := os.Open(labelsPath)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = 3
	l := &labelledCodes{N: c.N, D: c.ZDim, Z: c.Z, Attr: map[string][]int8{}}
	var missing []string
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("labels %s: %w", labelsPath, err)
		}
		v, ok := parseLabel(rec[2])
		if !ok {
			if line == 1 {
				continue // header
			}
			return nil, nil, fmt.Errorf("labels %s line %d: label %q is not 1/0, true/false or positive/negative", labelsPath, line, rec[2])
		}
		i, ok := byName[filepath.Base(rec[0])]
		if !ok {
			missing = append(missing, rec[0])
			continue
		}
		a := rec[1]
		if l.Attr[a] == nil {
			l.Attr[a] = make([]int8, c.N)
			for j := range l.Attr[a] {
				l.Attr[a][j] = -1
			}
			l.Names = append(l.Names, a)
		}
		l.Attr[a][i] = v
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "%d labelled names are not in %s (first: %s)\n", len(missing), codesPath, missing[0])
	}
	if len(l.Names) == 0 {
		return nil, nil, fmt.Errorf("labels %s: no label matches a code in %s", labelsPath, codesPath)
	}
	return l, c, nil
}

func parseLabel(s string) (int8, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "+1", "true", "yes", "positive", "pos":
		return 1, true
	case "0", "-1", "false", "no", "negative", "neg":
		return 0, true
	}
	return 0, false
}

// fewShot keeps k labelled codes per class (binary mode: k positives of every attribute, so each one-vs-rest
// classifier sees k positives and the other classes' picks as negatives) chosen at random.
func fewShot(known [][]bool, labels [][]bool, k int, rng *rand.Rand) [][]bool {
	n := len(known[0])
	keep := make([]bool, n)
	for a := range labels {
		var pos []int
		for i := range n {
			if labels[a][i] && known[a][i] {
				pos = append(pos, i)
			}
		}
		rng.Shuffle(len(pos), func(i, j int) { pos[i], pos[j] = pos[j], pos[i] })
		for _, i := range pos[:min(k, len(pos))] {
			keep[i] = true
		}
	}
	out := make([][]bool, len(known))
	for a := range known {
		out[a] = make([]bool, n)
		for i := range n {
			out[a][i] = known[a][i] && keep[i]
		}
	}
	return out
}

func runClassify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("classify", flag.ContinueOnError)
	mf := addModelFlags(fs)
	data := fs.String("data", "", "Fashion-MNIST IDX directory (default: the Debian package's)")
	n := fs.Int("n", 10000, "Fashion-MNIST training images to encode (0: all)")
	testN := fs.Int("test-n", 2000, "Fashion-MNIST test images to report AUROC on (0: none)")
	cacheDir := fs.String("cache", "", "directory for cached codes (reused when the model and n match)")
	codesPath := fs.String("codes", "", "codes file written by dae encode (with --labels instead of Fashion-MNIST)")
	labelsPath := fs.String("labels", "", "CSV of name,attribute,label rows for --codes")
	attrs := fs.String("attributes", "", "comma-separated attributes/classes to train (default: all)")
	mode := fs.String("mode", "binary", "binary (labelled negatives) or pu (positive-unlabelled)")
	k := fs.Int("few-shot", 0, "use only this many labelled positives per class (0: all labels)")
	epochs := fs.Int("epochs", 100, "epochs")
	lr := fs.Float64("lr", 1e-3, "Adam learning rate")
	l2 := fs.Float64("l2", diffae.DefaultClassifierL2, "ridge penalty l2/2·‖w‖² on the weights (0: none)")
	holdout := fs.Float64("holdout", 0.1, "share of the training codes held out for AUROC/accuracy")
	seed := fs.Uint64("seed", 1, "seed of the few-shot pick, hold-out split and shuffling")
	out := fs.String("out", "", "classifier file to write (JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if err := firstError(atLeast("n", *n, 0), atLeast("test-n", *testN, 0), atLeast("few-shot", *k, 0),
		atLeast("epochs", *epochs, 1), positive("lr", *lr)); err != nil {
		return err
	}
	if !(*holdout >= 0 && *holdout < 1) {
		return fmt.Errorf("%w: --holdout %v: want a share in [0, 1)", errUsage, *holdout)
	}
	// The codes and labels of --codes replace the Fashion-MNIST images these flags choose.
	if err := onlyWith(fs, *codesPath == "", "Fashion-MNIST images, not with --codes", "n", "test-n", "data", "cache"); err != nil {
		return err
	}
	if *mode != "binary" && *mode != "pu" {
		return fmt.Errorf("%w: --mode %q: want binary or pu", errUsage, *mode)
	}
	if (*codesPath == "") != (*labelsPath == "") {
		return fmt.Errorf("%w: --codes and --labels go together", errUsage)
	}
	if err := nonNegative("l2", *l2); err != nil {
		return err
	}
	m, err := mf.load()
	if err != nil {
		return err
	}
	cachePath := func(split string) string {
		if *cacheDir == "" {
			return ""
		}
		return filepath.Join(*cacheDir, fmt.Sprintf("zsem-%s-%s.safetensors", split, shortID(m.ID)))
	}
	var train, test *labelledCodes
	if *codesPath != "" {
		var c *codes
		if train, c, err = csvCodes(*codesPath, *labelsPath); err != nil {
			return err
		}
		if err := c.checkModel(*codesPath, m, false); err != nil {
			return err
		}
	} else {
		if train, err = fashionCodes(ctx, m, *data, "train", *n, *mf.batch, cachePath("train")); err != nil {
			return err
		}
		if *testN > 0 {
			if test, err = fashionCodes(ctx, m, *data, "test", *testN, *mf.batch, cachePath("test")); err != nil {
				return err
			}
		}
	}
	names := train.Names
	if *attrs != "" {
		names = strings.Split(*attrs, ",")
		for _, a := range names {
			if indexOf(train.Names, a) < 0 {
				return fmt.Errorf("%w: --attributes: %q is not among %q", errUsage, a, train.Names)
			}
		}
	}
	labels := make([][]bool, len(names))
	known := make([][]bool, len(names))
	for a, name := range names {
		labels[a], known[a] = train.binary(name)
	}
	if *k > 0 {
		// The pick is over all classes of the set, so binary one-vs-rest negatives are other classes' picks.
		all := make([][]bool, len(train.Names))
		allKnown := make([][]bool, len(train.Names))
		for a, name := range train.Names {
			all[a], allKnown[a] = train.binary(name)
		}
		picked := fewShot(allKnown, all, *k, rand.New(rand.NewPCG(*seed, 0xfe75)))
		for a, name := range names {
			known[a] = picked[indexOf(train.Names, name)]
		}
	}
	var mean, std []float32
	if m.Stats != nil {
		mean, std = m.Stats.Mean, m.Stats.Std
	}
	o := diffae.ClassifierOptions{Epochs: *epochs, LR: *lr, L2: *l2, PU: *mode == "pu", Seed: *seed, HoldOut: *holdout}
	if *l2 == 0 {
		o.L2 = -1 // none
	}
	var cs []*diffae.Classifier
	for a, name := range names {
		// Binary mode trains on the labelled codes only; PU mode on every code, the labelled positives as
		// positives and everything else unlabelled.
		var z []float32
		var y []bool
		for i := range train.N {
			switch {
			case o.PU:
				y = append(y, known[a][i] && labels[a][i])
			case known[a][i]:
				y = append(y, labels[a][i])
			default:
				continue
			}
			z = append(z, train.Z[i*train.D:(i+1)*train.D]...)
		}
		c, err := diffae.TrainClassifier(name, z, train.D, y, o, mean, std)
		if err != nil {
			return err
		}
		c.ModelID = m.ID
		c.Metrics["pu"] = b2f(o.PU)
		c.Metrics["few_shot"] = float64(*k)
		if test != nil {
			tl, _ := test.binary(name)
			c.Metrics["test_auroc"], c.Metrics["test_accuracy"] = c.Evaluate(test.Z, tl)
			c.Metrics["n_test"] = float64(test.N)
		}
		cs = append(cs, c)
	}
	if err := diffae.SaveClassifiers(*out, cs); err != nil {
		return err
	}
	printClassifiers(os.Stdout, cs)
	fmt.Fprintf(os.Stderr, "wrote %d classifiers to %s\n", len(cs), *out)
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	if id == "" {
		return "fresh"
	}
	return id
}

// printClassifiers writes a Markdown table of the classifiers' metrics, ready for docs.
func printClassifiers(w io.Writer, cs []*diffae.Classifier) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| attribute\t train codes\t positives\t held-out AUROC\t held-out acc.\t test AUROC\t test acc.\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t")
	var sum, cnt float64
	for _, c := range cs {
		mt := c.Metrics
		fmt.Fprintf(tw, "| %s\t %.0f\t %.0f\t %s\t %s\t %s\t %s\t\n", c.Attribute, mt["n_train"], mt["n_train_positive"],
			metric(mt, "auroc"), metric(mt, "accuracy"), metric(mt, "test_auroc"), metric(mt, "test_accuracy"))
		if v, ok := mt["test_auroc"]; ok && !math.IsNaN(v) {
			sum += v
			cnt++
		}
	}
	tw.Flush()
	if cnt > 0 {
		fmt.Fprintf(w, "\nmean test AUROC %.4f over %d classifiers\n", sum/cnt, int(cnt))
	}
}

func metric(m map[string]float64, k string) string {
	v, ok := m[k]
	if !ok || math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

// classifierFor loads attribute's classifier from path and checks it belongs to m (unless anyModel).
func classifierFor(path, attribute string, m *diffae.Model, anyModel bool) (*diffae.Classifier, error) {
	c, err := diffae.LoadClassifier(path, attribute)
	if err != nil {
		return nil, err
	}
	if anyModel {
		c.ModelID = ""
	}
	if err := c.CheckModel(m); err != nil {
		return nil, fmt.Errorf("%s: %w (--any-model uses it anyway)", path, err)
	}
	return c, nil
}
