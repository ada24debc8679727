package producer

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

// pngBytes is a small grey PNG; different v give different files.
func pngBytes(t testing.TB, v uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	for i := range img.Pix {
		img.Pix[i] = v + uint8(i)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// namedFile is one file of an archive, in the order it is written.
type namedFile struct {
	name string
	data []byte
}

func pngFiles(t testing.TB, names ...string) []namedFile {
	t.Helper()
	files := make([]namedFile, len(names))
	for i, n := range names {
		files[i] = namedFile{n, pngBytes(t, uint8(16*i))}
	}
	return files
}

// zipWithBadCRC writes the files uncompressed into a zip, then flips the last byte of the member named bad, so
// that reading it ends in zip.ErrChecksum.
func zipWithBadCRC(t testing.TB, files []namedFile, bad string) string {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	var damaged []byte
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f.data)
		if f.name == bad {
			damaged = f.data
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	data := b.Bytes()
	i := bytes.Index(data, damaged)
	if i < 0 {
		t.Fatalf("member %s not found in the zip", bad)
	}
	data[i+len(damaged)-1] ^= 0xff
	p := filepath.Join(t.TempDir(), "damaged.zip")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// truncatedTar writes the files into a plain tar and cuts it in the middle of the member named cut.
func truncatedTar(t testing.TB, files []namedFile, cut string) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	var at []byte
	for _, f := range files {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg})
		tw.Write(f.data)
		if f.name == cut {
			at = f.data
		}
	}
	tw.Close()
	i := bytes.Index(b.Bytes(), at)
	if i < 0 {
		t.Fatalf("member %s not found in the tar", cut)
	}
	p := filepath.Join(t.TempDir(), "truncated.tar")
	if err := os.WriteFile(p, b.Bytes()[:i+len(at)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// walked runs Walk and returns, by member name, "ok" for each file read and the read error for each one not.
func walked(t *testing.T, src string, during func(Item)) (map[string]string, error) {
	t.Helper()
	got := map[string]string{}
	_, err := Walk(context.Background(), nil, src, func(it Item) error {
		name := it.Name
		if i := strings.LastIndex(name, ":"); i >= 0 {
			name = name[i+1:]
		} else {
			name = filepath.Base(name)
		}
		switch {
		case it.Err != nil && it.Data != nil:
			t.Errorf("%s: an item with an error and data", it.Name)
		case it.Err != nil:
			got[name] = it.Err.Error()
		default:
			got[name] = "ok"
		}
		if during != nil {
			during(it)
		}
		return nil
	})
	return got, err
}

// A zip member with a bad checksum fails on its own: the members after it are still read and the walk succeeds.
func TestWalkZipBadChecksum(t *testing.T) {
	t.Parallel()
	src := zipWithBadCRC(t, pngFiles(t, "a.png", "b.png", "c.png"), "b.png")
	got, err := walked(t, src, nil)
	if err != nil {
		t.Fatalf("Walk(%s): %v", src, err)
	}
	if got["a.png"] != "ok" || got["c.png"] != "ok" || !strings.Contains(got["b.png"], zip.ErrChecksum.Error()) {
		t.Errorf("Walk(%s) = %v, want a.png and c.png read and b.png failed with %q", src, got, zip.ErrChecksum)
	}
}

// A tar cut in the middle of a member: the members before it are read, the cut one is passed on with its error,
// and then the walk stops with an error (a tar stream cannot be read past it).
func TestWalkTarTruncated(t *testing.T) {
	t.Parallel()
	src := truncatedTar(t, pngFiles(t, "a.png", "b.png", "c.png"), "b.png")
	got, err := walked(t, src, nil)
	if err == nil {
		t.Fatalf("Walk(%s) = nil error for a truncated tar", src)
	}
	if got["a.png"] != "ok" || !strings.Contains(got["b.png"], io.ErrUnexpectedEOF.Error()) || got["c.png"] != "" {
		t.Errorf("Walk(%s) = %v, want a.png read, b.png failed with %q, c.png not reached", src, got, io.ErrUnexpectedEOF)
	}
}

// A file of a folder that goes away between the listing and the reading fails on its own.
func TestWalkFolderFileGone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, f := range pngFiles(t, "a.png", "b.png", "c.png") {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := walked(t, dir, func(it Item) {
		if filepath.Base(it.Name) == "a.png" {
			os.Remove(filepath.Join(dir, "b.png"))
		}
	})
	if err != nil {
		t.Fatalf("Walk(%s): %v", dir, err)
	}
	if got["a.png"] != "ok" || got["c.png"] != "ok" || !strings.Contains(got["b.png"], "no such file") {
		t.Errorf("Walk(%s) = %v, want a.png and c.png read and b.png failed as missing", dir, got)
	}
}

// A file that cannot be opened (mode 000) fails on its own. Root reads it anyway: then there is nothing to test.
func TestWalkFolderUnreadableFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, f := range pngFiles(t, "a.png", "b.png", "c.png") {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "b.png"), 0); err != nil {
		t.Fatal(err)
	}
	if f, err := os.Open(filepath.Join(dir, "b.png")); err == nil {
		f.Close()
		t.Skip("a file of mode 000 can be read here (running as root)")
	}
	got, err := walked(t, dir, nil)
	if err != nil {
		t.Fatalf("Walk(%s): %v", dir, err)
	}
	if got["a.png"] != "ok" || got["c.png"] != "ok" || !strings.Contains(got["b.png"], "permission denied") {
		t.Errorf("Walk(%s) = %v, want a.png and c.png read and b.png failed with permission denied", dir, got)
	}
}

// Which S3 read errors fail the object (it is gone) and which stop the run (anything that may pass).
func TestObjectGone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		gone bool
	}{
		{fmt.Errorf("store: get s3://b/k: %w", minio.ErrorResponse{Code: "NoSuchKey", StatusCode: 404}), true},
		{fmt.Errorf("store: get s3://b/k: %w", minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}), false},
		{fmt.Errorf("store: get s3://b/k: %w", minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}), false},
		{fmt.Errorf("store: get s3://b/k: %w", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}), false},
		{fmt.Errorf("store: get s3://b/k: %w", io.ErrUnexpectedEOF), false},
		{context.Canceled, false},
	}
	for _, tt := range tests {
		if got := objectGone(tt.err); got != tt.gone {
			t.Errorf("objectGone(%v) = %v, want %v", tt.err, got, tt.gone)
		}
	}
}
