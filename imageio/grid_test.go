package imageio

import (
	"image"
	"image/color"
	"testing"
)

func solid(w, h int, v uint8) image.Image {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = v
	}
	return m
}

func TestGrid(t *testing.T) {
	t.Parallel()
	black, white := solid(4, 4, 0), solid(4, 4, 255)
	pad := color.RGBAModel.Convert(padColor)
	tests := []struct {
		name       string
		cells      [][]image.Image
		pad, scale int
		w, h       int
		want       map[image.Point]color.Color
	}{
		{
			name:  "2x3 scaled",
			cells: [][]image.Image{{black, white, black}, {white, nil}},
			pad:   2, scale: 3, w: 2 + 3*(12+2), h: 2 + 2*(12+2),
			want: map[image.Point]color.Color{
				{0, 0}:   pad,
				{2, 2}:   color.RGBA{0, 0, 0, 255},       // row 0, col 0, first pixel
				{13, 13}: color.RGBA{0, 0, 0, 255},       // row 0, col 0, last pixel
				{14, 2}:  pad,                            // gap between columns
				{16, 2}:  color.RGBA{255, 255, 255, 255}, // row 0, col 1
				{2, 16}:  color.RGBA{255, 255, 255, 255}, // row 1, col 0
				{16, 16}: pad,                            // nil cell
				{30, 16}: pad,                            // short row
			},
		},
		{
			name:  "no pad, scale 0 taken as 1",
			cells: [][]image.Image{{white, black}},
			pad:   -1, scale: 0, w: 8, h: 4,
			want: map[image.Point]color.Color{
				{3, 3}: color.RGBA{255, 255, 255, 255},
				{4, 0}: color.RGBA{0, 0, 0, 255},
			},
		},
		{
			name:  "offset bounds",
			cells: [][]image.Image{{white.(*image.Gray).SubImage(image.Rect(1, 1, 3, 3))}},
			pad:   1, scale: 2, w: 6, h: 6,
			want: map[image.Point]color.Color{
				{1, 1}: color.RGBA{255, 255, 255, 255},
				{4, 4}: color.RGBA{255, 255, 255, 255},
				{5, 5}: pad,
			},
		},
		{name: "empty", w: 0, h: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := Grid(tt.cells, tt.pad, tt.scale)
			if b := g.Bounds(); b.Dx() != tt.w || b.Dy() != tt.h {
				t.Fatalf("size %dx%d, want %dx%d", b.Dx(), b.Dy(), tt.w, tt.h)
			}
			for p, want := range tt.want {
				if got := color.RGBAModel.Convert(g.At(p.X, p.Y)); got != want {
					t.Errorf("pixel %v = %v, want %v", p, got, want)
				}
			}
		})
	}
}

func TestStrip(t *testing.T) {
	t.Parallel()
	s := Strip([]image.Image{solid(32, 32, 0), solid(32, 32, 9), solid(32, 32, 200)}, 1, 4)
	if b := s.Bounds(); b.Dx() != 1+3*(128+1) || b.Dy() != 1+128+1 {
		t.Errorf("strip size %v", b)
	}
}
