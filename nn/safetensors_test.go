package nn

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(31, 1))
	vals := make([]float32, 2*3*4)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64() * 10)
	}
	vals[0], vals[1], vals[2] = float32(math.Inf(-1)), math.SmallestNonzeroFloat32, -0
	ts := []STTensor{
		{Name: "a.weight", Shape: []int{2, 3, 4}, Data: vals},
		{Name: "b", Shape: []int{1}, Data: []float32{-1.5}},
		{Name: "scalar", Shape: nil, Data: []float32{7}},
		{Name: "empty", Shape: []int{0, 3}, Data: nil},
	}
	meta := map[string]string{"format": "pt", "step": "12"}
	for _, dtype := range []string{"F32", "F16"} {
		path := filepath.Join(t.TempDir(), "m.safetensors")
		if err := WriteSafetensors(path, ts, dtype, meta); err != nil {
			t.Fatal(err)
		}
		f, err := ReadSafetensors(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.Meta["step"] != "12" || f.Meta["format"] != "pt" {
			t.Errorf("%s: metadata %v", dtype, f.Meta)
		}
		if strings.Join(f.Order, ",") != "a.weight,b,scalar,empty" {
			t.Errorf("%s: order %v", dtype, f.Order)
		}
		for _, want := range ts {
			got, shape, err := f.Get(want.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !sameShape(shape, want.Shape) && !(len(shape) == 0 && len(want.Shape) == 0) {
				t.Errorf("%s %s: shape %v, want %v", dtype, want.Name, shape, want.Shape)
			}
			if len(got) != len(want.Data) {
				t.Fatalf("%s %s: %d values, want %d", dtype, want.Name, len(got), len(want.Data))
			}
			for i, w := range want.Data {
				g := got[i]
				if dtype == "F32" {
					if math.Float32bits(g) != math.Float32bits(w) {
						t.Errorf("F32 %s[%d] = %g, want %g exactly", want.Name, i, g, w)
					}
					continue
				}
				// Half precision: 11 significant bits (relative error ≤ 2⁻¹¹), subnormals flush below 2⁻²⁵.
				ok := math.Abs(float64(g-w)) <= math.Abs(float64(w))*0x1p-11+0x1p-25 ||
					(math.IsInf(float64(w), 0) && g == w)
				if !ok {
					t.Errorf("F16 %s[%d] = %g, want %g within half precision", want.Name, i, g, w)
				}
			}
		}
	}
	if _, err := EncodeSafetensors(ts, "BF16", nil); err == nil {
		t.Error("writing BF16 should be refused")
	}
	if _, err := EncodeSafetensors([]STTensor{{Name: "x", Shape: []int{3}, Data: []float32{1}}}, "F32", nil); err == nil ||
		!strings.Contains(err.Error(), `"x"`) {
		t.Errorf("shape/data mismatch: error %v should name the tensor", err)
	}
	if _, err := EncodeSafetensors([]STTensor{{Name: "x", Data: []float32{1}}, {Name: "x", Data: []float32{1}}}, "F32", nil); err == nil {
		t.Error("repeated names should be refused")
	}
}

func TestF16Conversions(t *testing.T) {
	t.Parallel()
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name string
		f    float32
		h    uint16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"max", 65504, 0x7bff},
		{"smallest normal", 0x1p-14, 0x0400},
		{"largest subnormal", 0x3ffp-24, 0x03ff},
		{"smallest subnormal", 0x1p-24, 0x0001},
		{"half the smallest subnormal rounds to even (0)", 0x1p-25, 0x0000},
		{"just over half the smallest subnormal", 0x1.000002p-25, 0x0001},
		{"1.5 × smallest subnormal rounds to even (2)", 0x3p-25, 0x0002},
		{"tiny flushes to zero", 1e-10, 0x0000},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"-inf", float32(math.Inf(-1)), 0xfc00},
		{"overflow to inf", 1e6, 0x7c00},
		{"65520 rounds up to inf", 65520, 0x7c00},
		{"65519 rounds down to max", 65519, 0x7bff},
		{"1+2⁻¹¹ ties to even (1)", 1 + 0x1p-11, 0x3c00},
		{"1+3·2⁻¹¹ ties to even (1+2⁻⁹)", 1 + 3*0x1p-11, 0x3c02},
		{"1+2⁻¹¹+2⁻²⁰ rounds up", 1 + 0x1p-11 + 0x1p-20, 0x3c01},
		{"rounding carries into the exponent", 2 - 0x1p-12, 0x4000},
		{"subnormal rounding carries into the smallest normal", 0x1p-14 - 0x1p-26, 0x0400},
		{"f32 subnormal flushes", math.SmallestNonzeroFloat32, 0x0000},
	} {
		if got := F32ToF16(tc.f); got != tc.h {
			t.Errorf("F32ToF16(%s %g) = %#04x, want %#04x", tc.name, tc.f, got, tc.h)
		}
	}
	if h := F32ToF16(nan); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("F32ToF16(NaN) = %#04x, want a NaN", h)
	}
	if h := F32ToF16(-nan); h&0x8000 == 0 && !math.Signbit(float64(-nan)) {
		t.Log("sign of NaN not preserved (allowed)")
	}
	if f := F16ToF32(0x7e00); !math.IsNaN(float64(f)) {
		t.Errorf("F16ToF32(0x7e00) = %g, want NaN", f)
	}
	// Every half converts to float32 and back to itself (NaNs stay NaNs).
	for h := range 1 << 16 {
		f := F16ToF32(uint16(h))
		back := F32ToF16(f)
		if math.IsNaN(float64(f)) {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("%#04x is not a NaN but converted to one", h)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("%#04x → %g → %#04x", h, f, back)
		}
	}
	// Known values of the decoder, including subnormals.
	for _, tc := range []struct {
		h uint16
		f float64
	}{{0x0001, 0x1p-24}, {0x8001, -0x1p-24}, {0x03ff, 0x3ffp-24}, {0x3555, 0x1.554p-2}, {0xfbff, -65504}} {
		if got := F16ToF32(tc.h); float64(got) != tc.f {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", tc.h, got, tc.f)
		}
	}
	// Rounding to nearest against the float64 distance to both neighbours, on random floats in range.
	rng := rand.New(rand.NewPCG(32, 1))
	for range 20000 {
		f := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(40)-25))
		h := F32ToF16(f)
		got := float64(F16ToF32(h))
		for _, nb := range []uint16{h - 1, h + 1} {
			if nb&0x7fff >= 0x7c00 || nb&0x7fff == 0x7fff {
				continue
			}
			if o := float64(F16ToF32(nb)); (o < 0) == (got < 0) && math.Abs(o-float64(f)) < math.Abs(got-float64(f)) {
				t.Fatalf("F32ToF16(%g) = %g, but %g is nearer", f, got, o)
			}
		}
	}
}

// st builds a safetensors file from a header string and data bytes.
func st(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestSafetensorsRejectsMalformed(t *testing.T) {
	t.Parallel()
	good, err := EncodeSafetensors([]STTensor{{Name: "w", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}}}, "F32", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSafetensors(good); err != nil {
		t.Fatal(err)
	}
	// A dimension of 0 makes any other dimension hold nothing.
	if f, err := ParseSafetensors(st(`{"w":{"dtype":"F32","shape":[4611686018427387904,0],"data_offsets":[0,0]}}`, nil)); err != nil {
		t.Errorf("empty tensor with a huge dimension: %v", err)
	} else if v, _, err := f.Get("w"); err != nil || len(v) != 0 {
		t.Errorf("empty tensor with a huge dimension: %d values, %v", len(v), err)
	}
	hugeLen := append([]byte(nil), good...)
	binary.LittleEndian.PutUint64(hugeLen, 1<<40)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, ""},
		{"shorter than the length field", []byte{1, 2, 3}, ""},
		{"truncated data", good[:len(good)-1], `"w"`},
		{"truncated header", good[:20], "header"},
		{"header length beyond the file", hugeLen, "header length"},
		{"header not JSON", st("{not json", nil), "header"},
		{"offsets too short for the shape", st(`{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}`, make([]byte, 16)), `"w"`},
		{"offsets too long for the shape", st(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}`, make([]byte, 16)), `"w"`},
		{"offsets past the data", st(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}`, make([]byte, 16)), `"w"`},
		{"offsets reversed", st(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, make([]byte, 16)), `"w"`},
		{"negative offset", st(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, make([]byte, 16)), `"w"`},
		{"negative dimension", st(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 16)), `"w"`},
		// 2⁶²·4 bytes and 2⁵⁸·64·4 bytes wrap to 0 in 64 bits: the empty offsets must not pass for them.
		{"byte size overflows", st(`{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}`, nil), `"w"`},
		{"element count overflows", st(`{"w":{"dtype":"F32","shape":[288230376151711744,64],"data_offsets":[0,0]}}`, nil), `"w"`},
		{"unknown dtype", st(`{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 16)), "Q4"},
		{"bad metadata", st(`{"__metadata__":{"a":1}}`, nil), "__metadata__"},
	} {
		_, err := ParseSafetensors(tc.b)
		if !errors.Is(err, ErrSafetensors) {
			t.Errorf("%s: error %v, want ErrSafetensors", tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q should mention %s", tc.name, err, tc.want)
		}
	}
	// Through the file reader the error names the file too.
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := WriteSafetensors(path, []STTensor{{Name: "w", Shape: []int{1}, Data: []float32{1}}}, "F32", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSafetensors(filepath.Join(t.TempDir(), "missing.safetensors")); err == nil {
		t.Error("reading a missing file should fail")
	}
}

func TestLoadParams(t *testing.T) {
	t.Parallel()
	src := NewParams(cpu)
	NewConv2d(src, "enc.conv", 2, 3, 3)
	NewLinear(src, "head", 4, 2)
	for i, p := range src.List {
		for j := range p.W.Data {
			p.W.Data[j] = float32(i*100 + j)
		}
	}
	src.Alias("head_alias.weight", "head.weight")
	b, err := EncodeSafetensors(ParamTensors(src, ""), "F32", nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Tensors["head_alias.weight"]; !ok {
		t.Error("ParamTensors should write aliases under their own names")
	}

	dst := NewParams(cpu)
	NewConv2d(dst, "enc.conv", 2, 3, 3)
	NewLinear(dst, "head", 4, 2)
	dst.Alias("head_alias.weight", "head.weight")
	if err := LoadParams(dst, f, true); err != nil {
		t.Fatal(err)
	}
	for i, p := range dst.List {
		for j, v := range p.W.Data {
			if v != src.List[i].W.Data[j] {
				t.Fatalf("%s[%d] = %g, want %g", p.Name, j, v, src.List[i].W.Data[j])
			}
		}
	}

	// A model with a missing tensor, a wrong shape and (strict) a tensor the file has but the model lacks.
	other := NewParams(cpu)
	NewConv2d(other, "enc.conv", 2, 5, 3) // weight and bias shapes differ
	other.New("extra.scale", 7)           // not in the file
	err = LoadParams(other, f, true)
	if err == nil {
		t.Fatal("mismatched model loaded without error")
	}
	for _, want := range []string{`"enc.conv.weight"`, "[5 2 3 3]", "[3 2 3 3]", `missing tensor "extra.scale"`,
		`unexpected tensor "head.weight"`, `"enc.conv.bias"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q should contain %s", err, want)
		}
	}
	// Not strict, with the unexpected ones ignored by prefix: only the model's own problems remain.
	err = LoadParams(other, f, false)
	if err == nil || strings.Contains(err.Error(), "unexpected") {
		t.Errorf("non-strict load: %v", err)
	}
	small := NewParams(cpu)
	NewConv2d(small, "enc.conv", 2, 3, 3)
	if err := LoadParams(small, f, true, "head"); err != nil {
		t.Errorf("strict load ignoring the head prefix: %v", err)
	}
}

// TestWriteSafetensorsSyncs: the new file is flushed to disk before it replaces the old one, and when that fails
// the old file is kept and no temporary file is left behind.
func TestWriteSafetensorsSyncs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	old := []STTensor{{Name: "w", Shape: []int{1}, Data: []float32{1}}}
	if err := WriteSafetensors(path, old, "F32", nil); err != nil {
		t.Fatal(err)
	}
	errDisk := errors.New("disk full")
	synced := 0
	syncFile = func(f *os.File) error { synced++; return errDisk }
	defer func() { syncFile = (*os.File).Sync }()
	err := WriteSafetensors(path, []STTensor{{Name: "w", Shape: []int{1}, Data: []float32{2}}}, "F32", nil)
	if !errors.Is(err, errDisk) || synced != 1 {
		t.Fatalf("write with a failing sync: error %v after %d syncs, want %v after 1", err, synced, errDisk)
	}
	f, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := f.Get("w"); err != nil || v[0] != 1 {
		t.Errorf("the old file was replaced: w = %v, %v", v, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
