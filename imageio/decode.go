// Package imageio turns image files into the model's input tensors and the
// model's output tensors back into image files.
//
// It decodes PNG, JPEG and GIF (first frame), checking the header against
// [Limits] before any pixel memory is allocated; resizes and centre-crops to
// the model's square size; converts to planar C×H×W float32 in [-1,1] by
// p/127.5-1; converts back; writes PNG files atomically; and lays images out
// on contact sheets.
//
// Every error caused by the bytes of an input (not an image, empty, too
// large, corrupt or truncated) wraps one of the sentinel errors below and
// names the input, so callers can fail such a job permanently with
// [IsInvalid] and retry everything else.
//
// The package must not know about models, queues or storage: it takes
// readers, paths and images and returns images, slices and errors.
package imageio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // register GIF
	_ "image/jpeg"
	_ "image/png"
	"io"
	"os"
)

// DefaultMaxPixels is the pixel budget used when Limits.MaxPixels is zero.
const DefaultMaxPixels = 40_000_000

// Limits bounds what Decode accepts.
type Limits struct {
	// MaxPixels is the largest width×height a header may promise.
	// Zero means DefaultMaxPixels; a negative value disables the check.
	MaxPixels int64
}

func (l Limits) maxPixels() int64 {
	if l.MaxPixels == 0 {
		return DefaultMaxPixels
	}
	return l.MaxPixels
}

// Sentinel errors for inputs that will never decode, whatever the retry.
var (
	// ErrNotImage: the bytes are not in a supported image format (this
	// includes an empty file and, say, a text file named .jpg).
	ErrNotImage = errors.New("not a PNG, JPEG or GIF image")
	// ErrEmpty: the header declares a zero width or height.
	ErrEmpty = errors.New("image has zero width or height")
	// ErrTooLarge: the header declares more pixels than Limits allow.
	ErrTooLarge = errors.New("image too large")
	// ErrCorrupt: the header is valid but the data is damaged or truncated.
	ErrCorrupt = errors.New("corrupt or truncated image")
)

// IsInvalid reports whether err says that the input itself is bad (any of
// ErrNotImage, ErrEmpty, ErrTooLarge, ErrCorrupt), so that retrying the same
// bytes cannot succeed. I/O errors from the reader are not invalid inputs.
func IsInvalid(err error) bool {
	return errors.Is(err, ErrNotImage) || errors.Is(err, ErrEmpty) ||
		errors.Is(err, ErrTooLarge) || errors.Is(err, ErrCorrupt)
}

// ioErrReader remembers the first non-EOF error of the underlying reader, so
// that a failing disk or network is not mistaken for a corrupt image.
type ioErrReader struct {
	r   io.Reader
	err error
}

func (e *ioErrReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// Decode decodes one PNG, JPEG or GIF image from r; name identifies the input
// in errors (a path or an object key). The header is checked first: a zero
// dimension gives ErrEmpty and more than lim's pixel budget gives ErrTooLarge,
// both before the pixels are allocated.
func Decode(r io.Reader, name string, lim Limits) (image.Image, error) {
	er := &ioErrReader{r: r}
	// Keep the bytes DecodeConfig consumes so the full decode can replay them
	// without requiring a seekable reader or reading the whole file first.
	var head bytes.Buffer
	cfg, format, err := image.DecodeConfig(io.TeeReader(er, &head))
	if err != nil {
		if er.err != nil {
			return nil, fmt.Errorf("imageio: reading %s: %w", name, er.err)
		}
		switch {
		case head.Len() == 0:
			return nil, fmt.Errorf("imageio: %s: %w: the file is empty", name, ErrNotImage)
		case pngZeroSize(head.Bytes()):
			// Go's PNG reader rejects a zero dimension as a format error;
			// report it as what it is.
			return nil, fmt.Errorf("imageio: %s: %w: png header says %d×%d", name, ErrEmpty,
				binary.BigEndian.Uint32(head.Bytes()[16:]), binary.BigEndian.Uint32(head.Bytes()[20:]))
		case errors.Is(err, image.ErrFormat):
			return nil, fmt.Errorf("imageio: %s: %w (starts with %q)", name, ErrNotImage, prefix(head.Bytes(), 8))
		default:
			return nil, fmt.Errorf("imageio: %s: %w: bad header: %v", name, ErrCorrupt, err)
		}
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("imageio: %s: %w: %s header says %d×%d", name, ErrEmpty, format, cfg.Width, cfg.Height)
	}
	if limit, px := lim.maxPixels(), int64(cfg.Width)*int64(cfg.Height); limit >= 0 && px > limit {
		return nil, fmt.Errorf("imageio: %s: %w: %s header says %d×%d = %d pixels, limit %d",
			name, ErrTooLarge, format, cfg.Width, cfg.Height, px, limit)
	}
	img, _, err := image.Decode(io.MultiReader(&head, er))
	if err != nil {
		if er.err != nil {
			return nil, fmt.Errorf("imageio: reading %s: %w", name, er.err)
		}
		return nil, fmt.Errorf("imageio: %s: %w: %s %d×%d: %v", name, ErrCorrupt, format, cfg.Width, cfg.Height, err)
	}
	return img, nil
}

// pngZeroSize reports whether b starts with a PNG signature and an IHDR chunk
// that declares a zero width or height.
func pngZeroSize(b []byte) bool {
	if len(b) < 24 || string(b[:8]) != "\x89PNG\r\n\x1a\n" || string(b[12:16]) != "IHDR" {
		return false
	}
	return binary.BigEndian.Uint32(b[16:]) == 0 || binary.BigEndian.Uint32(b[20:]) == 0
}

func prefix(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// DecodeFile opens path and decodes it with Decode, naming it by its path.
func DecodeFile(path string, lim Limits) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("imageio: %w", err)
	}
	defer f.Close()
	return Decode(f, path, lim)
}
