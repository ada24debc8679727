package imageio

import (
	"image"
	"image/color"

	"golang.org/x/image/draw"
)

// padColor is the background of contact sheets: a light grey that sets off
// both white and black images.
var padColor = color.Gray{Y: 0xc8}

// Grid lays out cells as rows of images on a contact sheet. Every cell gets
// the size of the largest image (images are expected to be equal in size;
// a smaller one sits in its cell's top-left corner), scaled by the integer
// factor scale with nearest-neighbour sampling so that 32×32 images stay
// visible and crisp. pad pixels of light grey (200) separate cells and surround the
// sheet. Rows may differ in length; nil cells are left blank. scale < 1 is
// taken as 1 and pad < 0 as 0.
func Grid(cells [][]image.Image, pad, scale int) image.Image {
	scale = max(scale, 1)
	pad = max(pad, 0)
	var cw, ch, cols int
	for _, row := range cells {
		cols = max(cols, len(row))
		for _, im := range row {
			if im != nil {
				cw = max(cw, im.Bounds().Dx()*scale)
				ch = max(ch, im.Bounds().Dy()*scale)
			}
		}
	}
	rows := len(cells)
	out := image.NewRGBA(image.Rect(0, 0, pad+cols*(cw+pad), pad+rows*(ch+pad)))
	draw.Draw(out, out.Bounds(), image.NewUniform(padColor), image.Point{}, draw.Src)
	for r, row := range cells {
		for c, im := range row {
			if im == nil {
				continue
			}
			b := im.Bounds()
			x0, y0 := pad+c*(cw+pad), pad+r*(ch+pad)
			dr := image.Rect(x0, y0, x0+b.Dx()*scale, y0+b.Dy()*scale)
			if scale == 1 {
				draw.Draw(out, dr, im, b.Min, draw.Src)
			} else {
				draw.NearestNeighbor.Scale(out, dr, im, b, draw.Src, nil)
			}
		}
	}
	return out
}

// Strip lays imgs out in one row; see Grid.
func Strip(imgs []image.Image, pad, scale int) image.Image {
	return Grid([][]image.Image{imgs}, pad, scale)
}
