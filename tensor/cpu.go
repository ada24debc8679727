package tensor

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lopenblas -lm
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "kernels.h"
void openblas_set_num_threads(int);
char *openblas_get_corename(void);
void gotoblas_dynamic_init(void);
void gotoblas_dynamic_quit(void);

static int core_rank(const char *n) {
	static const char *avx512[] = {"skylakex", "cooperlake", "sapphirerapids", 0};
	static const char *avx2[] = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", 0};
	for (int i = 0; avx512[i]; i++) if (strcasecmp(n, avx512[i]) == 0) return 2;
	for (int i = 0; avx2[i]; i++) if (strcasecmp(n, avx2[i]) == 0) return 1;
	return 0;
}

// OpenBLAS picks its kernels by CPU model and falls back to the SSE3 "Prescott" kernels on models it does not
// know (virtual CPUs often report none), which costs 3-5x. When the CPU has AVX-512 or AVX2 but OpenBLAS chose a
// weaker core, and the user did not choose one, switch to the matching core.
static const char *dae_openblas_core(void) {
	const char *name = openblas_get_corename();
	if (getenv("OPENBLAS_CORETYPE")) return name;
	__builtin_cpu_init();
	int want = 0;
	const char *core = 0;
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
		want = 2; core = "SkylakeX";
	} else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		want = 1; core = "Haswell";
	}
	if (want == 0 || core_rank(name) >= want) return name;
	setenv("OPENBLAS_CORETYPE", core, 1);
	gotoblas_dynamic_quit();
	gotoblas_dynamic_init();
	return openblas_get_corename();
}
*/
import "C"

import (
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// CPU is the host device: GEMM in OpenBLAS, the other kernels in vectorised C split over Threads goroutines.
type CPU struct {
	threads int
	scratch scratchPool
	// gemmNanos adds up the thread-time spent inside OpenBLAS, so benchmarks can say how much of a step is GEMM.
	gemmNanos atomic.Int64
	// convNanos adds up the thread-time spent in the direct 3×3 convolution kernel (a GEMM in all but name).
	convNanos atomic.Int64
	// im2colConv turns the direct 3×3 convolution off (im2col + GEMM everywhere), for comparison.
	im2colConv bool
}

// SetIm2colConv makes 3×3 convolutions use im2col and GEMM instead of the direct kernel (on: true), so the two
// can be compared in one run.
func (d *CPU) SetIm2colConv(on bool) { d.im2colConv = on }

// DirectConvTime is the thread-time spent in the direct 3×3 convolution kernel since the device was made.
func (d *CPU) DirectConvTime() time.Duration { return time.Duration(d.convNanos.Load()) }

// directConv says whether a 3×3 convolution over maps w pixels wide goes through the direct kernels (forward and
// input gradient): on CPUs with AVX-512 or AVX2 (elsewhere the portable blocks lose to im2col + GEMM), and not
// below minDirectWidth columns.
func (d *CPU) directConv(k, w int) bool {
	return k == 3 && w >= minDirectWidth() && !d.im2colConv && (directLevel >= 1 || directForced)
}

// directConvDW says whether the weight gradient of such a convolution goes through a direct kernel. Both have
// AVX-512 blocks only (the padded-grid kernel's portable form runs where tests force it). With input channels in blocks of 16 the channels-last kernel runs on any map the forward takes
// (it visits the image's positions only); other channel counts go through the padded-grid kernel, from 8 wide (on
// narrower maps most of that grid is border: im2col + GEMM is faster there).
func (d *CPU) directConvDW(k, cin, w int) bool {
	if !d.directConv(k, w) || (directLevel < 2 && !directForced) {
		return false
	}
	return w >= 8 || (cin%16 == 0 && C.k_conv3x3_dw_cl != 0 && directLevel >= 2 && C.k_conv3x3_cap >= 2)
}

var (
	directLevel  = int(C.k_conv3x3_fast()) // 2 AVX-512, 1 AVX2, 0 neither
	directForced bool                      // tests: the direct kernels whatever the CPU
)

// packConv3x3 packs w [cout,cin,3,3] (flip: the kernel of the input gradient) into a scratch buffer.
func (d *CPU) packConv3x3(w *Tensor, cout, cin int, flip bool) *[]float32 {
	f, outC, inC := C.int(0), cout, cin
	if flip {
		f, outC, inC = 1, cin, cout
	}
	wp := d.scratchBuf(int(C.k_conv3x3_packed_len(C.long(outC), C.long(inC))))
	pw, pd := ptr(w), (*C.float)(unsafe.Pointer(&(*wp)[0]))
	// Blocks of 8 output channels over the cores: at 512 channels a 3×3 kernel is 9.4 MB to reorder, and a
	// forward on small maps spent 5% of its time doing it on one core.
	d.par((outC+7)/8, max(1, elemGrain/(inC*72)), func(lo, hi int) {
		C.k_conv3x3_pack(pd, pw, C.long(cout), C.long(cin), f, C.long(lo), C.long(hi))
	})
	return wp
}

// conv3x3 runs the direct kernel on one image: y [cout,h,w] = x [cin,h,w] ⋆ (packed w) + b (+ res [cout,h,w]
// when it is not nil).
func (d *CPU) conv3x3(y, x []float32, wp []float32, b *Tensor, res []float32, cin, cout, h, w int, scratch []float32) {
	t0 := time.Now()
	var rp *C.float
	if res != nil {
		rp = (*C.float)(unsafe.Pointer(&res[0]))
	}
	C.k_conv3x3((*C.float)(unsafe.Pointer(&y[0])), (*C.float)(unsafe.Pointer(&x[0])),
		(*C.float)(unsafe.Pointer(&wp[0])), ptr(b), rp, C.long(cin), C.long(cout), C.long(h), C.long(w),
		(*C.float)(unsafe.Pointer(&scratch[0])))
	d.convNanos.Add(int64(time.Since(t0)))
}

// PeakGFLOPS measures the machine's arithmetic peak as the device uses it: every thread runs independent fused
// multiply-adds on full vectors (k_fma_peak) for about dur, and the result is their FLOPs (two per lane of each)
// over the wall time. Benchmarks put it beside their own GFLOP/s, so that a share of the peak can be read off one
// moment of a machine whose speed drifts.
func (d *CPU) PeakGFLOPS(dur time.Duration) float64 {
	const chunk = 1 << 18
	var flops atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range d.threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lanes, fmas C.int
			n := 0
			for n == 0 || time.Since(start) < dur {
				C.k_fma_peak(chunk, &lanes, &fmas)
				n++
			}
			flops.Add(int64(n) * chunk * int64(lanes) * int64(fmas) * 2)
		}()
	}
	wg.Wait()
	return float64(flops.Load()) / time.Since(start).Seconds() / 1e9
}

// smallMapConv says whether a direct 3×3 convolution on maps of hw positions goes through k_conv3x3_small:
// maps of at most one AVX-512 vector.
func smallMapConv(hw int) bool {
	return hw <= 16 && directLevel >= 2 && C.k_conv3x3_cap >= 2
}

// conv3x3Small runs k_conv3x3_small on n images (y, x, res from the first image on).
func (d *CPU) conv3x3Small(y, x []float32, wp []float32, b *Tensor, res []float32, n, cin, cout, h, w int) {
	t0 := time.Now()
	var rp *C.float
	if res != nil {
		rp = (*C.float)(unsafe.Pointer(&res[0]))
	}
	if C.k_conv3x3_small((*C.float)(unsafe.Pointer(&y[0])), (*C.float)(unsafe.Pointer(&x[0])),
		(*C.float)(unsafe.Pointer(&wp[0])), ptr(b), rp, C.long(n), C.long(cin), C.long(cout), C.long(h),
		C.long(w)) == 0 {
		panic(fmt.Sprintf("tensor: the one-vector 3×3 kernel declined a %d×%d map", h, w))
	}
	d.convNanos.Add(int64(time.Since(t0)))
}

// setDWChannelsLast turns the channels-last weight-gradient kernel on or off (benchmarks compare it with the
// padded-grid one).
func setDWChannelsLast(on bool) {
	C.k_conv3x3_dw_cl = 0
	if on {
		C.k_conv3x3_dw_cl = 1
	}
}

// setConvCap limits the direct kernels to blocks of at most this width (2 AVX-512, 1 AVX2, 0 portable) and uses
// the direct kernels even where the CPU would not (tests); setConvCap(2) restores the default.
func setConvCap(level int) {
	directForced = level < 2
	C.k_conv3x3_cap = C.int(level)
}

// setAttnKernel turns the attention products of attn.c on or off (off: OpenBLAS, for tests to compare).
func setAttnKernel(on bool) {
	C.k_attn_cap = 0
	if on {
		C.k_attn_cap = 1
	}
}

// c1x1Ok says whether 1×1 convolutions to cout channels over hw positions take attn.c's kernel here.
func c1x1Ok(cout, hw int) bool { return C.k_conv1x1_ok(C.long(cout), C.long(hw)) != 0 }

func conv3x3Scratch(cin, cout, h, w int) int {
	return int(C.k_conv3x3_scratch_len(C.long(cin), C.long(cout), C.long(h), C.long(w)))
}

// NewCPU returns the CPU device using threads cores (0: GOMAXPROCS). OpenBLAS is set to one thread: the device
// splits each product over the cores itself.
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	blasInit.Do(func() { blasCore = C.GoString(C.dae_openblas_core()) })
	C.openblas_set_num_threads(1)
	return &CPU{threads: threads, scratch: scratchPool{threads: threads}}
}

// The OpenBLAS kernel choice is process-wide and made once.
var (
	blasInit sync.Once
	blasCore string
)

// BLASCore names the OpenBLAS kernel set in use.
func BLASCore() string { return blasCore }

// Threads is the number of cores the device uses.
func (d *CPU) Threads() int { return d.threads }

func (d *CPU) Name() string { return fmt.Sprintf("cpu(%d threads, OpenBLAS %s)", d.threads, blasCore) }

func (d *CPU) New(shape ...int) *Tensor {
	n := Numel(shape...)
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float32, n), Dev: d, n: n}
}

func (d *CPU) Upload(dst *Tensor, src []float32) {
	if len(src) != dst.n {
		panic(fmt.Sprintf("tensor: upload %d values into %v", len(src), dst.Shape))
	}
	copy(dst.Data, src)
}

func (d *CPU) Download(dst []float32, src *Tensor) {
	if len(dst) != src.n {
		panic(fmt.Sprintf("tensor: download %v into %d values", src.Shape, len(dst)))
	}
	copy(dst, src.Data)
}

func (d *CPU) Sync() {}

// ptrAt is a C pointer to t.Data[off].
func ptrAt(t *Tensor, off int) *C.float { return (*C.float)(unsafe.Pointer(&t.Data[off])) }

func ptr(t *Tensor) *C.float {
	if t == nil || len(t.Data) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&t.Data[0]))
}

// parPieces is how many pieces per thread par cuts its range into.
const parPieces = 4

// par runs f over [0, n) on up to Threads threads, in pieces of at least grain items taken from a shared counter.
// The calling thread starts at once and the helpers join when they wake (a goroutine here starts 15–25 µs after
// it is spawned): whoever is running takes the next piece, and the call returns when every piece is done, not
// when every helper has woken, so a late helper costs the pieces it missed rather than a wait at the end. f must
// not depend on which thread runs which piece (every kernel here writes by index).
func (d *CPU) par(n, grain int, f func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	threads := min(d.threads, n/grain)
	if threads <= 1 {
		f(0, n)
		return
	}
	pieces := min(threads*parPieces, n/grain)
	step := (n + pieces - 1) / pieces
	pieces = (n + step - 1) / step
	var next, done atomic.Int64
	fin := make(chan struct{})
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= pieces {
				return
			}
			f(i*step, min((i+1)*step, n))
			if int(done.Add(1)) == pieces {
				close(fin)
			}
		}
	}
	for range threads - 1 {
		go work()
	}
	work()
	<-fin
}

// parSum is par for kernels that return a partial sum. Partials are added in chunk order, so the result does not
// depend on goroutine scheduling (training resumes bit-exactly).
func (d *CPU) parSum(n, grain int, f func(lo, hi int) float64) float64 {
	if n <= 0 {
		return 0
	}
	chunks := max(1, min(d.threads, n/max(grain, 1)))
	step := (n + chunks - 1) / chunks
	parts := make([]float64, chunks)
	d.par(chunks, 1, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			parts[c] = f(c*step, min((c+1)*step, n))
		}
	})
	total := 0.0
	for _, p := range parts {
		total += p
	}
	return total
}

const elemGrain = 1 << 15

func (d *CPU) Gemm(g GemmArgs) {
	lda, ldb, ldc := g.LDA, g.LDB, g.LDC
	if lda == 0 {
		lda = g.K
		if g.TransA {
			lda = g.M
		}
	}
	if ldb == 0 {
		ldb = g.N
		if g.TransB {
			ldb = g.K
		}
	}
	if ldc == 0 {
		ldc = g.N
	}
	ta, tb := C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans), C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans)
	if g.TransA {
		ta = C.CblasTrans
	}
	if g.TransB {
		tb = C.CblasTrans
	}
	batch := max(g.Batch, 1)
	pa, pb, pc := unsafe.Pointer(ptr(g.A)), unsafe.Pointer(ptr(g.B)), unsafe.Pointer(ptr(g.C))
	// sub runs rows [m0,m1) and columns [n0,n1) of product i on the calling thread.
	sub := func(i, m0, m1, n0, n1 int) {
		a := unsafe.Add(pa, 4*i*g.StrideA)
		b := unsafe.Add(pb, 4*i*g.StrideB)
		c := unsafe.Add(pc, 4*(i*g.StrideC+m0*ldc+n0))
		if g.TransA {
			a = unsafe.Add(a, 4*m0)
		} else {
			a = unsafe.Add(a, 4*m0*lda)
		}
		if g.TransB {
			b = unsafe.Add(b, 4*n0*ldb)
		} else {
			b = unsafe.Add(b, 4*n0)
		}
		t0 := time.Now()
		C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m1-m0), C.blasint(n1-n0), C.blasint(g.K), C.float(g.Alpha),
			(*C.float)(a), C.blasint(lda), (*C.float)(b), C.blasint(ldb), C.float(g.Beta), (*C.float)(c), C.blasint(ldc))
		d.gemmNanos.Add(int64(time.Since(t0)))
	}
	// OpenBLAS runs single-threaded; the products are split over the cores here, so that its idle worker threads
	// never spin against the element-wise kernels.
	work := float64(g.M) * float64(g.N) * float64(g.K) * float64(batch)
	switch {
	case d.threads == 1 || work < 1<<18:
		for i := 0; i < batch; i++ {
			sub(i, 0, g.M, 0, g.N)
		}
	case batch >= d.threads:
		d.par(batch, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				sub(i, 0, g.M, 0, g.N)
			}
		})
	case g.N >= g.M:
		d.splitGemm(batch, g.N, func(i, lo, hi int) { sub(i, 0, g.M, lo, hi) })
	default:
		d.splitGemm(batch, g.M, func(i, lo, hi int) { sub(i, lo, hi, 0, g.N) })
	}
}

// splitGemm runs f over every product i and a split of [0, n) into one range per thread (multiples of 16).
func (d *CPU) splitGemm(batch, n int, f func(i, lo, hi int)) {
	chunk := (n + d.threads - 1) / d.threads
	chunk = (chunk + 15) &^ 15
	parts := (n + chunk - 1) / chunk
	d.par(batch*parts, 1, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			i, p := j/parts, j%parts
			f(i, p*chunk, min((p+1)*chunk, n))
		}
	})
}

func (d *CPU) Zero(t *Tensor) { clear(t.Data) }

func (d *CPU) Fill(t *Tensor, v float32) {
	for i := range t.Data {
		t.Data[i] = v
	}
}

func (d *CPU) Copy(dst, src *Tensor) {
	if dst.n != src.n {
		panic(fmt.Sprintf("tensor: copy %v into %v", src.Shape, dst.Shape))
	}
	copy(dst.Data, src.Data)
}

func (d *CPU) CopyBlocks(dst *Tensor, dstOff, dstStride int, src *Tensor, srcOff, srcStride, blockLen, n int, acc bool) {
	if n == 0 || blockLen == 0 {
		return
	}
	if dstOff+(n-1)*dstStride+blockLen > dst.n || srcOff+(n-1)*srcStride+blockLen > src.n {
		panic("tensor: CopyBlocks out of range")
	}
	a := C.int(0)
	if acc {
		a = 1
	}
	pd, ps := &dst.Data[dstOff], &src.Data[srcOff]
	d.par(n, max(1, elemGrain/blockLen), func(lo, hi int) {
		C.k_copy_blocks((*C.float)(pd), C.long(dstStride), (*C.float)(ps), C.long(srcStride), C.long(blockLen), a,
			C.long(lo), C.long(hi))
	})
}

func (d *CPU) Axpby(a float32, x *Tensor, b float32, y *Tensor) {
	px, py := ptr(x), ptr(y)
	d.par(y.n, elemGrain, func(lo, hi int) { C.k_axpby(C.float(a), px, C.float(b), py, C.long(lo), C.long(hi)) })
}

func (d *CPU) Lincomb(dst *Tensor, a float32, x *Tensor, b float32, y *Tensor) {
	pd, px, py := ptr(dst), ptr(x), ptr(y)
	d.par(dst.n, elemGrain, func(lo, hi int) {
		C.k_lincomb(pd, C.float(a), px, C.float(b), py, C.long(lo), C.long(hi))
	})
}

func (d *CPU) Mul(dst, x, y *Tensor) {
	pd, px, py := ptr(dst), ptr(x), ptr(y)
	d.par(dst.n, elemGrain, func(lo, hi int) { C.k_mul(pd, px, py, C.long(lo), C.long(hi)) })
}

func (d *CPU) Scale(t *Tensor, a float32) {
	p := ptr(t)
	d.par(t.n, elemGrain, func(lo, hi int) { C.k_scale(p, C.float(a), C.long(lo), C.long(hi)) })
}

func (d *CPU) Clamp(t *Tensor, lo, hi float32) {
	p := ptr(t)
	d.par(t.n, elemGrain, func(a, b int) { C.k_clamp(p, C.float(lo), C.float(hi), C.long(a), C.long(b)) })
}

func (d *CPU) SumSquares(t *Tensor) float64 {
	p := ptr(t)
	return d.parSum(t.n, elemGrain, func(lo, hi int) float64 { return float64(C.k_sumsq(p, C.long(lo), C.long(hi))) })
}

func (d *CPU) SiLU(dst, x *Tensor) {
	pd, px := ptr(dst), ptr(x)
	d.par(x.n, elemGrain/4, func(lo, hi int) { C.k_silu(pd, px, C.long(lo), C.long(hi)) })
}

func (d *CPU) SiLUBackward(dx, x, dy *Tensor) {
	pd, px, py := ptr(dx), ptr(x), ptr(dy)
	d.par(x.n, elemGrain/4, func(lo, hi int) { C.k_silu_bwd(pd, px, py, C.long(lo), C.long(hi)) })
}

func (d *CPU) AddChannelBias(y, bias *Tensor, n, c, hw int) {
	py, pb := ptr(y), ptr(bias)
	d.par(n*c, max(1, elemGrain/hw), func(lo, hi int) {
		C.k_add_bias(py, pb, C.long(c), C.long(hw), C.long(lo), C.long(hi))
	})
}

func (d *CPU) ChannelSumAcc(db, dy *Tensor, n, c, hw int) {
	pb, py := ptr(db), ptr(dy)
	d.par(c, max(1, elemGrain/(n*hw)), func(lo, hi int) {
		C.k_chan_sum(pb, py, C.long(n), C.long(c), C.long(hw), C.long(lo), C.long(hi))
	})
}

func (d *CPU) Im2Col(col, x *Tensor, n, c, h, w, k, pad int) {
	pc, px := ptr(col), ptr(x)
	d.par(c*k*k, max(1, elemGrain/(n*h*w)), func(lo, hi int) {
		C.k_im2col(pc, px, C.long(n), C.long(c), C.long(h), C.long(w), C.long(k), C.long(pad), C.long(lo), C.long(hi))
	})
}

func (d *CPU) Col2ImAcc(dx, col *Tensor, n, c, h, w, k, pad int) {
	pd, pc := ptr(dx), ptr(col)
	d.par(c, max(1, elemGrain/(n*h*w*k*k)), func(lo, hi int) {
		C.k_col2im(pd, pc, C.long(n), C.long(c), C.long(h), C.long(w), C.long(k), C.long(pad), C.long(lo), C.long(hi))
	})
}

func (d *CPU) NCHWToCNHW(dst, x *Tensor, n, c, hw int) {
	pd, px := ptr(dst), ptr(x)
	d.par(c, max(1, elemGrain/(n*hw)), func(lo, hi int) {
		C.k_nchw_cnhw(pd, px, C.long(n), C.long(c), C.long(hw), C.long(lo), C.long(hi))
	})
}

func (d *CPU) CNHWToNCHW(dst, x, bias *Tensor, n, c, hw int) {
	pd, px, pb := ptr(dst), ptr(x), ptr(bias)
	d.par(c, max(1, elemGrain/(n*hw)), func(lo, hi int) {
		C.k_cnhw_nchw(pd, px, pb, C.long(n), C.long(c), C.long(hw), C.long(lo), C.long(hi))
	})
}

func silu(m GNMod) C.int {
	if m.SiLU {
		return 1
	}
	return 0
}

func (d *CPU) GroupNorm(y, x, gamma, beta, mean, rstd *Tensor, n, c, hw, g int, eps float32, mod GNMod) {
	py, px, pg, pb, pm, pr := ptr(y), ptr(x), ptr(gamma), ptr(beta), ptr(mean), ptr(rstd)
	ps, psh, pz := ptr(mod.Scale), ptr(mod.Shift), ptr(mod.ZScale)
	d.par(n*g, max(1, elemGrain/(c/g*hw)), func(lo, hi int) {
		C.k_gn_fwd(py, px, pg, pb, pm, pr, ps, psh, pz, silu(mod), C.long(c), C.long(hw), C.long(g), C.float(eps),
			C.long(lo), C.long(hi))
	})
}

// scratchBuf returns a host buffer of n floats from a pool of power-of-two size classes; return it with
// d.scratch.Put.
func (d *CPU) scratchBuf(n int) *[]float32 {
	return d.scratch.get(n)
}

func (d *CPU) GroupNormBackward(gr GNGrads, dy, x, gamma, beta, mean, rstd *Tensor, n, c, hw, g int, mod GNMod) {
	bufp := d.scratchBuf(2 * n * c)
	defer d.scratch.Put(bufp)
	buf := *bufp
	dgp, dbp := buf[:n*c], buf[n*c:]
	pdx, pdy, px, pg, pb, pm, pr := ptr(gr.DX), ptr(dy), ptr(x), ptr(gamma), ptr(beta), ptr(mean), ptr(rstd)
	if gr.DX == nil {
		// The kernel writes dx as it goes (SiLU's gradient between its passes): without one, into scratch.
		dxp := d.scratchBuf(n * c * hw)
		defer d.scratch.Put(dxp)
		pdx = (*C.float)(unsafe.Pointer(&(*dxp)[0]))
	}
	ps, psh, pz := ptr(mod.Scale), ptr(mod.Shift), ptr(mod.ZScale)
	pds, pdsh, pdz := ptr(gr.DScale), ptr(gr.DShift), ptr(gr.DZScale)
	pgp, pbp := (*C.float)(unsafe.Pointer(&dgp[0])), (*C.float)(unsafe.Pointer(&dbp[0]))
	d.par(n*g, max(1, elemGrain/(c/g*hw)), func(lo, hi int) {
		C.k_gn_bwd(pdx, pgp, pbp, pds, pdsh, pdz, pdy, px, pg, pb, pm, pr, ps, psh, pz, silu(mod), C.long(c),
			C.long(hw), C.long(g), C.long(lo), C.long(hi))
	})
	if gr.DGamma != nil {
		for b := 0; b < n; b++ {
			for ch := 0; ch < c; ch++ {
				gr.DGamma.Data[ch] += dgp[b*c+ch]
			}
		}
	}
	if gr.DBeta != nil {
		for b := 0; b < n; b++ {
			for ch := 0; ch < c; ch++ {
				gr.DBeta.Data[ch] += dbp[b*c+ch]
			}
		}
	}
}

func (d *CPU) LayerNorm(y, x, gamma, beta, mean, rstd *Tensor, rows, dim int, eps float32) {
	py, px, pg, pb, pm, pr := ptr(y), ptr(x), ptr(gamma), ptr(beta), ptr(mean), ptr(rstd)
	d.par(rows, max(1, elemGrain/dim), func(lo, hi int) {
		C.k_ln_fwd(py, px, pg, pb, pm, pr, C.long(dim), C.float(eps), C.long(lo), C.long(hi))
	})
}

func (d *CPU) LayerNormBackward(dx, dgamma, dbeta, dy, x, gamma, mean, rstd *Tensor, rows, dim int) {
	bufp := d.scratchBuf(2 * rows * dim)
	defer d.scratch.Put(bufp)
	buf := *bufp
	pgp, pbp := (*C.float)(unsafe.Pointer(&buf[0])), (*C.float)(unsafe.Pointer(&buf[rows*dim]))
	pdx, pdy, px, pg, pm, pr := ptr(dx), ptr(dy), ptr(x), ptr(gamma), ptr(mean), ptr(rstd)
	d.par(rows, max(1, elemGrain/dim), func(lo, hi int) {
		C.k_ln_bwd(pdx, pgp, pbp, pdy, px, pg, pm, pr, C.long(dim), C.long(lo), C.long(hi))
	})
	for r := 0; r < rows; r++ {
		for i := 0; i < dim; i++ {
			dgamma.Data[i] += buf[r*dim+i]
			dbeta.Data[i] += buf[rows*dim+r*dim+i]
		}
	}
}

// attnKernel runs image(i, scratch) for the n images over the cores when attn.c's kernels take c channels over t
// positions here (reporting false, doing nothing, when they do not), counting the time as GEMM.
func (d *CPU) attnKernel(n, c, t int, image func(i int, scratch *C.float)) bool {
	if C.k_attn_ok(C.long(c), C.long(t)) == 0 {
		return false
	}
	d.par(n, 1, func(lo, hi int) {
		bufp := d.scratchBuf(int(C.k_attn_scratch_len(C.long(c), C.long(t))))
		defer d.scratch.Put(bufp)
		ps := (*C.float)(unsafe.Pointer(&(*bufp)[0]))
		t0 := time.Now()
		for i := lo; i < hi; i++ {
			image(i, ps)
		}
		d.gemmNanos.Add(int64(time.Since(t0)))
	})
	return true
}

// AttentionCore computes single-head attention for n images from qkv [n, 3c, t] (q, k, v stacked on the channel
// axis): w[i] = softmax(scale·q[i]ᵀk[i]) [t, t] and h[i] = v[i]·w[i]ᵀ [c, t]. Each image's three steps run back to
// back on one core, so that its t×t weights are still in cache when the softmax and the second product read them
// (the batched form writes all n of them, 4 MB for 16 images of 16×16, before reading any back), and the whole
// block is one parallel loop instead of three. It reports false, doing nothing, when there are fewer images than
// cores (the caller then splits each product over the cores).
func (d *CPU) AttentionCore(h, w, qkv *Tensor, n, c, t int, scale float32) bool {
	if n < d.threads {
		return false
	}
	if d.attnKernel(n, c, t, func(i int, ps *C.float) {
		C.k_attn_fwd(ptrAt(h, i*c*t), ptrAt(w, i*t*t), ptrAt(qkv, i*3*c*t), C.long(c), C.long(t), C.float(scale), ps)
	}) {
		return true
	}
	d.par(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			q := qkv.Data[i*3*c*t : (i+1)*3*c*t]
			wi := w.Data[i*t*t : (i+1)*t*t]
			d.sgemm1(true, false, t, t, c, scale, q, t, q[c*t:], t, 0, wi, t)
			pw := (*C.float)(unsafe.Pointer(&wi[0]))
			C.k_softmax(pw, pw, C.long(t), 0, C.long(t))
			d.sgemm1(false, true, c, t, t, 1, q[2*c*t:], t, wi, t, 0, h.Data[i*c*t:(i+1)*c*t], t)
		}
	})
	return true
}

// AttentionCoreBackward is AttentionCore's backward: from dh [n, c, t] and the forward's qkv and w it writes dqkv
// [n, 3c, t] and leaves softmax's input gradient in dw [n, t, t], each image's five steps back to back on one core.
// It reports false, doing nothing, when there are fewer images than cores (the caller then splits each product).
func (d *CPU) AttentionCoreBackward(dqkv, dw, dh, qkv, w *Tensor, n, c, t int, scale float32) bool {
	if n < d.threads {
		return false
	}
	if d.attnKernel(n, c, t, func(i int, ps *C.float) {
		C.k_attn_bwd(ptrAt(dqkv, i*3*c*t), ptrAt(dw, i*t*t), ptrAt(dh, i*c*t), ptrAt(qkv, i*3*c*t), ptrAt(w, i*t*t),
			C.long(c), C.long(t), C.float(scale), ps)
	}) {
		return true
	}
	d.par(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			q := qkv.Data[i*3*c*t : (i+1)*3*c*t]
			dq := dqkv.Data[i*3*c*t : (i+1)*3*c*t]
			dhi := dh.Data[i*c*t : (i+1)*c*t]
			wi, dwi := w.Data[i*t*t:(i+1)*t*t], dw.Data[i*t*t:(i+1)*t*t]
			d.sgemm1(true, false, t, t, c, 1, dhi, t, q[2*c*t:], t, 0, dwi, t)  // dw = dhᵀ·v
			d.sgemm1(false, false, c, t, t, 1, dhi, t, wi, t, 0, dq[2*c*t:], t) // dv = dh·w
			pw, pdw := (*C.float)(unsafe.Pointer(&wi[0])), (*C.float)(unsafe.Pointer(&dwi[0]))
			C.k_softmax_bwd(pdw, pw, pdw, C.long(t), 0, C.long(t))
			d.sgemm1(false, true, c, t, t, scale, q[c*t:], t, dwi, t, 0, dq, t)  // dq = k·dSᵀ/√C
			d.sgemm1(false, false, c, t, t, scale, q, t, dwi, t, 0, dq[c*t:], t) // dk = q·dS/√C
		}
	})
	return true
}

func (d *CPU) Softmax(y, x *Tensor, rows, dim int) {
	py, px := ptr(y), ptr(x)
	d.par(rows, max(1, elemGrain/4/dim), func(lo, hi int) {
		C.k_softmax(py, px, C.long(dim), C.long(lo), C.long(hi))
	})
}

func (d *CPU) SoftmaxBackward(dx, y, dy *Tensor, rows, dim int) {
	pd, py, pdy := ptr(dx), ptr(y), ptr(dy)
	d.par(rows, max(1, elemGrain/dim), func(lo, hi int) {
		C.k_softmax_bwd(pd, py, pdy, C.long(dim), C.long(lo), C.long(hi))
	})
}

func (d *CPU) AvgPool2(y, x *Tensor, planes, h, w int) {
	py, px := ptr(y), ptr(x)
	d.par(planes, max(1, elemGrain/(h*w)), func(lo, hi int) {
		C.k_avgpool2(py, px, C.long(h), C.long(w), C.long(lo), C.long(hi))
	})
}

func (d *CPU) AvgPool2Backward(dx, dy *Tensor, planes, h, w int) {
	pd, py := ptr(dx), ptr(dy)
	d.par(planes, max(1, elemGrain/(h*w)), func(lo, hi int) {
		C.k_avgpool2_bwd(pd, py, C.long(h), C.long(w), C.long(lo), C.long(hi))
	})
}

func (d *CPU) Upsample2(y, x *Tensor, planes, h, w int) {
	py, px := ptr(y), ptr(x)
	d.par(planes, max(1, elemGrain/(4*h*w)), func(lo, hi int) {
		C.k_up2(py, px, C.long(h), C.long(w), C.long(lo), C.long(hi))
	})
}

func (d *CPU) Upsample2Backward(dx, dy *Tensor, planes, h, w int) {
	pd, py := ptr(dx), ptr(dy)
	d.par(planes, max(1, elemGrain/(4*h*w)), func(lo, hi int) {
		C.k_up2_bwd(pd, py, C.long(h), C.long(w), C.long(lo), C.long(hi))
	})
}

func (d *CPU) SpatialMean(y, x *Tensor, planes, hw int) {
	py, px := ptr(y), ptr(x)
	d.par(planes, max(1, elemGrain/hw), func(lo, hi int) { C.k_spmean(py, px, C.long(hw), C.long(lo), C.long(hi)) })
}

func (d *CPU) SpatialMeanBackward(dx, dy *Tensor, planes, hw int) {
	pd, py := ptr(dx), ptr(dy)
	d.par(planes, max(1, elemGrain/hw), func(lo, hi int) {
		C.k_spmean_bwd(pd, py, C.long(hw), C.long(lo), C.long(hi))
	})
}

func (d *CPU) MSE(grad, p, t *Tensor, gscale float32) float64 {
	pg, pp, pt := ptr(grad), ptr(p), ptr(t)
	n := p.n
	if n == 0 {
		return 0 // as the CUDA device: no elements, no loss
	}
	gs := C.float(gscale / float32(n))
	s := d.parSum(n, elemGrain, func(lo, hi int) float64 {
		return float64(C.k_mse(pg, pp, pt, gs, C.long(lo), C.long(hi)))
	})
	return s / float64(n)
}

func (d *CPU) L1(grad, p, t *Tensor, gscale float32) float64 {
	pg, pp, pt := ptr(grad), ptr(p), ptr(t)
	n := p.n
	if n == 0 {
		return 0 // as the CUDA device: no elements, no loss
	}
	gs := C.float(gscale / float32(n))
	s := d.parSum(n, elemGrain, func(lo, hi int) float64 {
		return float64(C.k_l1(pg, pp, pt, gs, C.long(lo), C.long(hi)))
	})
	return s / float64(n)
}

func (d *CPU) Adam(w, g, m, v *Tensor, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	pw, pg, pm, pv := ptr(w), ptr(g), ptr(m), ptr(v)
	d.par(w.n, elemGrain, func(lo, hi int) {
		C.k_adam(pw, pg, pm, pv, C.float(lr), C.float(b1), C.float(b2), C.float(eps), C.float(wd), C.float(bc1),
			C.float(bc2), C.long(lo), C.long(hi))
	})
}

func (d *CPU) DropoutMask(mask *Tensor, p float32, seed uint64) {
	pm := ptr(mask)
	d.par(mask.n, elemGrain, func(lo, hi int) {
		C.k_dropout_mask(pm, C.float(p), C.ulong(seed), C.long(lo), C.long(hi))
	})
}

func (d *CPU) EMA(ema, w *Tensor, decay float32) {
	pe, pw := ptr(ema), ptr(w)
	d.par(w.n, elemGrain, func(lo, hi int) { C.k_ema(pe, pw, C.float(decay), C.long(lo), C.long(hi)) })
}

// convMinImages is the batch size from which convolutions are split over the cores by image rather than by GEMM.
func (d *CPU) convByImage(n int) bool { return n >= d.threads }

// GemmTime is the thread-time spent in GEMM since the device was made (summed over threads): OpenBLAS, and the
// matrix products of attn.c (attention blocks, 1×1 convolutions), softmax and transposes included.
func (d *CPU) GemmTime() time.Duration { return time.Duration(d.gemmNanos.Load()) }

// sgemm1 is a single-threaded row-major product on host slices.
func (d *CPU) sgemm1(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int,
	beta float32, c []float32, ldc int) {
	ta, tb := C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans), C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans)
	if transA {
		ta = C.CblasTrans
	}
	if transB {
		tb = C.CblasTrans
	}
	t0 := time.Now()
	C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m), C.blasint(n), C.blasint(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda), (*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
	d.gemmNanos.Add(int64(time.Since(t0)))
}

func (d *CPU) Conv2dForward(y, x, w, b *Tensor, n, cin, cout, h, wd, k int) {
	d.conv2dForward(y, x, w, b, nil, n, cin, cout, h, wd, k)
}

// Conv2dForwardAdd sets y = x ⋆ w + b + res (res [n,cout,h,w], a residual; it may be y itself). The direct kernel
// adds res as it stores its output, saving the separate pass over y that an addition afterwards costs.
func (d *CPU) Conv2dForwardAdd(y, x, w, b, res *Tensor, n, cin, cout, h, wd, k int) {
	d.conv2dForward(y, x, w, b, res, n, cin, cout, h, wd, k)
}

func (d *CPU) conv2dForward(y, x, w, b, res *Tensor, n, cin, cout, h, wd, k int) {
	hw := h * wd
	kk := cin * k * k
	if k == 1 && n >= d.threads && C.k_conv1x1_ok(C.long(cout), C.long(hw)) != 0 {
		// 1×1 with the attention block's kernel (attn.c): x packed once per image, bias and residual added as
		// the output is stored, no zeroing pass.
		d.par(n, 1, func(lo, hi int) {
			sp := d.scratchBuf(int(C.k_conv1x1_scratch_len(C.long(cin), C.long(hw))))
			defer d.scratch.Put(sp)
			t0 := time.Now()
			for i := lo; i < hi; i++ {
				var pr *C.float
				if res != nil {
					pr = ptrAt(res, i*cout*hw)
				}
				C.k_conv1x1(ptrAt(y, i*cout*hw), ptrAt(x, i*cin*hw), ptr(w), ptr(b), pr, C.long(cin), C.long(cout),
					C.long(hw), (*C.float)(unsafe.Pointer(&(*sp)[0])))
			}
			d.gemmNanos.Add(int64(time.Since(t0)))
		})
		return
	}
	if res != nil && !d.directConv(k, wd) {
		// The GEMM paths: the product, then the residual (kept aside first when it is y itself).
		if &res.Data[0] == &y.Data[0] {
			rp := d.scratchBuf(len(res.Data))
			defer d.scratch.Put(rp)
			copy(*rp, res.Data)
			res = Wrap(d, *rp, res.Shape...)
		}
		d.conv2dForward(y, x, w, b, nil, n, cin, cout, h, wd, k)
		d.Lincomb(y, 1, y, 1, res)
		return
	}
	if d.directConv(k, wd) {
		wp := d.packConv3x3(w, cout, cin, false)
		defer d.scratch.Put(wp)
		if smallMapConv(hw) && (n+2)/3 >= d.threads {
			// Maps of one vector: three images per block (k_conv3x3_small), groups of three over the cores (with
			// fewer groups than cores, the items below split each image's output channels instead).
			d.par((n+2)/3, 1, func(lo, hi int) {
				i0, i1 := lo*3, min(hi*3, n)
				var rr []float32
				if res != nil {
					rr = res.Data[i0*cout*hw:]
				}
				d.conv3x3Small(y.Data[i0*cout*hw:], x.Data[i0*cin*hw:], *wp, b, rr, i1-i0, cin, cout, h, wd)
			})
			return
		}
		// Work items are (image, block of output channels): whole images when there are enough of them for the
		// cores, else each image's output channels split in runs of 8 so that a single image uses every core.
		per := (d.threads + n - 1) / n
		cb := (cout + 7) / 8
		per = min(per, cb)
		span := (cb + per - 1) / per * 8 // output channels per item
		items := n * ((cout + span - 1) / span)
		perImg := items / n
		d.par(items, 1, func(lo, hi int) {
			sp := d.scratchBuf(conv3x3Scratch(cin, min(span, cout), h, wd))
			defer d.scratch.Put(sp)
			for it := lo; it < hi; it++ {
				i, c0 := it/perImg, (it%perImg)*span
				c1 := min(c0+span, cout)
				var bb *Tensor
				if b != nil {
					bb = Wrap(d, b.Data[c0:c1], c1-c0)
				}
				var rr []float32
				if res != nil {
					rr = res.Data[(i*cout+c0)*hw : (i*cout+c1)*hw]
				}
				d.conv3x3(y.Data[(i*cout+c0)*hw:(i*cout+c1)*hw], x.Data[i*cin*hw:(i+1)*cin*hw],
					(*wp)[c0*cin*9:], bb, rr, cin, c1-c0, h, wd, *sp)
			}
		})
		return
	}
	// Few images, or maps so small (under 8×8) that one image's GEMM would be a sliver: one im2col over the
	// batch and one GEMM split over the cores.
	if !d.convByImage(n) || hw < 64 {
		d.convForwardBatch(y, x, w, b, n, cin, cout, h, wd, k)
		return
	}
	d.par(n, 1, func(lo, hi int) {
		var colp *[]float32
		if k > 1 {
			colp = d.scratchBuf(kk * hw)
			defer d.scratch.Put(colp)
		}
		for i := lo; i < hi; i++ {
			xb := x.Data[i*cin*hw : (i+1)*cin*hw]
			src := xb
			if k > 1 {
				src = *colp
				C.k_im2col((*C.float)(unsafe.Pointer(&src[0])), (*C.float)(unsafe.Pointer(&xb[0])), 1, C.long(cin),
					C.long(h), C.long(wd), C.long(k), C.long(k/2), 0, C.long(kk))
			}
			yb := y.Data[i*cout*hw : (i+1)*cout*hw]
			d.sgemm1(false, false, cout, hw, kk, 1, w.Data, kk, src, hw, 0, yb, hw)
			if b != nil {
				C.k_add_bias((*C.float)(unsafe.Pointer(&yb[0])), ptr(b), C.long(cout), C.long(hw), 0, C.long(cout))
			}
		}
	})
}

// convForwardBatch is the small-batch path: one im2col over the batch and a GEMM split over the cores.
func (d *CPU) convForwardBatch(y, x, w, b *Tensor, n, cin, cout, h, wd, k int) {
	hw := h * wd
	kk := cin * k * k
	colp := d.scratchBuf(kk * n * hw)
	defer d.scratch.Put(colp)
	ycp := d.scratchBuf(cout * n * hw)
	defer d.scratch.Put(ycp)
	col := Wrap(d, (*colp)[:kk*n*hw], kk, n*hw)
	if k > 1 {
		d.Im2Col(col, x, n, cin, h, wd, k, k/2)
	} else {
		d.NCHWToCNHW(col, x, n, cin, hw)
	}
	ycn := Wrap(d, (*ycp)[:cout*n*hw], cout, n*hw)
	d.Gemm(GemmArgs{M: cout, N: n * hw, K: kk, Alpha: 1, A: w, B: col, C: ycn})
	d.CNHWToNCHW(y, ycn, b, n, cout, hw)
}

func (d *CPU) Conv2dBackward(dx, dw, db, dy, x, w *Tensor, n, cin, cout, h, wd, k int) {
	hw := h * wd
	kk := cin * k * k
	d.ChannelSumAcc(db, dy, n, cout, hw)
	directDW := d.directConvDW(k, cin, wd)
	direct := dx != nil && d.directConv(k, wd)
	var wtp *[]float32
	if direct {
		wtp = d.packConv3x3(w, cout, cin, true)
		defer d.scratch.Put(wtp)
	}
	workers := 1
	if d.convByImage(n) {
		workers = d.threads
	}
	per := (n + workers - 1) / workers
	// Each worker's weight gradient, added to dw in worker order once all are done: the sum does not depend on
	// which worker finished first (with three or more it would otherwise differ in the last bits from run to run).
	partial := make([]*[]float32, (n+per-1)/per)
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		wk := lo / per
		wg.Add(1)
		go func() {
			defer wg.Done()
			colN, dcolN := kk*hw, kk*hw // the direct kernels need no im2col matrices
			if directDW {
				colN = 1
			}
			if direct || dx == nil {
				dcolN = 1
			}
			colp := d.scratchBuf(colN)
			dcolp := d.scratchBuf(dcolN)
			dwp := d.scratchBuf(cout * kk)
			partial[wk] = dwp // handed back after the ordered sum
			defer d.scratch.Put(colp)
			defer d.scratch.Put(dcolp)
			col, dcol, dwl := *colp, *dcolp, *dwp
			clear(dwl)
			smallDX := direct && smallMapConv(hw) // the one-vector kernel needs no scratch
			var dscratch []float32
			if direct && !smallDX {
				sp := d.scratchBuf(conv3x3Scratch(cout, cin, h, wd))
				defer d.scratch.Put(sp)
				dscratch = *sp
			}
			if directDW {
				t0 := time.Now()
				sp := d.scratchBuf(int(C.k_conv3x3_dw_scratch_len(C.long(hi-lo), C.long(cin), C.long(cout), C.long(h),
					C.long(wd))))
				C.k_conv3x3_dw((*C.float)(unsafe.Pointer(&dwl[0])), (*C.float)(unsafe.Pointer(&x.Data[lo*cin*hw])),
					(*C.float)(unsafe.Pointer(&dy.Data[lo*cout*hw])), C.long(hi-lo), C.long(cin), C.long(cout),
					C.long(h), C.long(wd), (*C.float)(unsafe.Pointer(&(*sp)[0])))
				d.scratch.Put(sp)
				d.convNanos.Add(int64(time.Since(t0)))
			}
			if smallDX {
				d.conv3x3Small(dx.Data[lo*cin*hw:], dy.Data[lo*cout*hw:], *wtp, nil, nil, hi-lo, cout, cin, h, wd)
			}
			for i := lo; i < hi; i++ {
				xb := x.Data[i*cin*hw : (i+1)*cin*hw]
				dyb := dy.Data[i*cout*hw : (i+1)*cout*hw]
				if !directDW {
					src := xb
					if k > 1 {
						src = col
						C.k_im2col((*C.float)(unsafe.Pointer(&col[0])), (*C.float)(unsafe.Pointer(&xb[0])), 1,
							C.long(cin), C.long(h), C.long(wd), C.long(k), C.long(k/2), 0, C.long(kk))
					}
					d.sgemm1(false, true, cout, kk, hw, 1, dyb, hw, src, hw, 1, dwl, kk)
				}
				if dx == nil {
					continue
				}
				dxb := dx.Data[i*cin*hw : (i+1)*cin*hw]
				if k == 1 {
					d.sgemm1(true, false, cin, hw, cout, 1, w.Data, cin, dyb, hw, 0, dxb, hw)
					continue
				}
				if smallDX {
					continue
				}
				if direct {
					d.conv3x3(dxb, dyb, *wtp, nil, nil, cout, cin, h, wd, dscratch)
					continue
				}
				d.sgemm1(true, false, kk, hw, cout, 1, w.Data, kk, dyb, hw, 0, dcol, hw)
				clear(dxb)
				C.k_col2im((*C.float)(unsafe.Pointer(&dxb[0])), (*C.float)(unsafe.Pointer(&dcol[0])), 1, C.long(cin),
					C.long(h), C.long(wd), C.long(k), C.long(k/2), 0, C.long(cin))
			}
		}()
	}
	wg.Wait()
	py := (*C.float)(unsafe.Pointer(&dw.Data[0]))
	for _, dwp := range partial {
		px := (*C.float)(unsafe.Pointer(&(*dwp)[0]))
		d.par(cout*kk, elemGrain, func(lo, hi int) { C.k_axpby(1, px, 1, py, C.long(lo), C.long(hi)) })
		d.scratch.Put(dwp)
	}
}

// scratchPool keeps reusable host buffers by power-of-two size class, so kernels that need temporary space do not
// allocate in a steady training step. It is a plain free list, not a sync.Pool: a sync.Pool is emptied by every
// garbage collection, and the fresh multi-megabyte buffers that followed cost page faults and zeroing on each step.
type scratchPool struct {
	mu      sync.Mutex
	threads int
	classes [48][]*[]float32
}

// scratchKeep bounds the idle buffers kept per size class (more are dropped for the collector): enough for every
// thread of a parallel kernel to hand its buffers back, and no more than two of the very large classes (64 Mi
// floats and up, the whole-batch im2col matrices), which would otherwise stay held for the life of the process.
func scratchKeep(class, threads int) int {
	if class >= 26 {
		return 2
	}
	return max(16, 4*threads)
}

func (p *scratchPool) get(n int) *[]float32 {
	c := bits.Len(uint(max(n, 1) - 1))
	p.mu.Lock()
	if k := len(p.classes[c]); k > 0 {
		v := p.classes[c][k-1]
		p.classes[c] = p.classes[c][:k-1]
		p.mu.Unlock()
		*v = (*v)[:n]
		return v
	}
	p.mu.Unlock()
	b := make([]float32, n, 1<<c)
	return &b
}

// Put returns a buffer taken with get.
func (p *scratchPool) Put(b *[]float32) {
	c := bits.Len(uint(max(cap(*b), 1) - 1))
	if 1<<c != cap(*b) {
		return
	}
	p.mu.Lock()
	if len(p.classes[c]) < scratchKeep(c, p.threads) {
		p.classes[c] = append(p.classes[c], b)
	}
	p.mu.Unlock()
}

// minDirectWidth is the narrowest map the direct 3×3 kernels take: 4 where the AVX-512 forward reads narrow maps
// in place (no padded grid, so a 4×4 map is one vector of 16 positions), else 8.
func minDirectWidth() int {
	if directLevel >= 2 && !directForced {
		return 4
	}
	return 8
}
