package gpu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

// Signatures of the few cuBLAS and driver entry points used, with handles and streams as opaque pointers and
// device addresses as integers (cublasOperation_t: 0 = N, 1 = T; 0 = success).
typedef int (*cublas_create_fn)(void **);
typedef int (*cublas_set_stream_fn)(void *, void *);
typedef int (*cublas_sgemm_fn)(void *, int, int, int, int, int, const float *, const float *, int, const float *,
                               int, const float *, float *, int);
typedef int (*cublas_sgemm_sb_fn)(void *, int, int, int, int, int, const float *, const float *, int, long long,
                                  const float *, int, long long, const float *, float *, int, long long, int);
typedef int (*cu_init_fn)(unsigned int);
typedef int (*cu_count_fn)(int *);

static int dae_cublas_create(void *f, void **h) { return ((cublas_create_fn)f)(h); }
static int dae_cublas_set_stream(void *f, void *h, void *s) { return ((cublas_set_stream_fn)f)(h, s); }

static int dae_cublas_sgemm(void *f, void *h, int ta, int tb, int m, int n, int k, float alpha, uint64_t a, int lda,
                            uint64_t b, int ldb, float beta, uint64_t c, int ldc) {
	return ((cublas_sgemm_fn)f)(h, ta, tb, m, n, k, &alpha, (const float *)a, lda, (const float *)b, ldb, &beta,
	                            (float *)c, ldc);
}

static int dae_cublas_sgemm_sb(void *f, void *h, int ta, int tb, int m, int n, int k, float alpha, uint64_t a,
                               int lda, long long sa, uint64_t b, int ldb, long long sb, float beta, uint64_t c,
                               int ldc, long long sc, int batch) {
	return ((cublas_sgemm_sb_fn)f)(h, ta, tb, m, n, k, &alpha, (const float *)a, lda, sa, (const float *)b, ldb, sb,
	                               &beta, (float *)c, ldc, sc, batch);
}

// dae_cuda_probe loads the driver without linking it and returns the number of GPUs, or a negative code: -1 no
// libcuda.so.1, -2 missing symbols, otherwise -(1000 + the CUresult of cuInit or cuDeviceGetCount).
static int dae_cuda_probe(void) {
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) return -1;
	cu_init_fn init = (cu_init_fn)dlsym(lib, "cuInit");
	cu_count_fn count = (cu_count_fn)dlsym(lib, "cuDeviceGetCount");
	if (!init || !count) return -2;
	int r = init(0);
	if (r != 0) return -(1000 + r);
	int n = 0;
	r = count(&n);
	if (r != 0) return -(1000 + r);
	return n;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// cublasNames are the sonames tried, newest first: one binary runs on hosts with CUDA 11, 12 or 13.
var cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"}

// cublasLib is a cuBLAS loaded at run time; its functions are resolved once.
type cublasLib struct {
	soname                            string
	create, setStream, sgemm, sgemmSB unsafe.Pointer
}

// errNoCUBLAS reports that no cuBLAS could be loaded; the device then uses its own GEMM kernel.
var errNoCUBLAS = errors.New("gpu: no cuBLAS found")

// loadCUBLAS opens the first of names that loads and resolves the four entry points the device uses. The library
// stays loaded for the life of the process.
func loadCUBLAS(names []string) (*cublasLib, error) {
	var tried []string
	for _, name := range names {
		cn := C.CString(name)
		h := C.dlopen(cn, C.RTLD_NOW|C.RTLD_LOCAL)
		C.free(unsafe.Pointer(cn))
		if h == nil {
			tried = append(tried, fmt.Sprintf("%s: %s", name, C.GoString(C.dlerror())))
			continue
		}
		lib := &cublasLib{soname: name}
		for _, s := range []struct {
			sym string
			p   *unsafe.Pointer
		}{
			{"cublasCreate_v2", &lib.create},
			{"cublasSetStream_v2", &lib.setStream},
			{"cublasSgemm_v2", &lib.sgemm},
			{"cublasSgemmStridedBatched", &lib.sgemmSB},
		} {
			cs := C.CString(s.sym)
			*s.p = C.dlsym(h, cs)
			C.free(unsafe.Pointer(cs))
			if *s.p == nil {
				C.dlclose(h)
				return nil, fmt.Errorf("gpu: %s has no %s", name, s.sym)
			}
		}
		return lib, nil
	}
	return nil, fmt.Errorf("%w (%s)", errNoCUBLAS, strings.Join(tried, "; "))
}

// cublasHandle is a cuBLAS context bound to one stream. It must be created and used with the device's CUDA context
// current on the calling thread.
type cublasHandle struct {
	lib *cublasLib
	h   unsafe.Pointer
}

func (l *cublasLib) newHandle(stream unsafe.Pointer) (*cublasHandle, error) {
	var h unsafe.Pointer
	if st := C.dae_cublas_create(l.create, &h); st != 0 {
		return nil, fmt.Errorf("gpu: cublasCreate (%s): status %d", l.soname, int(st))
	}
	if st := C.dae_cublas_set_stream(l.setStream, h, stream); st != 0 {
		return nil, fmt.Errorf("gpu: cublasSetStream (%s): status %d", l.soname, int(st))
	}
	return &cublasHandle{lib: l, h: h}, nil
}

// colMajorGemm is one cuBLAS call in column-major terms. A row-major product C = op(A)·op(B) (M×N) is the
// column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ (N×M) over the same memory, so the operands swap and each keeps its own
// transpose flag and leading dimension.
type colMajorGemm struct {
	transA, transB   bool // of the first and second column-major operand
	m, n, k          int
	a, b, c          uintptr
	lda, ldb, ldc    int
	strideA, strideB int
	strideC, batch   int
	alpha, beta      float32
}

// fromRowMajor maps a row-major product onto cuBLAS's column-major one.
func fromRowMajor(transA, transB bool, m, n, k int, a uintptr, lda, sa int, b uintptr, ldb, sb int, c uintptr,
	ldc, sc, batch int, alpha, beta float32) colMajorGemm {
	return colMajorGemm{transA: transB, transB: transA, m: n, n: m, k: k, a: b, lda: ldb, strideA: sb,
		b: a, ldb: lda, strideB: sa, c: c, ldc: ldc, strideC: sc, batch: batch, alpha: alpha, beta: beta}
}

func op(t bool) C.int {
	if t {
		return 1
	}
	return 0
}

// sgemm runs g on the handle's stream.
func (h *cublasHandle) sgemm(g colMajorGemm) error {
	var st C.int
	if g.batch <= 1 {
		st = C.dae_cublas_sgemm(h.lib.sgemm, h.h, op(g.transA), op(g.transB), C.int(g.m), C.int(g.n), C.int(g.k),
			C.float(g.alpha), C.uint64_t(g.a), C.int(g.lda), C.uint64_t(g.b), C.int(g.ldb), C.float(g.beta),
			C.uint64_t(g.c), C.int(g.ldc))
	} else {
		st = C.dae_cublas_sgemm_sb(h.lib.sgemmSB, h.h, op(g.transA), op(g.transB), C.int(g.m), C.int(g.n),
			C.int(g.k), C.float(g.alpha), C.uint64_t(g.a), C.int(g.lda), C.longlong(g.strideA), C.uint64_t(g.b),
			C.int(g.ldb), C.longlong(g.strideB), C.float(g.beta), C.uint64_t(g.c), C.int(g.ldc),
			C.longlong(g.strideC), C.int(g.batch))
	}
	if st != 0 {
		return fmt.Errorf("gpu: cuBLAS sgemm (%s) m=%d n=%d k=%d batch=%d: status %d", h.lib.soname, g.m, g.n, g.k,
			g.batch, int(st))
	}
	return nil
}

// ErrNoGPU reports that this machine has no usable CUDA GPU.
var ErrNoGPU = errors.New("no CUDA GPU")

// Probe returns the number of CUDA GPUs, asking the driver through dlopen so that it works, and fails with
// ErrNoGPU, on machines without one. It is for programs and tests built without the cuda tag (see TestCUDAParity):
// a binary built with the tag cannot start without a GPU, since gorgonia.org/cu's initialiser exits first.
func Probe() (int, error) {
	n := int(C.dae_cuda_probe())
	switch {
	case n == -1:
		return 0, fmt.Errorf("%w: the CUDA driver (libcuda.so.1) is not installed", ErrNoGPU)
	case n == -2:
		return 0, fmt.Errorf("%w: libcuda.so.1 lacks cuInit or cuDeviceGetCount", ErrNoGPU)
	case n == -1100:
		return 0, fmt.Errorf("%w: the CUDA driver is installed but detects no device (CUDA_ERROR_NO_DEVICE)", ErrNoGPU)
	case n < 0:
		return 0, fmt.Errorf("%w: the CUDA driver failed with CUresult %d", ErrNoGPU, -n-1000)
	case n == 0:
		return 0, fmt.Errorf("%w: the CUDA driver sees no device", ErrNoGPU)
	}
	return n, nil
}
