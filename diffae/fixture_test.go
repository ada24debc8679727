package diffae

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"dae/nn"
	"dae/tensor"
)

// fixtureDir holds numbers computed by the authors' PyTorch implementation (see its README).
var fixtureDir = filepath.Join("..", "..", "shared", "fixtures", "official-tiny16")

var cpu = tensor.NewCPU(0)

func loadFixture(t *testing.T) (*Model, *nn.STFile, *nn.STFile) {
	t.Helper()
	w := filepath.Join(fixtureDir, "weights.safetensors")
	if _, err := os.Stat(w); err != nil {
		t.Skipf("reference fixture not found (%v)", err)
	}
	m, err := Load(cpu, w)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := nn.ReadSafetensors(filepath.Join(fixtureDir, "expect.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := nn.ReadSafetensors(filepath.Join(fixtureDir, "trace.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return m, exp, tr
}

func get(t *testing.T, f *nn.STFile, name string) ([]float32, []int) {
	t.Helper()
	v, s, err := f.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return v, s
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

func check(t *testing.T, name string, got, want []float32, tol float64) {
	t.Helper()
	d := maxAbsDiff(got, want)
	t.Logf("%-22s max |Δ| = %.3g (tolerance %.0e)", name, d, tol)
	if d > tol {
		t.Errorf("%s: max |Δ| = %g > %g", name, d, tol)
	}
}

func TestFixtureNetworks(t *testing.T) {
	m, exp, _ := loadFixture(t)
	x0, xs := get(t, exp, "x0")
	n := xs[0]
	x := cpu.New(xs...)
	cpu.Upload(x, x0)
	z := m.Enc.Forward(x)
	wantZ, _ := get(t, exp, "z_sem")
	check(t, "z_sem", z.Host(), wantZ, 1e-4)

	xt, xts := get(t, exp, "x_t")
	tv, _ := get(t, exp, "t")
	xtT := cpu.New(xts...)
	cpu.Upload(xtT, xt)
	zc := cpu.New(n, m.Cfg.ZDim())
	cpu.Upload(zc, wantZ)
	eps := m.UNet.Forward(xtT, tv, zc)
	wantEps, _ := get(t, exp, "eps")
	check(t, "eps (t=0,500,999)", eps.Host(), wantEps, 1e-4)

	lz, lzs := get(t, exp, "latent_z")
	lt, _ := get(t, exp, "latent_t")
	lzT := cpu.New(lzs...)
	cpu.Upload(lzT, lz)
	le := m.Latent.Forward(lzT, lt)
	wantLE, _ := get(t, exp, "latent_eps")
	check(t, "latent_eps", le.Host(), wantLE, 1e-4)
}

func TestFixtureTrace(t *testing.T) {
	m, exp, tr := loadFixture(t)
	xt, xts := get(t, exp, "x_t")
	tv, _ := get(t, exp, "t")
	wantZ, _ := get(t, exp, "z_sem")
	x := cpu.New(xts...)
	cpu.Upload(x, xt)
	zc := cpu.New(xts[0], m.Cfg.ZDim())
	cpu.Upload(zc, wantZ)
	u := m.UNet
	u.Forward(x, tv, zc)
	te, _ := get(t, tr, "trace.time_embed")
	check(t, "time_embed", u.time2.Forward(u.timeAct.Forward(u.time0.Forward(u.tIn))).Host(), te, 1e-4)
}

func TestFixtureSamplers(t *testing.T) {
	m, exp, _ := loadFixture(t)
	x0, xs := get(t, exp, "x0")
	n := xs[0]
	ctx := context.Background()
	z, xT, err := m.Encode(ctx, x0, n, EncodeOptions{Steps: 10})
	if err != nil {
		t.Fatal(err)
	}
	wantXT, _ := get(t, exp, "x_T_ddim10")
	check(t, "x_T_ddim10", xT, wantXT, 1e-3)
	wantZ, _ := get(t, exp, "z_sem")
	check(t, "z_sem (Encode)", z, wantZ, 1e-4)
	rec, err := m.Decode(ctx, wantZ, wantXT, n, DecodeOptions{Steps: 10})
	if err != nil {
		t.Fatal(err)
	}
	wantRec, _ := get(t, exp, "recon_ddim10")
	check(t, "recon_ddim10", rec, wantRec, 5e-3)

	noise, ns := get(t, exp, "latent_noise")
	ls, err := m.SampleLatentNormalized(noise, ns[0], 10)
	if err != nil {
		t.Fatal(err)
	}
	wantLS, _ := get(t, exp, "latent_sample_ddim10")
	check(t, "latent_sample_ddim10", ls, wantLS, 1e-3)
}
