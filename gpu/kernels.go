package gpu

import (
	_ "embed"
	"fmt"
	"math"
	"regexp"
	"strings"
)

// ptx is kernels.cu compiled by `go generate` (see doc.go).
//
//go:embed kernels.ptx
var ptx string

// PTX returns the embedded kernel module, for loading with the driver's JIT.
func PTX() string { return ptx }

// kernelID names a kernel of kernels.cu; the device loads them all once and launches them by ID.
type kernelID int

const (
	kAxpby kernelID = iota
	kLincomb
	kMul
	kScale
	kClamp
	kSiLU
	kSiLUBwd
	kEMA
	kAdam
	kDropoutMask
	kCopyBlocks
	kAddBias
	kIm2Col
	kCol2Im
	kNCHWToCNHW
	kCNHWToNCHW
	kAvgPool2
	kAvgPool2Bwd
	kUp2
	kUp2Bwd
	kSpMeanBwd
	kSpMean
	kChanSum
	kSoftmax
	kSoftmaxBwd
	kLNFwd
	kLNBwdDX
	kLNBwdParams
	kGNFwd
	kGNBwdSums
	kGNBwdDX
	kGNBwdParams
	kSumSq
	kMSE
	kL1
	kGemm
	numKernels
)

// kernelSpec is a kernel's name in the PTX and its parameter list, one letter per parameter: p pointer, l int64,
// u uint64, i int32, U uint32, f float32. The launcher checks every launch against it, and kernels_test.go checks
// it against the PTX, so that an argument of the wrong width cannot reach a kernel.
type kernelSpec struct {
	name, sig string
}

// kernelSpecs returns the table of kernels, indexed by kernelID.
func kernelSpecs() [numKernels]kernelSpec {
	return [numKernels]kernelSpec{
		kAxpby:       {"k_axpby", "fpfpl"},
		kLincomb:     {"k_lincomb", "pfpfpl"},
		kMul:         {"k_mul", "pppl"},
		kScale:       {"k_scale", "pfl"},
		kClamp:       {"k_clamp", "pffl"},
		kSiLU:        {"k_silu", "ppl"},
		kSiLUBwd:     {"k_silu_bwd", "pppl"},
		kEMA:         {"k_ema", "ppfl"},
		kAdam:        {"k_adam", "ppppfffffffl"},
		kDropoutMask: {"k_dropout_mask", "puUfl"},
		kCopyBlocks:  {"k_copy_blocks", "plpllil"},
		kAddBias:     {"k_add_bias", "pplll"},
		kIm2Col:      {"k_im2col", "ppllllll"},
		kCol2Im:      {"k_col2im", "ppllllll"},
		kNCHWToCNHW:  {"k_nchw_cnhw", "pplll"},
		kCNHWToNCHW:  {"k_cnhw_nchw", "ppplll"},
		kAvgPool2:    {"k_avgpool2", "pplll"},
		kAvgPool2Bwd: {"k_avgpool2_bwd", "pplll"},
		kUp2:         {"k_up2", "pplll"},
		kUp2Bwd:      {"k_up2_bwd", "pplll"},
		kSpMeanBwd:   {"k_spmean_bwd", "ppll"},
		kSpMean:      {"k_spmean", "ppl"},
		kChanSum:     {"k_chan_sum", "pplll"},
		kSoftmax:     {"k_softmax", "ppl"},
		kSoftmaxBwd:  {"k_softmax_bwd", "pppl"},
		kLNFwd:       {"k_ln_fwd", "pppppplf"},
		kLNBwdDX:     {"k_ln_bwd_dx", "ppppppl"},
		kLNBwdParams: {"k_ln_bwd_params", "ppppppll"},
		kGNFwd:       {"k_gn_fwd", "pppppppppilllf"},
		kGNBwdSums:   {"k_gn_bwd_sums", strings.Repeat("p", 14) + "illl"},
		kGNBwdDX:     {"k_gn_bwd_dx", strings.Repeat("p", 12) + "illl"},
		kGNBwdParams: {"k_gn_bwd_params", "ppppll"},
		kSumSq:       {"k_sumsq", "ppl"},
		kMSE:         {"k_mse", "ppppfl"},
		kL1:          {"k_l1", "ppppfl"},
		kGemm:        {"k_gemm", "iilllfpllpllfpll"},
	}
}

// impl says how the device implements one tensor.Device method: with kernels of kernels.cu, with driver or cuBLAS
// calls (named for the reader), or both.
type impl struct {
	kernels []kernelID
	driver  string
}

// methodImpls maps every method of tensor.Device to its implementation. kernels_test.go fails when the interface
// gains a method that is missing here, so the CUDA device cannot silently fall behind the CPU device.
func methodImpls() map[string]impl {
	return map[string]impl{
		"Name":                {driver: "cuDeviceGetName"},
		"New":                 {driver: "cuMemAlloc (cached) + cuMemsetD32Async"},
		"Upload":              {driver: "cuMemcpyHtoDAsync"},
		"Download":            {driver: "cuMemcpyDtoHAsync"},
		"Sync":                {driver: "cuStreamSynchronize"},
		"Gemm":                {kernels: []kernelID{kGemm}, driver: "cublasSgemm_v2 / cublasSgemmStridedBatched"},
		"Zero":                {driver: "cuMemsetD32Async"},
		"Fill":                {driver: "cuMemsetD32Async"},
		"Copy":                {driver: "cuMemcpyDtoDAsync"},
		"CopyBlocks":          {kernels: []kernelID{kCopyBlocks}},
		"Axpby":               {kernels: []kernelID{kAxpby}},
		"Lincomb":             {kernels: []kernelID{kLincomb}},
		"Mul":                 {kernels: []kernelID{kMul}},
		"Scale":               {kernels: []kernelID{kScale}},
		"Clamp":               {kernels: []kernelID{kClamp}},
		"SumSquares":          {kernels: []kernelID{kSumSq}},
		"SiLU":                {kernels: []kernelID{kSiLU}},
		"SiLUBackward":        {kernels: []kernelID{kSiLUBwd}},
		"AddChannelBias":      {kernels: []kernelID{kAddBias}},
		"ChannelSumAcc":       {kernels: []kernelID{kChanSum}},
		"Im2Col":              {kernels: []kernelID{kIm2Col}},
		"Col2ImAcc":           {kernels: []kernelID{kCol2Im}},
		"NCHWToCNHW":          {kernels: []kernelID{kNCHWToCNHW}},
		"CNHWToNCHW":          {kernels: []kernelID{kCNHWToNCHW}},
		"GroupNorm":           {kernels: []kernelID{kGNFwd}},
		"GroupNormBackward":   {kernels: []kernelID{kGNBwdSums, kGNBwdDX, kGNBwdParams}},
		"LayerNorm":           {kernels: []kernelID{kLNFwd}},
		"LayerNormBackward":   {kernels: []kernelID{kLNBwdDX, kLNBwdParams}},
		"Softmax":             {kernels: []kernelID{kSoftmax}},
		"SoftmaxBackward":     {kernels: []kernelID{kSoftmaxBwd}},
		"AvgPool2":            {kernels: []kernelID{kAvgPool2}},
		"AvgPool2Backward":    {kernels: []kernelID{kAvgPool2Bwd}},
		"Upsample2":           {kernels: []kernelID{kUp2}},
		"Upsample2Backward":   {kernels: []kernelID{kUp2Bwd}},
		"SpatialMean":         {kernels: []kernelID{kSpMean}},
		"SpatialMeanBackward": {kernels: []kernelID{kSpMeanBwd}},
		"MSE":                 {kernels: []kernelID{kMSE}},
		"L1":                  {kernels: []kernelID{kL1}},
		"Adam":                {kernels: []kernelID{kAdam}},
		"DropoutMask":         {kernels: []kernelID{kDropoutMask}},
		"EMA":                 {kernels: []kernelID{kEMA}},
	}
}

// ptxEntry matches a kernel's declaration in PTX: `.visible .entry name(` followed by its parameter list.
var ptxEntry = regexp.MustCompile(`(?s)\.entry\s+(\w+)\s*\(([^)]*)\)`)

var ptxParam = regexp.MustCompile(`\.param\s+\.(\w+)\s+\w+`)

// ptxSignatures returns, for every kernel of a PTX module, its parameters' PTX types (u64, u32, f32, …).
func ptxSignatures(src string) map[string][]string {
	out := map[string][]string{}
	for _, m := range ptxEntry.FindAllStringSubmatch(src, -1) {
		var types []string
		for _, p := range ptxParam.FindAllStringSubmatch(m[2], -1) {
			types = append(types, p[1])
		}
		out[m[1]] = types
	}
	return out
}

// ptxType is the PTX parameter type that a signature letter is passed as.
func ptxType(kind byte) (string, bool) {
	switch kind {
	case 'p', 'l', 'u':
		return "u64", true
	case 'i', 'U':
		return "u32", true
	case 'f':
		return "f32", true
	}
	return "", false
}

// arg is one kernel argument: its signature letter and its bits (as the kernel reads them, little-endian, from
// the low bytes of an 8-byte slot).
type arg struct {
	kind byte
	bits uint64
}

func ptrArg(p uintptr) arg   { return arg{'p', uint64(p)} }
func i64Arg(v int) arg       { return arg{'l', uint64(int64(v))} }
func u64Arg(v uint64) arg    { return arg{'u', v} }
func i32Arg(v int32) arg     { return arg{'i', uint64(uint32(v))} }
func u32Arg(v uint32) arg    { return arg{'U', uint64(v)} }
func f32Arg(v float32) arg   { return arg{'f', uint64(math.Float32bits(v))} }
func (a arg) String() string { return fmt.Sprintf("%c:%#x", a.kind, a.bits) }

func boolArg(b bool) arg {
	if b {
		return i32Arg(1)
	}
	return i32Arg(0)
}

// packArgs checks args against spec and returns their 8-byte slots, in order.
func packArgs(spec kernelSpec, args []arg) ([]uint64, error) {
	if len(args) != len(spec.sig) {
		return nil, fmt.Errorf("gpu: %s takes %d arguments (%s), got %d", spec.name, len(spec.sig), spec.sig, len(args))
	}
	out := make([]uint64, len(args))
	for i, a := range args {
		if a.kind != spec.sig[i] {
			return nil, fmt.Errorf("gpu: %s argument %d is %c, want %c (signature %s)", spec.name, i, a.kind, spec.sig[i], spec.sig)
		}
		out[i] = a.bits
	}
	return out, nil
}

// dropoutThreshold returns the CPU kernel's threshold and keep scale for dropout probability p: an element is
// dropped when the top 32 bits of its hash are below the threshold. Computing them once here, exactly as
// tensor/kernels.c does (float p widened to double, times 2³², truncated), keeps the two devices' masks identical.
func dropoutThreshold(p float32) (thr uint32, keep float32) {
	return uint32(uint64(float64(p) * 4294967296.0)), 1 / (1 - p)
}
