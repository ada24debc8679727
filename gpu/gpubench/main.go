//go:build cuda

// Command gpubench measures the CUDA device: images per second of a training step (fmnist32, ffhq128) and of a
// 100-step DDIM encode, with random weights and data (speed does not depend on them). gpu/devicecheck.sh builds it
// on a machine without a GPU and runs it on one with.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"dae/dataset"
	"dae/diffae"
	"dae/gpu"
)

func main() {
	presets := flag.String("presets", "fmnist32,ffhq128", "comma-separated model presets")
	steps := flag.Int("steps", 10, "timed training steps per preset (after 2 warm-up steps)")
	batch := flag.Int("batch", 0, "images per step (0: 64 for 32×32, 16 for 128×128)")
	encode := flag.Int("encode-images", 0, "images encoded with 100 DDIM steps (0: one batch)")
	flag.Parse()
	if err := run(context.Background(), *presets, *steps, *batch, *encode); err != nil {
		fmt.Fprintln(os.Stderr, "gpubench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, presets string, steps, batch, encode int) error {
	d, err := gpu.Open(0, gpu.Options{})
	if err != nil {
		return err
	}
	fmt.Println("device:", d.Name())
	for _, name := range splitComma(presets) {
		cfg, err := diffae.Preset(name)
		if err != nil {
			return err
		}
		b := batch
		if b == 0 {
			b = 64
			if cfg.ImageSize >= 128 {
				b = 16
			}
		}
		m := diffae.New(d, cfg, 1)
		rng := rand.New(rand.NewPCG(1, 2))
		per := m.ImageSize()
		data := make([]float32, b*per)
		for i := range data {
			data[i] = float32(rng.Float64()*2 - 1)
		}
		imgs := &dataset.Images{N: b, C: cfg.InChannels, H: cfg.ImageSize, W: cfg.ImageSize, Data: data}
		tr := diffae.NewImageTrainer(m, imgs, b, diffae.TrainOptions{Batch: b, Flip: true, Seed: 1})
		for range 2 {
			if _, err := tr.Step(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		d.Sync()
		start := time.Now()
		var loss float64
		for range steps {
			if loss, err = tr.Step(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		d.Sync()
		el := time.Since(start)
		fmt.Printf("%s train: batch %d, %d steps in %v: %.2f images/s (loss %.4f)\n", name, b, steps, el.Round(time.Millisecond),
			float64(steps*b)/el.Seconds(), loss)

		n := encode
		if n == 0 {
			n = b
		}
		x0 := make([]float32, n*per)
		for i := range x0 {
			x0[i] = data[i%len(data)]
		}
		start = time.Now()
		if _, _, err := m.Encode(ctx, x0, n, diffae.EncodeOptions{Steps: 100, Batch: b}); err != nil {
			return fmt.Errorf("%s encode: %w", name, err)
		}
		el = time.Since(start)
		fmt.Printf("%s encode (100 DDIM steps): %d images in %v: %.2f images/s\n", name, n, el.Round(time.Millisecond),
			float64(n)/el.Seconds())
		live, cached := d.MemStats()
		slog.Info("device memory", "preset", name, "live_MiB", live>>20, "cached_MiB", cached>>20)
	}
	return nil
}

func splitComma(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}
