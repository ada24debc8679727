package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func init() {
	register(command{"plot-loss", "draw a training loss log (CSV) to a PNG", runPlotLoss})
}

func runPlotLoss(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("plot-loss", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae plot-loss LOG.csv OUT.png\n\nDraws the loss log that `dae train` and `dae train-latent` write (step,loss,images_per_s):\nthe raw loss faint, its moving average bold, on a log scale when the loss spans more than a decade.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return fmt.Errorf("%w: want LOG.csv and OUT.png", errUsage)
	}
	if err := plotLoss(fs.Arg(0), fs.Arg(1), ""); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", fs.Arg(1))
	return nil
}

// lossLog is a loss log read back: one row per step.
type lossLog struct {
	step, loss []float64
}

// readLossLog parses a CSV of step,loss[,images_per_s] with a header. A run resumed after a crash may repeat steps
// that were logged but not checkpointed; the later row wins, since it belongs to the run that continued.
func readLossLog(path string) (*lossLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	head, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(head) < 2 || head[0] != "step" || head[1] != "loss" {
		return nil, fmt.Errorf("%s: header %q is not step,loss,…", path, head)
	}
	var l lossLog
	index := map[float64]int{}
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A line being written while we read is cut short; stop there.
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				break
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(rec) < 2 {
			break
		}
		s, err1 := strconv.ParseFloat(rec[0], 64)
		v, err2 := strconv.ParseFloat(rec[1], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s line %d: %q is not step,loss", path, line, rec)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		if i, ok := index[s]; ok {
			l.loss[i] = v
			continue
		}
		index[s] = len(l.step)
		l.step = append(l.step, s)
		l.loss = append(l.loss, v)
	}
	if len(l.step) == 0 {
		return nil, fmt.Errorf("%s: no loss values yet", path)
	}
	return &l, nil
}

// movingAverage is the centred mean over window values (narrower at the ends), so that it does not lag the raw
// curve.
func movingAverage(v []float64, window int) []float64 {
	prefix := make([]float64, len(v)+1)
	for i, x := range v {
		prefix[i+1] = prefix[i] + x
	}
	out := make([]float64, len(v))
	for i := range v {
		lo, hi := max(0, i-window/2), min(len(v), i+window-window/2)
		out[i] = (prefix[hi] - prefix[lo]) / float64(hi-lo)
	}
	return out
}

// logTicks labels 1, 2 and 5 times each power of ten, so that a log axis spanning less than two decades still
// has readable values.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for m := 1; m < 10; m++ {
			v := float64(m) * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', 3, 64)
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// plotLoss draws the log at csvPath to pngPath (written atomically, so a viewer never sees half a file).
func plotLoss(csvPath, pngPath, title string) error {
	l, err := readLossLog(csvPath)
	if err != nil {
		return err
	}
	n := len(l.step)
	window := max(10, n/50)
	avg := movingAverage(l.loss, window)

	lo, hi := math.Inf(1), 0.0
	for _, v := range l.loss {
		if v > 0 {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	logY := lo > 0 && hi/lo > 10

	p := plot.New()
	if title == "" {
		title = filepath.Base(csvPath)
	}
	p.Title.Text = fmt.Sprintf("%s — %d steps, last avg %.4g", title, int(l.step[n-1]), avg[n-1])
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
		p.Y.Label.Text = "loss (log scale)"
	}
	p.Add(plotter.NewGrid())

	// At most ~4000 raw points: more are invisible at this size and slow to draw.
	stride := max(1, n/4000)
	raw, smooth := make(plotter.XYs, 0, n/stride+1), make(plotter.XYs, 0, n/stride+1)
	for i := 0; i < n; i += stride {
		if logY && l.loss[i] <= 0 {
			continue
		}
		raw = append(raw, plotter.XY{X: l.step[i], Y: l.loss[i]})
		smooth = append(smooth, plotter.XY{X: l.step[i], Y: avg[i]})
	}
	rl, err := plotter.NewLine(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", csvPath, err)
	}
	rl.Color = color.NRGBA{R: 70, G: 130, B: 180, A: 110}
	rl.Width = vg.Points(0.5)
	sl, err := plotter.NewLine(smooth)
	if err != nil {
		return fmt.Errorf("%s: %w", csvPath, err)
	}
	sl.Color = color.NRGBA{R: 200, G: 40, B: 30, A: 255}
	sl.Width = vg.Points(1.5)
	p.Add(rl, sl)
	p.Legend.Add("loss per step", rl)
	p.Legend.Add(fmt.Sprintf("moving average (%d steps)", window), sl)
	p.Legend.Top = true

	wt, err := p.WriterTo(8*vg.Inch, 4.5*vg.Inch, "png")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(pngPath), ".loss-*.png")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := wt.WriteTo(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", pngPath, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), pngPath)
}
