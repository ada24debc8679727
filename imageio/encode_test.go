package imageio

import (
	"bytes"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWritePNG(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "out.png")
	img := testImage(7, 5)
	for range 2 { // the second write replaces the first
		if err := WritePNG(path, img); err != nil {
			t.Fatal(err)
		}
	}
	got, err := DecodeFile(path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for y := 0; y < 5; y++ {
		for x := 0; x < 7; x++ {
			if g, w := color.NRGBAModel.Convert(got.At(x, y)), img.At(x, y); g != w {
				t.Fatalf("(%d,%d) = %v, want %v", x, y, g, w)
			}
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only out.png (temporary file left behind?)", len(entries))
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}

	missing := filepath.Join(dir, "no", "such", "dir", "x.png")
	if err := WritePNG(missing, img); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("WritePNG into a missing directory: error %v, want one naming %s", err, missing)
	}
	if err := WritePNG(filepath.Join(dir, "empty.png"), image.NewGray(image.Rect(0, 0, 0, 0))); err == nil {
		t.Error("WritePNG of an empty image: no error")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a failed write left %d entries", len(entries))
	}
}

func TestEncodePNG(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	g := FromCHW([]float32{-1, 0, 1, 0.5}, 1, 2, 2)
	if err := EncodePNG(&b, g); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(&b, "encoded", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if gg, ok := got.(*image.Gray); !ok || !bytes.Equal(gg.Pix, []uint8{0, 128, 255, 191}) {
		t.Errorf("decoded %T %v", got, got)
	}
}
