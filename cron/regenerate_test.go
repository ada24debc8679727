package cron

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"dae/schema"
	"dae/store"
	"dae/store/storetest"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jetStream starts an in-process NATS server with JetStream (a real server, private to the test, so no worker of
// the shared stack consumes its jobs) and creates the job stream as `dae up` does.
func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: schema.StreamJobs, Subjects: []string{schema.SubjectJobsAll},
		Retention: jetstream.WorkQueuePolicy, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	return js
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), schema.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// trainedWorld seeds n latents of a synthetic model, labels 60 of them and trains the classifiers, so that the
// latents are scored and regeneration definitions can select them.
func trainedWorld(t *testing.T, st *store.Store, n int, seed uint64) *world {
	t.Helper()
	w := seedWorld(t, st, "synth", n, 8, 2, seed)
	w.label(t, st, 0, 60)
	r, err := NewRunner(st, nil, testConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Train(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	return w
}

// A regeneration definition scheduled every second on two replicas enqueues its selection once per tick: one run per
// tick, one job per selected latent and run, each published once; running a tick again adds nothing.
func TestRegenerationOncePerTick(t *testing.T) {
	t.Parallel()
	cfg := storetest.Config(t)
	st := storetest.Open(t, cfg)
	ctx := context.Background()
	js := jetStream(t)
	w := trainedWorld(t, st, 300, 9)
	def := store.Regeneration{ID: "brighter-a", ModelID: w.model, Attribute: w.names[0], MinScore: 0.9, MaxScore: 1,
		MaxImages: 5, Op: schema.KindManipulate, OpAttribute: w.names[1], Scale: 0.5, Steps: 10, Enabled: true}
	if err := st.SaveRegeneration(ctx, def); err != nil {
		t.Fatal(err)
	}

	var log tickLog
	conf := testConfig(Job{Name: "regen", Kind: KindRegenerate, Every: Duration(time.Second), Definition: def.ID})
	pub := func(s *store.Store) Publisher { return NewJetStreamPublisher(s, js) }
	startReplicas(t, cfg, 2, conf, pub, &log)
	const ticks = 3
	waitRuns(t, st, "regen", ticks, 20*time.Second)

	runs, err := st.RegenerationRuns(ctx, def.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) < ticks {
		t.Fatalf("%d regeneration runs, want ≥ %d", len(runs), ticks)
	}
	// Count what is stored and published now; runs still going may add to both, so compare finished runs.
	wantJobs := 0
	for _, run := range runs {
		if run.FinishedAt == nil {
			continue
		}
		if run.Selected != 5 || run.Enqueued != 5 {
			t.Errorf("run %d at %s: selected %d, enqueued %d; want 5 and 5", run.ID, run.Tick, run.Selected, run.Enqueued)
		}
		wantJobs += run.Enqueued
	}
	// Stop scheduling before counting: wait for quiet by re-reading until stable.
	var jobs int
	var msgs uint64
	for range 50 {
		stat, err := st.Status(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		runs2, _ := st.RegenerationRuns(ctx, def.ID, 100)
		total := 0
		for _, run := range runs2 {
			total += run.Enqueued
		}
		jobs, msgs = stat.Total, streamMsgs(t, js)
		if jobs == total && msgs == uint64(total) && total >= wantJobs {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	runs, _ = st.RegenerationRuns(ctx, def.ID, 100)
	total := 0
	for _, run := range runs {
		total += run.Enqueued
	}
	if jobs != total || msgs != uint64(total) {
		t.Errorf("%d runs enqueued %d jobs; jobs table has %d, stream %d", len(runs), total, jobs, msgs)
	}
	log.mu.Lock()
	for tick, attempts := range log.ticks {
		ran := 0
		for _, r := range attempts {
			if r {
				ran++
			}
		}
		if ran != 1 {
			t.Errorf("tick %s ran %d times (attempts %v), want once", tick, ran, attempts)
		}
	}
	log.mu.Unlock()

	// Running an earlier tick again (a replica that crashed mid-run) publishes the same jobs: nothing new.
	before := streamMsgs(t, js)
	stat, _ := st.Status(ctx, "")
	r1, err := NewRunner(st, NewJetStreamPublisher(st, js), conf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r1.Regenerate(ctx, def, runs[len(runs)-1].Tick)
	if err != nil || res.Enqueued != 5 || res.Generation != runs[len(runs)-1].ID {
		t.Fatalf("re-running tick: %+v, %v; want 5 jobs of generation %d", res, err, runs[len(runs)-1].ID)
	}
	stat2, _ := st.Status(ctx, "")
	if after := streamMsgs(t, js); after != before || stat2.Total != stat.Total {
		t.Errorf("re-running a tick: stream %d → %d messages, jobs %d → %d; want no change", before, after, stat.Total, stat2.Total)
	}
	t.Logf("%d ticks, %d regenerate jobs stored and published once each", len(runs), total)
}

// A definition may move each latent to a logit target instead of by a scale: it is stored and read back, a
// definition with both is refused, and its jobs carry the target.
func TestRegenerationTarget(t *testing.T) {
	t.Parallel()
	cfg := storetest.Config(t)
	st := storetest.Open(t, cfg)
	ctx := context.Background()
	js := jetStream(t)
	w := trainedWorld(t, st, 200, 11)
	def := store.Regeneration{ID: "deeper-b", ModelID: w.model, Attribute: w.names[0], MinScore: 0, MaxScore: 1,
		MaxImages: 3, Op: schema.KindManipulate, OpAttribute: w.names[1], Target: "p95", Rounds: 3, Steps: 10, Enabled: true}
	both := def
	both.ID, both.Scale = "both-b", 0.5
	if err := st.SaveRegeneration(ctx, both); err == nil || !strings.Contains(err.Error(), "scale") {
		t.Errorf("a definition with a scale and a target: %v, want an error naming scale", err)
	}
	scaleRounds := def
	scaleRounds.ID, scaleRounds.Target, scaleRounds.Scale = "scale-rounds-b", "", 0.5
	if err := st.SaveRegeneration(ctx, scaleRounds); err == nil || !strings.Contains(err.Error(), "rounds") {
		t.Errorf("a definition with rounds of a scale: %v, want an error naming rounds", err)
	}
	if err := st.SaveRegeneration(ctx, def); err != nil {
		t.Fatal(err)
	}
	// The database holds the same rule, for rows written by anything else.
	conn, err := pgx.Connect(ctx, cfg.PGURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, bad := range []string{`UPDATE regenerations SET rounds = 9 WHERE id = $1`,
		`UPDATE regenerations SET rounds = 2, target = NULL, scale = 1 WHERE id = $1`} {
		if _, err := conn.Exec(ctx, bad, def.ID); err == nil || !strings.Contains(err.Error(), "regenerations_rounds") {
			t.Errorf("%s: %v, want the rounds check to refuse it", bad, err)
		}
	}
	got, err := st.GetRegeneration(ctx, def.ID)
	if err != nil || got.Target != "p95" || got.Scale != 0 || got.OpAttribute != def.OpAttribute || got.Rounds != 3 {
		t.Fatalf("read back %+v, %v; want target p95 in 3 rounds, no scale", got, err)
	}
	pub := &teePublisher{Publisher: NewJetStreamPublisher(st, js)}
	r, err := NewRunner(st, pub, testConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Regenerate(ctx, got, time.Now().Truncate(time.Second))
	if err != nil || res.Enqueued != 3 || len(pub.jobs) != 3 {
		t.Fatalf("regenerate: %+v, %v, %d published; want 3 jobs", res, err, len(pub.jobs))
	}
	for _, j := range pub.jobs {
		if rj, ok := j.(*schema.Regenerate); !ok || rj.Target != "p95" || rj.Scale != 0 || rj.Rounds != 3 ||
			!strings.Contains(rj.DedupKey(), "/p95/") || !strings.HasSuffix(rj.DedupKey(), "/r3") {
			t.Errorf("published %#v: want a regenerate job to p95 in 3 rounds", j)
		}
	}
	// A one-round definition (rounds left out: 1) publishes messages without the field, which workers from
	// before it accept.
	one := def
	one.ID, one.Rounds = "deeper-one-b", 0
	if err := st.SaveRegeneration(ctx, one); err != nil {
		t.Fatal(err)
	}
	if got, err := st.GetRegeneration(ctx, one.ID); err != nil || got.Rounds != 1 {
		t.Fatalf("one-round definition read back with %d rounds, %v; want 1", got.Rounds, err)
	} else {
		one = got
	}
	pub.jobs = nil
	if _, err := r.Regenerate(ctx, one, time.Now().Truncate(time.Second)); err != nil || len(pub.jobs) != 3 {
		t.Fatalf("regenerate one round: %v, %d published", err, len(pub.jobs))
	}
	for _, j := range pub.jobs {
		data, err := schema.Marshal(j)
		if err != nil || strings.Contains(string(data), `"rounds"`) {
			t.Errorf("one-round job's message %s (%v): want no rounds field", data, err)
		}
	}
}

// teePublisher publishes through its Publisher (JetStream) and keeps what passed.
type teePublisher struct {
	Publisher
	mu   sync.Mutex
	jobs []schema.Job
}

func (p *teePublisher) Publish(ctx context.Context, j schema.Job) error {
	p.mu.Lock()
	p.jobs = append(p.jobs, j)
	p.mu.Unlock()
	return p.Publisher.Publish(ctx, j)
}

// failingAfter publishes through a real publisher until n jobs have gone, then fails (the stream refusing, say).
type failingAfter struct {
	Publisher
	n int
}

func (f *failingAfter) Publish(ctx context.Context, j schema.Job) error {
	if f.n == 0 {
		return errors.New("stream unavailable")
	}
	f.n--
	return f.Publisher.Publish(ctx, j)
}

// A tick whose publishing fails is still finished, with what it selected and enqueued and the classifier that
// selected them.
func TestRegenerationRunFinishedWhenPublishingFails(t *testing.T) {
	t.Parallel()
	st := storetest.Fresh(t)
	ctx := context.Background()
	w := trainedWorld(t, st, 300, 11)
	def := store.Regeneration{ID: "half-a", ModelID: w.model, Attribute: w.names[0], MinScore: 0.5, MaxScore: 1,
		MaxImages: 5, Op: schema.KindManipulate, OpAttribute: w.names[1], Scale: 0.5, Steps: 10, Enabled: true}
	if err := st.SaveRegeneration(ctx, def); err != nil {
		t.Fatal(err)
	}
	c, err := st.PromotedClassifier(ctx, w.model, w.names[0])
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(st, &failingAfter{NewJetStreamPublisher(st, jetStream(t)), 2}, testConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Now().Truncate(time.Second)
	if _, err := r.Regenerate(ctx, def, tick); err == nil {
		t.Fatal("regenerating with a failing publisher: no error")
	}
	runs, err := st.RegenerationRuns(ctx, def.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].FinishedAt == nil || runs[0].Selected != 5 || runs[0].Enqueued != 2 || runs[0].ClassifierID != c.ID {
		t.Fatalf("runs %+v, want one finished run: 5 selected, 2 enqueued, classifier %d", runs, c.ID)
	}
}
