package dataset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultFashionMNISTDir is where Debian's dataset-fashion-mnist package
// installs the IDX files; callers should let users override it.
const DefaultFashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// FashionMNISTSize is the side of the padded images LoadFashionMNIST returns.
const FashionMNISTSize = 32

// FashionMNISTClasses returns the names of the ten Fashion-MNIST classes,
// indexed by label.
func FashionMNISTClasses() []string {
	return []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
		"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
}

// maxFashionImages bounds the images LoadFashionMNIST reads from one split.
const maxFashionImages = 100_000

// LoadFashionMNIST reads split ("train", 60000 images, or "test", 10000) of
// Fashion-MNIST from the IDX files in dir (train-images-idx3-ubyte and so on,
// each optionally gzipped with a .gz suffix) and returns the images padded
// from 28×28 to 32×32 with 2 pixels of background (pixel 0, value -1) on
// every side, as N×1×32×32 values in [-1,1], with their labels.
func LoadFashionMNIST(dir, split string) (*Images, error) {
	var prefix string
	switch split {
	case "train":
		prefix = "train"
	case "test":
		prefix = "t10k"
	default:
		return nil, fmt.Errorf("dataset: Fashion-MNIST split %q: want \"train\" or \"test\"", split)
	}
	imgPath, err := findIDX(dir, prefix+"-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	lblPath, err := findIDX(dir, prefix+"-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}
	// Fashion-MNIST has 60,000 training and 10,000 test images: a header declaring far more (a small gzip bomb can
	// carry gigabytes of zeros) is refused before its pixels are read and padded.
	n, rows, cols, pix, err := readIDXImages(imgPath, maxFashionImages)
	if err != nil {
		return nil, err
	}
	if rows != 28 || cols != 28 {
		return nil, fmt.Errorf("dataset: %s: %w: images are %d×%d, Fashion-MNIST's are 28×28", imgPath, ErrBadIDX, rows, cols)
	}
	labels, err := ReadIDXLabels(lblPath)
	if err != nil {
		return nil, err
	}
	if len(labels) != n {
		return nil, fmt.Errorf("dataset: %s has %d labels for the %d images of %s", lblPath, len(labels), n, imgPath)
	}
	classes := FashionMNISTClasses()
	m := &Images{
		N: n, C: 1, H: FashionMNISTSize, W: FashionMNISTSize,
		Data:       padImages(pix, n, 28, FashionMNISTSize),
		Labels:     make([]int, n),
		ClassNames: classes,
		Split:      split,
	}
	for i, l := range labels {
		if int(l) >= len(classes) {
			return nil, fmt.Errorf("dataset: %s: %w: label %d of image %d is not a class (0..%d)", lblPath, ErrBadIDX, l, i, len(classes)-1)
		}
		m.Labels[i] = int(l)
	}
	return m, nil
}

// findIDX returns dir/name, or dir/name.gz when only that exists.
func findIDX(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	for _, c := range []string{p, p + ".gz"} {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("dataset: %w", err)
		}
	}
	return "", fmt.Errorf("dataset: neither %s nor %s.gz exists (is Fashion-MNIST installed there?): %w", p, name, os.ErrNotExist)
}

// padImages centres n square src×src byte images on dst×dst canvases of
// pixel 0 and maps them to [-1,1].
func padImages(pix []uint8, n, src, dst int) []float32 {
	out := make([]float32, n*dst*dst)
	for i := range out {
		out[i] = -1
	}
	off := (dst - src) / 2
	for i := 0; i < n; i++ {
		in := pix[i*src*src : (i+1)*src*src]
		o := out[i*dst*dst : (i+1)*dst*dst]
		for y := 0; y < src; y++ {
			row := o[(y+off)*dst+off : (y+off)*dst+off+src]
			for x, p := range in[y*src : (y+1)*src] {
				row[x] = float32(p)/127.5 - 1
			}
		}
	}
	return out
}
