package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The direct 3×3 kernel (its AVX-512 block and its portable block, one thread or several) and im2col + GEMM give
// the same output, input gradient and weight gradient, on shapes around the kernel's blocks of 8 channels and 48
// positions.
func TestDirectConvMatchesIm2col(t *testing.T) {
	defer setConvGenericOnly(false)
	for _, tc := range []struct{ n, cin, cout, h, w int }{
		{1, 1, 8, 8, 8}, {2, 3, 5, 8, 9}, {1, 20, 13, 9, 11}, {2, 16, 32, 32, 32}, {1, 33, 17, 12, 8},
		{1, 8, 8, 7, 40}, {1, 64, 24, 16, 16}, {3, 4, 1, 8, 8}, {5, 16, 2, 8, 12},
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
		run := func(im2col, generic bool, threads int) (y, dx, dw []float32) {
			d := NewCPU(threads)
			d.SetIm2colConv(im2col)
			setConvGenericOnly(generic)
			yt, dxt, dwt, dbt := d.New(tc.n, tc.cout, tc.h, tc.w), d.New(tc.n, tc.cin, tc.h, tc.w), d.New(tc.cout, tc.cin, 3, 3), d.New(tc.cout)
			d.Conv2dForward(yt, x, w, b, tc.n, tc.cin, tc.cout, tc.h, tc.w, 3)
			d.Conv2dBackward(dxt, dwt, dbt, dy, x, w, tc.n, tc.cin, tc.cout, tc.h, tc.w, 3)
			if !im2col && d.DirectConvTime() == 0 {
				t.Fatalf("%+v: the direct kernel did not run", tc)
			}
			return yt.Data, dxt.Data, dwt.Data
		}
		yr, dxr, dwr := run(true, false, 1)
		// three threads: images split by output channels when there are fewer images than threads
		for _, v := range []struct {
			generic bool
			threads int
		}{{false, 1}, {true, 1}, {false, 3}} {
			generic := v.generic
			if !generic && !directFast {
				continue // no AVX-512 here: the device keeps im2col, and the portable block has its own run
			}
			y, dx, dw := run(false, generic, v.threads)
			for _, p := range []struct {
				name string
				a, b []float32
			}{{"y", y, yr}, {"dx", dx, dxr}, {"dw", dw, dwr}} {
				for i := range p.a {
					if math.Abs(float64(p.a[i]-p.b[i])) > 1e-4*(1+math.Abs(float64(p.b[i]))) {
						t.Fatalf("%+v %+v: %s[%d] direct %g, im2col %g", tc, v, p.name, i, p.a[i], p.b[i])
					}
				}
			}
		}
	}
}
