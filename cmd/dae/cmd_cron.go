package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"dae/cron"
	"dae/schema"
	"dae/store"
)

func init() {
	register(command{"cron", "scheduled work: retrain classifiers, score latents, regenerate saved selections (run, run-now, define, list, runs, classifiers)", runCron})
}

const cronUsage = `usage:
  dae cron [--config cron.json] [--id NAME]     run the configured jobs on their schedules until interrupted
  dae cron run-now JOB [--config cron.json]     run one configured job at once and print its summary
  dae cron define NAME --model M --attribute A [--min-score 0.9] [--max-score 1] [--batch B] [--limit 100]
                  --op decode|manipulate [--op-attribute A2 --scale S] [--steps 20] [--disabled]
                                                save a regeneration definition (what a regenerate job enqueues)
  dae cron list                                 regeneration definitions and their last run
  dae cron runs [--job J] [--limit 20]          recent runs of the scheduled jobs
  dae cron classifiers --model M --attribute A  the classifier's version history
  dae cron config                               print the default configuration (a starting cron.json)

Several 'dae cron' processes may run the same configuration: each job runs once per tick (a Postgres advisory lock
and a row per job and tick in cron_runs).`

func runCron(ctx context.Context, args []string) error {
	sub := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "":
		return cronServe(ctx, args)
	case "run-now":
		return cronRunNow(ctx, args)
	case "define":
		return cronDefine(ctx, args)
	case "list":
		return cronList(ctx, args)
	case "runs":
		return cronRuns(ctx, args)
	case "classifiers":
		return cronClassifiers(ctx, args)
	case "config":
		if err := noArgs(args); err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(cron.DefaultConfig())
	case "help", "-h", "--help":
		fmt.Fprintln(os.Stderr, cronUsage)
		return flag.ErrHelp
	}
	fmt.Fprintln(os.Stderr, cronUsage)
	return fmt.Errorf("%w: unknown cron command %q", errUsage, sub)
}

func cronFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("cron "+name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), cronUsage); fs.PrintDefaults() }
	return fs
}

func loadCronConfig(path string) (cron.Config, error) {
	if path == "" {
		return cron.DefaultConfig(), nil
	}
	return cron.LoadConfig(path)
}

// cronRunner opens the store and, when one of the jobs that will run regenerates, JetStream, and returns a Runner
// and a function that closes them.
func cronRunner(ctx context.Context, conf cron.Config, id string, jobs []cron.Job) (*cron.Runner, func(), error) {
	st, err := openStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	closeAll := st.Close
	var pub cron.Publisher
	for _, j := range jobs {
		if j.Kind != cron.KindRegenerate {
			continue
		}
		nc, js, err := openJetStream("dae cron")
		if err != nil {
			st.Close()
			return nil, nil, fmt.Errorf("job %s regenerates and needs NATS: %w", j.Name, err)
		}
		pub = cron.NewJetStreamPublisher(st, js)
		closeAll = func() { nc.Close(); st.Close() }
		break
	}
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	r, err := cron.NewRunner(st, pub, conf, cron.Options{ID: id})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return r, closeAll, nil
}

func cronServe(ctx context.Context, args []string) error {
	fs := cronFlags("")
	config := fs.String("config", "", "configuration file (JSON; default: dae cron config)")
	id := fs.String("id", "", "this replica's name in cron_runs (default host/pid)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	conf, err := loadCronConfig(*config)
	if err != nil {
		return err
	}
	r, closeAll, err := cronRunner(ctx, conf, *id, conf.Jobs)
	if err != nil {
		return err
	}
	defer closeAll()
	s, err := cron.NewScheduler(r)
	if err != nil {
		return err
	}
	s.Start()
	for name, t := range s.NextRuns() {
		slog.Info("cron job scheduled", "job", name, "next", t)
	}
	<-ctx.Done()
	slog.Info("cron stopping")
	return s.Shutdown()
}

func cronRunNow(ctx context.Context, args []string) error {
	fs := cronFlags("run-now")
	config := fs.String("config", "", "configuration file (JSON; default: dae cron config)")
	// Flags may follow the job name.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if name == "" {
		return fmt.Errorf("%w: which job? (a name from the configuration: train, score, regenerate by default)", errUsage)
	}
	conf, err := loadCronConfig(*config)
	if err != nil {
		return err
	}
	job, ok := conf.Find(name)
	if !ok {
		return fmt.Errorf("%w: no job named %q in the configuration", errUsage, name)
	}
	r, closeAll, err := cronRunner(ctx, conf, "", []cron.Job{job})
	if err != nil {
		return err
	}
	defer closeAll()
	summary, err := r.RunNow(ctx, name)
	if summary != nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if eerr := enc.Encode(summary); eerr != nil {
			return errors.Join(err, eerr)
		}
	}
	return err
}

func cronDefine(ctx context.Context, args []string) error {
	fs := cronFlags("define")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	model := fs.String("model", "", "model id (required)")
	attr := fs.String("attribute", "", "select latents by this attribute's promoted score (required)")
	minScore := fs.Float64("min-score", 0.9, "lowest score selected")
	maxScore := fs.Float64("max-score", 1, "highest score selected")
	batch := fs.String("batch", "", "only images encoded in this batch")
	limit := fs.Int("limit", 100, "most latents per tick (best scores first)")
	op := fs.String("op", "decode", "decode or manipulate")
	opAttr := fs.String("op-attribute", "", "manipulate along this attribute's classifier")
	scale := fs.Float64("scale", 0, "manipulation scale (non-zero, |scale| ≤ 100)")
	target := fs.String("target", "", "instead of --scale: move to a logit the classifier recorded, median|p75|p90|p95")
	rounds := fs.Int("rounds", 1, "with --target: encode each decoded edit again and move it to the target again, this many rounds in all")
	steps := fs.Int("steps", 20, "DDIM steps")
	disabled := fs.Bool("disabled", false, "save it disabled (regenerate jobs without a definition skip it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	def := store.Regeneration{ID: name, ModelID: *model, Attribute: *attr, MinScore: float32(*minScore),
		MaxScore: float32(*maxScore), BatchID: *batch, MaxImages: *limit, Op: schema.Kind(*op), OpAttribute: *opAttr,
		Scale: *scale, Target: *target, Rounds: *rounds, Steps: *steps, Enabled: !*disabled}
	if err := def.Validate(); err != nil {
		return fmt.Errorf("%w: definition %q: %v", errUsage, name, err)
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.SaveRegeneration(ctx, def); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "saved regeneration %s: %s of up to %d latents of model %s with %s score in [%g, %g]\n",
		def.ID, def.Op, def.MaxImages, def.ModelID, def.Attribute, def.MinScore, def.MaxScore)
	return nil
}

func cronList(ctx context.Context, args []string) error {
	fs := cronFlags("list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	defs, err := st.Regenerations(ctx, false)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tMODEL\tSELECT\tOP\tSTEPS\tENABLED\tLAST TICK\tGENERATION\tENQUEUED")
	for _, d := range defs {
		sel := fmt.Sprintf("%s in [%g,%g] limit %d", d.Attribute, d.MinScore, d.MaxScore, d.MaxImages)
		if d.BatchID != "" {
			sel += " batch " + d.BatchID
		}
		op := string(d.Op)
		if d.Op == schema.KindManipulate {
			op = fmt.Sprintf("manipulate %s %+g", d.OpAttribute, d.Scale)
			if d.Target != "" {
				op = fmt.Sprintf("manipulate %s to %s", d.OpAttribute, d.Target)
				if d.Rounds > 1 {
					op += fmt.Sprintf(" in %d rounds", d.Rounds)
				}
			}
		}
		last, gen, enq := "-", "-", "-"
		if runs, err := st.RegenerationRuns(ctx, d.ID, 1); err != nil {
			return err
		} else if len(runs) > 0 {
			last, gen, enq = runs[0].Tick.Local().Format("2006-01-02 15:04:05"), fmt.Sprint(runs[0].ID), fmt.Sprint(runs[0].Enqueued)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%v\t%s\t%s\t%s\n", d.ID, d.ModelID, sel, op, d.Steps, d.Enabled, last, gen, enq)
	}
	return w.Flush()
}

func cronRuns(ctx context.Context, args []string) error {
	fs := cronFlags("runs")
	job := fs.String("job", "", "only this job")
	limit := fs.Int("limit", 20, "most runs to print")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := firstError(noArgs(fs.Args()), atLeast("limit", *limit, 1)); err != nil {
		return err
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	runs, err := st.CronRuns(ctx, *job, *limit)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "JOB\tTICK\tRUNNER\tATTEMPTS\tTOOK\tERROR\tSUMMARY")
	for _, r := range runs {
		took := "running"
		if r.FinishedAt != nil {
			took = r.FinishedAt.Sub(r.StartedAt).Round(1e6).String()
		}
		summary := string(r.Summary)
		if len(summary) > 200 {
			summary = summary[:200] + "…"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Job, r.Tick.Local().Format("2006-01-02 15:04:05"), r.Runner,
			r.Attempts, took, strings.Join(strings.Fields(r.Error), " "), summary)
	}
	return w.Flush()
}

func cronClassifiers(ctx context.Context, args []string) error {
	fs := cronFlags("classifiers")
	model := fs.String("model", "", "model id (required)")
	attr := fs.String("attribute", "", "attribute (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if err := schema.CheckName(*model); err != nil {
		return fmt.Errorf("%w: --model: %v", errUsage, err)
	}
	if err := schema.CheckName(*attr); err != nil {
		return fmt.Errorf("%w: --attribute: %v", errUsage, err)
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	hist, err := st.ClassifierHistory(ctx, *model, *attr)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "VERSION\tSTATE\tTRAINED\tMETRICS")
	for _, c := range hist {
		state := "-"
		switch {
		case c.Promoted:
			state = "promoted"
		case c.Pending:
			state = "pending" // chosen, waiting for a scoring pass to score every latent with it
		}
		fmt.Fprintf(w, "v%d\t%s\t%s\t%s\n", c.Version, state, c.TrainedAt.Local().Format("2006-01-02 15:04:05"), c.Metrics)
	}
	return w.Flush()
}
