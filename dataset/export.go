package dataset

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"dae/imageio"
)

// ExportPNG writes the first n images of m (all when n exceeds m.N) as PNG
// files in dir, which is created if needed, exactly as the model sees them
// (for Fashion-MNIST the padded 32×32 images, so a worker that re-reads them
// gets the training distribution back without resampling). Files are named
// <split>_<index>_<class>.png (for example test_00000_Ankle_boot.png) when m
// is labelled, after m.Names when it came from files, and image_<index>.png
// otherwise. When m is labelled, dir also gets labels.csv with the header
// file,attribute,label and, for each file, one row per class with label 1
// for its class and 0 for the others, ready for one-vs-rest classifiers.
// It returns the file names written.
func ExportPNG(m *Images, dir string, n int) ([]string, error) {
	n = min(max(n, 0), m.N)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	split := m.Split
	if split == "" {
		split = "image"
	}
	files := make([]string, n)
	seen := make(map[string]int, n)
	for i := range files {
		switch {
		case m.Labels != nil:
			files[i] = fmt.Sprintf("%s_%05d_%s.png", split, i, fileSafe(m.ClassNames[m.Labels[i]]))
		case m.Names != nil:
			files[i] = strings.TrimSuffix(m.Names[i], filepath.Ext(m.Names[i])) + ".png"
		default:
			files[i] = fmt.Sprintf("image_%05d.png", i)
		}
		if j, dup := seen[files[i]]; dup {
			return nil, fmt.Errorf("dataset: exporting to %s: images %d and %d would both be %s", dir, j, i, files[i])
		}
		seen[files[i]] = i
		img := imageio.FromCHW(m.Image(i), m.C, m.H, m.W)
		if err := imageio.WritePNG(filepath.Join(dir, files[i]), img); err != nil {
			return nil, fmt.Errorf("dataset: exporting image %d: %w", i, err)
		}
	}
	if m.Labels != nil {
		if err := writeLabels(filepath.Join(dir, "labels.csv"), files, m.Labels, m.ClassNames); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func writeLabels(path string, files []string, labels []int, classes []string) error {
	rows := [][]string{{"file", "attribute", "label"}}
	for i, f := range files {
		for c, name := range classes {
			v := "0"
			if labels[i] == c {
				v = "1"
			}
			rows = append(rows, []string{f, name, v})
		}
	}
	if err := WriteCSV(path, rows); err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	return nil
}

// WriteCSV writes rows to path through a temporary file renamed into place, so a reader never sees half a file
// and a failed write leaves no file behind.
func WriteCSV(path string, rows [][]string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.WriteAll(rows)
	err = w.Error()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// fileSafe turns a class name into a file name part: "T-shirt/top" becomes
// "T-shirt-top" and "Ankle boot" becomes "Ankle_boot".
func fileSafe(s string) string {
	return strings.NewReplacer("/", "-", " ", "_").Replace(s)
}
