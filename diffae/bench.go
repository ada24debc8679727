package diffae

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"dae/dataset"
	"dae/tensor"
)

// ReferenceFLOPs are the FLOPs per image of the reference models (convolutions, linears and attention products,
// counted on the authors' code), the numerator of the effective GFLOP/s that the benchmarks report. A training step
// counts 3× (decoder + encoder).
var ReferenceFLOPs = map[string]struct{ Decoder, Encoder float64 }{
	"fm32":     {0.946e9, 0.158e9},
	"celeba64": {26.7e9, 3.07e9},
}

// BenchParts are what a speed benchmark can time: the decoder's forward pass, the encoder's, and a full training
// step (encoder and decoder forward and backward, Adam, EMA).
var BenchParts = []string{"decoder", "encoder", "train"}

// BenchBatch is the batch the speed benchmarks use for a preset (the issue's: 16 for fm32, 8 for celeba64).
func BenchBatch(preset string) int {
	if preset == "celeba64" {
		return 8
	}
	return 16
}

// NewBenchRunner builds the preset's network (random weights, no latent DDIM) on d with random inputs and returns
// a function that runs part once and the number of images it processes, and the FLOPs per image by the reference
// count (0 for presets without one).
func NewBenchRunner(d tensor.Device, preset, part string) (run func() error, images int, flopsPerImage float64, err error) {
	if !slices.Contains(BenchParts, part) {
		return nil, 0, 0, fmt.Errorf("benchmark part %q: want one of %v", part, BenchParts)
	}
	cfg, err := Preset(preset)
	if err != nil {
		return nil, 0, 0, err
	}
	cfg.LatentNet = nil
	m := New(d, cfg, 1)
	n := BenchBatch(preset)
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(shape ...int) *tensor.Tensor {
		t := d.New(shape...)
		v := make([]float32, t.Len())
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		d.Upload(t, v)
		return t
	}
	x := rnd(n, cfg.InChannels, cfg.ImageSize, cfg.ImageSize)
	z := rnd(n, cfg.ZDim())
	ts := make([]float32, n)
	f := ReferenceFLOPs[preset]
	switch part {
	case "decoder":
		return func() error { m.UNet.Forward(x, ts, z); d.Sync(); return nil }, n, f.Decoder, nil
	case "encoder":
		if m.Enc == nil {
			return nil, 0, 0, fmt.Errorf("preset %q has no encoder", preset)
		}
		return func() error { m.Enc.Forward(x); d.Sync(); return nil }, n, f.Encoder, nil
	}
	data := &dataset.Images{N: n, C: cfg.InChannels, H: cfg.ImageSize, W: cfg.ImageSize, Data: make([]float32, x.Len())}
	d.Download(data.Data, x)
	tr := NewImageTrainer(m, data, n, TrainOptions{Batch: n, Flip: true})
	return func() error { _, err := tr.Step(); return err }, n, 3 * (f.Decoder + f.Encoder), nil
}
