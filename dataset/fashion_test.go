package dataset

import (
	"image"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dae/imageio"
)

// writeFashion writes a tiny Fashion-MNIST split in dir: n images whose
// pixel (x, y) of image i is (i + x + 28y) mod 256, and labels i mod 10.
func writeFashion(t *testing.T, dir, prefix string, n int, gzipped bool) {
	t.Helper()
	pix := make([]byte, n*28*28)
	for i := 0; i < n; i++ {
		for j := 0; j < 28*28; j++ {
			pix[i*28*28+j] = byte(i + j)
		}
	}
	labels := make([]byte, n)
	for i := range labels {
		labels[i] = byte(i % 10)
	}
	img, lbl := idxBytes([]uint32{uint32(n), 28, 28}, pix), idxBytes([]uint32{uint32(n)}, labels)
	suffix := ""
	if gzipped {
		img, lbl, suffix = gz(img), gz(lbl), ".gz"
	}
	writeFile(t, dir, prefix+"-images-idx3-ubyte"+suffix, img)
	writeFile(t, dir, prefix+"-labels-idx1-ubyte"+suffix, lbl)
}

func TestLoadFashionMNIST(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFashion(t, dir, "t10k", 12, true)
	writeFashion(t, dir, "train", 3, false)

	m, err := LoadFashionMNIST(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	if m.N != 12 || m.C != 1 || m.H != 32 || m.W != 32 || len(m.Data) != 12*32*32 || m.Split != "test" {
		t.Fatalf("got N %d C %d H %d W %d len %d split %q", m.N, m.C, m.H, m.W, len(m.Data), m.Split)
	}
	for i := 0; i < m.N; i++ {
		if m.Labels[i] != i%10 {
			t.Fatalf("label %d = %d", i, m.Labels[i])
		}
		// Each padded image is exactly what imageio makes of the padded
		// grey picture: the same p/127.5-1 values, background -1.
		g := image.NewGray(image.Rect(0, 0, 32, 32))
		for y := 0; y < 28; y++ {
			for x := 0; x < 28; x++ {
				g.Pix[(y+2)*32+x+2] = byte(i + x + 28*y)
			}
		}
		want := imageio.ToCHW(g, 32, 1, nil)
		for j, v := range m.Image(i) {
			if v != want[j] {
				t.Fatalf("image %d element %d = %v, want %v", i, j, v, want[j])
			}
		}
	}
	if m.ClassNames[9] != "Ankle boot" || len(m.ClassNames) != 10 {
		t.Errorf("class names %q", m.ClassNames)
	}
	if tr, err := LoadFashionMNIST(dir, "train"); err != nil || tr.N != 3 {
		t.Errorf("train split: %v", err)
	}
}

func TestLoadFashionMNISTErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(dir string)
		split   string
		wantErr string
	}{
		{"bad split", func(string) {}, "val", `split "val"`},
		{"missing", func(string) {}, "test", "t10k-images-idx3-ubyte.gz exists"},
		{"label count", func(dir string) {
			writeFashion(t, dir, "t10k", 5, false)
			writeFile(t, dir, "t10k-labels-idx1-ubyte", idxBytes([]uint32{4}, make([]byte, 4)))
		}, "test", "4 labels for the 5 images"},
		{"label range", func(dir string) {
			writeFashion(t, dir, "t10k", 2, false)
			writeFile(t, dir, "t10k-labels-idx1-ubyte", idxBytes([]uint32{2}, []byte{3, 10}))
		}, "test", "label 10 of image 1"},
		{"image size", func(dir string) {
			writeFashion(t, dir, "t10k", 1, false)
			writeFile(t, dir, "t10k-images-idx3-ubyte", idxBytes([]uint32{1, 2, 2}, make([]byte, 4)))
		}, "test", "images are 2×2"},
		{"image count", func(dir string) {
			// A header declaring 5 million images is refused before any pixel is read (a gzip of zeros could carry them).
			writeFashion(t, dir, "t10k", 1, false)
			writeFile(t, dir, "t10k-images-idx3-ubyte", idxBytes([]uint32{5_000_000, 28, 28}, nil))
		}, "test", "at most 100000 expected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tt.setup(dir)
			_, err := LoadFashionMNIST(dir, tt.split)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestLoadFashionMNISTInstalled reads the real test split when it is
// installed in the default place.
func TestLoadFashionMNISTInstalled(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the installed data set")
	}
	if _, err := os.Stat(DefaultFashionMNISTDir); err != nil {
		t.Skipf("Fashion-MNIST not installed: %v", err)
	}
	m, err := LoadFashionMNIST(DefaultFashionMNISTDir, "test")
	if err != nil {
		t.Fatal(err)
	}
	if m.N != 10000 {
		t.Fatalf("test split has %d images, want 10000", m.N)
	}
	count := make([]int, 10)
	for _, l := range m.Labels {
		count[l]++
	}
	for c, k := range count {
		if k != 1000 {
			t.Errorf("class %d has %d images, want 1000", c, k)
		}
	}
	lo, hi := float32(0), float32(0)
	for _, v := range m.Data {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo != -1 || hi != 1 {
		t.Errorf("values span [%v, %v], want [-1, 1]", lo, hi)
	}
	// The 2-pixel border is background.
	img := m.Image(0)
	for i := 0; i < 32; i++ {
		for _, v := range []float32{img[i], img[32+i], img[31*32+i], img[i*32], img[i*32+31]} {
			if v != -1 {
				t.Fatalf("border value %v, want -1", v)
			}
		}
	}
	// Label names of the first test images, as published.
	if got := m.ClassNames[m.Labels[0]]; got != "Ankle boot" {
		t.Errorf("first test image is %q, want Ankle boot", got)
	}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	m := &Images{N: 3, C: 2, H: 2, W: 3, Data: make([]float32, 3*12)}
	for i := range m.Data {
		m.Data[i] = float32(i)
	}
	got := m.Batch([]int{2, 0}, nil, nil)
	want := append(append([]float32{}, m.Data[24:36]...), m.Data[0:12]...)
	if !equal(got, want) {
		t.Fatalf("Batch = %v, want %v", got, want)
	}

	dst := make([]float32, 100)
	if got := m.Batch([]int{1}, dst, nil); &got[0] != &dst[0] || len(got) != 12 {
		t.Error("Batch did not reuse dst")
	}

	// With flip, each image is either itself or its mirror, and both occur.
	r := rand.New(rand.NewPCG(1, 2))
	idx := make([]int, 64)
	got = m.Batch(idx, nil, r)
	mirror := []float32{2, 1, 0, 5, 4, 3, 8, 7, 6, 11, 10, 9}
	var flipped int
	for k := range idx {
		switch img := got[k*12 : (k+1)*12]; {
		case equal(img, m.Data[:12]):
		case equal(img, mirror):
			flipped++
		default:
			t.Fatalf("image %d = %v, neither the original nor its mirror", k, img)
		}
	}
	if flipped == 0 || flipped == len(idx) {
		t.Errorf("%d of %d images flipped", flipped, len(idx))
	}

	defer func() {
		if recover() == nil {
			t.Error("Batch with an index out of range did not panic")
		}
	}()
	m.Batch([]int{3}, nil, nil)
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestExportPNGRoundTrip(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	writeFashion(t, src, "t10k", 12, false)
	m, err := LoadFashionMNIST(src, "test")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "demo")
	files, err := ExportPNG(m, out, 11)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 11 || files[0] != "test_00000_T-shirt-top.png" || files[9] != "test_00009_Ankle_boot.png" {
		t.Errorf("files %q", files)
	}
	csv, err := os.ReadFile(filepath.Join(out, "labels.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	if len(lines) != 1+11*10 || lines[0] != "file,attribute,label" ||
		lines[1] != "test_00000_T-shirt-top.png,T-shirt/top,1" || lines[2] != "test_00000_T-shirt-top.png,Trouser,0" {
		t.Errorf("labels.csv has %d lines, starting %q", len(lines), lines[:3])
	}
	// Reading the folder back gives the same tensors, in the same order.
	back, err := LoadFolder(out, 32, 1, imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if back.N != 11 || !equal(back.Data, m.Data[:11*32*32]) {
		t.Errorf("folder read back differs (N %d)", back.N)
	}
	if back.Names[0] != files[0] {
		t.Errorf("names %q", back.Names[:2])
	}
	// Unlabelled images keep their names and get no labels.csv.
	again := filepath.Join(t.TempDir(), "again")
	files, err = ExportPNG(back, again, 100)
	if err != nil || len(files) != 11 || files[3] != back.Names[3] {
		t.Errorf("ExportPNG of a folder: %q, %v", files, err)
	}
	if _, err := os.Stat(filepath.Join(again, "labels.csv")); !os.IsNotExist(err) {
		t.Errorf("labels.csv written for unlabelled images")
	}
	// Two source files with one stem cannot both become <stem>.png.
	back.Names[1] = strings.TrimSuffix(back.Names[0], ".png") + ".jpg"
	if _, err := ExportPNG(back, t.TempDir(), 2); err == nil || !strings.Contains(err.Error(), "images 0 and 1") {
		t.Errorf("name collision: error %v", err)
	}
}
