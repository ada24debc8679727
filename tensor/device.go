package tensor

// GemmArgs describes C = Alpha·op(A)·op(B) + Beta·C in row-major order, optionally for Batch independent
// products whose operands start Stride* elements apart. op(A) is M×K, op(B) is K×N, C is M×N. A leading dimension of 0
// means the matrix is packed.
type GemmArgs struct {
	TransA, TransB            bool
	M, N, K                   int
	Alpha, Beta               float32
	A, B, C                   *Tensor
	LDA, LDB, LDC             int
	Batch                     int
	StrideA, StrideB, StrideC int
}

// GNMod is what the model chains onto a group norm: AdaGN scale and shift per (sample, channel), the semantic
// scale, and SiLU. y = SiLU(((GN(x)·γ+β)·(1+Scale)+Shift)·(1+ZScale)). Nil fields are absent.
type GNMod struct {
	Scale, Shift, ZScale *Tensor // each [N, C]
	SiLU                 bool
}

// GNGrads receives the gradients of a group norm. DGamma and DBeta accumulate (+=); DScale, DShift, DZScale are
// overwritten; any may be nil when not wanted.
type GNGrads struct {
	DX, DGamma, DBeta, DScale, DShift, DZScale *Tensor
}

// Device runs every kernel the networks need. Tensors passed to a device must live on it. Sizes are given
// explicitly so that kernels can work on views. Unless stated, outputs are overwritten, not accumulated.
type Device interface {
	Name() string
	// New returns a zeroed tensor.
	New(shape ...int) *Tensor
	Upload(dst *Tensor, src []float32)
	Download(dst []float32, src *Tensor)
	// Sync waits for queued work (a no-op on the CPU).
	Sync()

	Gemm(g GemmArgs)

	Zero(t *Tensor)
	Fill(t *Tensor, v float32)
	Copy(dst, src *Tensor)
	// CopyBlocks copies n blocks of blockLen elements from src (block i at srcOff+i·srcStride) to dst (at
	// dstOff+i·dstStride), adding to dst when accumulate is set. Channel concatenation and its gradient use it.
	CopyBlocks(dst *Tensor, dstOff, dstStride int, src *Tensor, srcOff, srcStride, blockLen, n int, accumulate bool)
	// Axpby sets y = a·x + b·y.
	Axpby(a float32, x *Tensor, b float32, y *Tensor)
	// Lincomb sets dst = a·x + b·y.
	Lincomb(dst *Tensor, a float32, x *Tensor, b float32, y *Tensor)
	// Mul sets dst = x⊙y.
	Mul(dst, x, y *Tensor)
	Scale(t *Tensor, a float32)
	Clamp(t *Tensor, lo, hi float32)
	// SumSquares returns Σx² in float64.
	SumSquares(t *Tensor) float64

	SiLU(dst, x *Tensor)
	// SiLUBackward sets dx = dy·SiLU'(x).
	SiLUBackward(dx, x, dy *Tensor)

	// AddChannelBias adds bias[c] to y viewed as [n, c, hw].
	AddChannelBias(y, bias *Tensor, n, c, hw int)
	// ChannelSumAcc adds Σ_{n,hw} dy[n,c,hw] to db[c].
	ChannelSumAcc(db, dy *Tensor, n, c, hw int)
	// Im2Col writes col[(ci·k+ky)·k+kx, b·h·w + y·w + x] = x[b, ci, y+ky-pad, x+kx-pad] (0 outside), stride 1.
	Im2Col(col, x *Tensor, n, c, h, w, k, pad int)
	// Col2ImAcc is Im2Col's adjoint; it adds into dx.
	Col2ImAcc(dx, col *Tensor, n, c, h, w, k, pad int)
	// NCHWToCNHW permutes x [n,c,hw] to dst [c,n,hw]; CNHWToNCHW is its inverse and adds bias[c] when bias != nil.
	NCHWToCNHW(dst, x *Tensor, n, c, hw int)
	CNHWToNCHW(dst, x, bias *Tensor, n, c, hw int)

	// GroupNorm normalises x [n,c,hw] in g groups, applies γ,β and mod, and saves mean and rstd ([n,g]).
	GroupNorm(y, x, gamma, beta, mean, rstd *Tensor, n, c, hw, g int, eps float32, mod GNMod)
	GroupNormBackward(gr GNGrads, dy, x, gamma, beta, mean, rstd *Tensor, n, c, hw, g int, mod GNMod)
	// LayerNorm normalises the rows of x [rows, d]; mean and rstd are [rows].
	LayerNorm(y, x, gamma, beta, mean, rstd *Tensor, rows, d int, eps float32)
	// LayerNormBackward sets dx and adds to dgamma and dbeta.
	LayerNormBackward(dx, dgamma, dbeta, dy, x, gamma, mean, rstd *Tensor, rows, d int)

	// Softmax over the last axis of x viewed as [rows, d]; SoftmaxBackward sets dx = y⊙(dy − Σ dy⊙y).
	Softmax(y, x *Tensor, rows, d int)
	SoftmaxBackward(dx, y, dy *Tensor, rows, d int)

	// AvgPool2 halves h and w of x [planes, h, w] by 2×2 averaging; Upsample2 doubles them (nearest).
	AvgPool2(y, x *Tensor, planes, h, w int)
	AvgPool2Backward(dx, dy *Tensor, planes, h, w int)
	Upsample2(y, x *Tensor, planes, h, w int)
	Upsample2Backward(dx, dy *Tensor, planes, h, w int)
	// SpatialMean sets y[p] = mean of x[p, :hw]; SpatialMeanBackward sets dx[p, i] = dy[p]/hw.
	SpatialMean(y, x *Tensor, planes, hw int)
	SpatialMeanBackward(dx, dy *Tensor, planes, hw int)

	// MSE returns mean((p−t)²) and, when grad != nil, sets grad = d/dp scaled by gscale.
	MSE(grad, p, t *Tensor, gscale float32) float64
	// L1 returns mean|p−t| and, when grad != nil, sets grad = sign(p−t)/n scaled by gscale.
	L1(grad, p, t *Tensor, gscale float32) float64

	// Adam updates w in place from g with moments m and v; bc1 and bc2 are 1−β₁ᵗ and 1−β₂ᵗ; wd is decoupled (AdamW).
	Adam(w, g, m, v *Tensor, lr, b1, b2, eps, wd, bc1, bc2 float32)
	// DropoutMask sets mask[i] to 0 with probability p and to 1/(1−p) otherwise, from a counter-based hash of
	// (seed, i), so every device draws the same mask for the same seed.
	DropoutMask(mask *Tensor, p float32, seed uint64)
	// EMA sets ema = decay·ema + (1−decay)·w.
	EMA(ema, w *Tensor, decay float32)
}

// ConvDevice is implemented by devices with a convolution of their own. The CPU's works image by image: 3×3
// convolutions on maps 8 pixels wide and more run direct kernels (no im2col matrix, no GEMM packing) for the
// output, input gradient and weight gradient where the CPU has AVX-512 (maps 4 to 7 wide too, for the first
// two), for the first two where it has AVX2;
// everything else runs im2col + GEMM with the matrix in cache. Devices without one get whole-batch im2col and one
// GEMM from the layer (package nn).
type ConvDevice interface {
	// Conv2dForward sets y [n,cout,h,w] = x [n,cin,h,w] ⋆ w [cout,cin,k,k] + b, stride 1, padding (k−1)/2.
	Conv2dForward(y, x, w, b *Tensor, n, cin, cout, h, wd, k int)
	// Conv2dBackward adds to dw and db and, when dx is not nil, sets dx.
	Conv2dBackward(dx, dw, db, dy, x, w *Tensor, n, cin, cout, h, wd, k int)
	// Conv2dForwardAdd is Conv2dForward plus a residual res [n,cout,h,w] (which may be y itself) added to y.
	Conv2dForwardAdd(y, x, w, b, res *Tensor, n, cin, cout, h, wd, k int)
}
