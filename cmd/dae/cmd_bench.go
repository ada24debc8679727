package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"dae/diffae"
	"dae/tensor"
)

func init() {
	register(command{"bench", "speed of the decoder, encoder and training step on the CPU: direct 3×3 kernels against im2col + GEMM, interleaved rounds", runBench})
}

// benchRow is one (preset, part, path) measured over several rounds.
type benchRow struct {
	preset, part, path string
	imgs               []float64 // images/s of each round
	gemm, conv         []float64 // shares of the cores' time in GEMM and in the direct kernels, per round
	peak               []float64 // the machine's FMA peak measured right after the round, GFLOP/s
	flops              float64   // per image
}

func (r *benchRow) best() (imgs, gemm, conv, peak float64) {
	i := 0
	for j, v := range r.imgs {
		if v > r.imgs[i] {
			i = j
		}
	}
	return r.imgs[i], r.gemm[i], r.conv[i], r.peak[i]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	presets := fs.String("presets", "fm32", "comma-separated presets (fm32, celeba64, …)")
	parts := fs.String("parts", strings.Join(diffae.BenchParts, ","), "comma-separated parts: decoder, encoder, train")
	paths := fs.String("paths", "direct,im2col", "comma-separated convolution paths: direct (the 3×3 kernels), im2col (im2col + GEMM)")
	rounds := fs.Int("rounds", 3, "rounds; the paths alternate within each round, and the table gives the best and the median")
	seconds := fs.Float64("seconds", 2, "least time per path and round (at least one iteration)")
	threads := fs.Int("threads", 0, "CPU threads (0: all)")
	peakSec := fs.Float64("peak-seconds", 0.5, "time to measure the cores' FMA peak after each round")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := firstError(noArgs(pos), atLeast("threads", *threads, 0)); err != nil {
		return err
	}
	if *rounds < 1 || *seconds <= 0 || *peakSec <= 0 {
		return fmt.Errorf("%w: --rounds %d --seconds %g --peak-seconds %g: want at least one round and positive times",
			errUsage, *rounds, *seconds, *peakSec)
	}
	pathList := strings.Split(*paths, ",")
	for _, p := range pathList {
		if p != "direct" && p != "im2col" {
			return fmt.Errorf("%w: --paths: %q is not direct or im2col", errUsage, p)
		}
	}
	d := tensor.NewCPU(*threads)
	fmt.Fprintf(os.Stderr, "device: %s; %d rounds of at least %gs per path\n", d.Name(), *rounds, *seconds)
	var rows []*benchRow
	var peaks []float64
	for _, preset := range strings.Split(*presets, ",") {
		for _, part := range strings.Split(*parts, ",") {
			run, n, flops, err := diffae.NewBenchRunner(d, preset, part)
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			byPath := map[string]*benchRow{}
			for _, p := range pathList {
				byPath[p] = &benchRow{preset: preset, part: part, path: p, flops: flops}
				rows = append(rows, byPath[p])
			}
			for r := range *rounds {
				for _, p := range pathList {
					if err := ctx.Err(); err != nil {
						return err
					}
					d.SetIm2colConv(p == "im2col")
					if err := run(); err != nil { // warm-up: buffers sized, weights packed
						return err
					}
					g0, c0, t0 := d.GemmTime(), d.DirectConvTime(), time.Now()
					iters := 0
					for iters == 0 || time.Since(t0).Seconds() < *seconds {
						if err := run(); err != nil {
							return err
						}
						iters++
					}
					sec := time.Since(t0).Seconds()
					row := byPath[p]
					row.imgs = append(row.imgs, float64(iters*n)/sec)
					cores := sec * float64(d.Threads())
					row.gemm = append(row.gemm, 100*(d.GemmTime()-g0).Seconds()/cores)
					row.conv = append(row.conv, 100*(d.DirectConvTime()-c0).Seconds()/cores)
					fmt.Fprintf(os.Stderr, "  %s %s %s round %d: %.2f img/s\n", preset, part, p, r+1, row.imgs[len(row.imgs)-1])
				}
				// The machine's own peak at that moment (this host's speed drifts by a third within minutes), so
				// that each figure can be read as a share of what the cores could do then.
				pk := d.PeakGFLOPS(time.Duration(*peakSec * float64(time.Second)))
				for _, p := range pathList {
					byPath[p].peak = append(byPath[p].peak, pk)
				}
				peaks = append(peaks, pk)
				fmt.Fprintf(os.Stderr, "  fp32 FMA peak after round %d: %.1f GFLOP/s\n", r+1, pk)
			}
			d.SetIm2colConv(false)
		}
	}
	fmt.Println("| preset | part | path | img/s (best) | GFLOP/s (best) | img/s (median) | GEMM / direct kernels (best round) | best / best of the first path | FMA peak after the best round | share of it |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	var first *benchRow
	for _, r := range rows {
		if r.path == pathList[0] {
			first = r
		}
		imgs, gemm, conv, peak := r.best()
		gf, share := "–", "–"
		if r.flops > 0 {
			gf = fmt.Sprintf("%.1f", imgs*r.flops/1e9)
			share = fmt.Sprintf("%.0f%%", 100*imgs*r.flops/1e9/peak)
		}
		fb, _, _, _ := first.best()
		fmt.Printf("| %s | %s | %s | %.2f | %s | %.2f | %.0f%% / %.0f%% | %.2f× | %.1f | %s |\n", r.preset, r.part, r.path,
			imgs, gf, median(r.imgs), gemm, conv, imgs/fb, peak, share)
	}
	fmt.Printf("\nfp32 FMA peak (%d threads) measured after each round: %.1f to %.1f GFLOP/s (median %.1f)\n",
		d.Threads(), slices.Min(peaks), slices.Max(peaks), median(peaks))
	return nil
}
