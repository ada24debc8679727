package dataset

import (
	"errors"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dae/imageio"
)

func TestLoadFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i, name := range []string{"b.png", "a.PNG", "c.gif"} {
		m := image.NewRGBA(image.Rect(0, 0, 40, 20))
		for p := 0; p < len(m.Pix); p += 4 {
			m.Pix[p], m.Pix[p+1], m.Pix[p+2], m.Pix[p+3] = uint8(50*i), 100, 200, 255
		}
		if err := imageio.WritePNG(filepath.Join(dir, name), m); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub.png"), 0o755)

	m, err := LoadFolder(dir, 8, 3, imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.N != 3 || m.C != 3 || m.H != 8 || m.W != 8 || len(m.Data) != 3*3*64 {
		t.Fatalf("N %d C %d H %d W %d", m.N, m.C, m.H, m.W)
	}
	if strings.Join(m.Names, " ") != "a.PNG b.png c.gif" {
		t.Errorf("names %q, want sorted image files only", m.Names)
	}
	// a.PNG was written second (red 50), in sorted order it comes first.
	if v := m.Image(0)[0]; v < 50/127.5-1-0.01 || v > 50/127.5-1+0.01 {
		t.Errorf("first image red = %v, want about %v", v, 50/127.5-1)
	}
	if m.Labels != nil {
		t.Error("folder images have labels")
	}

	g, err := LoadFolder(dir, 8, 1, imageio.Limits{})
	if err != nil || g.C != 1 || len(g.Data) != 3*64 {
		t.Fatalf("grey: %v", err)
	}
}

func TestLoadFolderErrors(t *testing.T) {
	t.Parallel()
	grey := image.NewGray(image.Rect(0, 0, 4, 4))
	grey.Set(1, 1, color.White)
	tests := []struct {
		name     string
		setup    func(dir string)
		size, ch int
		lim      imageio.Limits
		want     error
		wantMsg  string
	}{
		{"empty folder", func(string) {}, 4, 1, imageio.Limits{}, nil, "holds no"},
		{"bad channels", func(string) {}, 4, 2, imageio.Limits{}, nil, "channels 2"},
		{"text named jpg", func(dir string) {
			imageio.WritePNG(filepath.Join(dir, "a.png"), grey)
			os.WriteFile(filepath.Join(dir, "b.jpg"), []byte("not a jpeg"), 0o644)
		}, 4, 1, imageio.Limits{}, imageio.ErrNotImage, "b.jpg"},
		{"too large", func(dir string) {
			imageio.WritePNG(filepath.Join(dir, "a.png"), grey)
		}, 4, 1, imageio.Limits{MaxPixels: 15}, imageio.ErrTooLarge, "a.png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tt.setup(dir)
			_, err := LoadFolder(dir, tt.size, tt.ch, tt.lim)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("error %v, want %v saying %q", err, tt.want, tt.wantMsg)
			}
		})
	}
	if _, err := LoadFolder(filepath.Join(t.TempDir(), "missing"), 4, 1, imageio.Limits{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing folder: %v", err)
	}
}
