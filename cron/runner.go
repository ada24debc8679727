package cron

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"dae/diffae"
	"dae/schema"
	"dae/store"
)

// Publisher sends a job to the workers: it records the job in SQL and publishes it with its dedup key as the
// message id, so publishing the same job twice leaves one job.
type Publisher interface {
	Publish(ctx context.Context, j schema.Job) error
}

// Runner runs the cron's jobs against a store. Several Runners (in one process or many) may run the same jobs:
// each run takes the job's advisory lock and claims the tick in cron_runs, so a tick runs once.
type Runner struct {
	st     *store.Store
	pub    Publisher
	cfg    Config
	id     string
	log    *slog.Logger
	onTick func(job string, tick time.Time, ran bool)
	// beforeWrite, if set (tests), is called before a scoring pass writes each page; an error fails the pass there.
	beforeWrite func(model string) error

	mu     sync.Mutex
	planes map[int][]float32 // sketch hyperplanes by z_dim
}

// Options are a Runner's optional settings.
type Options struct {
	// ID names the replica in cron_runs.runner (default "pid-<pid>").
	ID string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnTick, if set, is called after every scheduled attempt with whether this Runner ran the tick (false: another
	// replica holds the job or ran the tick already).
	OnTick func(job string, tick time.Time, ran bool)
}

// NewRunner returns a Runner. pub may be nil when no regenerate job will run.
func NewRunner(st *store.Store, pub Publisher, cfg Config, o Options) (*Runner, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cron: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Runner{st: st, pub: pub, cfg: cfg, id: o.ID, log: o.Logger, onTick: o.OnTick, planes: map[int][]float32{}}, nil
}

// Config returns the configuration in force (defaults filled in).
func (r *Runner) Config() Config { return r.cfg }

// RunTick runs job for tick unless another replica is running the job or has run that tick. It reports whether
// this call ran it; a failed run is recorded in cron_runs and returned.
//
// Holding the job's lock, it first takes over the ticks of the job that a replica left unfinished when it died (a
// regeneration tick run again publishes the same jobs, so what the dead replica enqueued is not doubled): each is
// run again, up to maxAttempts runs of it in all, and after that recorded as abandoned.
func (r *Runner) RunTick(ctx context.Context, job Job, tick time.Time) (ran bool, err error) {
	err = r.st.WithLock(ctx, job.Name, func(ctx context.Context) error {
		abandoned, err := r.st.AbandonedCronRuns(ctx, job.Name, tick)
		if err != nil {
			return err
		}
		for _, a := range abandoned {
			if a.Attempts >= maxAttempts {
				r.log.Warn("cron tick abandoned", "job", job.Name, "tick", a.Tick, "attempts", a.Attempts)
				if err := r.st.FinishCronRun(ctx, a.ID, nil, fmt.Sprintf("abandoned: its runner stopped %d times mid-run", a.Attempts)); err != nil {
					return err
				}
				continue
			}
			r.log.Warn("cron tick taken over", "job", job.Name, "tick", a.Tick, "runner", a.Runner)
			if _, err := r.runClaimed(ctx, job, a.Tick); err != nil {
				r.log.Warn("cron tick taken over failed", "job", job.Name, "tick", a.Tick, "err", err)
			}
		}
		ran, err = r.runClaimed(ctx, job, tick)
		return err
	})
	if errors.Is(err, store.ErrLocked) {
		err = nil
	}
	if r.onTick != nil {
		r.onTick(job.Name, tick, ran)
	}
	if err != nil {
		return ran, fmt.Errorf("cron: job %s at %s: %w", job.Name, tick.Format(time.RFC3339), err)
	}
	return ran, nil
}

// maxAttempts is how many runs of a tick whose runners die mid-run RunTick makes before it gives the tick up.
const maxAttempts = 3

// runClaimed claims tick for job in cron_runs and, unless it has been run, runs it and records the outcome. The
// caller holds the job's lock.
func (r *Runner) runClaimed(ctx context.Context, job Job, tick time.Time) (ran bool, err error) {
	id, claimed, err := r.st.ClaimCronRun(ctx, job.Name, tick, r.id)
	if err != nil || !claimed {
		return false, err
	}
	start := time.Now()
	summary, runErr := r.run(ctx, job, tick)
	var msg string
	if runErr != nil {
		msg = runErr.Error()
	}
	b, err := json.Marshal(summary)
	if err != nil {
		b = nil
	}
	// Record the outcome even when ctx was cancelled mid-run.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if ferr := r.st.FinishCronRun(fctx, id, b, msg); ferr != nil {
		return true, errors.Join(runErr, ferr)
	}
	r.log.Info("cron job ran", "job", job.Name, "tick", tick, "took", time.Since(start).Round(time.Millisecond),
		"summary", string(b), "err", runErr)
	return true, runErr
}

// RunNow runs the named job at once, for a tick of the current instant (so it does not take the place of a
// scheduled tick). It fails if another replica is running the job.
func (r *Runner) RunNow(ctx context.Context, name string) (any, error) {
	job, ok := r.cfg.Find(name)
	if !ok {
		return nil, fmt.Errorf("cron: no job named %q in the configuration", name)
	}
	var summary any
	tick := time.Now().UTC()
	err := r.st.WithLock(ctx, job.Name, func(ctx context.Context) error {
		id, claimed, err := r.st.ClaimCronRun(ctx, job.Name, tick, r.id)
		if err != nil {
			return err
		}
		if !claimed {
			return fmt.Errorf("tick %s already run", tick)
		}
		var runErr error
		summary, runErr = r.run(ctx, job, tick)
		var msg string
		if runErr != nil {
			msg = runErr.Error()
		}
		b, _ := json.Marshal(summary)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return errors.Join(runErr, r.st.FinishCronRun(fctx, id, b, msg))
	})
	if err != nil {
		return summary, fmt.Errorf("cron: run %s now: %w", name, err)
	}
	return summary, nil
}

func (r *Runner) run(ctx context.Context, job Job, tick time.Time) (any, error) {
	switch job.Kind {
	case KindTrain:
		return r.Train(ctx, job.Model)
	case KindScore:
		return r.Score(ctx, job.Model)
	case KindRegenerate:
		return r.RegenerateAll(ctx, job.Definition, tick)
	}
	return nil, fmt.Errorf("unknown job kind %q", job.Kind)
}

// TrainResult says what happened to one attribute classifier in a training pass.
type TrainResult struct {
	Model     string  `json:"model"`
	Attribute string  `json:"attribute"`
	Mode      string  `json:"mode,omitempty"` // binary or pu
	Action    string  `json:"action"`         // trained, unchanged, skipped or failed
	Version   int     `json:"version,omitempty"`
	AUROC     float64 `json:"auroc,omitempty"`
	Promoted  bool    `json:"promoted,omitempty"`
	// Pending: chosen to replace the promoted version, but not promoted yet because the scoring pass that would
	// promote it did not finish (see Reason); the next pass that does promotes it.
	Pending bool   `json:"pending,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// TrainSummary is the outcome of a training pass.
type TrainSummary struct {
	Results []TrainResult `json:"results"`
	Scored  *ScoreSummary `json:"scored,omitempty"`
}

// Train retrains, for every model (or only model), each attribute classifier whose labelled latents changed since
// its last version (fingerprint in classifiers.trained_on). Attributes with negative labels train as binary
// classifiers, attributes with positive labels only as positive–unlabelled ones (a sample of the model's other
// latents as unlabelled). A new version is chosen for promotion if there is no promoted version, or if its AUROC on
// the held-out share is not below the promoted version's AUROC on the same share. It is stored pending, and a
// scoring pass over its model then scores every latent with it and promotes it (the old version's scores serve
// queries until then); a pass that fails leaves it pending for the next one.
func (r *Runner) Train(ctx context.Context, model string) (TrainSummary, error) {
	var sum TrainSummary
	sets, err := r.st.LabelSets(ctx, model)
	if err != nil {
		return sum, err
	}
	var pendingModels []string
	var errs []error
	for _, set := range sets {
		res, err := r.trainOne(ctx, set)
		if err != nil {
			res.Action, res.Reason = "failed", err.Error()
			errs = append(errs, err)
		}
		if res.Pending && !slices.Contains(pendingModels, set.ModelID) {
			pendingModels = append(pendingModels, set.ModelID)
		}
		sum.Results = append(sum.Results, res)
	}
	for _, m := range pendingModels {
		sc, err := r.Score(ctx, m)
		if err != nil {
			errs = append(errs, err)
		}
		if sum.Scored == nil {
			sum.Scored = &ScoreSummary{}
		}
		sum.Scored.add(sc)
		// What the pass did to each pending version: promoted, or still pending (the pass failed).
		for i := range sum.Results {
			res := &sum.Results[i]
			if res.Model != m || !res.Pending {
				continue
			}
			hist, herr := r.st.ClassifierHistory(ctx, m, res.Attribute)
			if herr != nil {
				errs = append(errs, herr)
				continue
			}
			for _, h := range hist {
				if h.Version == res.Version && h.Promoted {
					res.Promoted, res.Pending = true, false
				}
			}
			if res.Pending && err != nil {
				res.Reason += "; not promoted yet: its scoring pass failed (" + err.Error() + ")"
			}
		}
	}
	return sum, errors.Join(errs...)
}

func (r *Runner) trainOne(ctx context.Context, set store.LabelSet) (TrainResult, error) {
	res := TrainResult{Model: set.ModelID, Attribute: set.Attribute, Mode: "binary"}
	pu := set.Negatives == 0
	if pu {
		res.Mode = "pu"
	}
	hist, err := r.st.ClassifierHistory(ctx, set.ModelID, set.Attribute)
	if err != nil {
		return res, err
	}
	if len(hist) > 0 && hist[0].TrainedOn == set.Fingerprint {
		// Pending: an earlier pass chose it and did not get to promote it; the scoring pass after this one will.
		res.Action, res.Version, res.Pending = "unchanged", hist[0].Version, hist[0].Pending
		return res, nil
	}
	if pu && len(hist) > 0 && r.fewNewLatents(hist[0].TrainedOn, set.Fingerprint) {
		res.Action, res.Version, res.Pending = "unchanged", hist[0].Version, hist[0].Pending
		res.Reason = fmt.Sprintf("labels unchanged; the model's latents moved by less than %g of their count",
			r.cfg.Train.PURetrainGrowth)
		return res, nil
	}
	if set.Positives < r.cfg.Train.MinPositives {
		res.Action, res.Reason = "skipped", fmt.Sprintf("%d positive labels, need %d", set.Positives, r.cfg.Train.MinPositives)
		return res, nil
	}
	data, err := r.st.LabelledLatents(ctx, set.ModelID, set.Attribute)
	if err != nil {
		return res, err
	}
	if pu {
		unl, err := r.st.SampleLatents(ctx, set.ModelID, r.cfg.Train.MaxUnlabelled, set.Attribute)
		if err != nil {
			return res, err
		}
		if len(unl) == 0 {
			res.Action, res.Reason = "skipped", "only positive labels and no other latents"
			return res, nil
		}
		data = append(data, unl...)
	}
	stats, err := r.st.SampleLatents(ctx, set.ModelID, r.cfg.Train.StatsSample, "")
	if err != nil {
		return res, err
	}
	// A latent whose z_sem is not finite (a corrupt row) would turn the normalisation, and every score, into NaN.
	data, dropped := finiteOnly(data)
	stats, _ = finiteOnly(stats)
	d := set.ZDim
	mean, std := diffae.LatentMeanStd(flatten(stats, d), d)

	// A stable split by latent id: a latent held out now was held out for earlier versions too, so comparing
	// versions on it is fair.
	var train, held []store.LatentZ
	for _, l := range data {
		if heldOut(l.ID, r.cfg.Train.HoldOut) {
			held = append(held, l)
		} else {
			train = append(train, l)
		}
	}
	t := r.cfg.Train
	// A few labels make short epochs: train for at least MinSteps steps at the paper's learning rate.
	perEpoch := max(1, (len(train)+t.Batch-1)/t.Batch)
	if pu {
		perEpoch = max(1, 2*(len(train)-set.Positives)/t.Batch) // positives are oversampled to the unlabelled count
	}
	epochs := max(t.Epochs, (t.MinSteps+perEpoch-1)/perEpoch)
	c, err := diffae.TrainClassifier(set.Attribute, flatten(train, d), d, labelsOf(train),
		diffae.ClassifierOptions{Epochs: epochs, LR: t.LR, Batch: t.Batch, L2: t.L2, PU: pu, Seed: t.Seed, Ctx: ctx}, mean, std)
	if err == nil {
		// A version the scoring pass could not use (a non-finite weight, say) would stay pending for ever.
		err = c.Validate()
	}
	if err != nil {
		return res, fmt.Errorf("train %s/%s: %w", set.ModelID, set.Attribute, err)
	}
	c.ModelID = set.ModelID
	metrics := map[string]any{"mode": res.Mode, "positives": set.Positives, "negatives": set.Negatives,
		"n_train": len(train), "n_holdout": len(held), "epochs": epochs, "l2": c.Metrics["l2"]}
	if dropped > 0 {
		metrics["skipped_not_finite"] = dropped
	}
	// The logit targets (median and quantiles of the positives' logits), for manipulate jobs that name one.
	for _, name := range diffae.TargetNames() {
		key, _ := diffae.TargetMetric(name) // every name TargetNames gives has one
		if v, ok := c.Metrics[key]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			metrics[key] = v
		}
	}
	auroc, acc := math.NaN(), math.NaN()
	if len(held) > 0 {
		auroc, acc = c.Evaluate(flatten(held, d), labelsOf(held))
	}
	promote := true
	var current *store.ClassifierVersion
	for i := range hist {
		if hist[i].Promoted {
			current = &hist[i]
		}
	}
	switch {
	case current == nil:
		res.Reason = "first version"
	case math.IsNaN(auroc):
		promote, res.Reason = false, "held-out share lacks a class: AUROC undefined"
	case current.Mean == nil || len(current.Weights) != d:
		res.Reason = "promoted version cannot be evaluated"
	default:
		old := &diffae.Classifier{Attribute: set.Attribute, W: current.Weights, B: current.Bias, Mean: current.Mean, Std: current.Std}
		oldAUROC, _ := old.Evaluate(flatten(held, d), labelsOf(held))
		metrics["auroc_promoted"] = finiteOrNil(oldAUROC)
		if auroc < oldAUROC {
			promote = false
			res.Reason = fmt.Sprintf("held-out AUROC %.4f below promoted v%d's %.4f", auroc, current.Version, oldAUROC)
		} else {
			res.Reason = fmt.Sprintf("held-out AUROC %.4f not below promoted v%d's %.4f", auroc, current.Version, oldAUROC)
		}
	}
	metrics["auroc"], metrics["accuracy"] = finiteOrNil(auroc), finiteOrNil(acc)
	mb, err := json.Marshal(metrics)
	if err != nil {
		return res, fmt.Errorf("train %s/%s: metrics: %w", set.ModelID, set.Attribute, err)
	}
	stored, err := r.st.AddClassifierVersion(ctx, store.ClassifierVersion{
		Classifier: store.Classifier{ModelID: set.ModelID, Attribute: set.Attribute, Weights: c.W, Bias: c.B,
			Metrics: mb},
		Mean: c.Mean, Std: c.Std, Pattern: c.Pattern, TrainedOn: set.Fingerprint, Pending: promote,
	})
	if err != nil {
		return res, err
	}
	res.Action, res.Version, res.Pending = "trained", stored.Version, promote
	if !math.IsNaN(auroc) {
		res.AUROC = auroc
	}
	return res, nil
}

// fewNewLatents reports whether a positive–unlabelled classifier trained on fingerprint old need not be retrained
// for fingerprint cur: the same labels, and a latent count within Train.PURetrainGrowth of the old one (the
// fingerprints end in "/n<count>/max<id>", store.LabelSets).
func (r *Runner) fewNewLatents(old, cur string) bool {
	g := r.cfg.Train.PURetrainGrowth
	oi, ci := strings.LastIndex(old, "/n"), strings.LastIndex(cur, "/n")
	if g < 0 || oi < 0 || ci < 0 || old[:oi] != cur[:ci] {
		return false
	}
	var on, cn, omax, cmax int64
	if _, err := fmt.Sscanf(old[oi:], "/n%d/max%d", &on, &omax); err != nil {
		return false
	}
	if _, err := fmt.Sscanf(cur[ci:], "/n%d/max%d", &cn, &cmax); err != nil {
		return false
	}
	return math.Abs(float64(cn-on)) <= g*float64(on)
}

// finite reports whether every value of z is finite.
func finite(z []float32) bool {
	for _, v := range z {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}

// finiteOnly drops the latents whose z_sem is not finite, saying how many it dropped.
func finiteOnly(ls []store.LatentZ) ([]store.LatentZ, int) {
	out := ls[:0:0]
	for _, l := range ls {
		if finite(l.ZSem) {
			out = append(out, l)
		}
	}
	return out, len(ls) - len(out)
}

// heldOut assigns a latent to the held-out share by a hash of its id (splitmix64), the same way every time.
func heldOut(id int64, share float64) bool {
	x := uint64(id) + 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11)/(1<<53) < share
}

func finiteOrNil(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

func flatten(ls []store.LatentZ, d int) []float32 {
	z := make([]float32, 0, len(ls)*d)
	for _, l := range ls {
		z = append(z, l.ZSem...)
	}
	return z
}

func labelsOf(ls []store.LatentZ) []bool {
	out := make([]bool, len(ls))
	for i, l := range ls {
		out[i] = l.Label
	}
	return out
}

// ScoreSummary is the outcome of a scoring pass.
type ScoreSummary struct {
	Models   int   `json:"models"`
	Latents  int   `json:"latents"`  // latents given a score or a sketch they lacked
	Scores   int   `json:"scores"`   // scores written
	Sketches int   `json:"sketches"` // sketches written
	Pruned   int64 `json:"pruned"`   // scores of superseded classifier versions deleted
	Promoted int   `json:"promoted"` // pending classifier versions promoted at the end of the pass
	Skipped  int   `json:"skipped"`  // latents left unscored because their z_sem is not finite
	Busy     int   `json:"busy"`     // models left alone because another pass (another job or replica) was scoring them
}

func (s *ScoreSummary) add(o ScoreSummary) {
	s.Models += o.Models
	s.Latents += o.Latents
	s.Scores += o.Scores
	s.Sketches += o.Sketches
	s.Pruned += o.Pruned
	s.Promoted += o.Promoted
	s.Skipped += o.Skipped
	s.Busy += o.Busy
}

// Score brings attribute_scores and latent_sketches up to date for every model (or only model): every latent gets
// a score from each promoted and each pending classifier of its model, and a sketch. It pages through the latents
// that lack one, in id order, writing each page in one transaction (COPY into staging tables, then upsert), so an
// interrupted pass resumes where it stopped and a repeated one writes nothing. A pass that gets through every page
// then promotes the pending versions it scored (store.PromotePending) and prunes the scores of superseded ones.
// One pass at a time scores a model (a lock per model, across jobs and replicas): a model another pass holds is
// counted Busy and left to it.
func (r *Runner) Score(ctx context.Context, model string) (ScoreSummary, error) {
	var sum ScoreSummary
	models := []string{model}
	if model == "" {
		var err error
		if models, err = r.st.ModelsWithLatents(ctx); err != nil {
			return sum, err
		}
	}
	var errs []error
	for _, m := range models {
		var s ScoreSummary
		err := r.st.WithLock(ctx, "score/"+m, func(ctx context.Context) error {
			var err error
			s, err = r.scoreModel(ctx, m)
			return err
		})
		if errors.Is(err, store.ErrLocked) {
			s, err = ScoreSummary{Busy: 1}, nil
		}
		sum.add(s)
		if err != nil {
			// One model's failure does not keep the others unscored.
			errs = append(errs, fmt.Errorf("model %s: %w", m, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return sum, errors.Join(errs...)
}

func (r *Runner) scoreModel(ctx context.Context, model string) (ScoreSummary, error) {
	sum := ScoreSummary{Models: 1}
	stored, err := r.st.ClassifiersToScore(ctx, model)
	if err != nil {
		return sum, err
	}
	var cs []*diffae.Classifier
	var ids, pending []int64
	for _, c := range stored {
		dc := &diffae.Classifier{Attribute: c.Attribute, ModelID: c.ModelID, W: c.Weights, B: c.Bias, Mean: c.Mean, Std: c.Std}
		if err := dc.Validate(); err != nil {
			// A classifier stored without its normalisation cannot be scored here.
			r.log.Warn("classifier not scored", "model", model, "attribute", c.Attribute, "version", c.Version, "err", err)
			continue
		}
		cs = append(cs, dc)
		ids = append(ids, c.ID)
		if c.Pending {
			pending = append(pending, c.ID)
		}
	}
	// With versions to promote, a second sweep from the start picks up latents whose insert committed after the
	// first had paged past their id (a worker's transaction that took its id earlier), so that a promoted version
	// has scored every latent there was when the pass ended.
	sweeps := 1
	if len(pending) > 0 {
		sweeps = 2
	}
	var after int64
	for sweep := 1; ; {
		page, err := r.st.UnscoredLatents(ctx, model, ids, after, r.cfg.Score.Page)
		if err != nil {
			return sum, err
		}
		if len(page) == 0 {
			if sweep++; sweep > sweeps || after == 0 {
				break
			}
			after = 0
			continue
		}
		scores := make([]store.Score, 0, len(page)*len(cs))
		sketches := make([]store.Sketch, 0, len(page))
		took := 0
		for _, l := range page {
			if !finite(l.ZSem) {
				// A corrupt latent gets no score and no sketch (queries never return it) and does not hold up the
				// rest of its model; every pass reports it again.
				if sweep == 1 {
					r.log.Warn("latent not scored: z_sem not finite", "model", model, "latent", l.ID, "image", l.ImageHash)
					sum.Skipped++
				}
				continue
			}
			took++
			for i, c := range cs {
				if slices.Contains(l.ScoredBy, ids[i]) {
					continue // scored by an earlier pass: versions never change
				}
				if len(l.ZSem) != c.Dim() {
					return sum, fmt.Errorf("latent %d of model %s: z_sem of %d values, classifier %s wants %d",
						l.ID, model, len(l.ZSem), c.Attribute, c.Dim())
				}
				scores = append(scores, store.Score{LatentID: l.ID, ClassifierID: ids[i], Score: float32(c.Prob(l.ZSem))})
			}
			if !l.Sketched {
				bits, norm := r.sketch(l.ZSem)
				sketches = append(sketches, store.Sketch{LatentID: l.ID, ModelID: model, Bits: bits, Norm: norm})
			}
		}
		if r.beforeWrite != nil {
			if err := r.beforeWrite(model); err != nil {
				return sum, err
			}
		}
		if err := r.st.WriteScoresAndSketches(ctx, scores, sketches); err != nil {
			return sum, err
		}
		sum.Latents += took
		sum.Scores += len(scores)
		sum.Sketches += len(sketches)
		after = page[len(page)-1].ID
	}
	if sum.Promoted, err = r.st.PromotePending(ctx, model, pending); err != nil {
		return sum, err
	}
	n, err := r.st.PruneScores(ctx, model)
	sum.Pruned = n
	return sum, err
}

// sketch returns the sign-random-projection sketch of z (bit i set when z·h_i ≥ 0) and ‖z‖.
func (r *Runner) sketch(z []float32) ([]byte, float32) {
	r.mu.Lock()
	h, ok := r.planes[len(z)]
	if !ok {
		h = Hyperplanes(len(z))
		r.planes[len(z)] = h
	}
	r.mu.Unlock()
	return Sketch(z, h)
}

// RegenerateSummary is the outcome of a regeneration pass.
type RegenerateSummary struct {
	Definitions []RegenerateResult `json:"definitions"`
}

// RegenerateResult is what one definition's tick did.
type RegenerateResult struct {
	Definition string `json:"definition"`
	Generation int64  `json:"generation"`
	Selected   int    `json:"selected"`
	Enqueued   int    `json:"enqueued"`
}

// RegenerateAll runs Regenerate for the named definition, or for every enabled one when id is "".
func (r *Runner) RegenerateAll(ctx context.Context, id string, tick time.Time) (RegenerateSummary, error) {
	var sum RegenerateSummary
	var defs []store.Regeneration
	if id != "" {
		d, err := r.st.GetRegeneration(ctx, id)
		if err != nil {
			return sum, err
		}
		defs = []store.Regeneration{d}
	} else {
		var err error
		if defs, err = r.st.Regenerations(ctx, true); err != nil {
			return sum, err
		}
	}
	var errs []error
	for _, d := range defs {
		res, err := r.Regenerate(ctx, d, tick)
		sum.Definitions = append(sum.Definitions, res)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return sum, errors.Join(errs...)
}

// Regenerate enqueues one regenerate job per latent the definition selects, for tick. The jobs' generation is the
// tick's run id, so their dedup keys (generation + image + operation) are new each tick and the same when a tick is
// run again: the workers produce each tick's outputs once.
func (r *Runner) Regenerate(ctx context.Context, def store.Regeneration, tick time.Time) (res RegenerateResult, err error) {
	res = RegenerateResult{Definition: def.ID}
	if r.pub == nil {
		return res, fmt.Errorf("regeneration %s: no publisher configured", def.ID)
	}
	run, err := r.st.StartRegenerationRun(ctx, def.ID, tick)
	if err != nil {
		return res, err
	}
	res.Generation = run.ID
	// The run is finished whatever happens below, with what it reached (a failed tick is not run again).
	defer func() {
		run.Selected, run.Enqueued = res.Selected, res.Enqueued
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err = errors.Join(err, r.st.FinishRegenerationRun(fctx, run))
	}()
	hits, err := r.st.SelectForRegeneration(ctx, def)
	if err != nil {
		return res, err
	}
	res.Selected = len(hits)
	// The classifier that selected them (a promotion may land between the query and a lookup after it).
	if len(hits) > 0 {
		run.ClassifierID = hits[0].ClassifierID
	} else if c, err := r.st.PromotedClassifier(ctx, def.ModelID, def.Attribute); err == nil {
		run.ClassifierID = c.ID
	} else if !store.IsNotFound(err) {
		return res, err
	}
	for _, h := range hits {
		j := &schema.Regenerate{
			Header:     schema.Header{Model: def.ModelID, Batch: def.BatchID},
			ImageHash:  h.ImageHash,
			Op:         def.Op,
			Attribute:  def.OpAttribute,
			Scale:      def.Scale,
			Target:     def.Target,
			Rounds:     def.Rounds,
			Steps:      def.Steps,
			Generation: run.ID,
			Query:      def.ID,
		}
		if err := r.pub.Publish(ctx, j); err != nil {
			return res, fmt.Errorf("regeneration %s: %w", def.ID, err)
		}
		res.Enqueued++
	}
	return res, nil
}
