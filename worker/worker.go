package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"dae/diffae"
	"dae/imageio"
	"dae/schema"
	"dae/store"
	"dae/tensor"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// HeaderJob carries the dedup key of the job a dead letter stands for.
const HeaderJob = "Dae-Job"

// Config sets up a Worker. Store and JS are required.
type Config struct {
	Store *store.Store
	JS    jetstream.JetStream

	// NewDevice makes the device of one worker goroutine (default: the CPU device on all cores).
	NewDevice func() tensor.Device
	// ModelDir holds checkpoints named <model id>.safetensors, tried before the models bucket.
	ModelDir string
	// Concurrency is the number of goroutines pulling jobs, each with its own models (default 1).
	Concurrency int
	// Batch is the most encode jobs sent to the device at once (default 16).
	Batch int
	// EncodeSteps is the number of DDIM steps of the stochastic encoder (default diffae.DefaultSteps).
	EncodeSteps int
	// Kinds are the job kinds pulled (default all).
	Kinds []schema.Kind
	// Backoff is the delay before the first redelivery of a job that failed transiently; it doubles with each
	// delivery up to MaxBackoff (defaults 5 s and 2 min).
	Backoff, MaxBackoff time.Duration
	// Grace is how long in-flight work may continue after the context ends before it is released (default 30 s).
	Grace time.Duration
	// JobTimeout bounds the work on one fetched set of jobs (an encode micro-batch, or one other job); past it the
	// work is cancelled, progress is no longer signalled to JetStream, and the jobs count a transient failure
	// (default 1 h). It keeps a hung store call or device from holding jobs for ever.
	JobTimeout time.Duration
	// Idle is the pause between polls when no job waits (default 200 ms).
	Idle time.Duration
	// Limits bound the images decoded.
	Limits imageio.Limits
	Logger *slog.Logger
	// Metrics default to a fresh set on a private registry.
	Metrics *Metrics
}

// Worker pulls and runs jobs; see Run.
type Worker struct {
	cfg     Config
	st      *store.Store
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *Metrics
	models  modelSource
	ackWait time.Duration
	// unhealthy is set by a transient failure: runners then stop pulling until the store answers again, so that
	// an outage costs the jobs in flight one delivery each instead of cycling the whole queue to the dead letters.
	unhealthy atomic.Bool
}

// New checks cfg and fills its defaults.
func New(cfg Config) (*Worker, error) {
	if cfg.Store == nil || cfg.JS == nil {
		return nil, errors.New("worker: Config needs Store and JS")
	}
	if cfg.NewDevice == nil {
		cfg.NewDevice = func() tensor.Device { return tensor.NewCPU(0) }
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	if cfg.Batch <= 0 {
		cfg.Batch = 16
	}
	if cfg.EncodeSteps <= 0 {
		cfg.EncodeSteps = diffae.DefaultSteps
	}
	if !schema.StepsValid(cfg.EncodeSteps) {
		return nil, fmt.Errorf("worker: %d encoder steps: no stride of the %d-step process gives exactly that many", cfg.EncodeSteps, schema.MaxSteps)
	}
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = schema.Kinds()
	}
	for _, k := range cfg.Kinds {
		if !k.Valid() {
			return nil, fmt.Errorf("worker: unknown job kind %q", k)
		}
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 5 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Minute
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 200 * time.Millisecond
	}
	if cfg.JobTimeout <= 0 {
		cfg.JobTimeout = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Worker{cfg: cfg, st: cfg.Store, js: cfg.JS, log: cfg.Logger, metrics: cfg.Metrics,
		models: modelSource{dir: cfg.ModelDir, st: cfg.Store}}, nil
}

// Run pulls jobs until ctx ends, then lets in-flight work finish for up to Grace and releases what is left for
// redelivery. It also copies dead letters into SQL and keeps the queue gauges current.
func (w *Worker) Run(ctx context.Context) error {
	consumers := map[schema.Kind]jetstream.Consumer{}
	for _, k := range w.cfg.Kinds {
		c, err := w.js.Consumer(ctx, schema.StreamJobs, schema.Consumer(k))
		if err != nil {
			return fmt.Errorf("worker: consumer %s (run `dae up`): %w", schema.Consumer(k), err)
		}
		consumers[k] = c
		if aw := c.CachedInfo().Config.AckWait; aw > 0 && (w.ackWait == 0 || aw < w.ackWait) {
			w.ackWait = aw
		}
	}
	dead, err := w.js.Consumer(ctx, schema.StreamDead, schema.ConsumerDeadRecorder)
	if err != nil {
		return fmt.Errorf("worker: consumer %s (run `dae up`): %w", schema.ConsumerDeadRecorder, err)
	}

	// Work continues on its own context for Grace after ctx ends, so a batch near its end can still finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(w.cfg.Grace, cancelWork) })
	defer stopGrace()

	var wg sync.WaitGroup
	for i := range w.cfg.Concurrency {
		r := &runner{w: w, id: i, dev: w.cfg.NewDevice(), models: map[string]*diffae.Model{}}
		wg.Go(func() { r.loop(ctx, work, consumers) })
	}
	wg.Go(func() { w.recordDead(ctx, dead) })
	wg.Go(func() { w.watchQueues(ctx, consumers) })
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency, "batch", w.cfg.Batch, "kinds", w.cfg.Kinds,
		"ack_wait", w.ackWait)
	wg.Wait()
	w.log.Info("worker stopped")
	return nil
}

// runner is one worker goroutine with its device and models (a diffae.Model is used by one goroutine at a time).
type runner struct {
	w      *Worker
	id     int
	dev    tensor.Device
	models map[string]*diffae.Model
}

func (r *runner) model(ctx context.Context, id string) (*diffae.Model, error) {
	if m, ok := r.models[id]; ok {
		return m, nil
	}
	m, err := r.w.models.load(ctx, r.dev, id)
	if err != nil {
		return nil, err
	}
	r.w.log.Info("model loaded", "worker", r.id, "model", id, "net", m.Name())
	r.models[id] = m
	return m, nil
}

// loop polls each kind's consumer in turn: a micro-batch of encode jobs, one job of the other kinds.
func (r *runner) loop(ctx, work context.Context, consumers map[schema.Kind]jetstream.Consumer) {
	for ctx.Err() == nil {
		if r.w.unhealthy.Load() {
			r.w.waitHealthy(ctx)
		}
		got := false
		for _, k := range r.w.cfg.Kinds {
			if ctx.Err() != nil {
				return
			}
			n := 1
			if k == schema.KindEncode {
				n = r.w.cfg.Batch
			}
			batch, err := consumers[k].FetchNoWait(n)
			if err != nil {
				r.w.log.Warn("fetch failed", "kind", k, "err", err)
				continue
			}
			var msgs []jetstream.Msg
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				r.w.log.Warn("fetch failed", "kind", k, "err", err)
			}
			if len(msgs) == 0 {
				continue
			}
			got = true
			r.handle(work, k, msgs)
		}
		if !got {
			select {
			case <-ctx.Done():
			case <-time.After(r.w.cfg.Idle):
			}
		}
	}
}

// handle runs one fetched set of messages, signalling progress to JetStream while it works.
func (r *runner) handle(ctx context.Context, k schema.Kind, msgs []jetstream.Msg) {
	ctx, cancel := context.WithTimeoutCause(ctx, r.w.cfg.JobTimeout, errJobTimeout)
	defer cancel()
	stop := r.w.keepAlive(ctx, msgs)
	defer stop()
	if k == schema.KindEncode {
		r.encode(ctx, msgs)
		return
	}
	for _, m := range msgs {
		r.one(ctx, k, m)
	}
}

// errJobTimeout is the cause of a job context that ran past Config.JobTimeout.
var errJobTimeout = errors.New("job ran past the worker's job timeout")

// keepAlive sends in-progress acknowledgements for msgs every third of the ack wait until stop is called or ctx
// ends (past the job timeout, work that does not return — a hung device call — then lets JetStream redeliver).
func (w *Worker) keepAlive(ctx context.Context, msgs []jetstream.Msg) (stop func()) {
	every := w.ackWait / 3
	if every <= 0 {
		every = time.Minute
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress() // an already acknowledged message just refuses
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// task is one delivered message and what is known of it.
type task struct {
	msg  jetstream.Msg
	kind schema.Kind
	job  schema.Job
	key  string
}

// begin parses a message and marks its job running. It returns false when the message is already dealt with: an
// invalid message (failed and terminated), a job already final (acknowledged), or a transient error (released).
func (r *runner) begin(ctx context.Context, k schema.Kind, m jetstream.Msg) (*task, bool) {
	w := r.w
	t := &task{msg: m, kind: k}
	job, err := schema.Parse(m.Data())
	if err == nil && job.JobKind() != k {
		err = fmt.Errorf("schema: job of kind %q on the subject of %q: %w", job.JobKind(), k, schema.ErrInvalid)
	}
	if err != nil {
		w.invalid(ctx, t, err)
		return nil, false
	}
	t.job, t.key = job, job.DedupKey()
	if w.overReceived(ctx, t) {
		return nil, false
	}
	return t, r.start(ctx, t)
}

// start marks a parsed job running, recording it first if it was published without a row. It returns false when
// the job is already dealt with: final already (acknowledged) or failed to start (failed or released).
func (r *runner) start(ctx context.Context, t *task) bool {
	w := r.w
	prev, err := w.st.StartJob(ctx, t.key)
	if store.IsNotFound(err) {
		// Published without a row (by a producer that does not record jobs): record it now.
		if _, _, err = w.st.RecordJob(ctx, t.job); err == nil {
			prev, err = w.st.StartJob(ctx, t.key)
		}
	}
	if err != nil {
		w.fail(ctx, t, err)
		return false
	}
	switch prev {
	case store.StateDone, store.StateFailed, store.StateDead:
		w.ack(t, OutcomeDuplicate)
		return false
	}
	return true
}

// beginAll is begin for a micro-batch: one statement starts every valid job. It returns the tasks to run.
func (r *runner) beginAll(ctx context.Context, k schema.Kind, msgs []jetstream.Msg) []*task {
	w := r.w
	var tasks []*task
	var keys []string
	for _, m := range msgs {
		t := &task{msg: m, kind: k}
		job, err := schema.Parse(m.Data())
		if err == nil && job.JobKind() != k {
			err = fmt.Errorf("schema: job of kind %q on the subject of %q: %w", job.JobKind(), k, schema.ErrInvalid)
		}
		if err != nil {
			w.invalid(ctx, t, err)
			continue
		}
		t.job, t.key = job, job.DedupKey()
		if w.overReceived(ctx, t) {
			continue
		}
		tasks = append(tasks, t)
		keys = append(keys, t.key)
	}
	if len(tasks) == 0 {
		return nil
	}
	prev, err := w.st.StartJobs(ctx, keys)
	if err == nil && len(prev) < len(keys) {
		// Published without rows (by a producer that does not record jobs): record them now.
		var missing []schema.Job
		for _, t := range tasks {
			if _, ok := prev[t.key]; !ok {
				missing = append(missing, t.job)
			}
		}
		if err = w.st.RecordJobs(ctx, missing); err == nil {
			prev, err = w.st.StartJobs(ctx, keys)
		}
	}
	if err != nil && store.IsRefused(err) && len(tasks) > 1 {
		// The database refuses one of the rows (a job naming a batch that does not exist, say): one by one, so
		// that only that job fails.
		run := tasks[:0]
		for _, t := range tasks {
			if r.start(ctx, t) {
				run = append(run, t)
			}
		}
		return run
	}
	if err != nil {
		for _, t := range tasks {
			w.fail(ctx, t, err)
		}
		return nil
	}
	run := tasks[:0]
	for _, t := range tasks {
		switch prev[t.key] {
		case store.StateDone, store.StateFailed, store.StateDead:
			w.ack(t, OutcomeDuplicate)
		default:
			run = append(run, t)
		}
	}
	return run
}

// overReceived records how long the job waited and, when it has been delivered schema.MaxReceipts times without
// being settled (its workers stopped or crashed each time), dead-letters it and reports true.
func (w *Worker) overReceived(ctx context.Context, t *task) bool {
	md, err := t.msg.Metadata()
	if err != nil {
		return false
	}
	w.metrics.Wait.WithLabelValues(string(t.kind)).Observe(time.Since(md.Timestamp).Seconds())
	if md.NumDelivered < schema.MaxReceipts {
		return false
	}
	w.deadLetter(ctx, t, fmt.Errorf("delivered %d times without a worker settling it "+
		"(each worker running it was stopped or crashed)", md.NumDelivered-1))
	return true
}

func (w *Worker) ack(t *task, outcome string) {
	if err := t.msg.Ack(); err != nil {
		w.log.Warn("ack failed", "job", t.key, "err", err)
	}
	w.metrics.Jobs.WithLabelValues(string(t.kind), outcome).Inc()
}

// done records success and acknowledges.
func (w *Worker) done(ctx context.Context, t *task) {
	if err := w.st.FinishJob(ctx, t.key, store.StateDone, ""); err != nil {
		w.fail(ctx, t, err)
		return
	}
	w.ack(t, OutcomeDone)
}

// invalid records a message that is not a valid job as a failed job and terminates it. The producer publishes a
// job under its dedup key, so when the message id names a recorded job (a newer producer's message this worker
// cannot read, say) that job fails with the reason, and `dae retry` can send it again once the workers read it.
func (w *Worker) invalid(ctx context.Context, t *task, perr error) {
	key := t.msg.Headers().Get(jetstream.MsgIDHeader)
	if key != "" {
		t.key = key
		err := w.st.FinishJob(ctx, key, store.StateFailed, perr.Error())
		if err == nil {
			w.log.Warn("job message not readable", "kind", t.kind, "job", key, "reason", perr)
			w.terminate(t, OutcomeFailed)
			return
		}
		if !store.IsNotFound(err) {
			w.retry(ctx, t, err)
			return
		}
	}
	if key == "" {
		if md, err := t.msg.Metadata(); err == nil {
			key = md.Stream + "/" + strconv.FormatUint(md.Sequence.Stream, 10)
		}
	}
	t.key = "invalid/" + key
	var hdr struct {
		Batch string `json:"batch"`
	}
	_ = json.Unmarshal(t.msg.Data(), &hdr) // best effort: to count the failure in its batch
	if schema.CheckName(hdr.Batch) != nil {
		hdr.Batch = ""
	}
	if err := w.st.FailInvalidJob(ctx, t.kind, t.key, t.msg.Data(), hdr.Batch, perr.Error()); err != nil {
		w.retry(ctx, t, err)
		return
	}
	w.log.Warn("invalid job message", "kind", t.kind, "key", t.key, "reason", perr)
	w.terminate(t, OutcomeFailed)
}

// terminate ends a settled job's message (no redelivery) and counts the outcome.
func (w *Worker) terminate(t *task, outcome string) {
	if err := t.msg.Term(); err != nil {
		w.log.Warn("term failed", "job", t.key, "err", err)
	}
	w.metrics.Jobs.WithLabelValues(string(t.kind), outcome).Inc()
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err is one that retrying the same job cannot fix: a bad image, an invalid message,
// an unknown model, an unusable checkpoint, rows the database refuses, or an error the worker marked so (a missing
// latent or classifier).
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p) || imageio.IsInvalid(err) || errors.Is(err, schema.ErrInvalid) ||
		errors.Is(err, ErrUnknownModel) || errors.Is(err, diffae.ErrCheckpoint) || errors.Is(err, diffae.ErrSteps) ||
		store.IsRefused(err)
}

// fail settles a job that went wrong: failed and terminated when the error is permanent, released for a delayed
// redelivery when it is transient.
func (w *Worker) fail(ctx context.Context, t *task, err error) {
	if c, cancel, ok := pastTimeout(ctx); ok {
		defer cancel()
		ctx, err = c, fmt.Errorf("%w (%s): %w", errJobTimeout, w.cfg.JobTimeout, err)
	}
	if ctx.Err() != nil {
		w.release(t)
		return
	}
	if !IsPermanent(err) {
		w.retry(ctx, t, err)
		return
	}
	ferr := w.st.FinishJob(ctx, t.key, store.StateFailed, err.Error())
	if store.IsNotFound(ferr) {
		// A job published past the producer whose row could not be recorded (it names a batch that does not
		// exist, say): record the failure under its key, in its batch if there is one.
		batch := ""
		if t.job != nil {
			batch = t.job.Meta().Batch
		}
		ferr = w.st.FailInvalidJob(ctx, t.kind, t.key, t.msg.Data(), batch, err.Error())
	}
	if ferr != nil {
		// The reason must be stored before the message goes; until then this is a transient failure.
		w.retry(ctx, t, fmt.Errorf("%w (while recording the permanent failure: %v)", ferr, err))
		return
	}
	w.log.Warn("job failed", "kind", t.kind, "job", t.key, "reason", err)
	w.terminate(t, OutcomeFailed)
}

// pastTimeout reports whether ctx ended by the job timeout (rather than by shutdown), and if so returns a short
// context, free of it, for settling the jobs.
func pastTimeout(ctx context.Context) (context.Context, context.CancelFunc, bool) {
	if !errors.Is(context.Cause(ctx), errJobTimeout) {
		return ctx, func() {}, false
	}
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	return c, cancel, true
}

// release gives an unfinished job back at shutdown, to be redelivered at once to another worker.
func (w *Worker) release(t *task) {
	if err := t.msg.Nak(); err != nil {
		w.log.Warn("nak failed", "job", t.key, "err", err)
	}
	w.metrics.Jobs.WithLabelValues(string(t.kind), OutcomeReleased).Inc()
}

// backoff is the delay before redelivery after the n-th delivery failed.
func (w *Worker) backoff(n uint64) time.Duration {
	d := w.cfg.Backoff
	for i := uint64(1); i < n && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, w.cfg.MaxBackoff)
}

// retry releases a transiently failed job with a delay, or on its last delivery moves it to the dead-letter stream.
func (w *Worker) retry(ctx context.Context, t *task, err error) {
	if c, cancel, ok := pastTimeout(ctx); ok {
		// Past the job timeout the job counts a failed delivery; on shutdown it is only released.
		defer cancel()
		ctx = c
	}
	if ctx.Err() != nil {
		w.release(t)
		return
	}
	var n uint64 = 1
	if md, merr := t.msg.Metadata(); merr == nil {
		n = md.NumDelivered
	}
	if n >= schema.MaxDeliver {
		w.deadLetter(ctx, t, fmt.Errorf("gave up after %d deliveries: %w", n, err))
		return
	}
	if t.job != nil {
		_ = w.st.RetryJob(ctx, t.key, err.Error()) // best effort: the store may be what is down
	}
	w.unhealthy.Store(true)
	delay := w.backoff(n)
	w.log.Warn("job will be retried", "kind", t.kind, "job", t.key, "delivery", n, "delay", delay, "err", err)
	if nerr := t.msg.NakWithDelay(delay); nerr != nil {
		w.log.Warn("nak failed", "job", t.key, "err", nerr)
	}
	w.metrics.Jobs.WithLabelValues(string(t.kind), OutcomeRetried).Inc()
}

// waitHealthy returns once Postgres and the object store answer and accept writes (or ctx ends).
func (w *Worker) waitHealthy(ctx context.Context) {
	delay := 100 * time.Millisecond
	for i := 0; ctx.Err() == nil; i++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := w.st.Ping(pctx)
		if err == nil {
			// A store that answers but refuses writes (read-only Postgres, object store without write quorum)
			// would fail every job again: keep waiting rather than spend their deliveries.
			err = w.st.ProbeWrites(pctx)
		}
		cancel()
		if err == nil {
			if i > 0 {
				w.log.Info("store answers again; resuming")
			}
			w.unhealthy.Store(false)
			return
		}
		if i == 0 {
			w.log.Warn("store unavailable; pausing until it answers", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// deadLetter copies the job to the dead-letter stream with the reason, then terminates it.
// The dead recorder marks its row dead, so that the row is written even when the database is what keeps failing.
func (w *Worker) deadLetter(ctx context.Context, t *task, reason error) {
	msg := nats.NewMsg(schema.DeadSubject(t.kind))
	msg.Data = t.msg.Data()
	msg.Header.Set(schema.HeaderError, reason.Error())
	msg.Header.Set(HeaderJob, t.key)
	// One dead letter per message: a later delivery of the same message (its Term lost, and the store still
	// failing) is a duplicate, but the same job retried by an operator (a new message) and dead again is not.
	id := "dead/" + t.key
	if md, err := t.msg.Metadata(); err == nil {
		id += "/" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	var err error
	for attempt := range 5 {
		if _, err = w.js.PublishMsg(ctx, msg); err == nil || attempt == 4 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	if err != nil {
		// Keep the message un-acknowledged: JetStream delivers it again after the ack wait, and the worker that
		// receives it settles it then.
		w.log.Error("dead letter not published; job left on the job stream", "job", t.key, "err", err)
		return
	}
	w.log.Error("job is dead", "kind", t.kind, "job", t.key, "reason", reason)
	w.terminate(t, OutcomeDead)
}

// recordDead marks the jobs of dead letters dead in SQL, retrying while the database is away.
func (w *Worker) recordDead(ctx context.Context, dead jetstream.Consumer) {
	for ctx.Err() == nil {
		batch, err := dead.FetchNoWait(32)
		n := 0
		if err == nil {
			for m := range batch.Messages() {
				n++
				key, reason := m.Headers().Get(HeaderJob), m.Headers().Get(schema.HeaderError)
				if reason == "" {
					reason = "dead letter without a reason"
				}
				err := w.st.FinishJob(ctx, key, store.StateDead, reason)
				if store.IsNotFound(err) && key != "" {
					// A job with no row (published past the producer): record it, dead, with its message.
					kind := schema.Kind(strings.TrimPrefix(m.Subject(), schema.DeadSubject("")))
					var hdr struct {
						Batch string `json:"batch"`
					}
					_ = json.Unmarshal(m.Data(), &hdr) // best effort: to count it in its batch
					if schema.CheckName(hdr.Batch) != nil {
						hdr.Batch = ""
					}
					err = w.st.RecordDeadJob(ctx, kind, key, m.Data(), hdr.Batch, reason)
					if err != nil && !store.IsRefused(err) && kind.Valid() {
						w.log.Warn("dead letter not recorded yet", "job", key, "err", err)
						_ = m.NakWithDelay(w.cfg.Backoff)
						continue
					}
					if err != nil {
						w.log.Error("dead letter cannot be recorded in SQL; it stays on the dead-letter stream", "job", key, "err", err)
					}
					_ = m.Ack()
					continue
				}
				if err != nil && !store.IsNotFound(err) {
					w.log.Warn("dead letter not recorded yet", "job", key, "err", err)
					_ = m.NakWithDelay(w.cfg.Backoff)
					continue
				}
				_ = m.Ack()
			}
		}
		if n == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// watchQueues keeps dae_worker_queue_pending current.
func (w *Worker) watchQueues(ctx context.Context, consumers map[schema.Kind]jetstream.Consumer) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for k, c := range consumers {
			if info, err := c.Info(ctx); err == nil {
				w.metrics.Pending.WithLabelValues(string(k)).Set(float64(info.NumPending) + float64(info.NumAckPending))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
