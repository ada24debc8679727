package nn

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// The safetensors format is small (a length, a JSON header, raw little-endian data), and the maintained Go
// readers we found are read-only or lack float16 writing, so it is implemented here, with strict header checks.

// STEntry is one tensor of a safetensors file.
type STEntry struct {
	DType string
	Shape []int
	raw   []byte
}

// STFile is a safetensors file in memory.
type STFile struct {
	Path    string
	Meta    map[string]string
	Tensors map[string]*STEntry
	Order   []string // names in file order
}

type stHeaderEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

var dtypeSize = map[string]int{"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}

// ReadSafetensors reads and validates a whole safetensors file.
func ReadSafetensors(path string) (*STFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := ParseSafetensors(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path = path
	return f, nil
}

// ErrSafetensors marks a malformed safetensors file.
var ErrSafetensors = errors.New("not a valid safetensors file")

// ParseSafetensors parses a safetensors file held in b (the tensors alias b).
func ParseSafetensors(b []byte) (*STFile, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: %d bytes", ErrSafetensors, len(b))
	}
	hl := binary.LittleEndian.Uint64(b)
	if hl > uint64(len(b)-8) || hl > 100<<20 {
		return nil, fmt.Errorf("%w: header length %d beyond file size %d", ErrSafetensors, hl, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hl], &raw); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrSafetensors, err)
	}
	data := b[8+hl:]
	f := &STFile{Meta: map[string]string{}, Tensors: map[string]*STEntry{}}
	type ord struct {
		name string
		off  int64
	}
	var order []ord
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Meta); err != nil {
				return nil, fmt.Errorf("%w: __metadata__: %v", ErrSafetensors, err)
			}
			continue
		}
		var e stHeaderEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrSafetensors, name, err)
		}
		sz, ok := dtypeSize[e.DType]
		if !ok {
			return nil, fmt.Errorf("%w: tensor %q: unsupported dtype %q", ErrSafetensors, name, e.DType)
		}
		if slices.ContainsFunc(e.Shape, func(s int) bool { return s < 0 }) {
			return nil, fmt.Errorf("%w: tensor %q: negative dimension", ErrSafetensors, name)
		}
		size, fits := shapeBytes(e.Shape, int64(sz), int64(len(data)))
		lo, hi := e.DataOffsets[0], e.DataOffsets[1]
		if !fits || lo < 0 || hi < lo || hi > int64(len(data)) || hi-lo != size {
			return nil, fmt.Errorf("%w: tensor %q: offsets [%d,%d) do not hold %v %s in %d data bytes",
				ErrSafetensors, name, lo, hi, e.Shape, e.DType, len(data))
		}
		f.Tensors[name] = &STEntry{DType: e.DType, Shape: e.Shape, raw: data[lo:hi]}
		order = append(order, ord{name, lo})
	}
	sort.Slice(order, func(i, j int) bool { return order[i].off < order[j].off })
	for _, o := range order {
		f.Order = append(f.Order, o.name)
	}
	return f, nil
}

// shapeBytes returns the size in bytes of a tensor of shape (no negative dimension) with elements of sz bytes, and
// whether it is at most limit; the size is checked before each multiplication, so a huge shape cannot overflow
// into a small one.
func shapeBytes(shape []int, sz, limit int64) (int64, bool) {
	if slices.Contains(shape, 0) {
		return 0, true
	}
	n := sz
	for _, s := range shape {
		if int64(s) > limit/n {
			return 0, false
		}
		n *= int64(s)
	}
	return n, n <= limit
}

// Float32 returns the tensor's values converted to float32.
func (e *STEntry) Float32() ([]float32, error) {
	switch e.DType {
	case "F32":
		out := make([]float32, len(e.raw)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(e.raw[4*i:]))
		}
		return out, nil
	case "F16":
		out := make([]float32, len(e.raw)/2)
		for i := range out {
			out[i] = F16ToF32(binary.LittleEndian.Uint16(e.raw[2*i:]))
		}
		return out, nil
	case "BF16":
		out := make([]float32, len(e.raw)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(e.raw[2*i:])) << 16)
		}
		return out, nil
	case "F64":
		out := make([]float32, len(e.raw)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(e.raw[8*i:])))
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor of dtype %s is not floating point", e.DType)
}

// Get returns a tensor's float32 values and shape, or an error naming it.
func (f *STFile) Get(name string) ([]float32, []int, error) {
	e, ok := f.Tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("%s: no tensor %q", f.Path, name)
	}
	v, err := e.Float32()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: tensor %q: %w", f.Path, name, err)
	}
	return v, e.Shape, nil
}

// STTensor is a tensor to write.
type STTensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// syncFile flushes a written file to disk (a variable so that tests can make it fail).
var syncFile = (*os.File).Sync

// WriteSafetensors writes tensors (as dtype "F32" or "F16") and metadata to path atomically.
func WriteSafetensors(path string, ts []STTensor, dtype string, meta map[string]string) error {
	b, err := EncodeSafetensors(ts, dtype, meta)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := syncFile(tmp); err != nil { // on disk before the rename makes it the file
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// EncodeSafetensors returns the bytes of a safetensors file.
func EncodeSafetensors(ts []STTensor, dtype string, meta map[string]string) ([]byte, error) {
	sz := 4
	switch dtype {
	case "F32":
	case "F16":
		sz = 2
	default:
		return nil, fmt.Errorf("cannot write dtype %q (F32 or F16)", dtype)
	}
	header := map[string]any{}
	if len(meta) > 0 {
		header["__metadata__"] = meta
	}
	var off int64
	seen := map[string]bool{}
	for _, t := range ts {
		if seen[t.Name] || t.Name == "__metadata__" || strings.TrimSpace(t.Name) == "" {
			return nil, fmt.Errorf("tensor name %q empty or repeated", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, s := range t.Shape {
			n *= s
		}
		if n != len(t.Data) {
			return nil, fmt.Errorf("tensor %q: shape %v but %d values", t.Name, t.Shape, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = stHeaderEntry{DType: dtype, Shape: shape, DataOffsets: [2]int64{off, off + int64(n*sz)}}
		off += int64(n * sz)
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return nil, err
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	out := make([]byte, 8, 8+len(hj)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	out = append(out, hj...)
	for _, t := range ts {
		for _, v := range t.Data {
			if sz == 4 {
				out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
			} else {
				out = binary.LittleEndian.AppendUint16(out, F32ToF16(v))
			}
		}
	}
	return out, nil
}

// F16ToF32 converts an IEEE half to float32.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0 && man == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(man) / 1024 / 16384
		if sign != 0 {
			return -f
		}
		return f
	case exp == 31:
		return math.Float32frombits(sign | 0xff<<23 | man<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// F32ToF16 converts float32 to the nearest IEEE half (round to nearest even; overflow to ±Inf).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	man := b & 0x7fffff
	if b&0x7fffffff >= 0x7f800000 { // Inf or NaN
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	if exp >= 31 {
		return sign | 0x7c00
	}
	if exp <= 0 {
		if exp < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint32(14 - exp)
		half := man >> shift
		rem := man & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(exp)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++
	}
	return sign | uint16(half)
}

// LoadParams copies every parameter of ps (and its aliases) from f, by name. Every parameter must be present with
// its exact shape; with strict, f may hold no tensor that ps does not define (names with a prefix in ignore are
// skipped). The error lists every problem, naming the tensors.
func LoadParams(ps *Params, f *STFile, strict bool, ignore ...string) error {
	var problems []string
	used := map[string]bool{}
	for _, p := range ps.List {
		e, ok := f.Tensors[p.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("missing tensor %q %v", p.Name, p.W.Shape))
			continue
		}
		used[p.Name] = true
		if !sameShape(e.Shape, p.W.Shape) {
			problems = append(problems, fmt.Sprintf("tensor %q has shape %v, the model needs %v", p.Name, e.Shape, p.W.Shape))
			continue
		}
		v, err := e.Float32()
		if err != nil {
			problems = append(problems, fmt.Sprintf("tensor %q: %v", p.Name, err))
			continue
		}
		ps.Dev.Upload(p.W, v)
	}
	for alias := range ps.Aliases() {
		used[alias] = true
	}
	if strict {
	names:
		for _, n := range f.Order {
			if used[n] {
				continue
			}
			for _, pre := range ignore {
				if strings.HasPrefix(n, pre) {
					continue names
				}
			}
			problems = append(problems, fmt.Sprintf("unexpected tensor %q %v", n, f.Tensors[n].Shape))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 12 {
			problems = append(problems[:12], fmt.Sprintf("… and %d more", len(problems)-12))
		}
		return fmt.Errorf("%s does not match the model: %s", f.Path, strings.Join(problems, "; "))
	}
	return nil
}

// ParamTensors returns ps's parameters (with aliases repeated under their alias names, as the reference's
// state_dict does) as tensors to write.
func ParamTensors(ps *Params, prefix string) []STTensor {
	var out []STTensor
	for _, p := range ps.List {
		out = append(out, STTensor{Name: prefix + p.Name, Shape: p.W.Shape, Data: p.W.Host()})
	}
	aliases := ps.Aliases()
	names := make([]string, 0, len(aliases))
	for a := range aliases {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, a := range names {
		p := ps.Get(a)
		out = append(out, STTensor{Name: prefix + a, Shape: p.W.Shape, Data: p.W.Host()})
	}
	return out
}

func sameShape(a, b []int) bool {
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
