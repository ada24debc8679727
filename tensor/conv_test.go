package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The direct 3×3 kernels (AVX-512, AVX2 and portable blocks, one thread or several) and im2col + GEMM give
// the same output, input gradient and weight gradient, on shapes around the kernel's blocks of 8 channels and 48
// positions.
func TestDirectConvMatchesIm2col(t *testing.T) {
	defer setConvCap(2)
	for _, tc := range []struct{ n, cin, cout, h, w int }{
		{1, 1, 8, 8, 8}, {2, 3, 5, 8, 9}, {1, 20, 13, 9, 11}, {2, 16, 32, 32, 32}, {1, 33, 17, 12, 8},
		{1, 8, 8, 7, 40}, {1, 64, 24, 16, 16}, {3, 4, 1, 8, 8}, {5, 16, 2, 8, 12},
		{4, 16, 24, 4, 4}, {2, 5, 9, 6, 5}, {1, 3, 17, 5, 7}, // narrow maps: the AVX-512 forward in place only
		// the channels-last weight gradient (input channels in blocks of 16): output channels off its blocks of
		// three, maps whose positions are not a multiple of 16 (the transpose's tail)
		{3, 32, 7, 9, 11}, {2, 48, 5, 8, 10}, {4, 16, 4, 16, 16}, {3, 64, 64, 8, 8},
		// maps of one vector, three images per block: image counts off it, positions under 16
		{5, 16, 24, 4, 4}, {7, 9, 13, 4, 4}, {2, 8, 9, 3, 5}, {1, 3, 17, 2, 7},
		// channels enough for the weights to be packed on several cores (both ways: forward and input gradient)
		{2, 160, 136, 8, 8},
		// input channels in blocks of 16 on narrow, non-square maps (the channels-last weight gradient under 8 wide)
		{2, 16, 5, 20, 4}, {3, 32, 7, 7, 5},
	} {
		rng := rand.New(rand.NewPCG(uint64(tc.cin), uint64(tc.cout)))
		rnd := func(shape ...int) *Tensor {
			d := make([]float32, Numel(shape...))
			for i := range d {
				d[i] = float32(rng.NormFloat64())
			}
			return Wrap(nil, d, shape...)
		}
		x, w, b := rnd(tc.n, tc.cin, tc.h, tc.w), rnd(tc.cout, tc.cin, 3, 3), rnd(tc.cout)
		dy := rnd(tc.n, tc.cout, tc.h, tc.w)
		run := func(im2col bool, level, threads int) (y, dx, dw []float32) {
			d := NewCPU(threads)
			d.SetIm2colConv(im2col)
			setConvCap(level)
			yt, dxt, dwt, dbt := d.New(tc.n, tc.cout, tc.h, tc.w), d.New(tc.n, tc.cin, tc.h, tc.w), d.New(tc.cout, tc.cin, 3, 3), d.New(tc.cout)
			d.Conv2dForward(yt, x, w, b, tc.n, tc.cin, tc.cout, tc.h, tc.w, 3)
			d.Conv2dBackward(dxt, dwt, dbt, dy, x, w, tc.n, tc.cin, tc.cout, tc.h, tc.w, 3)
			if !im2col && d.DirectConvTime() == 0 {
				t.Fatalf("%+v: the direct kernel did not run", tc)
			}
			// The weight gradient alone (no input gradient wanted) is the same, bit for bit.
			dwo, dbo := d.New(tc.cout, tc.cin, 3, 3), d.New(tc.cout)
			d.Conv2dBackward(nil, dwo, dbo, dy, x, w, tc.n, tc.cin, tc.cout, tc.h, tc.w, 3)
			for i, v := range dwt.Data {
				if dwo.Data[i] != v {
					t.Fatalf("%+v im2col %v level %d: dw without dx [%d] = %v, with dx %v", tc, im2col, level, i, dwo.Data[i], v)
				}
			}
			// With a residual (dy stands in for one): the same output plus it, exactly, into a fresh tensor and
			// in place over the residual itself.
			ya := d.New(tc.n, tc.cout, tc.h, tc.w)
			d.Conv2dForwardAdd(ya, x, w, b, dy, tc.n, tc.cin, tc.cout, tc.h, tc.w, 3)
			yi := d.New(tc.n, tc.cout, tc.h, tc.w)
			copy(yi.Data, dy.Data)
			d.Conv2dForwardAdd(yi, x, w, b, yi, tc.n, tc.cin, tc.cout, tc.h, tc.w, 3)
			for i, v := range yt.Data {
				if want := v + dy.Data[i]; ya.Data[i] != want || yi.Data[i] != want {
					t.Fatalf("%+v im2col %v level %d: with a residual y[%d] = %v (in place %v), want %v", tc, im2col, level, i,
						ya.Data[i], yi.Data[i], want)
				}
			}
			return yt.Data, dxt.Data, dwt.Data
		}
		yr, dxr, dwr := run(true, 2, 1)
		// Levels: 2 AVX-512, 1 AVX2, 0 portable blocks; three threads: images split by output channels when there
		// are fewer images than threads.
		for _, v := range []struct{ level, threads int }{{2, 1}, {1, 1}, {0, 1}, {2, 3}} {
			if v.level > directLevel {
				continue // this CPU lacks these instructions
			}
			if tc.w < 8 && v.level < 2 {
				continue // maps under 8 wide go direct only through the AVX-512 in-place forward
			}
			y, dx, dw := run(false, v.level, v.threads)
			matchIm2col(t, fmt.Sprintf("%+v %+v: direct", tc, v), [3][]float32{y, dx, dw}, [3][]float32{yr, dxr, dwr})
		}
	}
}

// On a CPU with AVX2 and no AVX-512 the device runs the direct forward and input-gradient kernels and im2col +
// GEMM for the weight gradient; that mix, simulated here where the CPU has AVX2, matches im2col throughout.
func TestDirectConvAVX2Mix(t *testing.T) {
	if directLevel < 1 {
		t.Skip("no AVX2 here")
	}
	saved := directLevel
	defer func() { directLevel = saved; setConvCap(2) }()
	rng := rand.New(rand.NewPCG(7, 7))
	rnd := func(shape ...int) *Tensor {
		d := make([]float32, Numel(shape...))
		for i := range d {
			d[i] = float32(rng.NormFloat64())
		}
		return Wrap(nil, d, shape...)
	}
	const n, cin, cout, h, w = 3, 12, 10, 9, 13
	x, wt, b, dy := rnd(n, cin, h, w), rnd(cout, cin, 3, 3), rnd(cout), rnd(n, cout, h, w)
	run := func(d *CPU) (y, dx, dw []float32) {
		yt, dxt, dwt, dbt := d.New(n, cout, h, w), d.New(n, cin, h, w), d.New(cout, cin, 3, 3), d.New(cout)
		d.Conv2dForward(yt, x, wt, b, n, cin, cout, h, w, 3)
		d.Conv2dBackward(dxt, dwt, dbt, dy, x, wt, n, cin, cout, h, w, 3)
		return yt.Data, dxt.Data, dwt.Data
	}
	ref := NewCPU(2)
	ref.SetIm2colConv(true)
	yr, dxr, dwr := run(ref)
	setConvCap(1)
	directForced, directLevel = false, 1
	d := NewCPU(2)
	if !d.directConv(3, w) || d.directConvDW(3, cin, w) {
		t.Fatal("an AVX2 CPU should run the direct forward kernel and im2col for the weight gradient")
	}
	y, dx, dw := run(d)
	matchIm2col(t, "AVX2 mix", [3][]float32{y, dx, dw}, [3][]float32{yr, dxr, dwr})
}

// matchIm2col fails the test unless the output, input gradient and weight gradient got match the im2col + GEMM
// ones (want) to 1e-4 relative.
func matchIm2col(t *testing.T, what string, got, want [3][]float32) {
	t.Helper()
	for k, name := range []string{"y", "dx", "dw"} {
		for i, a := range got[k] {
			if b := want[k][i]; math.Abs(float64(a-b)) > 1e-4*(1+math.Abs(float64(b))) {
				t.Fatalf("%s: %s[%d] %g, im2col %g", what, name, i, a, b)
			}
		}
	}
}
