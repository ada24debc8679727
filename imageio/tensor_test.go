package imageio

import (
	"encoding/binary"
	"encoding/json"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// fixtureDir holds the reference fixtures shared by the whole project.
const fixtureDir = "../../shared/fixtures/official-tiny16"

// readSafetensorsF32 returns one F32 tensor of a safetensors file.
func readSafetensorsF32(t *testing.T, path, name string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("fixture not available: %v", err)
	}
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	var info struct {
		Dtype   string `json:"dtype"`
		Offsets [2]int `json:"data_offsets"`
	}
	if err := json.Unmarshal(hdr[name], &info); err != nil || info.Dtype != "F32" {
		t.Fatalf("%s: tensor %q: %v (dtype %q)", path, name, err, info.Dtype)
	}
	data := b[8+int(n)+info.Offsets[0] : 8+int(n)+info.Offsets[1]]
	out := make([]float32, len(data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return out
}

func TestToCHWMatchesReferenceFixture(t *testing.T) {
	t.Parallel()
	x0 := readSafetensorsF32(t, filepath.Join(fixtureDir, "expect.safetensors"), "x0")
	const c, s = 3, 16
	for i := 0; i < 3; i++ {
		path := filepath.Join(fixtureDir, "img"+string(rune('0'+i))+".png")
		img, err := DecodeFile(path, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		got := ToCHW(img, s, c, nil)
		want := x0[i*c*s*s : (i+1)*c*s*s]
		for j := range want {
			if got[j] != want[j] {
				t.Fatalf("%s: element %d = %v, want %v exactly", path, j, got[j], want[j])
			}
		}
		// And back: the tensor names the file's own pixels.
		back := FromCHW(got, c, s, s)
		for y := 0; y < s; y++ {
			for x := 0; x < s; x++ {
				g := color.NRGBAModel.Convert(back.At(x, y))
				w := color.NRGBAModel.Convert(img.At(x, y))
				if g != w {
					t.Fatalf("%s: FromCHW pixel (%d,%d) = %v, want %v", path, x, y, g, w)
				}
			}
		}
	}
}

func TestToCHWExactSizeIsPixelExact(t *testing.T) {
	t.Parallel()
	img := testImage(8, 8)
	// An image whose bounds do not start at the origin.
	sub := img.SubImage(image.Rect(2, 3, 6, 7))
	grey := image.NewGray(image.Rect(0, 0, 4, 4))
	for i := range grey.Pix {
		grey.Pix[i] = uint8(i * 17)
	}
	transparent := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	transparent.Pix = []uint8{10, 20, 30, 0}
	unit := func(p uint8) float32 { return float32(p)/127.5 - 1 }

	tests := []struct {
		name     string
		img      image.Image
		channels int
		want     func(c, x, y int) uint8
	}{
		{"rgb", img, 3, func(c, x, y int) uint8 { return img.Pix[img.PixOffset(x, y)+c] }},
		{"rgb sub-image", sub, 3, func(c, x, y int) uint8 { return img.Pix[img.PixOffset(x+2, y+3)+c] }},
		{"grey of rgb", img, 1, func(_, x, y int) uint8 {
			p := img.Pix[img.PixOffset(x, y):]
			return luma(p[0], p[1], p[2])
		}},
		{"grey of grey", grey, 1, func(_, x, y int) uint8 { return uint8((y*4 + x) * 17) }},
		{"rgb of grey", grey, 3, func(_, x, y int) uint8 { return uint8((y*4 + x) * 17) }},
		{"alpha dropped", transparent, 3, func(c, _, _ int) uint8 { return []uint8{10, 20, 30}[c] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := tt.img.Bounds().Dx()
			got := ToCHW(tt.img, s, tt.channels, nil)
			if len(got) != tt.channels*s*s {
				t.Fatalf("len %d, want %d", len(got), tt.channels*s*s)
			}
			for c := 0; c < tt.channels; c++ {
				for y := 0; y < s; y++ {
					for x := 0; x < s; x++ {
						if g, w := got[(c*s+y)*s+x], unit(tt.want(c, x, y)); g != w {
							t.Fatalf("(c%d,%d,%d) = %v, want %v", c, x, y, g, w)
						}
					}
				}
			}
		})
	}
}

func TestLumaIsPillows(t *testing.T) {
	t.Parallel()
	// Values of Image.convert("L") in Pillow (rounded fixed-point L24).
	tests := []struct{ r, g, b, want uint8 }{
		{0, 0, 0, 0},
		{255, 255, 255, 255},
		{255, 0, 0, 76},
		{0, 255, 0, 150},
		{0, 0, 255, 29},
		{100, 150, 200, 141},
	}
	for _, tt := range tests {
		if got := luma(tt.r, tt.g, tt.b); got != tt.want {
			t.Errorf("luma(%d,%d,%d) = %d, want %d", tt.r, tt.g, tt.b, got, tt.want)
		}
	}
	for v := 0; v < 256; v++ {
		if got := luma(uint8(v), uint8(v), uint8(v)); got != uint8(v) {
			t.Fatalf("luma of grey %d = %d", v, got)
		}
	}
}

func TestToCHWResizeCrop(t *testing.T) {
	t.Parallel()
	// A white band on black, wide enough that the centre crop sees only
	// white, narrow enough that an off-centre crop would see black.
	band := func(w, h int, vertical bool) image.Image {
		m := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				pos, long := x, w
				if vertical {
					pos, long = y, h
				}
				if pos >= long/2-long*5/16 && pos < long/2+long*5/16 {
					m.Set(x, y, color.White)
				} else {
					m.Set(x, y, color.Black)
				}
			}
		}
		return m
	}
	tests := []struct {
		name     string
		img      image.Image
		size     int
		channels int
	}{
		{"wide shrink", band(64, 32, false), 16, 3},
		{"tall shrink", band(30, 60, true), 15, 1},
		{"wide enlarge", band(16, 8, false), 32, 3},
		{"big shrink", band(1200, 400, false), 32, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := ToCHW(tt.img, tt.size, tt.channels, nil)
			if len(got) != tt.channels*tt.size*tt.size {
				t.Fatalf("len %d", len(got))
			}
			for i, v := range got {
				if v < 1-2/127.5 {
					t.Fatalf("element %d = %v: the crop is not centred on the white band", i, v)
				}
			}
		})
	}
}

func TestToCHWResizeKeepsFlatColour(t *testing.T) {
	t.Parallel()
	m := image.NewRGBA(image.Rect(0, 0, 45, 70))
	for i := 0; i < len(m.Pix); i += 4 {
		copy(m.Pix[i:], []uint8{40, 120, 220, 255})
	}
	got := ToCHW(m, 28, 3, nil)
	for c, p := range []float32{40, 120, 220} {
		want := p/127.5 - 1
		for _, v := range got[c*28*28 : (c+1)*28*28] {
			if math.Abs(float64(v-want)) > 1.01/127.5 {
				t.Fatalf("channel %d: %v, want %v", c, v, want)
			}
		}
	}
}

func TestToCHWReusesDst(t *testing.T) {
	t.Parallel()
	buf := make([]float32, 100)
	got := ToCHW(testImage(4, 4), 4, 3, buf)
	if &got[0] != &buf[0] || len(got) != 48 {
		t.Errorf("ToCHW did not reuse a large enough dst")
	}
	if got := ToCHW(testImage(4, 4), 4, 3, buf[:10:10]); len(got) != 48 {
		t.Errorf("len %d, want 48", len(got))
	}
}

func TestToCHWPanicsOnBadArguments(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ size, channels int }{{0, 3}, {4, 2}, {4, 4}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("ToCHW(size %d, channels %d) did not panic", tt.size, tt.channels)
				}
			}()
			ToCHW(testImage(4, 4), tt.size, tt.channels, nil)
		}()
	}
}

func TestFromCHW(t *testing.T) {
	t.Parallel()
	// Every 8-bit value survives the round trip.
	x := make([]float32, 256)
	for p := range x {
		x[p] = float32(p)/127.5 - 1
	}
	g := FromCHW(x, 1, 16, 16).(*image.Gray)
	for p := range x {
		if g.Pix[p] != uint8(p) {
			t.Fatalf("grey round trip of %d gave %d", p, g.Pix[p])
		}
	}
	rgb := FromCHW(append(append(append([]float32{}, x...), x...), x...), 3, 16, 16).(*image.NRGBA)
	for p := range x {
		if q := rgb.Pix[4*p : 4*p+4]; q[0] != uint8(p) || q[1] != uint8(p) || q[2] != uint8(p) || q[3] != 255 {
			t.Fatalf("rgb round trip of %d gave %v", p, q)
		}
	}

	tests := []struct {
		in   float32
		want uint8
	}{
		{-1, 0}, {1, 255}, {-5, 0}, {7, 255}, {0, 128}, {float32(math.NaN()), 0},
		{float32(math.Inf(1)), 255}, {float32(math.Inf(-1)), 0}, {0.5, 191},
	}
	for _, tt := range tests {
		if got := FromCHW([]float32{tt.in}, 1, 1, 1).(*image.Gray).Pix[0]; got != tt.want {
			t.Errorf("FromCHW(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestFromCHWPanicsOnBadShape(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("FromCHW with a wrong length did not panic")
		}
	}()
	FromCHW(make([]float32, 10), 3, 2, 2)
}

func BenchmarkToCHW(b *testing.B) {
	for _, bm := range []struct {
		name string
		img  image.Image
	}{
		{"exact32", testImage(32, 32)},
		{"1024x768to64", testImage(1024, 768)},
	} {
		b.Run(bm.name, func(b *testing.B) {
			size := bm.img.Bounds().Dx()
			if size > 64 {
				size = 64
			}
			dst := make([]float32, 3*size*size)
			for b.Loop() {
				dst = ToCHW(bm.img, size, 3, dst)
			}
		})
	}
}

// A long, thin image is resampled only where the centre crop needs it: a 2×3,000,000 grey image (a white band in
// the middle third) to 16×16 would be a 16×24,000,000 intermediate, and a 48,000,000-element buffer inside the
// scaler, if resized whole.
func TestToCHWThinImageResamplesOnlyTheCrop(t *testing.T) {
	for _, tc := range []struct {
		name string
		w, h int
	}{{"tall", 2, 3_000_000}, {"wide", 3_000_000, 2}, {"long", 40, 20_000}} {
		t.Run(tc.name, func(t *testing.T) {
			m := image.NewGray(image.Rect(0, 0, tc.w, tc.h))
			long := max(tc.w, tc.h)
			for y := 0; y < tc.h; y++ {
				for x := 0; x < tc.w; x++ {
					pos := x
					if tc.w < tc.h {
						pos = y
					}
					if pos >= long/3 && pos < 2*long/3 {
						m.Pix[m.PixOffset(x, y)] = 255
					}
				}
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got := ToCHW(m, 16, 1, nil)
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
				t.Errorf("allocated %d bytes for a 16×16 crop", alloc)
			}
			for i, v := range got {
				if v != 1 {
					t.Fatalf("element %d = %v: the crop is not centred on the white band", i, v)
				}
			}
		})
	}
}

// Resampling drops alpha before it mixes pixels, as an image already at the model's size does: white under
// alpha 0 stays white.
func TestToCHWResizeDropsAlpha(t *testing.T) {
	for _, side := range []int{16, 32, 45} {
		m := image.NewNRGBA(image.Rect(0, 0, side, side))
		for i := 0; i < len(m.Pix); i += 4 {
			copy(m.Pix[i:], []uint8{255, 255, 255, 0})
		}
		for i, v := range ToCHW(m, 16, 3, nil) {
			if v != 1 {
				t.Fatalf("%d×%d: element %d = %v, want 1 (white)", side, side, i, v)
			}
		}
	}
}
