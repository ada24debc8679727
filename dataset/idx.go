// Package dataset loads image collections as model input: Fashion-MNIST from
// its IDX files and folders of PNG, JPEG or GIF files, as N×C×H×W float32
// tensors in [-1,1]. It also exports images as PNG files with a labels.csv,
// to build demo archives for the batch system.
//
// It must not know about models, training or storage: it reads files,
// returns slices, and writes files only where ExportPNG is asked to.
package dataset

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// IDX type codes and the sizes this package accepts.
const (
	idxUbyte     = 0x08
	maxIDXValues = 1 << 32 // refuse headers declaring more than 4 GiB of data
)

// ErrBadIDX is wrapped by every error about the content of an IDX file.
var ErrBadIDX = errors.New("bad IDX file")

// ReadIDXImages reads an IDX file of unsigned bytes with three dimensions
// (images × rows × cols), such as train-images-idx3-ubyte, and returns the
// dimensions and the pixels in row-major order. A gzip-compressed file (name
// ending in .gz, or starting with the gzip magic) is decompressed on the fly.
func ReadIDXImages(path string) (n, rows, cols int, pix []uint8, err error) {
	return readIDXImages(path, 0)
}

// readIDXImages is ReadIDXImages refusing, before reading any pixel, a header that declares more than maxN images
// (0: no limit beyond the 4 GiB of any IDX file).
func readIDXImages(path string, maxN int) (n, rows, cols int, pix []uint8, err error) {
	dims, data, err := readIDX(path, 3, maxN)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	return dims[0], dims[1], dims[2], data, nil
}

// ReadIDXLabels reads an IDX file of unsigned bytes with one dimension, such
// as train-labels-idx1-ubyte; gzip is handled as by ReadIDXImages.
func ReadIDXLabels(path string) ([]uint8, error) {
	_, data, err := readIDX(path, 1, 0)
	return data, err
}

func readIDX(path string, ndim, maxFirst int) ([]int, []uint8, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); strings.HasSuffix(path, ".gz") || bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("dataset: %s: %w: not gzip data: %v", path, ErrBadIDX, err)
		}
		defer zr.Close()
		r = zr
	}
	dims, data, err := parseIDX(r, ndim, maxFirst)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: %s: %w", path, err)
	}
	return dims, data, nil
}

// parseIDX reads an IDX stream of unsigned bytes with ndim dimensions.
// Errors do not name the input; the caller adds it.
func parseIDX(r io.Reader, ndim, maxFirst int) ([]int, []uint8, error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: reading the magic number: %w", ErrBadIDX, eofIsUnexpected(err))
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, nil, fmt.Errorf("%w: magic number % x does not start with two zero bytes", ErrBadIDX, magic)
	}
	if magic[2] != idxUbyte {
		return nil, nil, fmt.Errorf("%w: data type 0x%02x, want 0x08 (unsigned byte)", ErrBadIDX, magic[2])
	}
	if int(magic[3]) != ndim {
		return nil, nil, fmt.Errorf("%w: %d dimensions, want %d", ErrBadIDX, magic[3], ndim)
	}
	raw := make([]byte, 4*ndim)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, nil, fmt.Errorf("%w: reading %d dimensions: %w", ErrBadIDX, ndim, eofIsUnexpected(err))
	}
	dims := make([]int, ndim)
	total := uint64(1)
	for i := range dims {
		d := binary.BigEndian.Uint32(raw[4*i:])
		dims[i] = int(d)
		total *= uint64(d)
		if total > maxIDXValues {
			return nil, nil, fmt.Errorf("%w: dimensions %v declare more than %d values", ErrBadIDX, dims[:i+1], uint64(maxIDXValues))
		}
	}
	if maxFirst > 0 && dims[0] > maxFirst {
		return nil, nil, fmt.Errorf("%w: %d items declared, at most %d expected", ErrBadIDX, dims[0], maxFirst)
	}
	// Grow with the data actually present rather than trusting the header
	// for the allocation; read one byte more to detect trailing garbage.
	var buf bytes.Buffer
	buf.Grow(int(min(total, 64<<20)))
	if _, err := buf.ReadFrom(io.LimitReader(r, int64(total)+1)); err != nil {
		return nil, nil, fmt.Errorf("%w: reading data: %w", ErrBadIDX, err)
	}
	switch got := uint64(buf.Len()); {
	case got < total:
		return nil, nil, fmt.Errorf("%w: dimensions %v need %d bytes of data, file has %d (truncated)", ErrBadIDX, dims, total, got)
	case got > total:
		return nil, nil, fmt.Errorf("%w: dimensions %v need %d bytes of data, file has more", ErrBadIDX, dims, total)
	}
	return dims, buf.Bytes(), nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
