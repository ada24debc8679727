package imageio

import (
	"bufio"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
)

// EncodePNG writes img to w as PNG.
func EncodePNG(w io.Writer, img image.Image) error {
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("imageio: encoding PNG: %w", err)
	}
	return nil
}

// WritePNG writes img as a PNG file at path, atomically: the bytes go to a
// temporary file in the same directory, which is synced and then renamed, so
// readers see either the old file or the complete new one.
func WritePNG(path string, img image.Image) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("imageio: writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriter(f)
	if err = png.Encode(bw, img); err != nil {
		return fmt.Errorf("imageio: encoding %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("imageio: writing %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; an image is an ordinary file.
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("imageio: writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("imageio: writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("imageio: writing %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("imageio: writing %s: %w", path, err)
	}
	return nil
}
