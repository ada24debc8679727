package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress display policy: a command that finishes quickly prints nothing, so nothing appears before
// progressDelay. After that, a terminal gets a live bar; anything else (a log file, a CI job) gets one plain line
// every progressLogEvery, because a redrawn bar would fill a log with carriage returns.
const (
	progressDelay    = 2 * time.Second
	progressLogEvery = 10 * time.Second
)

// progress reports the advance of one long operation on stderr. Its update method has the signature of
// diffae.Progress, so it plugs straight into Encode, Decode and the samplers. A progress is used by one goroutine.
type progress struct {
	w     io.Writer
	desc  string
	tty   bool
	delay time.Duration
	every time.Duration

	start   time.Time
	bar     *progressbar.ProgressBar
	lastLog time.Time
	done    int
	total   int
}

// newProgress starts timing an operation described by desc, reporting to stderr.
func newProgress(desc string) *progress {
	return newProgressTo(os.Stderr, term.IsTerminal(int(os.Stderr.Fd())), desc)
}

// newProgressTo reports to w, drawing a bar when tty is true; tests use it with a buffer.
func newProgressTo(w io.Writer, tty bool, desc string) *progress {
	return &progress{w: w, desc: desc, tty: tty, delay: progressDelay, every: progressLogEvery, start: time.Now()}
}

// update records that done of total units are finished.
func (p *progress) update(done, total int) {
	p.done, p.total = done, total
	now := time.Now()
	if now.Sub(p.start) < p.delay {
		return
	}
	if !p.tty {
		if done >= total || now.Sub(p.lastLog) < p.every {
			return // finish reports the end
		}
		p.lastLog = now
		fmt.Fprintf(p.w, "%s: %d/%d (%.0f%%) after %s\n", p.desc, done, total, 100*float64(done)/float64(max(total, 1)),
			now.Sub(p.start).Round(time.Second))
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.desc),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	if p.bar.GetMax() != total {
		p.bar.ChangeMax(total)
	}
	_ = p.bar.Set(done) // writing to a terminal: a failed redraw is not worth failing the work for
}

// finish ends the display; work that took long enough to show progress leaves a one-line summary.
func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
	if el := time.Since(p.start); el >= p.delay {
		fmt.Fprintf(p.w, "%s: %d/%d in %s\n", p.desc, p.done, p.total, el.Round(100*time.Millisecond))
	}
}
