package producer

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"dae/imageio"
)

// writeArchives writes the same files as a folder, a .tar.gz and a .zip, and returns their paths.
func writeArchives(t *testing.T, files map[string]string) (dir, tgz, zp string) {
	t.Helper()
	root := t.TempDir()
	dir = filepath.Join(root, "folder")
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tgz = filepath.Join(root, "a.tar.gz")
	f, _ := os.Create(tgz)
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(data))
	}
	tw.Close()
	gz.Close()
	f.Close()
	zp = filepath.Join(root, "a.zip")
	f, _ = os.Create(zp)
	zw := zip.NewWriter(f)
	for name, data := range files {
		w, _ := zw.Create(name)
		w.Write([]byte(data))
	}
	zw.Close()
	f.Close()
	return dir, tgz, zp
}

func TestWalkSources(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"a.png":         "A",
		"sub/b.JPG":     "B",
		"sub/c.gif":     "C",
		"labels.csv":    "file,attribute,label\n",
		".hidden.png":   "H",
		".git/x.png":    "X",
		"notes.txt.png": "N",
	}
	dir, tgz, zp := writeArchives(t, files)
	want := map[string]string{"a.png": "A", "sub/b.JPG": "B", "sub/c.gif": "C", "notes.txt.png": "N"}
	for _, src := range []string{dir, tgz, zp} {
		got := map[string]string{}
		ignored, err := Walk(context.Background(), nil, src, func(it Item) error {
			name := it.Name
			if i := strings.LastIndex(name, ":"); i >= 0 {
				name = name[i+1:]
			} else {
				name, _ = filepath.Rel(dir, name)
				name = filepath.ToSlash(name)
			}
			got[name] = string(it.Data)
			return nil
		})
		if err != nil {
			t.Fatalf("Walk(%s): %v", src, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Walk(%s) = %v, want %v", src, got, want)
		}
		if ignored != 1 {
			t.Errorf("Walk(%s) ignored %d files, want 1 (labels.csv)", src, ignored)
		}
	}
}

func TestWalkRejectsUnknownSource(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "x.rar")
	os.WriteFile(p, []byte("x"), 0o644)
	for _, src := range []string{p, filepath.Join(t.TempDir(), "missing"), "s3://"} {
		if _, err := Walk(context.Background(), nil, src, func(Item) error { return nil }); err == nil {
			t.Errorf("Walk(%s) = nil error", src)
		}
	}
}

func TestCheckHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, want string
	}{
		{"empty", "", "the file is empty"},
		{"text", "hello, world", "not a PNG, JPEG or GIF"},
		{"truncated header", "\x89PNG\r\n\x1a\n\x00\x00", "bad header"},
	}
	for _, tt := range tests {
		_, _, err := checkHeader([]byte(tt.data), tt.name, imageio.Limits{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("checkHeader(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}
