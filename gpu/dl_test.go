package gpu

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"
)

func TestLoadCUBLASMissing(t *testing.T) {
	_, err := loadCUBLAS([]string{"libcublas.so.0-does-not-exist", "libnothing.so"})
	if !errors.Is(err, errNoCUBLAS) {
		t.Fatalf("err = %v, want errNoCUBLAS", err)
	}
	for _, n := range []string{"libcublas.so.0-does-not-exist", "libnothing.so"} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
}

// On a machine with a cuBLAS (the CUDA toolkit installs one; no GPU is needed to load it) all four entry points
// resolve. Creating a handle needs a GPU and is covered by the parity tests.
func TestLoadCUBLASResolves(t *testing.T) {
	lib, err := loadCUBLAS(cublasNames)
	if errors.Is(err, errNoCUBLAS) {
		t.Skipf("no cuBLAS on this machine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]unsafe.Pointer{"create": lib.create, "setStream": lib.setStream,
		"sgemm": lib.sgemm, "sgemmStridedBatched": lib.sgemmSB} {
		if p == nil {
			t.Errorf("%s: %s not resolved", lib.soname, name)
		}
	}
	t.Logf("loaded %s", lib.soname)
}

func TestProbe(t *testing.T) {
	n, err := Probe()
	switch {
	case err == nil && n > 0:
		t.Logf("%d CUDA GPU(s)", n)
	case errors.Is(err, ErrNoGPU) && n == 0:
		t.Logf("no GPU, as reported: %v", err)
	default:
		t.Fatalf("Probe() = %d, %v: want a count with no error, or 0 and ErrNoGPU", n, err)
	}
}

// colMajorSgemm is the BLAS definition of sgemm in column-major order over flat memory, as cuBLAS computes it.
func colMajorSgemm(mem []float32, g colMajorGemm) {
	for bi := range max(g.batch, 1) {
		a, b, c := int(g.a)+bi*g.strideA, int(g.b)+bi*g.strideB, int(g.c)+bi*g.strideC
		for j := range g.n {
			for i := range g.m {
				s := float32(0)
				for k := range g.k {
					av := mem[a+i+k*g.lda] // op(A)[i,k], column-major
					if g.transA {
						av = mem[a+k+i*g.lda]
					}
					bv := mem[b+k+j*g.ldb]
					if g.transB {
						bv = mem[b+j+k*g.ldb]
					}
					s += av * bv
				}
				ci := c + i + j*g.ldc
				if g.beta == 0 {
					mem[ci] = g.alpha * s
				} else {
					mem[ci] = g.alpha*s + g.beta*mem[ci]
				}
			}
		}
	}
}

// rowMajorSgemm is tensor.GemmArgs's definition, row-major.
func rowMajorSgemm(mem []float32, ta, tb bool, m, n, k, a, lda, sa, b, ldb, sb, c, ldc, sc, batch int, alpha, beta float32) {
	for bi := range batch {
		for i := range m {
			for j := range n {
				s := float32(0)
				for kk := range k {
					av := mem[a+bi*sa+i*lda+kk]
					if ta {
						av = mem[a+bi*sa+kk*lda+i]
					}
					bv := mem[b+bi*sb+kk*ldb+j]
					if tb {
						bv = mem[b+bi*sb+j*ldb+kk]
					}
					s += av * bv
				}
				ci := c + bi*sc + i*ldc + j
				mem[ci] = alpha*s + beta*mem[ci]
			}
		}
	}
}

// The operand swap that maps a row-major product onto column-major cuBLAS must compute the same numbers, for
// every transpose combination, padded leading dimensions and strided batches.
func TestFromRowMajor(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		ta, tb      bool
		m, n, k     int
		pad, batch  int
		alpha, beta float32
	}{
		{false, false, 3, 4, 5, 0, 1, 1, 0},
		{true, false, 4, 3, 2, 1, 1, 0.5, 1},
		{false, true, 2, 5, 3, 2, 3, 1, 0.25},
		{true, true, 5, 2, 4, 0, 2, -1, 1},
	} {
		lda := tc.k
		if tc.ta {
			lda = tc.m
		}
		ldb := tc.n
		if tc.tb {
			ldb = tc.k
		}
		lda, ldb = lda+tc.pad, ldb+tc.pad
		ldc := tc.n + tc.pad
		sa, sb, sc := 64, 64, 64
		a, b, c := 0, 256, 512
		mem := make([]float32, 768)
		for i := range mem {
			mem[i] = float32(rng.NormFloat64())
		}
		want := append([]float32(nil), mem...)
		rowMajorSgemm(want, tc.ta, tc.tb, tc.m, tc.n, tc.k, a, lda, sa, b, ldb, sb, c, ldc, sc, tc.batch, tc.alpha, tc.beta)
		got := append([]float32(nil), mem...)
		colMajorSgemm(got, fromRowMajor(tc.ta, tc.tb, tc.m, tc.n, tc.k, uintptr(a), lda, sa, uintptr(b), ldb, sb,
			uintptr(c), ldc, sc, tc.batch, tc.alpha, tc.beta))
		for i := range want {
			if d := want[i] - got[i]; d > 1e-5 || d < -1e-5 {
				t.Errorf("%+v: element %d: row-major %g, via column-major %g", tc, i, want[i], got[i])
				break
			}
		}
	}
}
