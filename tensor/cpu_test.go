package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// Gemm against a float64 loop, with transposes, leading dimensions and batches.
func TestGemm(t *testing.T) {
	t.Parallel()
	d := NewCPU(2)
	rng := rand.New(rand.NewPCG(61, 1))
	for _, tc := range []struct {
		ta, tb         bool
		m, n, k, batch int
		pad            int // extra columns in every operand's leading dimension
	}{{false, false, 5, 7, 3, 1, 0}, {true, false, 4, 9, 6, 2, 1}, {false, true, 1, 13, 8, 3, 2}, {true, true, 6, 1, 5, 1, 3}} {
		rowsA, colsA := tc.m, tc.k
		if tc.ta {
			rowsA, colsA = tc.k, tc.m
		}
		rowsB, colsB := tc.k, tc.n
		if tc.tb {
			rowsB, colsB = tc.n, tc.k
		}
		lda, ldb, ldc := colsA+tc.pad, colsB+tc.pad, tc.n+tc.pad
		sa, sb, sc := rowsA*lda, rowsB*ldb, tc.m*ldc
		a, b, c := randn(d, rng, tc.batch*sa), randn(d, rng, tc.batch*sb), randn(d, rng, tc.batch*sc)
		c0 := append([]float32(nil), c.Data...)
		d.Gemm(GemmArgs{TransA: tc.ta, TransB: tc.tb, M: tc.m, N: tc.n, K: tc.k, Alpha: 0.5, Beta: 2, A: a, B: b, C: c,
			LDA: lda, LDB: ldb, LDC: ldc, Batch: tc.batch, StrideA: sa, StrideB: sb, StrideC: sc})
		for bi := range tc.batch {
			for i := range tc.m {
				for j := range tc.n {
					s := 0.0
					for p := range tc.k {
						ai := i*lda + p
						if tc.ta {
							ai = p*lda + i
						}
						bj := p*ldb + j
						if tc.tb {
							bj = j*ldb + p
						}
						s += float64(a.Data[bi*sa+ai]) * float64(b.Data[bi*sb+bj])
					}
					ci := bi*sc + i*ldc + j
					want := 0.5*s + 2*float64(c0[ci])
					if math.Abs(float64(c.Data[ci])-want) > 1e-5*(1+math.Abs(want)) {
						t.Fatalf("%+v: C[%d][%d,%d] = %g, want %g", tc, bi, i, j, c.Data[ci], want)
					}
				}
			}
			for j := tc.n; j < ldc; j++ { // padding columns are left alone
				for i := range tc.m {
					if ci := bi*sc + i*ldc + j; c.Data[ci] != c0[ci] {
						t.Fatalf("%+v: padding C[%d][%d,%d] written", tc, bi, i, j)
					}
				}
			}
		}
	}
}

// The fast exp inside SiLU and softmax against math.Exp, across the range and at the clamps.
func TestSiLUAccuracy(t *testing.T) {
	t.Parallel()
	d := NewCPU(2)
	n := 100001
	x, y, dx, dy := d.New(n), d.New(n), d.New(n), d.New(n)
	for i := range n {
		x.Data[i] = float32(-100 + 200*float64(i)/float64(n-1))
		dy.Data[i] = 1
	}
	d.SiLU(y, x)
	d.SiLUBackward(dx, x, dy)
	for i, v := range x.Data {
		xv := float64(v)
		s := 1 / (1 + math.Exp(-xv))
		want, dwant := xv*s, s*(1+xv*(1-s))
		if math.Abs(float64(y.Data[i])-want) > 1e-6*(1+math.Abs(want)) {
			t.Fatalf("silu(%g) = %g, want %g", v, y.Data[i], want)
		}
		if math.Abs(float64(dx.Data[i])-dwant) > 1e-6*(1+math.Abs(dwant)) {
			t.Fatalf("silu'(%g) = %g, want %g", v, dx.Data[i], dwant)
		}
	}
	// Far outside the clamps the derivative stays finite: 0 below, 1 above (the term x·e^−x is formed on a clamped x).
	far := d.New(4)
	copy(far.Data, []float32{-6200, -1e30, 6e37, 1e4})
	fdy, fdx := d.New(4), d.New(4)
	copy(fdy.Data, []float32{1, 0, 1, 1})
	d.SiLUBackward(fdx, far, fdy)
	for i, want := range []float64{0, 0, 1, 1} {
		if got := float64(fdx.Data[i]); math.IsNaN(got) || math.Abs(got-want) > 1e-6 {
			t.Errorf("silu'(%g)·%g = %g, want %g", far.Data[i], fdy.Data[i], got, want)
		}
	}
	sm := d.New(3, 4)
	copy(sm.Data, []float32{0, 0, 0, 0, 1000, 0, -1000, 0, 1, 2, 3, 4})
	d.Softmax(sm, sm, 3, 4)
	e := []float64{math.Exp(-3), math.Exp(-2), math.Exp(-1), 1}
	z := e[0] + e[1] + e[2] + e[3]
	for i, want := range []float64{.25, .25, .25, .25, 1, 0, 0, 0, e[0] / z, e[1] / z, e[2] / z, e[3] / z} {
		if got := float64(sm.Data[i]); math.Abs(got-want) > 1e-6 || math.IsNaN(got) {
			t.Errorf("softmax [%d] = %g, want %g", i, got, want)
		}
	}
}

// groupStats64 is group gi of image b of x [n][c][hw] (cg channels a group): its mean and 1/√(variance + 1e-5), in
// float64.
func groupStats64(x []float32, b, gi, c, cg, hw int) (mean, rstd float64) {
	s1, s2 := 0.0, 0.0
	for _, v := range x[(b*c+gi*cg)*hw : (b*c+(gi+1)*cg)*hw] {
		s1 += float64(v)
		s2 += float64(v) * float64(v)
	}
	cnt := float64(cg * hw)
	mean = s1 / cnt
	return mean, 1 / math.Sqrt(s2/cnt-mean*mean+1e-5)
}

// Group norm with AdaGN scale and shift and SiLU, against the same computed in float64, on a map whose positions
// are not a multiple of the vector width, and on inputs wide enough to reach SiLU's clamps.
func TestGroupNormSiLUAccuracy(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(63, 1))
	d := NewCPU(2)
	n, c, hw, g := 2, 8, 37, 4
	x := randn(d, rng, n, c, hw)
	for i := range x.Data {
		x.Data[i] *= 3
	}
	gamma, beta, sc, sh := randn(d, rng, c), randn(d, rng, c), randn(d, rng, n, c), randn(d, rng, n, c)
	for i := range gamma.Data {
		gamma.Data[i] *= 20 // u up to about ±100: past the exponential's clamps
	}
	y, m, r := d.New(n, c, hw), d.New(n, g), d.New(n, g)
	d.GroupNorm(y, x, gamma, beta, m, r, n, c, hw, g, 1e-5, GNMod{Scale: sc, Shift: sh, SiLU: true})
	cg := c / g
	for b := range n {
		for gi := range g {
			mean, rstd := groupStats64(x.Data, b, gi, c, cg, hw)
			for ch := gi * cg; ch < (gi+1)*cg; ch++ {
				for i := range hw {
					k := (b*c+ch)*hw + i
					h := (float64(x.Data[k])-mean)*rstd*float64(gamma.Data[ch]) + float64(beta.Data[ch])
					u := h*(1+float64(sc.Data[b*c+ch])) + float64(sh.Data[b*c+ch])
					want := u / (1 + math.Exp(-u))
					if got := float64(y.Data[k]); math.Abs(got-want) > 2e-5*(1+math.Abs(want)) {
						t.Fatalf("y[%d] = %g, want %g (u = %g)", k, got, want, u)
					}
				}
			}
		}
	}
}

// The group norm backward with AdaGN scale, shift and z-scale and SiLU against the same derived in float64: dx,
// dγ, dβ and the three modulation gradients, with dx its own buffer, dx in place over dy, and dx in place over x
// (the kernel keeps SiLU's gradient in dx between its passes, which must not cost x when they are one buffer).
func TestGroupNormBackwardAccuracy(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(64, 1))
	d := NewCPU(2)
	n, c, hw, g := 2, 8, 37, 4
	x0 := randn(d, rng, n, c, hw)
	dy0 := randn(d, rng, n, c, hw)
	gamma, beta := randn(d, rng, c), randn(d, rng, c)
	sc, sh, zs := randn(d, rng, n, c), randn(d, rng, n, c), randn(d, rng, n, c)
	mod := GNMod{Scale: sc, Shift: sh, ZScale: zs, SiLU: true}
	// float64 reference
	cg := c / g
	wdx := make([]float64, n*c*hw)
	wdg, wdb := make([]float64, c), make([]float64, c)
	wds, wdsh, wdz := make([]float64, n*c), make([]float64, n*c), make([]float64, n*c)
	for b := range n {
		for gi := range g {
			mean, r := groupStats64(x0.Data, b, gi, c, cg, hw)
			cnt := float64(cg * hw)
			xh := make([]float64, cg*hw)
			dxh := make([]float64, cg*hw)
			mdxh, mdxhx := 0.0, 0.0
			for cc := range cg {
				ch, nc := gi*cg+cc, b*c+gi*cg+cc
				s, shv, z := 1+float64(sc.Data[nc]), float64(sh.Data[nc]), 1+float64(zs.Data[nc])
				for i := range hw {
					k := nc*hw + i
					xv := (float64(x0.Data[k]) - mean) * r
					h1 := xv*float64(gamma.Data[ch]) + float64(beta.Data[ch])
					h2 := h1*s + shv
					u := h2 * z
					sg := 1 / (1 + math.Exp(-u))
					du := float64(dy0.Data[k]) * sg * (1 + u*(1-sg))
					wdz[nc] += du * h2
					dh2 := du * z
					wds[nc] += dh2 * h1
					wdsh[nc] += dh2
					dh1 := dh2 * s
					wdb[ch] += dh1
					wdg[ch] += dh1 * xv
					xh[cc*hw+i], dxh[cc*hw+i] = xv, dh1*float64(gamma.Data[ch])
					mdxh += dxh[cc*hw+i] / cnt
					mdxhx += dxh[cc*hw+i] * xv / cnt
				}
			}
			for cc := range cg {
				for i := range hw {
					wdx[(b*c+gi*cg+cc)*hw+i] = r * (dxh[cc*hw+i] - mdxh - xh[cc*hw+i]*mdxhx)
				}
			}
		}
	}
	near := func(what string, got []float32, want []float64) {
		t.Helper()
		for i, w := range want {
			if math.Abs(float64(got[i])-w) > 1e-4*(1+math.Abs(w)) {
				t.Fatalf("%s[%d] = %g, want %g", what, i, got[i], w)
			}
		}
	}
	for _, alias := range []string{"none", "dy", "x"} {
		x, dy := d.New(n, c, hw), d.New(n, c, hw)
		copy(x.Data, x0.Data)
		copy(dy.Data, dy0.Data)
		y, m, r := d.New(n, c, hw), d.New(n, g), d.New(n, g)
		d.GroupNorm(y, x, gamma, beta, m, r, n, c, hw, g, 1e-5, mod)
		gr := GNGrads{DX: d.New(n, c, hw), DGamma: d.New(c), DBeta: d.New(c), DScale: d.New(n, c), DShift: d.New(n, c),
			DZScale: d.New(n, c)}
		switch alias {
		case "dy":
			gr.DX = dy
		case "x":
			gr.DX = x
		}
		d.GroupNormBackward(gr, dy, x, gamma, beta, m, r, n, c, hw, g, mod)
		near("dx (dx "+alias+")", gr.DX.Data, wdx)
		near("dgamma", gr.DGamma.Data, wdg)
		near("dbeta", gr.DBeta.Data, wdb)
		near("dscale", gr.DScale.Data, wds)
		near("dshift", gr.DShift.Data, wdsh)
		near("dz", gr.DZScale.Data, wdz)
	}
}

// The kernels split work over goroutines by index range: results must not depend on how it was split.
func TestThreadsAgree(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(62, 1))
	one, two := NewCPU(1), NewCPU(2)
	n, c, hw, g := 3, 64, 33*31, 32
	x := randn(one, rng, n, c, hw)
	gamma, beta, sc := randn(one, rng, c), randn(one, rng, c), randn(one, rng, n, c)
	mod := GNMod{Scale: sc, SiLU: true}
	var outs [2][]float32
	for i, d := range []*CPU{one, two} {
		y, m, r := d.New(n, c, hw), d.New(n, g), d.New(n, g)
		d.GroupNorm(y, x, gamma, beta, m, r, n, c, hw, g, 1e-5, mod)
		outs[i] = y.Data
	}
	for i := range outs[0] {
		if outs[0][i] != outs[1][i] {
			t.Fatal(fmt.Sprintf("group norm differs between 1 and 2 threads at %d: %g vs %g", i, outs[0][i], outs[1][i]))
		}
	}
}

// The peak measurement runs and gives a rate (any machine this runs on does more than 1 GFLOP/s a core).
func TestPeakGFLOPS(t *testing.T) {
	one, two := NewCPU(1).PeakGFLOPS(50*time.Millisecond), NewCPU(2).PeakGFLOPS(50*time.Millisecond)
	if !(one > 1) || !(two > 1) {
		t.Fatalf("peak: one thread %.1f GFLOP/s, two %.1f", one, two)
	}
	t.Logf("peak: one thread %.1f GFLOP/s, two %.1f", one, two)
}

// Edge cases where the CPU device now agrees with the CUDA one: a group norm backward without dx (the interface
// allows any gradient to be nil; the kernel wrote through it), and MSE and L1 of empty tensors (0, not NaN).
func TestCPUEdgeCasesMatchTheGPU(t *testing.T) {
	d := NewCPU(2)
	const n, c, hw = 2, 8, 16
	x, dy, y := d.New(n, c, hw), d.New(n, c, hw), d.New(n, c, hw)
	for i := range x.Data {
		x.Data[i], dy.Data[i] = float32(i%7)-3, float32(i%5)-2
	}
	gamma, beta := d.New(c), d.New(c)
	for i := range gamma.Data {
		gamma.Data[i] = 1
	}
	mean, rstd := d.New(n, 4), d.New(n, 4)
	mod := GNMod{SiLU: true}
	d.GroupNorm(y, x, gamma, beta, mean, rstd, n, c, hw, 4, 1e-5, mod)
	full := GNGrads{DX: d.New(n, c, hw), DGamma: d.New(c), DBeta: d.New(c)}
	d.GroupNormBackward(full, dy, x, gamma, beta, mean, rstd, n, c, hw, 4, mod)
	noDX := GNGrads{DGamma: d.New(c), DBeta: d.New(c)}
	d.GroupNormBackward(noDX, dy, x, gamma, beta, mean, rstd, n, c, hw, 4, mod)
	for i := range full.DGamma.Data {
		if full.DGamma.Data[i] != noDX.DGamma.Data[i] || full.DBeta.Data[i] != noDX.DBeta.Data[i] {
			t.Fatalf("channel %d: dγ, dβ without dx %v, %v; with it %v, %v", i, noDX.DGamma.Data[i], noDX.DBeta.Data[i],
				full.DGamma.Data[i], full.DBeta.Data[i])
		}
	}
	e := d.New(0)
	if v := d.MSE(e, e, e, 1); v != 0 {
		t.Errorf("MSE of empty tensors = %v, want 0", v)
	}
	if v := d.L1(e, e, e, 1); v != 0 {
		t.Errorf("L1 of empty tensors = %v, want 0", v)
	}
}
