package imageio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// pngHeader returns a PNG signature and an IHDR chunk for an 8-bit RGB image
// of the given size, with no pixel data after it.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := make([]byte, 0, 17)
	chunk = append(chunk, "IHDR"...)
	chunk = binary.BigEndian.AppendUint32(chunk, w)
	chunk = binary.BigEndian.AppendUint32(chunk, h)
	chunk = append(chunk, 8, 2, 0, 0, 0) // depth 8, RGB, deflate, no filter, no interlace
	b.Write(binary.BigEndian.AppendUint32(nil, 13))
	b.Write(chunk)
	b.Write(binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(chunk)))
	return b.Bytes()
}

func testImage(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetNRGBA(x, y, color.NRGBA{uint8(x * 7), uint8(y * 13), uint8(x*y + 5), 255})
		}
	}
	return m
}

func encoded(t *testing.T, format string, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&b, img)
	case "jpeg":
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 95})
	case "gif":
		err = gif.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecode(t *testing.T) {
	t.Parallel()
	img := testImage(20, 12)
	pngData := encoded(t, "png", img)
	jpegData := encoded(t, "jpeg", img)
	gifData := encoded(t, "gif", img)
	corruptPNG := bytes.Clone(pngData)
	for i := 40; i < len(corruptPNG)-20; i++ {
		corruptPNG[i] ^= 0x5a
	}

	tests := []struct {
		name    string
		data    []byte
		lim     Limits
		want    error // nil: decodes
		wantMsg string
	}{
		{name: "png", data: pngData},
		{name: "jpeg", data: jpegData},
		{name: "gif", data: gifData},
		{name: "at the limit", data: pngData, lim: Limits{MaxPixels: 20 * 12}},
		{name: "no limit, no pixel data", data: pngHeader(10, 10), lim: Limits{MaxPixels: -1}, want: ErrCorrupt},
		{name: "empty file", data: nil, want: ErrNotImage, wantMsg: "empty"},
		{name: "text named jpg", data: []byte("hello, this is not a picture\n"), want: ErrNotImage, wantMsg: `"hello, t"`},
		{name: "png signature only", data: pngData[:8], want: ErrCorrupt},
		{name: "png truncated header", data: pngData[:20], want: ErrCorrupt},
		{name: "png truncated data", data: pngData[:len(pngData)/2], want: ErrCorrupt},
		{name: "png corrupt data", data: corruptPNG, want: ErrCorrupt},
		{name: "jpeg truncated", data: jpegData[:len(jpegData)/2], want: ErrCorrupt},
		{name: "jpeg marker only", data: jpegData[:2], want: ErrCorrupt},
		{name: "gif truncated", data: gifData[:len(gifData)/2], want: ErrCorrupt},
		{name: "png zero width", data: pngHeader(0, 10), want: ErrEmpty, wantMsg: "0×10"},
		{name: "png zero height", data: pngHeader(10, 0), want: ErrEmpty},
		{name: "gif zero size", data: []byte("GIF89a\x00\x00\x00\x00\x00\x00\x00;"), want: ErrEmpty},
		{name: "over default limit", data: pngHeader(8000, 6000), want: ErrTooLarge, wantMsg: "8000×6000"},
		{name: "over custom limit", data: pngData, lim: Limits{MaxPixels: 20*12 - 1}, want: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode(bytes.NewReader(tt.data), "in/"+tt.name+".jpg", tt.lim)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if got.Bounds() != img.Bounds() {
					t.Fatalf("bounds %v, want %v", got.Bounds(), img.Bounds())
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode error %v, want %v", err, tt.want)
			}
			if !IsInvalid(err) {
				t.Errorf("IsInvalid(%v) = false", err)
			}
			if !strings.Contains(err.Error(), "in/"+tt.name+".jpg") {
				t.Errorf("error %q does not name the input", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestDecodeReplaysHeader(t *testing.T) {
	t.Parallel()
	// Decode must see every byte DecodeConfig consumed: compare pixels.
	img := testImage(300, 200) // bigger than bufio's 4 KiB look-ahead once encoded
	got, err := Decode(iotest.OneByteReader(bytes.NewReader(encoded(t, "png", img))), "big.png", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for y := 0; y < 200; y++ {
		for x := 0; x < 300; x++ {
			if g, w := color.NRGBAModel.Convert(got.At(x, y)), img.At(x, y); g != w {
				t.Fatalf("pixel (%d,%d) = %v, want %v", x, y, g, w)
			}
		}
	}
}

func TestDecodeReaderErrorIsNotInvalid(t *testing.T) {
	t.Parallel()
	pngData := encoded(t, "png", testImage(50, 50))
	boom := errors.New("disk on fire")
	for _, n := range []int{0, 30, len(pngData) / 2} {
		r := iotestErrAfter(pngData[:n], boom)
		_, err := Decode(r, "x.png", Limits{})
		if !errors.Is(err, boom) || IsInvalid(err) {
			t.Errorf("after %d bytes: error %v; want the reader's error, not an invalid input", n, err)
		}
	}
}

func iotestErrAfter(b []byte, err error) *errAfter { return &errAfter{b: b, err: err} }

type errAfter struct {
	b   []byte
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	if len(e.b) == 0 {
		return 0, e.err
	}
	n := copy(p, e.b)
	e.b = e.b[n:]
	return n, nil
}

func TestDecodeTooLargeAllocatesNothing(t *testing.T) {
	// Not parallel: it reads the process-wide allocation counter.
	// 50000×50000 RGB would need 7.5 GB; refusing it must cost next to nothing.
	data := append(pngHeader(50000, 50000), make([]byte, 1000)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Decode(bytes.NewReader(data), "huge.png", Limits{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want ErrTooLarge", err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("refusing a huge header allocated %d bytes", d)
	}
}

func TestDecodeFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "a.png")
	bad := filepath.Join(dir, "notes.jpg")
	os.WriteFile(good, encoded(t, "png", testImage(3, 4)), 0o644)
	os.WriteFile(bad, []byte("just text"), 0o644)
	if m, err := DecodeFile(good, Limits{}); err != nil || m.Bounds().Dx() != 3 {
		t.Errorf("DecodeFile(good) = %v, %v", m, err)
	}
	if _, err := DecodeFile(bad, Limits{}); !errors.Is(err, ErrNotImage) || !strings.Contains(err.Error(), bad) {
		t.Errorf("DecodeFile(bad) error %v, want ErrNotImage naming %s", err, bad)
	}
	if _, err := DecodeFile(filepath.Join(dir, "missing.png"), Limits{}); !errors.Is(err, os.ErrNotExist) || IsInvalid(err) {
		t.Errorf("DecodeFile(missing) error %v, want a not-exist error", err)
	}
}
