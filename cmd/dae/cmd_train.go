package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"dae/diffae"
)

func init() {
	register(command{"train", "train the autoencoder (or, with --baseline, the DDIM baseline) on images", runTrain})
}

func runTrain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	preset := fs.String("preset", "fmnist32", "model configuration preset for a new run: "+fmt.Sprint(diffae.PresetNames()))
	data := fs.String("data", "", "Fashion-MNIST IDX folder, or a folder of images (default: the Debian Fashion-MNIST)")
	baseline := fs.Bool("baseline", false, "train the DDIM baseline (no semantic encoder) instead of Diff-AE")
	out := fs.String("out", "", "checkpoint to write (and to resume from if it exists)")
	steps := fs.Int("steps", 10000, "train until this many steps in all")
	minutes := fs.Float64("minutes", 0, "stop after this many minutes (0: no limit), checkpointing first")
	batch := fs.Int("batch", 16, "images per step")
	lr := fs.Float64("lr", 1e-4, "Adam learning rate")
	every := fs.Int("checkpoint-every", 200, "write the checkpoint every N steps")
	seed := fs.Uint64("seed", 1, "seed of initialisation, data order, noise and dropout")
	noFlip := fs.Bool("no-flip", false, "disable random horizontal flips")
	logPath := fs.String("log", "", "loss log (CSV: step,loss,images_per_s); default OUT.loss.csv")
	threads := fs.Int("threads", 0, "CPU threads (0: all)")
	device := fs.String("device", "cpu", deviceFlagHelp)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae train --out MODEL.safetensors [--preset fmnist32] [--data DIR] [--baseline] [--steps N]\n\nTrains with Adam, gradient clipping and EMA; writes a checkpoint every N steps and on Ctrl-C,\nand resumes exactly from --out when it exists.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if err := checkTrainFlags(*steps, *every, *minutes, *batch, *lr); err != nil {
		return err
	}
	dev, err := openDevice(*device, *threads)
	if err != nil {
		return err
	}
	var m *diffae.Model
	resume := false
	if _, err := os.Stat(*out); err == nil {
		if m, err = diffae.Load(dev, *out); err != nil {
			return err
		}
		if err := checkResumeFlags(fs, *out, m); err != nil {
			return err
		}
		resume = true
	} else {
		cfg, err := diffae.Preset(*preset)
		if err != nil {
			return fmt.Errorf("%w: --preset: %v", errUsage, err)
		}
		if *baseline {
			cfg = cfg.Baseline()
		}
		m = diffae.New(dev, cfg, *seed)
	}
	imgs, err := loadImages(*data, "train", m.Cfg.ImageSize, m.Cfg.InChannels)
	if err != nil {
		return err
	}
	tr := diffae.NewImageTrainer(m, imgs, imgs.N, diffae.TrainOptions{Batch: *batch, LR: *lr, Flip: !*noFlip, Seed: *seed})
	if resume {
		if err := tr.Resume(*out); err != nil {
			return err
		}
		// The options of the run being resumed win, so that the continuation is the same run (checkResumeFlags
		// refused flags that say otherwise).
		fmt.Fprintf(os.Stderr, "resuming %s at step %d\n", *out, tr.State.Step)
	}
	if *logPath == "" {
		*logPath = *out + ".loss.csv"
	}
	return trainLoop(ctx, tr, *out, *logPath, *steps, *every, *minutes, m.Describe()+" on "+dev.Name())
}

// checkResumeFlags refuses the flags of a new run that were set on the command line and differ from the run stored
// in out, which a resume continues unchanged: ignoring them silently would train something else than asked.
func checkResumeFlags(fs *flag.FlagSet, out string, m *diffae.Model) error {
	st, err := storedTrainState(m, out)
	if err != nil {
		return err
	}
	o := st.Options
	return refuseChangedFlags(fs, out, map[string]storedFlag{
		// celeba64 and ffhq64 are the same network
		"preset":   {value: presetOf(m.Cfg), same: func(v flag.Value) bool { return isPreset(m.Cfg, v.String()) }},
		"baseline": {value: strconv.FormatBool(!m.Cfg.IsAutoencoder())},
		"batch":    {value: strconv.Itoa(o.Batch)},
		"lr":       storedFloat(o.LR),
		"no-flip":  {value: strconv.FormatBool(!o.Flip)},
		"seed":     {value: strconv.FormatUint(o.Seed, 10)},
	})
}

// storedTrainState reads the training state of the run stored in out (loaded as m).
func storedTrainState(m *diffae.Model, out string) (diffae.TrainState, error) {
	var st diffae.TrainState
	if err := json.Unmarshal([]byte(m.Meta[diffae.MetaTrainState]), &st); err != nil {
		return st, fmt.Errorf("%s: no training state to resume from: %v", out, err)
	}
	return st, nil
}

// storedFlag is the value a run being resumed holds for a flag of a new run.
type storedFlag struct {
	value string                // as the run has it
	same  func(flag.Value) bool // whether a given value is the stored one; nil: when it prints as value
}

// storedFloat is a stored float flag, the same value however it is spelt (1e-4, 0.0001).
func storedFloat(v float64) storedFlag {
	return storedFlag{fmt.Sprint(v), func(f flag.Value) bool { return f.(flag.Getter).Get().(float64) == v }}
}

// refuseChangedFlags refuses the flags of stored that were set on the command line and differ from the run stored
// in out, naming each with the run's value: a resume continues the run unchanged, so they would be ignored.
func refuseChangedFlags(fs *flag.FlagSet, out string, stored map[string]storedFlag) error {
	var differ []string
	fs.Visit(func(f *flag.Flag) {
		s, ok := stored[f.Name]
		if !ok {
			return
		}
		same := f.Value.String() == s.value
		if s.same != nil {
			same = s.same(f.Value)
		}
		if !same {
			differ = append(differ, fmt.Sprintf("--%s %s (the run has %s)", f.Name, f.Value, s.value))
		}
	})
	if len(differ) > 0 {
		return fmt.Errorf("%w: %s is a run to resume with its own settings: %s; leave these flags out to resume, or "+
			"give another --out for a new run", errUsage, out, strings.Join(differ, ", "))
	}
	return nil
}

// checkTrainFlags checks the flags of the training loop that train and train-latent share.
func checkTrainFlags(steps, every int, minutes float64, batch int, lr float64) error {
	return firstError(atLeast("steps", steps, 0), atLeast("checkpoint-every", every, 0),
		nonNegative("minutes", minutes), atLeast("batch", batch, 1), positive("lr", lr))
}

// isPreset reports whether cfg is the network of the named preset or of its baseline.
func isPreset(cfg *diffae.Config, name string) bool {
	p, err := diffae.Preset(name)
	return err == nil && (p.Clone().JSON() == cfg.JSON() || p.Baseline().Clone().JSON() == cfg.JSON())
}

// presetOf names the preset that cfg is (or is the baseline of), or says that it is none.
func presetOf(cfg *diffae.Config) string {
	var names []string
	for _, name := range diffae.PresetNames() {
		if isPreset(cfg, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "no preset"
	}
	return strings.Join(names, " or ")
}

// trainLoop runs steps until total, writing the checkpoint every `every` steps, at the end and when ctx ends, with
// a live progress line and a CSV loss log.
func trainLoop(ctx context.Context, tr *diffae.Trainer, out, logPath string, total, every int, minutes float64,
	what string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if st, _ := lf.Stat(); st != nil && st.Size() == 0 {
		fmt.Fprintln(lf, "step,loss,images_per_s")
	}
	fmt.Fprintf(os.Stderr, "training %s: steps %d..%d, batch %d\n", what, tr.State.Step, total, tr.Opts.Batch)
	start := time.Now()
	var deadline time.Time
	if minutes > 0 {
		deadline = start.Add(time.Duration(minutes * float64(time.Minute)))
	}
	first := tr.State.Step
	ema := 0.0
	for tr.State.Step < total {
		if ctx.Err() != nil || (!deadline.IsZero() && time.Now().After(deadline)) {
			break
		}
		loss, err := tr.Step()
		if err != nil {
			return err
		}
		if ema == 0 {
			ema = loss
		}
		ema = 0.98*ema + 0.02*loss
		done := tr.State.Step - first
		rate := float64(done*tr.Opts.Batch) / time.Since(start).Seconds()
		fmt.Fprintf(lf, "%d,%.6f,%.2f\n", tr.State.Step, loss, rate)
		eta := time.Duration(float64(total-tr.State.Step) * float64(tr.Opts.Batch) / rate * float64(time.Second))
		limit := ""
		if left := time.Until(deadline); !deadline.IsZero() && left < eta {
			eta, limit = max(left, 0), " (time limit)" // --minutes ends the run before --steps does
		}
		fmt.Fprintf(os.Stderr, "\rstep %d/%d  loss %.4f (avg %.4f)  %.1f img/s  ETA %s%s   ", tr.State.Step, total, loss, ema,
			rate, eta.Round(time.Second), limit)
		if every > 0 && tr.State.Step%every == 0 {
			if err := tr.Checkpoint(out); err != nil {
				return err
			}
			drawLossCurve(logPath, out)
		}
	}
	fmt.Fprintln(os.Stderr)
	if err := tr.Checkpoint(out); err != nil {
		return err
	}
	drawLossCurve(logPath, out)
	fmt.Fprintf(os.Stderr, "wrote %s and %s at step %d\n", out, out+".loss.png", tr.State.Step)
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	return nil
}

// drawLossCurve draws the loss log next to the checkpoint (OUT.loss.png). A failure to draw is reported and
// ignored: it must never stop a training run.
func drawLossCurve(logPath, out string) {
	if err := plotLoss(logPath, out+".loss.png", filepath.Base(out)); err != nil {
		slog.Warn("loss curve not drawn", "log", logPath, "err", err)
	}
}
