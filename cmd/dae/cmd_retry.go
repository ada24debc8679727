package main

import (
	"context"
	"flag"
	"fmt"

	"dae/producer"
	"dae/schema"
)

func init() {
	register(command{"retry", "re-enqueue a batch's failed (--failed) or dead (--dead) jobs", runRetry})
}

func runRetry(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("retry", flag.ContinueOnError)
	failed := fs.Bool("failed", false, "re-enqueue failed jobs (bad input, unknown model, …)")
	dead := fs.Bool("dead", false, "re-enqueue dead jobs as well (transient errors until the last delivery)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae retry BATCH --failed [--dead]\n\nMoves the batch's failed (and dead) jobs back to queued and publishes them again.")
		fs.PrintDefaults()
	}
	var batch string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		batch, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if batch == "" && fs.NArg() == 1 {
		batch = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := schema.CheckName(batch); err != nil {
		return fmt.Errorf("%w: BATCH: %v", errUsage, err)
	}
	if !*failed && !*dead {
		return fmt.Errorf("%w: say which jobs to retry: --failed and/or --dead", errUsage)
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	nc, js, err := openJetStream("dae retry")
	if err != nil {
		return err
	}
	defer nc.Close()
	if !*failed {
		return fmt.Errorf("%w: --dead alone is not supported; use --failed --dead", errUsage)
	}
	retried, skipped, err := producer.RetryFailed(ctx, st, js, batch, *dead)
	fmt.Printf("batch %s: %d jobs re-enqueued, %d skipped (messages that never parsed cannot be retried)\n", batch, retried, skipped)
	return err
}
