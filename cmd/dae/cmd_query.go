package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"dae/schema"
)

func init() {
	register(command{"query", "ready queries: latents (by attribute score), neighbours (in z_sem), failures", runQuery})
}

const queryUsage = `usage:
  dae query latents --attribute A [--min-score 0.9] [--model M] [--limit 100]
  dae query neighbours --image HASH [--k 20] [--model M]
  dae query failures [--batch B] [--limit 100]`

func runQuery(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, queryUsage)
		return fmt.Errorf("%w: which query?", errUsage)
	}
	fs := flag.NewFlagSet("query "+args[0], flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), queryUsage); fs.PrintDefaults() }
	model := fs.String("model", "", "model id (default: any / the image's latest)")
	limit := fs.Int("limit", 100, "most rows to print")
	var run func(context.Context) error
	switch args[0] {
	case "latents":
		attr := fs.String("attribute", "", "attribute name (required)")
		minScore := fs.Float64("min-score", 0.9, "lowest score to list, 0..1")
		run = func(ctx context.Context) error {
			if err := schema.CheckName(*attr); err != nil {
				return fmt.Errorf("%w: --attribute: %v", errUsage, err)
			}
			return queryLatents(ctx, *model, *attr, float32(*minScore), *limit)
		}
	case "neighbours", "neighbors":
		image := fs.String("image", "", "content hash of the image (required)")
		k := fs.Int("k", 20, "how many neighbours")
		run = func(ctx context.Context) error {
			if err := schema.CheckHash(*image); err != nil {
				return fmt.Errorf("%w: --image: %v", errUsage, err)
			}
			if *k < 1 || *k > 10000 {
				return fmt.Errorf("%w: --k %d outside 1..10000", errUsage, *k)
			}
			return queryNeighbours(ctx, *model, *image, *k)
		}
	case "failures":
		batch := fs.String("batch", "", "batch id (default: all batches)")
		run = func(ctx context.Context) error { return queryFailures(ctx, *batch, *limit) }
	default:
		fmt.Fprintln(os.Stderr, queryUsage)
		return fmt.Errorf("%w: unknown query %q", errUsage, args[0])
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *limit < 1 {
		return fmt.Errorf("%w: --limit must be positive", errUsage)
	}
	return run(ctx)
}

func queryLatents(ctx context.Context, model, attr string, minScore float32, limit int) error {
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	hits, err := st.LatentsByAttribute(ctx, model, attr, minScore, limit)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "LATENT\tMODEL\tIMAGE\tSCORE\tCLASSIFIER")
	for _, h := range hits {
		fmt.Fprintf(w, "%d\t%s\t%s\t%.4f\tv%d\n", h.LatentID, h.ModelID, h.ImageHash, h.Score, h.Version)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d latents with %s >= %g\n", len(hits), attr, minScore)
	return nil
}

func queryNeighbours(ctx context.Context, model, image string, k int) error {
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	model, ns, err := st.Neighbours(ctx, model, image, k)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "RANK\tLATENT\tIMAGE\tCOSINE")
	for i, n := range ns {
		fmt.Fprintf(w, "%d\t%d\t%s\t%.4f\n", i+1, n.LatentID, n.ImageHash, n.Similarity)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d neighbours of %s under model %s\n", len(ns), image, model)
	return nil
}

func queryFailures(ctx context.Context, batch string, limit int) error {
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	fails, err := st.Failures(ctx, batch, limit)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "JOB\tKIND\tSTATE\tATTEMPTS\tWHEN\tKEY\tREASON")
	for _, f := range fails {
		reason := strings.Join(strings.Fields(f.Error), " ") // one line per job
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", f.JobID, f.Kind, f.State, f.Attempts,
			f.UpdatedAt.Local().Format("2006-01-02 15:04:05"), f.DedupKey, reason)
	}
	return w.Flush()
}
