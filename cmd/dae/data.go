package main

import (
	"fmt"
	"os"
	"path/filepath"

	"dae/dataset"
	"dae/imageio"
)

// loadImages reads a training or evaluation set: Fashion-MNIST IDX files (split "train" or "test") when dir holds
// them, otherwise every image in the folder, resized and cropped to size with the given channels.
func loadImages(dir, split string, size, channels int) (*dataset.Images, error) {
	if dir == "" {
		dir = dataset.DefaultFashionMNISTDir
	}
	if isIDXDir(dir) {
		if size != dataset.FashionMNISTSize || channels != 1 {
			return nil, fmt.Errorf("--data %s: Fashion-MNIST is 32×32 grey, the model wants %d×%d with %d channels",
				dir, size, size, channels)
		}
		return dataset.LoadFashionMNIST(dir, split)
	}
	return dataset.LoadFolder(dir, size, channels, imageio.Limits{})
}

func isIDXDir(dir string) bool {
	for _, n := range []string{"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"} {
		for _, ext := range []string{"", ".gz"} {
			if _, err := os.Stat(filepath.Join(dir, n+ext)); err == nil {
				return true
			}
		}
	}
	return false
}
