package dataset

import (
	"fmt"
	"math/rand/v2"
)

// Images is a collection of equal-size images as one N×C×H×W float32 tensor
// with values in [-1,1] (pixel p is p/127.5-1).
type Images struct {
	N, C, H, W int
	// Data holds image i at Data[i*C*H*W : (i+1)*C*H*W], planar C×H×W.
	Data []float32
	// Labels holds one class index per image, or is nil when unlabelled.
	Labels []int
	// ClassNames names the classes that Labels index; nil when unlabelled.
	ClassNames []string
	// Names holds a file name per image for images loaded from files (nil
	// for IDX data); ExportPNG uses it.
	Names []string
	// Split is the Fashion-MNIST split ("train" or "test"), else empty.
	Split string
}

// Size returns the number of values in one image, C×H×W.
func (m *Images) Size() int { return m.C * m.H * m.W }

// Image returns image i as a view of m.Data (not a copy).
func (m *Images) Image(i int) []float32 {
	s := m.Size()
	return m.Data[i*s : (i+1)*s : (i+1)*s]
}

// Batch copies the images idx names, in that order, into dst (len(idx)×C×H×W
// values) and returns it; dst is reused when it has room and allocated
// otherwise. When flip is non-nil each image is mirrored left to right with
// probability 1/2, drawing from flip (the usual augmentation of the
// reference's training). Batch panics on an index out of range.
func (m *Images) Batch(idx []int, dst []float32, flip *rand.Rand) []float32 {
	s := m.Size()
	n := len(idx) * s
	if cap(dst) >= n {
		dst = dst[:n]
	} else {
		dst = make([]float32, n)
	}
	for k, i := range idx {
		if i < 0 || i >= m.N {
			panic(fmt.Sprintf("dataset: Batch index %d out of range [0,%d)", i, m.N))
		}
		out := dst[k*s : (k+1)*s]
		if flip == nil || flip.IntN(2) == 0 {
			copy(out, m.Image(i))
			continue
		}
		src := m.Image(i)
		for row := 0; row < m.C*m.H; row++ {
			a, b := src[row*m.W:(row+1)*m.W], out[row*m.W:(row+1)*m.W]
			for x := range b {
				b[x] = a[m.W-1-x]
			}
		}
	}
	return dst
}
