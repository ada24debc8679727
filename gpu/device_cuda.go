//go:build cuda

package gpu

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"gorgonia.org/cu"

	"dae/tensor"
)

// Device is a CUDA GPU as a tensor.Device. All work is queued on one stream in call order (GEMMs included, through
// cuBLAS bound to that stream), so methods return before the GPU finishes, except those that hand results to the
// host (Download, SumSquares, MSE, L1) and Sync. Tensors are buffers of a size-keyed cache that go back to it when
// the garbage collector finds them unreachable; a steady training step allocates nothing.
//
// A Device may be used from several goroutines; calls are serialised.
type Device struct {
	ordinal int
	name    string
	dev     cu.Device
	ctx     cu.CUContext
	stream  cu.Stream
	mod     cu.Module
	fns     [numKernels]cu.Function
	specs   [numKernels]kernelSpec
	blas    *cublasHandle // nil: the k_gemm fallback
	mem     *allocator

	mu       sync.Mutex // serialises calls: the context is made current on the calling OS thread for each
	part     uintptr    // partBlocks doubles: partial sums of scalar reductions
	partHost []float64
}

// Options tune Open.
type Options struct {
	// NoCUBLAS makes the device multiply with its own GEMM kernel even when cuBLAS is available (for tests).
	NoCUBLAS bool
}

// Open returns the device for the GPU with the given ordinal, using the GPU's primary context (shared with any
// other CUDA library in the process), loading the kernels from the embedded PTX and cuBLAS at run time.
func Open(ordinal int, o Options) (*Device, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("gpu: counting devices: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("gpu: device %d: %w (this machine has %d)", ordinal, ErrNoGPU, n)
	}
	d := &Device{ordinal: ordinal, specs: kernelSpecs()}
	if d.dev, err = cu.GetDevice(ordinal); err != nil {
		return nil, fmt.Errorf("gpu: device %d: %w", ordinal, err)
	}
	if d.ctx, err = d.dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("gpu: device %d: primary context: %w", ordinal, err)
	}
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		return nil, fmt.Errorf("gpu: device %d: %w", ordinal, err)
	}
	if d.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		return nil, fmt.Errorf("gpu: device %d: stream: %w", ordinal, err)
	}
	if d.mod, err = cu.LoadData(ptx); err != nil {
		return nil, fmt.Errorf("gpu: device %d: loading the kernels' PTX: %w", ordinal, err)
	}
	for i, s := range d.specs {
		if d.fns[i], err = d.mod.Function(s.name); err != nil {
			return nil, fmt.Errorf("gpu: kernel %s: %w", s.name, err)
		}
	}
	d.mem = newAllocator(func(b int64) (uintptr, error) {
		p, err := cu.MemAlloc(b)
		return uintptr(p), err
	}, func(p uintptr) error { return cu.MemFree(cu.DevicePtr(p)) })
	p, _, err := d.mem.get(partBlocks * 8)
	if err != nil {
		return nil, err
	}
	d.part, d.partHost = p, make([]float64, partBlocks)

	blasName := "own GEMM kernel"
	if !o.NoCUBLAS {
		lib, err := loadCUBLAS(cublasNames)
		switch {
		case errors.Is(err, errNoCUBLAS):
			blasName += " (no cuBLAS)"
		case err != nil:
			return nil, err
		default:
			if d.blas, err = lib.newHandle(unsafe.Pointer(d.stream.C())); err != nil {
				return nil, err
			}
			blasName = "cuBLAS " + lib.soname
		}
	}
	gpuName, err := d.dev.Name()
	if err != nil {
		return nil, fmt.Errorf("gpu: device %d: %w", ordinal, err)
	}
	major, minor, err := d.dev.ComputeCapability()
	if err != nil {
		return nil, fmt.Errorf("gpu: device %d: %w", ordinal, err)
	}
	d.name = fmt.Sprintf("cuda:%d (%s, sm_%d%d, %s)", ordinal, gpuName, major, minor, blasName)
	return d, nil
}

// UsesCUBLAS reports whether GEMMs go to cuBLAS (rather than the fallback kernel).
func (d *Device) UsesCUBLAS() bool { return d.blas != nil }

// MemStats returns the bytes of device memory in tensors and in the allocator's cache.
func (d *Device) MemStats() (live, cached int64) { return d.mem.stats() }

// enter makes the context current on this goroutine's OS thread for the duration of one call.
func (d *Device) enter() {
	d.mu.Lock()
	runtime.LockOSThread()
	check("cuCtxSetCurrent", cu.SetCurrentContext(d.ctx))
}

func (d *Device) exit() {
	runtime.UnlockOSThread()
	d.mu.Unlock()
}

// check panics on a driver error: tensor.Device has no error results, and a failed launch leaves the context
// unusable anyway.
func check(what string, err error) {
	if err != nil {
		panic(fmt.Errorf("gpu: %s: %w", what, err))
	}
}

func (d *Device) Name() string { return d.name }

// buffer is what a tensor's cleanup returns to the cache.
type buffer struct {
	p    uintptr
	size int64
}

// New returns a zeroed tensor. Its memory returns to the cache once the tensor and every view of it are
// unreachable (views keep their root tensor alive).
func (d *Device) New(shape ...int) *tensor.Tensor {
	n := tensor.Numel(shape...)
	d.enter()
	defer d.exit()
	p, size := d.alloc(int64(n) * 4)
	check("cuMemsetD32Async", cu.MemsetD32Async(cu.DevicePtr(p), 0, int64(n), d.stream))
	t := tensor.NewAccel(d, p, shape...)
	runtime.AddCleanup(t, func(b buffer) { d.mem.put(b.p, b.size) }, buffer{p, size})
	return t
}

// alloc takes memory from the cache; when the GPU is full it lets the garbage collector return unreachable
// tensors first.
func (d *Device) alloc(bytes int64) (uintptr, int64) {
	p, size, err := d.mem.get(bytes)
	for try := 0; err != nil && try < 3; try++ {
		runtime.GC()
		time.Sleep(time.Duration(10<<try) * time.Millisecond) // cleanups run on their own goroutine
		p, size, err = d.mem.get(bytes)
	}
	check("allocating", err)
	return p, size
}

func ptr(t *tensor.Tensor) uintptr {
	if t == nil {
		return 0
	}
	if t.Ptr == 0 {
		panic(fmt.Sprintf("gpu: %v is not on a CUDA device (it has no device address)", t))
	}
	return t.Ptr
}

func p(t *tensor.Tensor) arg { return ptrArg(ptr(t)) }

func (d *Device) Upload(dst *tensor.Tensor, src []float32) {
	if len(src) != dst.Len() {
		panic(fmt.Sprintf("gpu: upload %d values into %v", len(src), dst.Shape))
	}
	if len(src) == 0 {
		return
	}
	d.enter()
	defer d.exit()
	check("cuMemcpyHtoDAsync", cu.MemcpyHtoDAsync(cu.DevicePtr(ptr(dst)), unsafe.Pointer(&src[0]), int64(len(src))*4, d.stream))
	check("cuStreamSynchronize", d.stream.Synchronize())
}

func (d *Device) Download(dst []float32, src *tensor.Tensor) {
	if len(dst) != src.Len() {
		panic(fmt.Sprintf("gpu: download %v into %d values", src.Shape, len(dst)))
	}
	if len(dst) == 0 {
		return
	}
	d.enter()
	defer d.exit()
	check("cuMemcpyDtoHAsync", cu.MemcpyDtoHAsync(unsafe.Pointer(&dst[0]), cu.DevicePtr(ptr(src)), int64(len(dst))*4, d.stream))
	check("cuStreamSynchronize", d.stream.Synchronize())
}

func (d *Device) Sync() {
	d.enter()
	defer d.exit()
	check("cuStreamSynchronize", d.stream.Synchronize())
}

// Time runs f and returns the GPU time between the work queued before it and the work f queued, measured with
// events on the device's stream.
func (d *Device) Time(f func()) (time.Duration, error) {
	d.enter()
	start, err := cu.MakeEvent(cu.DefaultEvent)
	if err == nil {
		err = start.Record(d.stream)
	}
	d.exit()
	if err != nil {
		return 0, fmt.Errorf("gpu: event: %w", err)
	}
	f()
	d.enter()
	defer d.exit()
	end, err := cu.MakeEvent(cu.DefaultEvent)
	if err != nil {
		return 0, fmt.Errorf("gpu: event: %w", err)
	}
	defer cu.DestroyEvent(&end)
	defer cu.DestroyEvent(&start)
	if err := end.Record(d.stream); err != nil {
		return 0, fmt.Errorf("gpu: event: %w", err)
	}
	if err := end.Synchronize(); err != nil {
		return 0, fmt.Errorf("gpu: event: %w", err)
	}
	ms, err := start.Elapsed(end)
	if err != nil {
		return 0, fmt.Errorf("gpu: event: %w", err)
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// launch queues kernel k; the caller holds the device (enter).
func (d *Device) launch(k kernelID, gx, gy, gz, bx, by, bz int, args ...arg) {
	slots, err := packArgs(d.specs[k], args)
	if err != nil {
		panic(err)
	}
	ptrs := make([]unsafe.Pointer, len(slots))
	for i := range slots {
		ptrs[i] = unsafe.Pointer(&slots[i])
	}
	check("launching "+d.specs[k].name, d.fns[k].Launch(gx, gy, gz, bx, by, bz, 0, d.stream, ptrs))
}

// elem queues an element-wise kernel over n items.
func (d *Device) elem(k kernelID, n int, args ...arg) {
	if n <= 0 {
		return
	}
	blocks, threads := elemGrid(n)
	d.enter()
	defer d.exit()
	d.launch(k, blocks, 1, 1, threads, 1, 1, args...)
}

// rows queues a kernel with one block per row of rowLen items.
func (d *Device) rows(k kernelID, rows, rowLen int, args ...arg) {
	if rows <= 0 {
		return
	}
	g, err := rowGrid(rows)
	if err != nil {
		panic(err)
	}
	d.enter()
	defer d.exit()
	d.launch(k, g, 1, 1, rowThreads(rowLen), 1, 1, args...)
}

// reduce queues a reduction to a scalar over n items (the kernel takes the partials buffer first) and returns the
// sum of its partials, added in block order so that the result does not depend on scheduling.
func (d *Device) reduce(k kernelID, n int, args ...arg) float64 {
	if n <= 0 {
		return 0
	}
	blocks := partGrid(n)
	d.enter()
	defer d.exit()
	d.launch(k, blocks, 1, 1, elemThreads, 1, 1, append([]arg{ptrArg(d.part)}, args...)...)
	check("cuMemcpyDtoHAsync", cu.MemcpyDtoHAsync(unsafe.Pointer(&d.partHost[0]), cu.DevicePtr(d.part), int64(blocks)*8, d.stream))
	check("cuStreamSynchronize", d.stream.Synchronize())
	s := 0.0
	for _, v := range d.partHost[:blocks] {
		s += v
	}
	return s
}

func (d *Device) Gemm(g tensor.GemmArgs) {
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
	batch := max(g.Batch, 1)
	if g.M <= 0 || g.N <= 0 {
		return
	}
	a, b, c := ptr(g.A), ptr(g.B), ptr(g.C)
	fits := max(g.M, g.N, g.K, lda, ldb, ldc, batch) <= math.MaxInt32
	if d.blas != nil && fits {
		cm := fromRowMajor(g.TransA, g.TransB, g.M, g.N, g.K, a, lda, g.StrideA, b, ldb, g.StrideB, c, ldc,
			g.StrideC, batch, g.Alpha, g.Beta)
		d.enter()
		defer d.exit()
		check("GEMM", d.blas.sgemm(cm))
		return
	}
	gx, gy, gz, launches := gemmGrid(g.M, g.N, batch)
	d.enter()
	defer d.exit()
	for l := 0; l < launches; l++ {
		off := uintptr(l*maxGridYZ) * 4
		nz := min(gz, batch-l*maxGridYZ)
		d.launch(kGemm, gx, gy, nz, gemmTile, gemmTile, 1, boolArg(g.TransA), boolArg(g.TransB), i64Arg(g.M),
			i64Arg(g.N), i64Arg(g.K), f32Arg(g.Alpha), ptrArg(a+off*uintptr(g.StrideA)), i64Arg(lda),
			i64Arg(g.StrideA), ptrArg(b+off*uintptr(g.StrideB)), i64Arg(ldb), i64Arg(g.StrideB), f32Arg(g.Beta),
			ptrArg(c+off*uintptr(g.StrideC)), i64Arg(ldc), i64Arg(g.StrideC))
	}
}

func (d *Device) Zero(t *tensor.Tensor) { d.Fill(t, 0) }

func (d *Device) Fill(t *tensor.Tensor, v float32) {
	if t.Len() == 0 {
		return
	}
	d.enter()
	defer d.exit()
	check("cuMemsetD32Async", cu.MemsetD32Async(cu.DevicePtr(ptr(t)), uint(math.Float32bits(v)), int64(t.Len()), d.stream))
}

func (d *Device) Copy(dst, src *tensor.Tensor) {
	if dst.Len() != src.Len() {
		panic(fmt.Sprintf("gpu: copy %v into %v", src.Shape, dst.Shape))
	}
	if dst.Len() == 0 {
		return
	}
	d.enter()
	defer d.exit()
	check("cuMemcpyDtoDAsync", cu.MemcpyDtoDAsync(cu.DevicePtr(ptr(dst)), cu.DevicePtr(ptr(src)), int64(dst.Len())*4, d.stream))
}

func (d *Device) CopyBlocks(dst *tensor.Tensor, dstOff, dstStride int, src *tensor.Tensor, srcOff, srcStride, blockLen, n int, acc bool) {
	if n == 0 || blockLen == 0 {
		return
	}
	if dstOff+(n-1)*dstStride+blockLen > dst.Len() || srcOff+(n-1)*srcStride+blockLen > src.Len() {
		panic("gpu: CopyBlocks out of range")
	}
	d.elem(kCopyBlocks, n*blockLen, ptrArg(ptr(dst)+uintptr(dstOff)*4), i64Arg(dstStride),
		ptrArg(ptr(src)+uintptr(srcOff)*4), i64Arg(srcStride), i64Arg(blockLen), boolArg(acc), i64Arg(n))
}

func (d *Device) Axpby(a float32, x *tensor.Tensor, b float32, y *tensor.Tensor) {
	d.elem(kAxpby, y.Len(), f32Arg(a), p(x), f32Arg(b), p(y), i64Arg(y.Len()))
}

func (d *Device) Lincomb(dst *tensor.Tensor, a float32, x *tensor.Tensor, b float32, y *tensor.Tensor) {
	d.elem(kLincomb, dst.Len(), p(dst), f32Arg(a), p(x), f32Arg(b), p(y), i64Arg(dst.Len()))
}

func (d *Device) Mul(dst, x, y *tensor.Tensor) {
	d.elem(kMul, dst.Len(), p(dst), p(x), p(y), i64Arg(dst.Len()))
}

func (d *Device) Scale(t *tensor.Tensor, a float32) {
	d.elem(kScale, t.Len(), p(t), f32Arg(a), i64Arg(t.Len()))
}

func (d *Device) Clamp(t *tensor.Tensor, lo, hi float32) {
	d.elem(kClamp, t.Len(), p(t), f32Arg(lo), f32Arg(hi), i64Arg(t.Len()))
}

func (d *Device) SumSquares(t *tensor.Tensor) float64 {
	return d.reduce(kSumSq, t.Len(), p(t), i64Arg(t.Len()))
}

func (d *Device) SiLU(dst, x *tensor.Tensor) { d.elem(kSiLU, x.Len(), p(dst), p(x), i64Arg(x.Len())) }

func (d *Device) SiLUBackward(dx, x, dy *tensor.Tensor) {
	d.elem(kSiLUBwd, x.Len(), p(dx), p(x), p(dy), i64Arg(x.Len()))
}

func (d *Device) AddChannelBias(y, bias *tensor.Tensor, n, c, hw int) {
	d.elem(kAddBias, n*c*hw, p(y), p(bias), i64Arg(c), i64Arg(hw), i64Arg(n))
}

func (d *Device) ChannelSumAcc(db, dy *tensor.Tensor, n, c, hw int) {
	d.rows(kChanSum, c, n*hw, p(db), p(dy), i64Arg(n), i64Arg(c), i64Arg(hw))
}

func (d *Device) Im2Col(col, x *tensor.Tensor, n, c, h, w, k, pad int) {
	d.elem(kIm2Col, c*k*k*n*h*w, p(col), p(x), i64Arg(n), i64Arg(c), i64Arg(h), i64Arg(w), i64Arg(k), i64Arg(pad))
}

func (d *Device) Col2ImAcc(dx, col *tensor.Tensor, n, c, h, w, k, pad int) {
	d.elem(kCol2Im, n*c*h*w, p(dx), p(col), i64Arg(n), i64Arg(c), i64Arg(h), i64Arg(w), i64Arg(k), i64Arg(pad))
}

func (d *Device) NCHWToCNHW(dst, x *tensor.Tensor, n, c, hw int) {
	d.elem(kNCHWToCNHW, n*c*hw, p(dst), p(x), i64Arg(n), i64Arg(c), i64Arg(hw))
}

func (d *Device) CNHWToNCHW(dst, x, bias *tensor.Tensor, n, c, hw int) {
	d.elem(kCNHWToNCHW, n*c*hw, p(dst), p(x), p(bias), i64Arg(n), i64Arg(c), i64Arg(hw))
}

func (d *Device) GroupNorm(y, x, gamma, beta, mean, rstd *tensor.Tensor, n, c, hw, g int, eps float32, mod tensor.GNMod) {
	d.rows(kGNFwd, n*g, c/g*hw, p(y), p(x), p(gamma), p(beta), p(mean), p(rstd), p(mod.Scale), p(mod.Shift),
		p(mod.ZScale), boolArg(mod.SiLU), i64Arg(c), i64Arg(hw), i64Arg(g), f32Arg(eps))
}

func (d *Device) GroupNormBackward(gr tensor.GNGrads, dy, x, gamma, beta, mean, rstd *tensor.Tensor, n, c, hw, g int, mod tensor.GNMod) {
	if n*c == 0 {
		return
	}
	// Per-(sample, channel) partials of dγ and dβ. The scratch goes back to the cache once the kernels that use it
	// are queued: anything that takes it next is queued after them on the same stream.
	d.enter()
	scratch, size := d.alloc(int64(2*n*c) * 4)
	d.exit()
	defer d.mem.put(scratch, size)
	dgp, dbp := ptrArg(scratch), ptrArg(scratch+uintptr(n*c)*4)
	sm := boolArg(mod.SiLU)
	d.rows(kGNBwdSums, n*c, hw, dgp, dbp, p(gr.DScale), p(gr.DShift), p(gr.DZScale), p(dy), p(x), p(gamma), p(beta),
		p(mean), p(rstd), p(mod.Scale), p(mod.Shift), p(mod.ZScale), sm, i64Arg(c), i64Arg(hw), i64Arg(g))
	if gr.DX != nil {
		d.rows(kGNBwdDX, n*g, c/g*hw, p(gr.DX), dgp, dbp, p(dy), p(x), p(gamma), p(beta), p(mean), p(rstd),
			p(mod.Scale), p(mod.Shift), p(mod.ZScale), sm, i64Arg(c), i64Arg(hw), i64Arg(g))
	}
	if gr.DGamma != nil || gr.DBeta != nil {
		d.elem(kGNBwdParams, c, p(gr.DGamma), p(gr.DBeta), dgp, dbp, i64Arg(n), i64Arg(c))
	}
}

func (d *Device) LayerNorm(y, x, gamma, beta, mean, rstd *tensor.Tensor, rows, dim int, eps float32) {
	d.rows(kLNFwd, rows, dim, p(y), p(x), p(gamma), p(beta), p(mean), p(rstd), i64Arg(dim), f32Arg(eps))
}

func (d *Device) LayerNormBackward(dx, dgamma, dbeta, dy, x, gamma, mean, rstd *tensor.Tensor, rows, dim int) {
	// Parameters first: dx may share memory with nothing the first kernel reads, but this order also holds if a
	// caller passes dx == dy.
	d.elem(kLNBwdParams, dim, p(dgamma), p(dbeta), p(dy), p(x), p(mean), p(rstd), i64Arg(rows), i64Arg(dim))
	d.rows(kLNBwdDX, rows, dim, p(dx), p(dy), p(x), p(gamma), p(mean), p(rstd), i64Arg(dim))
}

func (d *Device) Softmax(y, x *tensor.Tensor, rows, dim int) {
	d.rows(kSoftmax, rows, dim, p(y), p(x), i64Arg(dim))
}

func (d *Device) SoftmaxBackward(dx, y, dy *tensor.Tensor, rows, dim int) {
	d.rows(kSoftmaxBwd, rows, dim, p(dx), p(y), p(dy), i64Arg(dim))
}

func (d *Device) AvgPool2(y, x *tensor.Tensor, planes, h, w int) {
	d.elem(kAvgPool2, planes*(h/2)*(w/2), p(y), p(x), i64Arg(h), i64Arg(w), i64Arg(planes))
}

func (d *Device) AvgPool2Backward(dx, dy *tensor.Tensor, planes, h, w int) {
	d.elem(kAvgPool2Bwd, planes*h*w, p(dx), p(dy), i64Arg(h), i64Arg(w), i64Arg(planes))
}

func (d *Device) Upsample2(y, x *tensor.Tensor, planes, h, w int) {
	d.elem(kUp2, planes*4*h*w, p(y), p(x), i64Arg(h), i64Arg(w), i64Arg(planes))
}

func (d *Device) Upsample2Backward(dx, dy *tensor.Tensor, planes, h, w int) {
	d.elem(kUp2Bwd, planes*h*w, p(dx), p(dy), i64Arg(h), i64Arg(w), i64Arg(planes))
}

func (d *Device) SpatialMean(y, x *tensor.Tensor, planes, hw int) {
	d.rows(kSpMean, planes, hw, p(y), p(x), i64Arg(hw))
}

func (d *Device) SpatialMeanBackward(dx, dy *tensor.Tensor, planes, hw int) {
	d.elem(kSpMeanBwd, planes*hw, p(dx), p(dy), i64Arg(hw), i64Arg(planes))
}

func (d *Device) MSE(grad, pr, t *tensor.Tensor, gscale float32) float64 {
	n := pr.Len()
	if n == 0 {
		return 0
	}
	return d.reduce(kMSE, n, p(grad), p(pr), p(t), f32Arg(gscale/float32(n)), i64Arg(n)) / float64(n)
}

func (d *Device) L1(grad, pr, t *tensor.Tensor, gscale float32) float64 {
	n := pr.Len()
	if n == 0 {
		return 0
	}
	return d.reduce(kL1, n, p(grad), p(pr), p(t), f32Arg(gscale/float32(n)), i64Arg(n)) / float64(n)
}

func (d *Device) Adam(w, g, m, v *tensor.Tensor, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	d.elem(kAdam, w.Len(), p(w), p(g), p(m), p(v), f32Arg(lr), f32Arg(b1), f32Arg(b2), f32Arg(eps), f32Arg(wd),
		f32Arg(bc1), f32Arg(bc2), i64Arg(w.Len()))
}

func (d *Device) DropoutMask(mask *tensor.Tensor, pr float32, seed uint64) {
	thr, keep := dropoutThreshold(pr)
	d.elem(kDropoutMask, mask.Len(), p(mask), u64Arg(seed), u32Arg(thr), f32Arg(keep), i64Arg(mask.Len()))
}

func (d *Device) EMA(ema, w *tensor.Tensor, decay float32) {
	d.elem(kEMA, w.Len(), p(ema), p(w), f32Arg(decay), i64Arg(w.Len()))
}

var _ tensor.Device = (*Device)(nil)
