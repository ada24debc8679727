package dataset

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// idxBytes builds an IDX file of unsigned bytes.
func idxBytes(dims []uint32, data []byte) []byte {
	b := []byte{0, 0, idxUbyte, byte(len(dims))}
	for _, d := range dims {
		b = append(b, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
	}
	return append(b, data...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadIDXImages(t *testing.T) {
	t.Parallel()
	pix := make([]byte, 2*3*4)
	for i := range pix {
		pix[i] = byte(i * 10)
	}
	good := idxBytes([]uint32{2, 3, 4}, pix)
	tests := []struct {
		name    string
		file    string
		data    []byte
		wantErr string // empty: success
	}{
		{name: "raw", file: "a-idx3-ubyte", data: good},
		{name: "gz by name", file: "a-idx3-ubyte.gz", data: gz(good)},
		{name: "gz by magic", file: "a-idx3-ubyte", data: gz(good)},
		{name: "empty", file: "e", data: nil, wantErr: "magic number: unexpected EOF"},
		{name: "bad magic", file: "m", data: append([]byte{1, 2}, good[2:]...), wantErr: "two zero bytes"},
		{name: "not ubyte", file: "f", data: append([]byte{0, 0, 0x0d}, good[3:]...), wantErr: "data type 0x0d"},
		{name: "labels file", file: "l", data: idxBytes([]uint32{3}, []byte{1, 2, 3}), wantErr: "1 dimensions, want 3"},
		{name: "short header", file: "h", data: good[:9], wantErr: "reading 3 dimensions"},
		{name: "truncated", file: "t", data: good[:len(good)-1], wantErr: "file has 23 (truncated)"},
		{name: "trailing bytes", file: "x", data: append(bytes.Clone(good), 0), wantErr: "file has more"},
		{name: "huge header", file: "big", data: idxBytes([]uint32{1 << 20, 1 << 10, 1 << 10}, nil), wantErr: "declare more than"},
		{name: "gz name, not gz", file: "n.gz", data: good, wantErr: "not gzip data"},
		{name: "truncated gz", file: "tg.gz", data: gz(good)[:20], wantErr: "unexpected EOF"},
		{name: "gz without trailer", file: "tt.gz", data: func() []byte { b := gz(good); return b[:len(b)-4] }(), wantErr: "reading data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), tt.file, tt.data)
			n, rows, cols, got, err := ReadIDXImages(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) || !errors.Is(err, ErrBadIDX) {
					t.Fatalf("error %v, want ErrBadIDX naming %s and saying %q", err, path, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != 2 || rows != 3 || cols != 4 || !bytes.Equal(got, pix) {
				t.Errorf("got %d×%d×%d %v", n, rows, cols, got)
			}
		})
	}
	if _, _, _, _, err := ReadIDXImages(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadIDXLabels(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := writeFile(t, dir, "l.gz", gz(idxBytes([]uint32{4}, []byte{9, 0, 3, 3})))
	got, err := ReadIDXLabels(p)
	if err != nil || !bytes.Equal(got, []byte{9, 0, 3, 3}) {
		t.Errorf("ReadIDXLabels = %v, %v", got, err)
	}
	p = writeFile(t, dir, "i", idxBytes([]uint32{1, 1, 1}, []byte{7}))
	if _, err := ReadIDXLabels(p); err == nil || !strings.Contains(err.Error(), "3 dimensions, want 1") {
		t.Errorf("images file read as labels: %v", err)
	}
}
