package dataset

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"dae/imageio"
)

// imageExts are the file name extensions LoadFolder reads, lower case.
var imageExts = []string{".png", ".jpg", ".jpeg", ".gif"}

// LoadFolder reads every PNG, JPEG and GIF file directly in dir (not in
// subdirectories; other files are ignored), in sorted name order, and
// converts each with imageio.ToCHW to size×size with channels 1 or 3. Names
// records the file names. One bad file fails the whole load with an error
// naming it that wraps imageio's classification (errors.Is with
// imageio.ErrCorrupt and so on): a training or evaluation set should not
// silently shrink.
func LoadFolder(dir string, size, channels int, lim imageio.Limits) (*Images, error) {
	if size < 1 || (channels != 1 && channels != 3) {
		return nil, fmt.Errorf("dataset: loading %s: size %d, channels %d (want size ≥ 1 and 1 or 3 channels)", dir, size, channels)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	var names []string // os.ReadDir sorts by name
	for _, e := range entries {
		if e.Type().IsRegular() && slices.Contains(imageExts, strings.ToLower(filepath.Ext(e.Name()))) {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("dataset: %s holds no .png, .jpg, .jpeg or .gif files", dir)
	}
	m := &Images{N: len(names), C: channels, H: size, W: size, Names: names}
	m.Data = make([]float32, m.N*m.Size())
	for i, name := range names {
		img, err := imageio.DecodeFile(filepath.Join(dir, name), lim)
		if err != nil {
			return nil, fmt.Errorf("dataset: loading %s: %w", dir, err)
		}
		imageio.ToCHW(img, size, channels, m.Image(i))
	}
	return m, nil
}
