package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"dae/diffae"
	"dae/imageio"
	"dae/nn"
	"dae/tensor"
)

// fixtureDir holds a tiny Diff-AE and what the authors' PyTorch code computed with it (see its README).
var fixtureDir = filepath.Join("..", "..", "..", "shared", "fixtures", "official-tiny16")

func maxAbsDiff(t *testing.T, name string, got, want []float32) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	m := 0.0
	for i := range got {
		m = math.Max(m, math.Abs(float64(got[i])-float64(want[i])))
	}
	return m
}

func getTensor(t *testing.T, f *nn.STFile, name string) ([]float32, []int) {
	t.Helper()
	v, s, err := f.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return v, s
}

// TestFixtureThroughCLI runs `dae encode` and `dae decode --raw` on the fixture's images and weights and compares
// with the reference's z_sem, 10-step x_T and 10-step reconstruction.
func TestFixtureThroughCLI(t *testing.T) {
	weights := filepath.Join(fixtureDir, "weights.safetensors")
	if _, err := os.Stat(weights); err != nil {
		t.Skipf("reference fixture not found (%v)", err)
	}
	exp, err := nn.ReadSafetensors(filepath.Join(fixtureDir, "expect.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	codesPath := filepath.Join(dir, "codes.safetensors")
	var imgs []string
	for _, n := range []string{"img0.png", "img1.png", "img2.png"} {
		imgs = append(imgs, filepath.Join(fixtureDir, n))
	}
	if err := runEncode(ctx, append([]string{"--model", weights, "--steps", "10", "--out", codesPath}, imgs...)); err != nil {
		t.Fatal(err)
	}
	got, err := nn.ReadSafetensors(codesPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		got, want string
		tol       float64
	}{
		{"z_sem", "z_sem", 1e-4},
		{"x_T", "x_T_ddim10", 1e-3},
	} {
		g, gs := getTensor(t, got, c.got)
		w, ws := getTensor(t, exp, c.want)
		if !slices.Equal(gs, ws) {
			t.Errorf("%s has shape %v, want %v", c.got, gs, ws)
		}
		d := maxAbsDiff(t, c.got, g, w)
		t.Logf("encode: %-5s vs %-11s max |Δ| = %.3g (tolerance %.0e)", c.got, c.want, d, c.tol)
		if d > c.tol {
			t.Errorf("%s: max |Δ| = %g > %g", c.got, d, c.tol)
		}
	}
	m, err := diffae.Load(tensor.NewCPU(0), weights)
	if err != nil {
		t.Fatal(err)
	}
	if id := got.Meta[codesMetaModel]; id != m.ID {
		t.Errorf("codes model_id %q, want %q", id, m.ID)
	}
	if cfg := got.Meta[diffae.MetaConfig]; cfg != m.Cfg.JSON() {
		t.Errorf("codes config %q, want %q", cfg, m.Cfg.JSON())
	}
	if s := got.Meta[codesMetaSteps]; s != "10" {
		t.Errorf("codes steps %q, want 10", s)
	}
	c, err := readCodes(codesPath)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Inputs, imgs) {
		t.Errorf("codes inputs %q, want %q", c.Inputs, imgs)
	}

	out := filepath.Join(dir, "png")
	raw := filepath.Join(dir, "raw.safetensors")
	if err := runDecode(ctx, []string{"--model", weights, "--codes", codesPath, "--steps", "10", "--out", out, "--raw", raw}); err != nil {
		t.Fatal(err)
	}
	rf, err := nn.ReadSafetensors(raw)
	if err != nil {
		t.Fatal(err)
	}
	g, gs := getTensor(t, rf, rawTensor)
	w, ws := getTensor(t, exp, "recon_ddim10")
	if !slices.Equal(gs, ws) {
		t.Errorf("x0 has shape %v, want %v", gs, ws)
	}
	d := maxAbsDiff(t, "x0", g, w)
	t.Logf("decode: x0    vs recon_ddim10 max |Δ| = %.3g (tolerance 5e-03)", d)
	if d > 5e-3 {
		t.Errorf("x0: max |Δ| = %g > 5e-3", d)
	}
	for i, n := range []string{"img0.png", "img1.png", "img2.png"} {
		img, err := imageio.DecodeFile(filepath.Join(out, n), imageio.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		want := imageio.FromCHW(g[i*768:(i+1)*768], 3, 16, 16)
		if !sameImage(img, want) {
			t.Errorf("%s is not the raw image %d", n, i)
		}
	}
}

func sameImage(a, b image.Image) bool {
	if a.Bounds() != b.Bounds() {
		return false
	}
	for y := a.Bounds().Min.Y; y < a.Bounds().Max.Y; y++ {
		for x := a.Bounds().Min.X; x < a.Bounds().Max.X; x++ {
			r1, g1, b1, a1 := a.At(x, y).RGBA()
			r2, g2, b2, a2 := b.At(x, y).RGBA()
			if r1 != r2 || g1 != g2 || b1 != b2 || a1 != a2 {
				return false
			}
		}
	}
	return true
}

// tinyModel writes a randomly initialised tiny model (seed picks the weights) and returns its path.
func tinyModel(t *testing.T, dir string, seed uint64, edit func(*diffae.Config)) string {
	t.Helper()
	cfg, err := diffae.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	path := filepath.Join(dir, "tiny"+string(rune('a'+seed))+".safetensors")
	if err := diffae.New(tensor.NewCPU(1), cfg, seed).Save(path, "F32", nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// testImages writes n PNGs of w×h with distinct patterns and returns their paths.
func testImages(t *testing.T, dir string, n, w, h int) []string {
	t.Helper()
	var paths []string
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				img.Set(x, y, color.RGBA{uint8(x * 10 * (i + 1)), uint8(y * 9), uint8(40 * i), 255})
			}
		}
		p := filepath.Join(dir, "in"+string(rune('0'+i))+".png")
		if err := imageio.WritePNG(p, img); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// TestRoundTripTiny encodes, decodes and reconstructs with a random tiny model: the files have the documented
// tensors, shapes and names, semantic-only codes decode only with a random x_T, and reconstruct's sheets have one
// cell per column.
func TestRoundTripTiny(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := tinyModel(t, dir, 1, nil)
	imgs := testImages(t, dir, 3, 20, 24) // not 16×16: exercises resize and crop

	codesPath := filepath.Join(dir, "c.safetensors")
	if err := runEncode(ctx, append([]string{"--model", model, "--steps", "3", "--batch", "2", "--out", codesPath}, imgs...)); err != nil {
		t.Fatal(err)
	}
	c, err := readCodes(codesPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.N != 3 || c.ZDim != 32 || !slices.Equal(c.XTShape, []int{3, 16, 16}) || c.Steps != 3 {
		t.Errorf("codes: N %d, z %d, x_T %v, steps %d; want 3, 32, [3 16 16], 3", c.N, c.ZDim, c.XTShape, c.Steps)
	}

	semPath := filepath.Join(dir, "sem.safetensors")
	if err := runEncode(ctx, append([]string{"--model", model, "--semantic-only", "--out", semPath}, imgs...)); err != nil {
		t.Fatal(err)
	}
	sem, err := readCodes(semPath)
	if err != nil {
		t.Fatal(err)
	}
	if sem.XT != nil || sem.Steps != 0 {
		t.Errorf("--semantic-only wrote x_T (%d values) or steps %d", len(sem.XT), sem.Steps)
	}
	if d := maxAbsDiff(t, "z_sem", sem.Z, c.Z); d != 0 {
		t.Errorf("--semantic-only z_sem differs from the full encoding's by %g", d)
	}

	out := filepath.Join(dir, "dec")
	err = runDecode(ctx, []string{"--model", model, "--codes", semPath, "--steps", "2", "--out", out})
	if !errors.Is(err, errUsage) {
		t.Errorf("decoding semantic-only codes without --random-xt: %v, want a usage error", err)
	}
	for _, args := range [][]string{
		{"--codes", codesPath},
		{"--codes", semPath, "--steps", "2", "--random-xt", "--seed", "7"},
	} {
		if err := runDecode(ctx, append([]string{"--model", model, "--out", out}, args...)); err != nil {
			t.Fatalf("decode %v: %v", args, err)
		}
		for _, n := range []string{"in0.png", "in1.png", "in2.png"} {
			img, err := imageio.DecodeFile(filepath.Join(out, n), imageio.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() != 16 || b.Dy() != 16 {
				t.Errorf("%s is %v, want 16×16", n, b)
			}
		}
	}

	rec := filepath.Join(dir, "rec")
	if err := runReconstruct(ctx, append([]string{"--model", model, "--steps", "2", "--random-xt", "--scale", "1", "--out", rec}, imgs...)); err != nil {
		t.Fatal(err)
	}
	img, err := imageio.DecodeFile(filepath.Join(rec, "in1.png"), imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 2+3*(16+2) || b.Dy() != 2+16+2 {
		t.Errorf("reconstruction sheet is %v, want three 16×16 cells with 2-pixel padding", b)
	}
}

// TestErrors checks that bad inputs give errors that say what is wrong and name the bad file, never a panic.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := tinyModel(t, dir, 1, nil)
	other := tinyModel(t, dir, 2, nil)                                                                                    // same network, other weights
	wide := tinyModel(t, dir, 3, func(c *diffae.Config) { c.EncOutChannels, c.EmbedChannels, c.LatentNet = 48, 48, nil }) // other z_sem size
	grey := tinyModel(t, dir, 4, func(c *diffae.Config) { c.InChannels, c.OutChannels = 1, 1 })                           // other x_T shape
	imgs := testImages(t, dir, 1, 16, 16)
	codesPath := filepath.Join(dir, "codes.safetensors")
	if err := runEncode(ctx, []string{"--model", model, "--steps", "2", "--out", codesPath, imgs[0]}); err != nil {
		t.Fatal(err)
	}

	good, err := os.ReadFile(imgs[0])
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.png")
	text := filepath.Join(dir, "notes.png")
	for p, b := range map[string][]byte{truncated: good[:len(good)/2], text: []byte("not an image\n")} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A checkpoint without one tensor, and one whose configuration does not fit its tensors.
	f, err := nn.ReadSafetensors(model)
	if err != nil {
		t.Fatal(err)
	}
	var ts []nn.STTensor
	for _, n := range f.Order[1:] {
		v, s := getTensor(t, f, n)
		ts = append(ts, nn.STTensor{Name: n, Shape: s, Data: v})
	}
	missing := filepath.Join(dir, "missing.safetensors")
	if err := nn.WriteSafetensors(missing, ts, "F32", f.Meta); err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{}
	for k, v := range f.Meta {
		meta[k] = v
	}
	meta[diffae.MetaConfig] = strings.Replace(meta[diffae.MetaConfig], `"model_channels":32`, `"model_channels":64`, 1)
	if meta[diffae.MetaConfig] == f.Meta[diffae.MetaConfig] {
		t.Fatalf("config JSON has no \"model_channels\":32 to change: %s", meta[diffae.MetaConfig])
	}
	mismatch := filepath.Join(dir, "mismatch.safetensors")
	if err := nn.WriteSafetensors(mismatch, append(ts, nn.STTensor{Name: f.Order[0], Shape: f.Tensors[f.Order[0]].Shape,
		Data: must(f.Tensors[f.Order[0]].Float32())}), "F32", meta); err != nil {
		t.Fatal(err)
	}

	// Codes whose shapes need 2⁵⁹·32·4 and 2⁵⁹·768·4 bytes, which wrap to 0 in 64 bits, with no data; and codes
	// whose steps are out of range.
	cf, err := nn.ReadSafetensors(codesPath)
	if err != nil {
		t.Fatal(err)
	}
	codesMeta := map[string]string{}
	for k, v := range cf.Meta {
		codesMeta[k] = v
	}
	delete(codesMeta, codesMetaInputs)
	header, err := json.Marshal(map[string]any{
		"__metadata__": codesMeta,
		codesTensorZ:   map[string]any{"dtype": "F32", "shape": []int{1 << 59, 32}, "data_offsets": []int{0, 0}},
		codesTensorXT:  map[string]any{"dtype": "F32", "shape": []int{1 << 59, 3, 16, 16}, "data_offsets": []int{0, 0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	overflow := filepath.Join(dir, "overflow.safetensors")
	if err := os.WriteFile(overflow, append(binary.LittleEndian.AppendUint64(nil, uint64(len(header))), header...), 0o644); err != nil {
		t.Fatal(err)
	}
	var codesTensors []nn.STTensor
	for _, n := range cf.Order {
		v, s := getTensor(t, cf, n)
		codesTensors = append(codesTensors, nn.STTensor{Name: n, Shape: s, Data: v})
	}
	codesMeta = map[string]string{}
	for k, v := range cf.Meta {
		codesMeta[k] = v
	}
	codesMeta[codesMetaSteps] = "5000"
	manySteps := filepath.Join(dir, "steps.safetensors")
	if err := nn.WriteSafetensors(manySteps, codesTensors, "F32", codesMeta); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "out")
	enc := func(extra ...string) []string {
		return append([]string{"--model", model, "--steps", "2", "--out", filepath.Join(dir, "c2.safetensors")}, extra...)
	}
	dec := func(m string, extra ...string) []string {
		return append([]string{"--model", m, "--codes", codesPath, "--steps", "2", "--out", out}, extra...)
	}
	nodata := filepath.Join(dir, "nodata")
	train := func(extra ...string) []string {
		return append([]string{"--preset", "tiny", "--data", nodata, "--out", filepath.Join(dir, "run.safetensors"), "--steps", "0"}, extra...)
	}
	latent := func(extra ...string) []string {
		return append([]string{"--model", model, "--data", nodata, "--out", filepath.Join(dir, "lat.safetensors"), "--steps", "0"}, extra...)
	}
	for _, tc := range []struct {
		name string
		run  func(context.Context, []string) error
		args []string
		is   error    // the error must wrap this
		says []string // and contain these
	}{
		{"truncated image", runEncode, enc(imgs[0], truncated), imageio.ErrCorrupt, []string{truncated}},
		{"text file as image", runEncode, enc(text), imageio.ErrNotImage, []string{text}},
		{"missing image", runEncode, enc(filepath.Join(dir, "nope.png")), os.ErrNotExist, []string{"nope.png"}},
		{"corrupt image, reconstruct", runReconstruct, []string{"--model", model, "--out", out, truncated}, imageio.ErrCorrupt, []string{truncated}},
		{"checkpoint missing a tensor", runEncode, []string{"--model", missing, "--out", codesPath, imgs[0]},
			diffae.ErrCheckpoint, []string{missing, "missing tensor", f.Order[0]}},
		{"checkpoint config does not fit", runDecode, dec(mismatch), diffae.ErrCheckpoint, []string{mismatch, "shape"}},
		{"no checkpoint", runEncode, []string{"--model", filepath.Join(dir, "none.safetensors"), "--out", codesPath, imgs[0]},
			diffae.ErrCheckpoint, []string{"none.safetensors"}},
		{"codes from other weights", runDecode, dec(other), errOtherModel, []string{codesPath, "encoded by", "--any-model"}},
		{"codes with another z_sem size", runDecode, dec(wide, "--any-model"), errOtherModel, []string{codesPath, "z_sem is 32-d, the model's is 48-d"}},
		{"codes with another x_T shape", runDecode, dec(grey, "--any-model"), errOtherModel, []string{codesPath, "x_T is [3 16 16]"}},
		{"image as codes", runDecode, []string{"--model", model, "--codes", imgs[0], "--out", out}, nn.ErrSafetensors, []string{imgs[0]}},
		{"codes whose shapes overflow", runDecode, []string{"--model", model, "--codes", overflow, "--out", out}, nn.ErrSafetensors,
			[]string{overflow, `tensor "`, "do not hold"}},
		{"codes with steps out of range", runDecode, []string{"--model", model, "--codes", manySteps, "--out", out}, nil,
			[]string{manySteps, `"steps" = 5000`}},
		{"model as codes", runDecode, []string{"--model", model, "--codes", model, "--out", out}, nil, []string{model, "not a codes file"}},
		{"encode without --out", runEncode, []string{"--model", model, imgs[0]}, errUsage, []string{"--out"}},
		{"encode without images", runEncode, []string{"--model", model, "--out", codesPath}, errUsage, []string{"no images"}},
		{"encode without --model", runEncode, []string{"--out", codesPath, imgs[0]}, errUsage, []string{"--model"}},
		{"zero steps", runEncode, enc("--steps", "0", imgs[0]), errUsage, []string{"--steps 0"}},
		{"unknown flag", runEncode, enc("--frobnicate", imgs[0]), errUsage, []string{"frobnicate"}},
		{"bad number", runDecode, dec(model, "--batch", "many"), errUsage, []string{"many"}},
		{"decode without --codes", runDecode, []string{"--model", model, "--out", out}, errUsage, []string{"--codes"}},
		{"decode with arguments", runDecode, dec(model, imgs[0]), errUsage, []string{"unexpected"}},
		{"seed without random x_T", runDecode, dec(model, "--seed", "3"), errUsage, []string{"--random-xt"}},
		{"reconstruct without images", runReconstruct, []string{"--model", model, "--out", out}, errUsage, []string{"no images"}},
		// Positional arguments where a command takes none: flag parsing stops at the first, so the flags after it
		// were silently dropped too.
		{"train with arguments", runTrain, train("stray", "--batch", "4"), errUsage, []string{`unexpected arguments ["stray" "--batch" "4"]`}},
		{"export with arguments", runExport, []string{"--model", model, "--out", filepath.Join(dir, "e.safetensors"), "stray", "--dtype", "F32"},
			errUsage, []string{`unexpected arguments ["stray" "--dtype" "F32"]`}},
		{"bench with arguments", runBench, []string{"--presets", "nope", "stray"}, errUsage, []string{`unexpected arguments ["stray"]`}},
		// Numbers out of range, each named.
		{"train batch 0", runTrain, train("--batch", "0"), errUsage, []string{"--batch 0: want at least 1"}},
		{"train lr 0", runTrain, train("--lr", "0"), errUsage, []string{"--lr 0: want a finite number above 0"}},
		{"train lr NaN", runTrain, train("--lr", "NaN"), errUsage, []string{"--lr NaN"}},
		{"train minutes", runTrain, train("--minutes", "-1"), errUsage, []string{"--minutes -1"}},
		{"train checkpoint-every", runTrain, train("--checkpoint-every", "-1"), errUsage, []string{"--checkpoint-every -1"}},
		{"train steps", runTrain, train("--steps", "-1"), errUsage, []string{"--steps -1"}},
		{"train-latent n", runTrainLatent, latent("--n", "-1"), errUsage, []string{"--n -1: want at least 0"}},
		{"train-latent weight decay", runTrainLatent, latent("--weight-decay", "-0.1"), errUsage, []string{"--weight-decay -0.1"}},
		{"train-latent encode batch", runTrainLatent, latent("--encode-batch", "0"), errUsage, []string{"--encode-batch 0"}},
		{"train-latent batch", runTrainLatent, latent("--batch", "0"), errUsage, []string{"--batch 0"}},
		{"train-latent threads", runTrainLatent, latent("--threads", "-1"), errUsage, []string{"--threads -1"}},
		{"train-latent dtype without export", runTrainLatent, latent("--export-dtype", "F32"), errUsage,
			[]string{"--export-dtype applies only with --export"}},
		{"bench threads", runBench, []string{"--presets", "nope", "--threads", "-1"}, errUsage, []string{"--threads -1"}},
		{"eval recon batch", runEvalRecon, []string{"--model", model, "--batch", "0"}, errUsage, []string{"--batch 0"}},
		{"eval recon threads", runEvalRecon, []string{"--model", model, "--threads", "-2"}, errUsage, []string{"--threads -2"}},
		{"eval probe recon steps", runEvalProbe, []string{"--model", model, "--recon-steps", "0"}, errUsage, []string{"--recon-steps 0: want 1..1000"}},
		{"eval probe n-train", runEvalProbe, []string{"--model", model, "--n-train", "-5"}, errUsage, []string{"--n-train -5"}},
		{"eval probe epochs", runEvalProbe, []string{"--model", model, "--epochs", "0"}, errUsage, []string{"--epochs 0"}},
		{"eval probe batch", runEvalProbe, []string{"--model", model, "--batch", "0"}, errUsage, []string{"--batch 0"}},
		{"eval probe encode batch", runEvalProbe, []string{"--model", model, "--encode-batch", "0"}, errUsage, []string{"--encode-batch 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(ctx, tc.args)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %q", err, tc.is)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}

	// The same codes decode with the other weights when asked to.
	if err := runDecode(ctx, dec(other, "--any-model")); err != nil {
		t.Errorf("--any-model: %v", err)
	}
}

// TestTrainResumeFlags: resuming a run refuses the flags of a new run that were given and differ from the stored
// ones (they would be ignored), names each with its stored value, and accepts them when they agree.
func TestTrainResumeFlags(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	testImages(t, data, 2, 16, 16)
	out := filepath.Join(dir, "run.safetensors")
	run := func(extra ...string) error {
		return runTrain(ctx, append([]string{"--data", data, "--out", out, "--checkpoint-every", "0", "--threads", "1"}, extra...))
	}
	if err := run("--preset", "tiny", "--batch", "2", "--steps", "1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		says []string
	}{
		{[]string{"--batch", "4"}, []string{"--batch 4 (the run has 2)"}},
		{[]string{"--lr", "0.5"}, []string{"--lr 0.5 (the run has 0.0001)"}},
		{[]string{"--no-flip"}, []string{"--no-flip true (the run has false)"}},
		{[]string{"--seed", "9"}, []string{"--seed 9 (the run has 1)"}},
		{[]string{"--preset", "fm32", "--baseline"}, []string{"--preset fm32 (the run has tiny)", "--baseline true (the run has false)"}},
	} {
		err := run(append(tc.args, "--steps", "2")...)
		if !errors.Is(err, errUsage) {
			t.Errorf("resume with %q: %v, want a usage error", tc.args, err)
			continue
		}
		for _, s := range append(tc.says, out) {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("resume with %q: error %q does not say %q", tc.args, err, s)
			}
		}
	}
	m, err := diffae.Load(tensor.NewCPU(1), out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Meta[diffae.MetaTrainState], `"step":1,`) {
		t.Errorf("a refused resume trained: state %s", m.Meta[diffae.MetaTrainState])
	}
	// The same settings, spelled otherwise, resume.
	if err := run("--preset", "tiny", "--baseline=false", "--batch", "2", "--lr", "1e-4", "--seed", "1", "--no-flip=false", "--steps", "2"); err != nil {
		t.Errorf("resume with the stored settings given: %v", err)
	}
	// A baseline run is of its preset too.
	out = filepath.Join(dir, "ddim.safetensors")
	if err := run("--preset", "tiny", "--baseline", "--no-flip", "--batch", "2", "--steps", "1"); err != nil {
		t.Fatal(err)
	}
	if err := run("--preset", "tiny", "--baseline", "--no-flip", "--steps", "2"); err != nil {
		t.Errorf("resume of a baseline run with its settings given: %v", err)
	}
	err = run("--baseline=false", "--steps", "3")
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--baseline false (the run has true)") {
		t.Errorf("resume of a baseline run with --baseline=false: %v, want a usage error saying so", err)
	}
}

// TestHoldsShape: readCodes's check that a tensor's values fill its shape holds for shapes whose element count
// overflows, where multiplying out would wrap to the number of values.
func TestHoldsShape(t *testing.T) {
	for _, tc := range []struct {
		n     int
		shape []int
		want  bool
	}{
		{6, []int{2, 3}, true},
		{5, []int{2, 3}, false},
		{7, []int{2, 3}, false},
		{0, []int{0, 1 << 62}, true},
		{0, []int{1 << 59, 32}, false},        // 2⁶⁴ elements wrap to 0
		{0, []int{1 << 59, 3, 16, 16}, false}, // 3·2⁶⁷ too
		{768, []int{1, 3, 16, 16}, true},
		{1, nil, true},
	} {
		if got := holdsShape(make([]float32, tc.n), tc.shape); got != tc.want {
			t.Errorf("holdsShape(%d values, %v) = %v, want %v", tc.n, tc.shape, got, tc.want)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestOutputNames(t *testing.T) {
	for _, tc := range []struct {
		inputs []string
		n      int
		want   []string
	}{
		{[]string{"a/x.jpg", "b/y.png"}, 2, []string{"x.png", "y.png"}},
		{[]string{"a/x.jpg", "b/x.png", "z"}, 3, []string{"0-x.png", "1-x.png", "2-z.png"}},
		{nil, 11, []string{"00.png", "01.png", "02.png", "03.png", "04.png", "05.png", "06.png", "07.png", "08.png", "09.png", "10.png"}},
		{nil, 1, []string{"0.png"}},
	} {
		if got := outputNames(tc.inputs, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("outputNames(%q, %d) = %q, want %q", tc.inputs, tc.n, got, tc.want)
		}
	}
}

func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tty   bool
		delay bool // keep the real start delay
		want  []string
	}{
		{"quick work prints nothing", false, true, nil},
		{"log lines off a terminal", false, false, []string{"work: 1/4 (25%)", "work: 4/4 in"}},
		{"bar on a terminal", true, false, []string{"work", "4/4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			p := newProgressTo(&b, tc.tty, "work")
			if !tc.delay {
				p.delay, p.every = 0, 0
			}
			for i := 1; i <= 4; i++ {
				p.update(i, 4)
			}
			p.finish()
			if tc.want == nil && b.Len() > 0 {
				t.Errorf("printed %q", b.String())
			}
			for _, s := range tc.want {
				if !strings.Contains(b.String(), s) {
					t.Errorf("output %q lacks %q", b.String(), s)
				}
			}
		})
	}
}

// TestBaselineTiny: the DDIM baseline has no semantic encoder, so its codes are x_T alone (from inverting the
// unconditional model) and --semantic-only is refused.
func TestBaselineTiny(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg, err := diffae.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "ddim.safetensors")
	if err := diffae.New(tensor.NewCPU(1), cfg.Baseline(), 1).Save(model, "F32", nil); err != nil {
		t.Fatal(err)
	}
	imgs := testImages(t, dir, 2, 16, 16)
	codesPath := filepath.Join(dir, "c.safetensors")
	err = runEncode(ctx, append([]string{"--model", model, "--semantic-only", "--out", codesPath}, imgs...))
	if !errors.Is(err, errUsage) {
		t.Errorf("--semantic-only with the baseline: %v, want a usage error", err)
	}
	if err := runEncode(ctx, append([]string{"--model", model, "--steps", "2", "--out", codesPath}, imgs...)); err != nil {
		t.Fatal(err)
	}
	c, err := readCodes(codesPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Z != nil || len(c.XT) != 2*3*16*16 {
		t.Errorf("baseline codes: %d z_sem values, %d x_T values; want none and %d", len(c.Z), len(c.XT), 2*3*16*16)
	}
	if err := runDecode(ctx, []string{"--model", model, "--codes", codesPath, "--out", filepath.Join(dir, "out")}); err != nil {
		t.Fatal(err)
	}
}
