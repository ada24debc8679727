package main

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"dae/dataset"
	"dae/schema"
	"dae/store"
)

func init() {
	register(command{"labels", "import attribute labels (CSV, or a few-shot share of Fashion-MNIST) and check scores against held-out labels", runLabels})
}

const labelsUsage = `usage:
  dae labels import FILE.csv [--source user]
      rows: image (content hash or source name), attribute, value (1/0, true/false, yes/no); a header row is skipped
  dae labels import-fmnist --labels IDX_LABELS --images-dir DIR (--per-class 100 | --share 0.01) [--seed 1]
                           [--model M] [--positives-only] [--heldout fmnist-heldout.csv] [--source fmnist]
      label a chosen share of the encoded Fashion-MNIST images (exported as <split>_<index>_<class>.png) and write
      the labels of the other encoded images to the held-out file, for checking
  dae labels check --truth fmnist-heldout.csv [--attribute sneaker] [--min-score 0.9] [--model M]
      precision and recall of "score > min-score" over the held-out images, per attribute`

func runLabels(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, labelsUsage)
		return fmt.Errorf("%w: which labels command?", errUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("labels "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), labelsUsage); fs.PrintDefaults() }
	switch sub {
	case "import":
		return labelsImport(ctx, fs, args)
	case "import-fmnist":
		return labelsImportFMNIST(ctx, fs, args)
	case "check":
		return labelsCheck(ctx, fs, args)
	}
	fmt.Fprintln(os.Stderr, labelsUsage)
	return fmt.Errorf("%w: unknown labels command %q", errUsage, sub)
}

// attributeName turns a class or attribute name into a safe attribute name the way dataset names files, then in
// lower case: "T-shirt/top" → "t-shirt-top", "Ankle boot" → "ankle_boot", "Sneaker" → "sneaker".
func attributeName(s string) (string, error) {
	a := strings.ToLower(strings.NewReplacer("/", "-", " ", "_").Replace(strings.TrimSpace(s)))
	if err := schema.CheckName(a); err != nil {
		return "", fmt.Errorf("attribute %q: %w", s, err)
	}
	return a, nil
}

func parseLabelValue(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "t", "yes", "y", "+":
		return true, nil
	case "0", "false", "f", "no", "n", "-":
		return false, nil
	}
	return false, fmt.Errorf("value %q is not one of 1/0, true/false, yes/no", s)
}

func labelsImport(ctx context.Context, fs *flag.FlagSet, args []string) error {
	source := fs.String("source", "user", "who says so (labels of one source replace that source's earlier ones)")
	var file string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if file == "" {
		return fmt.Errorf("%w: which CSV file?", errUsage)
	}
	if strings.TrimSpace(*source) == "" {
		return fmt.Errorf("%w: --source is empty", errUsage)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = 3
	r.TrimLeadingSpace = true
	type row struct {
		line      int
		ref, attr string
		value     bool
	}
	var rows []row
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		v, verr := parseLabelValue(rec[2])
		if verr != nil {
			if line == 1 {
				continue // a header
			}
			return fmt.Errorf("%s:%d: %w", file, line, verr)
		}
		attr, err := attributeName(rec[1])
		if err != nil {
			return fmt.Errorf("%s:%d: %w", file, line, err)
		}
		ref := strings.TrimSpace(rec[0])
		if ref == "" {
			return fmt.Errorf("%s:%d: empty image reference", file, line)
		}
		rows = append(rows, row{line, ref, attr, v})
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	refs := make([]string, 0, len(rows))
	for _, r := range rows {
		refs = append(refs, r.ref)
	}
	found, err := st.FindImages(ctx, refs)
	if err != nil {
		return err
	}
	var labels []store.Label
	var missing, ambiguous []string
	for _, r := range rows {
		ims := found[r.ref]
		switch len(ims) {
		case 0:
			missing = append(missing, fmt.Sprintf("%d:%s", r.line, r.ref))
			continue
		case 1:
		default:
			ambiguous = append(ambiguous, fmt.Sprintf("%d:%s (%d images)", r.line, r.ref, len(ims)))
			continue
		}
		labels = append(labels, store.Label{ImageHash: ims[0].Hash, Attribute: r.attr, Value: r.value, Source: *source})
	}
	if err := st.UpsertLabels(ctx, labels); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "imported %d labels from %s (source %s); %d rows name no known image, %d an ambiguous one\n",
		len(labels), file, *source, len(missing), len(ambiguous))
	for _, m := range append(missing[:min(len(missing), 5)], ambiguous[:min(len(ambiguous), 5)]...) {
		fmt.Fprintln(os.Stderr, "  skipped line", m)
	}
	return nil
}

// fmnistFile matches the names dataset.ExportPNG gives labelled images: <split>_<index>_<class>.png.
var fmnistFile = regexp.MustCompile(`^(train|test)_([0-9]+)_(.+)\.png$`)

// fmnistImage is one exported Fashion-MNIST image found in the images folder.
type fmnistImage struct {
	file  string
	index int
	class int
	hash  string
}

func labelsImportFMNIST(ctx context.Context, fs *flag.FlagSet, args []string) error {
	labelsPath := fs.String("labels", "", "IDX label file of the split the images came from (e.g. t10k-labels-idx1-ubyte.gz)")
	dir := fs.String("images-dir", "", "folder of the exported PNGs that were encoded (dae export / dataset.ExportPNG names)")
	perClass := fs.Int("per-class", 0, "label this many encoded images of each class")
	share := fs.Float64("share", 0, "or label this share of the encoded images, chosen at random (0..1)")
	seed := fs.Uint64("seed", 1, "seed of the random choice")
	model := fs.String("model", "", "count only images encoded by this model (default any)")
	positivesOnly := fs.Bool("positives-only", false, "record only each image's own class (positive–unlabelled training) instead of one-vs-rest labels for every class")
	heldout := fs.String("heldout", "fmnist-heldout.csv", "where to write the labels of the encoded images not imported")
	source := fs.String("source", "fmnist", "label source")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	case *labelsPath == "" || *dir == "":
		return fmt.Errorf("%w: --labels and --images-dir are required", errUsage)
	case (*perClass > 0) == (*share > 0):
		return fmt.Errorf("%w: give one of --per-class and --share", errUsage)
	case *share < 0 || *share > 1 || math.IsNaN(*share):
		return fmt.Errorf("%w: --share %g not in 0..1", errUsage, *share)
	case *perClass < 0:
		return fmt.Errorf("%w: --per-class %d is negative", errUsage, *perClass)
	}
	truth, err := dataset.ReadIDXLabels(*labelsPath)
	if err != nil {
		return err
	}
	classes := dataset.FashionMNISTClasses()
	attrs := make([]string, len(classes))
	for i, c := range classes {
		if attrs[i], err = attributeName(c); err != nil {
			return err
		}
	}
	images, err := scanFMNISTDir(*dir, truth, classes)
	if err != nil {
		return err
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	hashes := make([]string, len(images))
	for i, im := range images {
		hashes[i] = im.hash
	}
	encoded, err := st.ImagesWithLatents(ctx, *model, hashes)
	if err != nil {
		return err
	}
	var pool []fmnistImage
	for _, im := range images {
		if encoded[im.hash] {
			pool = append(pool, im)
		}
	}
	if len(pool) == 0 {
		return fmt.Errorf("none of the %d images in %s has a latent%s: encode them first", len(images), *dir, modelNote(*model))
	}
	rng := rand.New(rand.NewPCG(*seed, 0xfa5410))
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	chosen := map[string]bool{}
	if *perClass > 0 {
		taken := make([]int, len(classes))
		for _, im := range pool {
			if taken[im.class] < *perClass {
				taken[im.class]++
				chosen[im.hash] = true
			}
		}
	} else {
		for _, im := range pool[:int(math.Round(*share*float64(len(pool))))] {
			chosen[im.hash] = true
		}
	}
	var labels []store.Label
	for _, im := range pool {
		if !chosen[im.hash] {
			continue
		}
		for c, a := range attrs {
			if *positivesOnly && c != im.class {
				continue
			}
			labels = append(labels, store.Label{ImageHash: im.hash, Attribute: a, Value: c == im.class, Source: *source})
		}
	}
	if err := writeHeldOut(*heldout, pool, chosen, attrs); err != nil {
		return err
	}
	if err := st.UpsertLabels(ctx, labels); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d exported images, %d encoded%s; labelled %d images (%d labels, source %s); %d held out in %s\n",
		len(images), len(pool), modelNote(*model), len(chosen), len(labels), *source, len(pool)-len(chosen), *heldout)
	return nil
}

func modelNote(model string) string {
	if model == "" {
		return ""
	}
	return " by model " + model
}

// scanFMNISTDir finds the exported images in dir, checks each file's class against the label file, and hashes its
// content (the image hash the producer records).
func scanFMNISTDir(dir string, truth []uint8, classes []string) ([]fmnistImage, error) {
	safe := map[string]int{}
	for i, c := range classes {
		safe[strings.NewReplacer("/", "-", " ", "_").Replace(c)] = i
	}
	var out []fmnistImage
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		m := fmnistFile.FindStringSubmatch(d.Name())
		if m == nil {
			return nil
		}
		idx, err := strconv.Atoi(m[2])
		if err != nil || idx >= len(truth) {
			return fmt.Errorf("%s: index %s outside the label file's %d labels", p, m[2], len(truth))
		}
		c := int(truth[idx])
		if c >= len(classes) {
			return fmt.Errorf("label file: label %d of image %d is not a Fashion-MNIST class", c, idx)
		}
		if named, ok := safe[m[3]]; ok && named != c {
			return fmt.Errorf("%s: named %s but the label file says %s (labels of another split?)", p, classes[named], classes[c])
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		out = append(out, fmnistImage{file: p, index: idx, class: c, hash: hex.EncodeToString(sum[:])})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no <split>_<index>_<class>.png files", dir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out, nil
}

// writeHeldOut writes image_hash,file,index,attribute of every encoded image not chosen for labelling.
func writeHeldOut(path string, pool []fmnistImage, chosen map[string]bool, attrs []string) error {
	rows := [][]string{{"image_hash", "file", "index", "attribute"}}
	for _, im := range pool {
		if !chosen[im.hash] {
			rows = append(rows, []string{im.hash, filepath.Base(im.file), strconv.Itoa(im.index), attrs[im.class]})
		}
	}
	if err := dataset.WriteCSV(path, rows); err != nil {
		return fmt.Errorf("held-out labels: %w", err)
	}
	return nil
}

func labelsCheck(ctx context.Context, fs *flag.FlagSet, args []string) error {
	truthPath := fs.String("truth", "fmnist-heldout.csv", "held-out labels written by import-fmnist (image_hash,file,index,attribute)")
	only := fs.String("attribute", "", "check only this attribute (default every attribute in the file)")
	minScore := fs.Float64("min-score", 0.9, "a latent counts as selected when its score exceeds this")
	model := fs.String("model", "", "model id (default any)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	f, err := os.Open(*truthPath)
	if err != nil {
		return err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return fmt.Errorf("%s: %w", *truthPath, err)
	}
	if len(recs) < 2 || len(recs[0]) != 4 || recs[0][0] != "image_hash" {
		return fmt.Errorf("%s: want the header image_hash,file,index,attribute and rows", *truthPath)
	}
	truth := map[string]string{}
	count := map[string]int{}
	for _, r := range recs[1:] {
		truth[r[0]] = r[3]
		count[r[3]]++
	}
	var attrs []string
	for a := range count {
		if *only == "" || a == *only {
			attrs = append(attrs, a)
		}
	}
	sort.Strings(attrs)
	if len(attrs) == 0 {
		return fmt.Errorf("%w: attribute %q not in %s", errUsage, *only, *truthPath)
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "ATTRIBUTE\tSELECTED\tTRUE\tPRECISION\tRECALL\t\n")
	for _, a := range attrs {
		hits, err := st.LatentsByAttribute(ctx, *model, a, float32(*minScore), math.MaxInt32)
		if err != nil {
			return err
		}
		var sel, tp int
		for _, h := range hits {
			got, ok := truth[h.ImageHash]
			if !ok || h.Score <= float32(*minScore) {
				continue // a labelled image, or exactly at the threshold
			}
			sel++
			if got == a {
				tp++
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t\n", a, sel, tp, ratio(tp, sel), ratio(tp, count[a]))
	}
	return w.Flush()
}

func ratio(a, b int) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", float64(a)/float64(b))
}
