package imageio

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"golang.org/x/image/draw"
)

// toUnit maps an 8-bit value p to p/127.5-1 exactly as float32 arithmetic
// computes it, so that tensors match the reference fixtures bit for bit.
var toUnit = func() (t [256]float32) {
	for p := range t {
		t[p] = float32(float32(p)/127.5) - 1
	}
	return t
}()

// ToCHW converts img to the model's input: the image is resized so that its
// shorter side is size (Catmull-Rom, which widens its kernel when shrinking,
// so downscaling is antialiased), centre-cropped to size×size (the odd pixel
// goes to the right and bottom), converted to grey (channels 1) or RGB
// (channels 3), and each 8-bit value p becomes p/127.5-1 in planar C×H×W
// order. An image that is already size×size is not resampled at all.
//
// Grey is Pillow's convert("L"): L = (19595R + 38470G + 7471B + 2¹⁵) >> 16,
// the ITU-R 601-2 weights 0.299, 0.587, 0.114 with rounding; a grey source
// keeps its values. Alpha is dropped from non-premultiplied colour, as
// Pillow's convert("RGB") does.
//
// The result is written to dst when it has room for channels×size×size
// values and allocated otherwise. ToCHW panics if size < 1 or channels is not
// 1 or 3: those are programming errors, not bad inputs.
func ToCHW(img image.Image, size, channels int, dst []float32) []float32 {
	if size < 1 || (channels != 1 && channels != 3) {
		panic(fmt.Sprintf("imageio.ToCHW: size %d, channels %d (want size ≥ 1 and 1 or 3 channels)", size, channels))
	}
	n := channels * size * size
	if cap(dst) >= n {
		dst = dst[:n]
	} else {
		dst = make([]float32, n)
	}
	src, x0, y0 := resizeCrop(img, size)
	plane := size * size
	if g, ok := src.(*image.Gray); ok {
		for y := 0; y < size; y++ {
			row := g.Pix[g.PixOffset(x0, y0+y):]
			for x := 0; x < size; x++ {
				v := toUnit[row[x]]
				for c := 0; c < channels; c++ {
					dst[c*plane+y*size+x] = v
				}
			}
		}
		return dst
	}
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			r, g, b := rgb8(src, x0+x, y0+y)
			i := y*size + x
			if channels == 1 {
				dst[i] = toUnit[luma(r, g, b)]
				continue
			}
			dst[i] = toUnit[r]
			dst[plane+i] = toUnit[g]
			dst[2*plane+i] = toUnit[b]
		}
	}
	return dst
}

// luma is Pillow's rgb2l.
func luma(r, g, b uint8) uint8 {
	return uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 0x8000) >> 16)
}

// rgb8 returns the non-premultiplied 8-bit colour at (x, y), with fast paths
// for the types the decoders and resizeCrop produce.
func rgb8(img image.Image, x, y int) (r, g, b uint8) {
	switch m := img.(type) {
	case *image.NRGBA:
		p := m.Pix[m.PixOffset(x, y):]
		return p[0], p[1], p[2]
	case *image.RGBA:
		p := m.Pix[m.PixOffset(x, y):]
		if p[3] == 0xff {
			return p[0], p[1], p[2]
		}
	}
	c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
	return c.R, c.G, c.B
}

// resizeCrop returns an image and the top-left corner of the size×size
// window to read from it. It resamples only the part of the image that the
// centre crop needs (plus the kernel's reach), so a very long, thin image
// does not become a huge intermediate: the resized long side is at most
// 4×size (the whole image is resampled, exactly as a resize then a crop) or
// it is cut to a window of source pixels whose resized ends are rounded to
// whole pixels (a shift of under half an output pixel, on images more than 4
// times longer than wide).
func resizeCrop(img image.Image, size int) (image.Image, int, int) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w == size && h == size {
		return img, b.Min.X, b.Min.Y
	}
	// As torchvision's Resize(size): the longer side is truncated.
	rw, rh := size, size
	if w < h {
		rh = int(int64(size) * int64(h) / int64(w))
	} else {
		rw = int(int64(size) * int64(w) / int64(h))
	}
	sx0, sx1, dx0, dx1 := cropWindow(w, rw, size)
	sy0, sy1, dy0, dy1 := cropWindow(h, rh, size)
	sr := image.Rect(b.Min.X+sx0, b.Min.Y+sy0, b.Min.X+sx1, b.Min.Y+sy1)
	rect := image.Rect(0, 0, dx1-dx0, dy1-dy0)
	var dst draw.Image
	if _, ok := img.(*image.Gray); ok {
		dst = image.NewGray(rect)
	} else {
		// Resampling goes through premultiplied colour: alpha is dropped first
		// (as Pillow's convert("RGB") does, and as an image already at size
		// keeps it), or colour under transparent pixels would turn black.
		img, sr = opaqueWindow(img, sr)
		dst = image.NewRGBA(rect)
	}
	draw.CatmullRom.Scale(dst, rect, img, sr, draw.Src, nil)
	return dst, (rw-size)/2 - dx0, (rh-size)/2 - dy0
}

// cropWindow gives, for one axis of n source pixels resized to r, the source
// pixels [s0, s1) to resample and the resized pixels [d0, d1) they become,
// covering the centre crop of size pixels and the Catmull-Rom kernel's reach.
func cropWindow(n, r, size int) (s0, s1, d0, d1 int) {
	if r <= 4*size {
		return 0, n, 0, r
	}
	f := float64(r) / float64(n)
	c := float64((r - size) / 2)
	reach := 2*math.Max(f, 1) + 2 // in resized pixels: 2 source pixels, or 2 resized ones when shrinking
	s0 = max(0, int(math.Floor((c-reach)/f)))
	s1 = min(n, int(math.Ceil((c+float64(size)+reach)/f)))
	d0 = int(math.Round(float64(s0) * f))
	d1 = int(math.Round(float64(s1) * f))
	return s0, s1, d0, d1
}

// opaqueWindow returns the window sr of img with alpha set to opaque and the
// non-premultiplied colour kept, or img itself when it is opaque already.
func opaqueWindow(img image.Image, sr image.Rectangle) (image.Image, image.Rectangle) {
	if o, ok := img.(interface{ Opaque() bool }); ok && o.Opaque() {
		return img, sr
	}
	m := image.NewNRGBA(image.Rect(0, 0, sr.Dx(), sr.Dy()))
	for y := 0; y < sr.Dy(); y++ {
		for x := 0; x < sr.Dx(); x++ {
			r, g, b := rgb8(img, sr.Min.X+x, sr.Min.Y+y)
			copy(m.Pix[m.PixOffset(x, y):], []uint8{r, g, b, 0xff})
		}
	}
	return m, m.Bounds()
}

// FromCHW is the inverse of ToCHW for a channels×h×w planar tensor: values
// are clamped to [-1,1] (NaN becomes -1) and p = round((x+1)·127.5). One
// channel gives an *image.Gray, three an opaque *image.NRGBA. It panics if
// len(x) is not channels×h×w or channels is not 1 or 3.
func FromCHW(x []float32, channels, h, w int) image.Image {
	if (channels != 1 && channels != 3) || h < 0 || w < 0 || len(x) != channels*h*w {
		panic(fmt.Sprintf("imageio.FromCHW: len %d does not hold %d×%d×%d (channels must be 1 or 3)", len(x), channels, h, w))
	}
	plane := h * w
	if channels == 1 {
		m := image.NewGray(image.Rect(0, 0, w, h))
		for i, v := range x {
			m.Pix[i] = fromUnit(v)
		}
		return m
	}
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < plane; i++ {
		p := m.Pix[4*i : 4*i+4 : 4*i+4]
		p[0] = fromUnit(x[i])
		p[1] = fromUnit(x[plane+i])
		p[2] = fromUnit(x[2*plane+i])
		p[3] = 0xff
	}
	return m
}

func fromUnit(v float32) uint8 {
	f := float64(v)
	if !(f > -1) { // also NaN
		return 0
	}
	if f >= 1 {
		return 255
	}
	return uint8(math.Round((f + 1) * 127.5))
}
