package diffae

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"dae/nn"
	"dae/tensor"
)

// fixedImages serves n random images as a training set.
type fixedImages struct {
	data []float32
	per  int
}

func newFixedImages(rng *rand.Rand, n, per int) fixedImages {
	d := make([]float32, n*per)
	for i := range d {
		d[i] = rng.Float32()*2 - 1
	}
	return fixedImages{d, per}
}

func (s fixedImages) Batch(idx []int, dst []float32, flip *rand.Rand) []float32 {
	for j, i := range idx {
		copy(dst[j*s.per:(j+1)*s.per], s.data[i*s.per:(i+1)*s.per])
		if flip != nil && flip.IntN(2) == 1 {
			slices.Reverse(dst[j*s.per : (j+1)*s.per]) // not a mirror, but a seeded change of the batch
		}
	}
	return dst
}

// trainerState is everything a resumed run must reproduce: raw weights, EMA weights and Adam moments.
func trainerState(tr *Trainer) map[string][]float32 {
	out := map[string][]float32{}
	for i, p := range tr.ps.List {
		out["w."+p.Name] = p.W.Host()
		out["ema."+p.Name] = tr.EMA.Shadow.List[i].W.Host()
		m, v := tr.Opt.Moments(p)
		out["m."+p.Name] = m.Host()
		out["v."+p.Name] = v.Host()
	}
	return out
}

// firstDifference names the first entry where a and b differ bit for bit, or returns "".
func firstDifference(a, b map[string][]float32) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		x, y := a[k], b[k]
		if len(x) != len(y) {
			return k + " (length)"
		}
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				return k
			}
		}
	}
	if len(a) != len(b) {
		return "(parameter count)"
	}
	return ""
}

func tinyConfig(t testing.TB, baseline bool) *Config {
	cfg, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dropout = 0.1 // so that the dropout masks must be replayed too
	if baseline {
		cfg = cfg.Baseline()
	}
	return cfg
}

// TestResumeIsExact stops a seeded run after 3 of 6 steps, writes a checkpoint, loads it into a fresh model and
// trainer, resumes and finishes; the result must equal, bit for bit, the uninterrupted run. As a control, a
// continuation that skips Resume (fresh optimiser and EMA from the loaded EMA weights) must differ, so the
// comparison can fail.
func TestResumeIsExact(t *testing.T) {
	const total, stop, seed = 6, 3, 7
	opts := TrainOptions{Batch: 3, LR: 1e-3, Flip: true, Seed: seed}
	type kind struct {
		name string
		// start builds a trainer on a fresh model (m nil) or on m loaded from a checkpoint.
		start func(t *testing.T, m *Model) *Trainer
	}
	rng := rand.New(rand.NewPCG(1, 2))
	imageKind := func(baseline bool) func(t *testing.T, m *Model) *Trainer {
		cfg := tinyConfig(t, baseline)
		cfg.LatentNet = nil
		data := newFixedImages(rng, 5, cfg.InChannels*cfg.ImageSize*cfg.ImageSize) // 5 images, batch 3: epochs cross steps
		return func(t *testing.T, m *Model) *Trainer {
			if m == nil {
				m = New(cpu, cfg, seed)
			}
			return NewImageTrainer(m, data, 5, opts)
		}
	}
	zcfg := tinyConfig(t, false)
	z := make([]float32, 7*zcfg.ZDim())
	for i := range z {
		z[i] = float32(rng.NormFloat64())*0.5 + 0.1
	}
	latentKind := func(t *testing.T, m *Model) *Trainer {
		if m == nil {
			m = New(cpu, zcfg, seed)
			mean, std := LatentMeanStd(z, zcfg.ZDim())
			m.Stats = &LatentStats{Mean: mean, Std: std}
		}
		tr, err := NewLatentTrainer(m, z, 7, TrainOptions{Batch: 4, LR: 1e-3, WeightDecay: 0.01, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	kinds := []kind{
		{"autoencoder", imageKind(false)},
		{"baseline", imageKind(true)},
		{"latent", latentKind},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			steps := func(tr *Trainer, n int) {
				for range n {
					if _, err := tr.Step(); err != nil {
						t.Fatal(err)
					}
				}
			}
			whole := k.start(t, nil)
			steps(whole, stop)
			atStop := trainerState(whole)
			steps(whole, total-stop)
			want := trainerState(whole)
			if firstDifference(atStop, want) == "" {
				t.Fatal("training did not change the weights")
			}

			first := k.start(t, nil)
			steps(first, stop)
			if d := firstDifference(atStop, trainerState(first)); d != "" {
				t.Fatalf("two runs with the same seed differ after %d steps at %s", stop, d)
			}
			path := filepath.Join(t.TempDir(), "run.safetensors")
			if err := first.Checkpoint(path); err != nil {
				t.Fatal(err)
			}

			m, err := Load(cpu, path)
			if err != nil {
				t.Fatal(err)
			}
			resumed := k.start(t, m)
			if err := resumed.Resume(path); err != nil {
				t.Fatal(err)
			}
			if resumed.State.Step != stop {
				t.Fatalf("resumed at step %d, want %d", resumed.State.Step, stop)
			}
			steps(resumed, total-stop)
			if d := firstDifference(want, trainerState(resumed)); d != "" {
				t.Errorf("resumed run differs from the uninterrupted one at %s", d)
			}

			m2, err := Load(cpu, path)
			if err != nil {
				t.Fatal(err)
			}
			naive := k.start(t, m2) // no Resume: starts at step 0 from the EMA weights
			steps(naive, total-stop)
			if firstDifference(want, trainerState(naive)) == "" {
				t.Error("a continuation without Resume matches too: the comparison cannot tell")
			}
		})
	}
}

// TestResumeRejectsOtherKind refuses to resume latent training from an autoencoder checkpoint.
func TestResumeRejectsOtherKind(t *testing.T) {
	cfg := tinyConfig(t, false)
	m := New(cpu, cfg, 1)
	data := newFixedImages(rand.New(rand.NewPCG(3, 4)), 2, m.ImageSize())
	tr := NewImageTrainer(m, data, 2, TrainOptions{Batch: 2, Seed: 1})
	if _, err := tr.Step(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ae.safetensors")
	if err := tr.Checkpoint(path); err != nil {
		t.Fatal(err)
	}
	z := make([]float32, 2*cfg.ZDim())
	m.Stats = &LatentStats{Mean: make([]float32, cfg.ZDim()), Std: slices.Repeat([]float32{1}, cfg.ZDim())}
	lt, err := NewLatentTrainer(m, z, 2, TrainOptions{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := lt.Resume(path); err == nil {
		t.Error("latent trainer resumed from an autoencoder checkpoint")
	}
}

// checkpointOneStep trains a tiny autoencoder one step with o and writes its training checkpoint.
func checkpointOneStep(t *testing.T, o TrainOptions) (string, fixedImages) {
	t.Helper()
	m := New(cpu, tinyConfig(t, false), 1)
	data := newFixedImages(rand.New(rand.NewPCG(3, 4)), 2, m.ImageSize())
	tr := NewImageTrainer(m, data, 2, o)
	if _, err := tr.Step(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ae.safetensors")
	if err := tr.Checkpoint(path); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// TestResumeRejectsBadShape: a training tensor of the wrong shape is an error naming the file and the tensor (not
// a panic), and the trainer is left as it was.
func TestResumeRejectsBadShape(t *testing.T) {
	path, data := checkpointOneStep(t, TrainOptions{Batch: 2, Seed: 1})
	m, err := Load(cpu, path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := nn.ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := TrainPrefix + "adam_v." + m.UNet.Params.List[0].Name
	var ts []nn.STTensor
	for _, n := range f.Order {
		v, s := get(t, f, n)
		if n == bad {
			v, s = v[:1], []int{1}
		}
		ts = append(ts, nn.STTensor{Name: n, Shape: s, Data: v})
	}
	if err := nn.WriteSafetensors(path, ts, "F32", f.Meta); err != nil {
		t.Fatal(err)
	}
	tr := NewImageTrainer(m, data, 2, TrainOptions{Batch: 2, Seed: 1})
	before := trainerState(tr)
	err = tr.Resume(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"`+bad+`"`) {
		t.Fatalf("resuming with %s of shape [1]: %v, want an error naming the file and the tensor", bad, err)
	}
	if d := firstDifference(before, trainerState(tr)); d != "" || tr.State.Step != 0 {
		t.Errorf("a failed Resume changed the trainer (%s, step %d)", d, tr.State.Step)
	}
}

// TestResumeUsesStoredFlip: the stored options win wholly, so a run with flips resumes with flips even when the
// trainer was built without.
func TestResumeUsesStoredFlip(t *testing.T) {
	path, data := checkpointOneStep(t, TrainOptions{Batch: 2, Flip: true, Seed: 1})
	m, err := Load(cpu, path)
	if err != nil {
		t.Fatal(err)
	}
	tr := NewImageTrainer(m, data, 2, TrainOptions{Batch: 2, Seed: 1})
	if err := tr.Resume(path); err != nil {
		t.Fatal(err)
	}
	if !tr.Opts.Flip || !tr.obj.(*imageObjective).flip {
		t.Errorf("resumed a run with flips: options flip %v, objective flip %v; want both true", tr.Opts.Flip,
			tr.obj.(*imageObjective).flip)
	}
}

// TestTrainingOverfits trains each objective on one tiny fixed batch and checks that the loss on fixed noise and
// timesteps falls well below where it started: a broken gradient, optimiser or data path would not.
func TestTrainingOverfits(t *testing.T) {
	cfg := tinyConfig(t, false)
	cfg.Dropout = 0
	cfg.LatentNet = nil
	rng := rand.New(rand.NewPCG(5, 6))
	// Smooth images (a gradient per image) are easier to denoise than white noise, so progress shows quickly.
	per := cfg.InChannels * cfg.ImageSize * cfg.ImageSize
	smooth := fixedImages{make([]float32, 4*per), per}
	for i := range 4 {
		a, b := rng.Float32()*2-1, rng.Float32()*2-1
		for j := range per {
			smooth.data[i*per+j] = a + (b-a)*float32(j)/float32(per)
		}
	}
	zcfg := tinyConfig(t, false)
	z := make([]float32, 8*zcfg.ZDim())
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	tests := []struct {
		name  string
		build func() *Trainer
		steps int
		// ratio is the largest acceptable final/initial loss on the fixed evaluation draw.
		ratio float64
	}{
		{"autoencoder", func() *Trainer {
			return NewImageTrainer(New(cpu, cfg, 1), smooth, 4, TrainOptions{Batch: 4, LR: 1e-3, Seed: 1})
		}, 20, 0.5},
		{"baseline", func() *Trainer {
			return NewImageTrainer(New(cpu, cfg.Baseline(), 1), smooth, 4, TrainOptions{Batch: 4, LR: 1e-3, Seed: 1})
		}, 20, 0.5},
		{"latent", func() *Trainer {
			m := New(cpu, zcfg, 1)
			mean, std := LatentMeanStd(z, zcfg.ZDim())
			m.Stats = &LatentStats{Mean: mean, Std: std}
			tr, err := NewLatentTrainer(m, z, 8, TrainOptions{Batch: 8, LR: 1e-3, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			return tr
		}, 200, 0.8}, // the latent MLP is cheap; L1 on ε falls more slowly
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := tt.build()
			idx := make([]int, tr.Opts.Batch)
			for i := range idx {
				idx[i] = i
			}
			// The loss at fixed timesteps and noise (the same draw every time), so that it measures the
			// network rather than the luck of the step's draw.
			evalLoss := func() float64 {
				var s float64
				for r := range 4 {
					tr.ps.ZeroGrad()
					s += tr.obj.step(idx, rand.New(rand.NewPCG(99, uint64(r))))
				}
				tr.ps.ZeroGrad()
				return s / 4
			}
			before := evalLoss()
			for range tt.steps {
				if _, err := tr.Step(); err != nil {
					t.Fatal(err)
				}
			}
			after := evalLoss()
			t.Logf("loss %.4f → %.4f after %d steps", before, after, tt.steps)
			if !(after < tt.ratio*before) {
				t.Errorf("loss %.4f → %.4f after %d steps: want below %.2f of the start", before, after, tt.steps,
					tt.ratio)
			}
		})
	}
}

// BenchmarkTrainFMNIST32 measures training throughput of the shipped fmnist32 Diff-AE (and its DDIM baseline) at
// the training batch, and how much of a step is spent outside GEMM.
func BenchmarkTrainFMNIST32(b *testing.B) {
	for _, kind := range []string{"diffae", "baseline"} {
		for _, path := range []string{"direct", "im2col"} {
			b.Run(kind+"/"+path, func(b *testing.B) {
				cfg, err := Preset("fmnist32")
				if err != nil {
					b.Fatal(err)
				}
				if kind == "baseline" {
					cfg = cfg.Baseline()
				}
				cfg.LatentNet = nil
				dev := tensor.NewCPU(0)
				dev.SetIm2colConv(path == "im2col")
				m := New(dev, cfg, 1)
				const batch, n = 16, 64
				data := newFixedImages(rand.New(rand.NewPCG(1, 2)), n, m.ImageSize())
				tr := NewImageTrainer(m, data, n, TrainOptions{Batch: batch, Flip: true, Seed: 1})
				if _, err := tr.Step(); err != nil { // allocates the layers' buffers
					b.Fatal(err)
				}
				b.ResetTimer()
				start, g0, c0 := time.Now(), dev.GemmTime(), dev.DirectConvTime()
				for range b.N {
					if _, err := tr.Step(); err != nil {
						b.Fatal(err)
					}
				}
				el := time.Since(start)
				per := el / time.Duration(b.N)
				// The device counts thread-time in OpenBLAS and in the direct convolution kernel; divided by the
				// threads it is the wall time of a step's matrix products.
				threads := time.Duration(b.N * dev.Threads())
				gemm := (dev.GemmTime() - g0) / threads
				conv := (dev.DirectConvTime() - c0) / threads
				b.ReportMetric(float64(batch*b.N)/el.Seconds(), "img/s")
				b.ReportMetric(float64(per.Microseconds())/1e3, "ms/step")
				b.ReportMetric(float64(gemm.Microseconds())/1e3, "gemm-ms/step")
				b.ReportMetric(float64(conv.Microseconds())/1e3, "conv3x3-ms/step")
				b.ReportMetric(float64((per-gemm-conv).Microseconds())/1e3, "other-ms/step")
			})
		}
	}
}
