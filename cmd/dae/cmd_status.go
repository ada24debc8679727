package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"dae/store"
)

func init() {
	register(command{"status", "job counts by state and rate, for one batch or all", runStatus})
}

func runStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae status [BATCH]\n\nCounts jobs by state (of one batch, or of all jobs) and the rate over the last minute.")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return fmt.Errorf("%w: at most one batch", errUsage)
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	s, err := st.Status(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	if s.Batch == "" {
		fmt.Fprintln(w, "batch:\t(all jobs)")
	} else {
		fmt.Fprintf(w, "batch:\t%s\n", s.Batch)
		fmt.Fprintf(w, "created:\t%s\n", stamp(s.CreatedAt))
		fmt.Fprintf(w, "finished:\t%s\n", stamp(s.BatchFinish))
	}
	for _, state := range []string{store.StateQueued, store.StateRunning, store.StateDone, store.StateFailed, store.StateDead} {
		pct := 0.0
		if s.Total > 0 {
			pct = 100 * float64(s.Counts[state]) / float64(s.Total)
		}
		fmt.Fprintf(w, "%s:\t%d\t%5.1f%%\n", state, s.Counts[state], pct)
	}
	fmt.Fprintf(w, "total:\t%d\n", s.Total)
	fmt.Fprintf(w, "rate:\t%.2f jobs/s\t(last minute)\n", s.Rate())
	fmt.Fprintf(w, "last finished:\t%s\n", stamp(s.LastFinish))
	return w.Flush()
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
