package gpu

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"dae/tensor"
)

// Every method of tensor.Device must have an implementation entry, and every entry must name a method, so that a
// method added to the interface cannot go unimplemented on the GPU.
func TestEveryDeviceMethodHasAnImplementation(t *testing.T) {
	impls := methodImpls()
	iface := reflect.TypeFor[tensor.Device]()
	methods := map[string]bool{}
	for i := range iface.NumMethod() {
		name := iface.Method(i).Name
		methods[name] = true
		im, ok := impls[name]
		if !ok {
			t.Errorf("tensor.Device.%s has no entry in methodImpls (and so no CUDA implementation)", name)
			continue
		}
		if len(im.kernels) == 0 && im.driver == "" {
			t.Errorf("tensor.Device.%s: entry names neither kernels nor driver calls", name)
		}
	}
	for name := range impls {
		if !methods[name] {
			t.Errorf("methodImpls has %s, which tensor.Device does not declare", name)
		}
	}
}

// The Go table of kernel signatures must match the compiled PTX exactly: a kernel missing from the PTX would fail
// at load, and a parameter of another width would read garbage at run time.
func TestKernelTableMatchesPTX(t *testing.T) {
	sigs := ptxSignatures(PTX())
	if len(sigs) == 0 {
		t.Fatal("no .entry found in the embedded PTX")
	}
	specs := kernelSpecs()
	seen := map[string]bool{}
	for id, s := range specs {
		if s.name == "" {
			t.Errorf("kernel %d has no table entry", id)
			continue
		}
		if seen[s.name] {
			t.Errorf("kernel %s is in the table twice", s.name)
		}
		seen[s.name] = true
		got, ok := sigs[s.name]
		if !ok {
			t.Errorf("kernel %s is not in kernels.ptx (run go generate ./gpu)", s.name)
			continue
		}
		var want []string
		for i := range len(s.sig) {
			pt, ok := ptxType(s.sig[i])
			if !ok {
				t.Errorf("kernel %s: unknown parameter kind %q", s.name, s.sig[i])
			}
			want = append(want, pt)
		}
		if !slices.Equal(got, want) {
			t.Errorf("kernel %s: PTX parameters %v, table says %v (%s)", s.name, got, want, s.sig)
		}
	}
	for name := range sigs {
		if !seen[name] {
			t.Errorf("kernels.ptx has %s, which the kernel table does not list (dead kernel?)", name)
		}
	}
}

// Every kernel is used by some method, and the methods only name kernels of the table.
func TestEveryKernelIsUsed(t *testing.T) {
	used := map[kernelID]bool{}
	for m, im := range methodImpls() {
		for _, k := range im.kernels {
			if k < 0 || k >= numKernels {
				t.Errorf("%s names kernel %d, outside the table", m, k)
			}
			used[k] = true
		}
	}
	for id, s := range kernelSpecs() {
		if !used[kernelID(id)] {
			t.Errorf("kernel %s implements no tensor.Device method", s.name)
		}
	}
}

// The PTX must be generated for a low compute capability (so the driver JIT-compiles it for newer GPUs) and be
// loadable by drivers of CUDA 11.8 and later.
func TestPTXTarget(t *testing.T) {
	src := PTX()
	if !strings.Contains(src, ".target sm_70") {
		t.Errorf("kernels.ptx does not target sm_70; regenerate with go generate ./gpu")
	}
	if !strings.Contains(src, ".address_size 64") {
		t.Errorf("kernels.ptx is not 64-bit")
	}
}

func TestPackArgs(t *testing.T) {
	spec := kernelSpec{"k_test", "pfliuU"}
	tests := []struct {
		name    string
		args    []arg
		want    []uint64
		wantErr string
	}{
		{"ok", []arg{ptrArg(0x1000), f32Arg(1.5), i64Arg(-2), i32Arg(-1), u64Arg(1 << 63), u32Arg(7)},
			[]uint64{0x1000, 0x3fc00000, 0xfffffffffffffffe, 0xffffffff, 1 << 63, 7}, ""},
		{"too few", []arg{ptrArg(1)}, nil, "takes 6 arguments"},
		{"wrong kind", []arg{ptrArg(1), i64Arg(1), i64Arg(1), i32Arg(1), u64Arg(1), u32Arg(1)}, nil, "argument 1 is l, want f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := packArgs(spec, tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %#x, want %#x", got, tc.want)
			}
		})
	}
	if boolArg(true).bits != 1 || boolArg(false).bits != 0 || boolArg(true).kind != 'i' {
		t.Errorf("boolArg: %v %v", boolArg(true), boolArg(false))
	}
}

// The GPU's dropout mask must equal the CPU's: check that the threshold and scale passed to the kernel, applied to
// the same hash, reproduce the CPU device's mask.
func TestDropoutThresholdMatchesCPU(t *testing.T) {
	cpu := tensor.NewCPU(1)
	for _, tc := range []struct {
		p    float32
		seed uint64
	}{{0.1, 1}, {0.5, 42}, {0.3, 1 << 60}, {0, 7}} {
		m := cpu.New(4099)
		cpu.DropoutMask(m, tc.p, tc.seed)
		thr, keep := dropoutThreshold(tc.p)
		for i, got := range m.Data {
			want := keep
			if uint32(mix64(tc.seed+0x9e3779b97f4a7c15*uint64(i+1))>>32) < thr {
				want = 0
			}
			if got != want {
				t.Fatalf("p=%g seed=%d: element %d is %g on the CPU, the GPU's rule gives %g", tc.p, tc.seed, i, got, want)
			}
		}
	}
}

// mix64 is kernels.cu's splitmix64 finaliser, for the test above.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
