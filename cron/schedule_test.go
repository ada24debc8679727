package cron

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"dae/store"
	"dae/store/storetest"
)

// tickLog records every scheduled attempt of every replica.
type tickLog struct {
	mu    sync.Mutex
	ticks map[time.Time][]bool // per tick: ran, one entry per replica attempt
}

func (l *tickLog) record(_ string, tick time.Time, ran bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ticks == nil {
		l.ticks = map[time.Time][]bool{}
	}
	l.ticks[tick] = append(l.ticks[tick], ran)
}

// startReplicas starts n schedulers on one database, each with its own store (pool), as n `dae cron` processes
// would be, and stops them when the test ends.
func startReplicas(t *testing.T, cfg store.Config, n int, conf Config, pub func(*store.Store) Publisher, log *tickLog) {
	t.Helper()
	for i := range n {
		st := storetest.Open(t, cfg)
		var p Publisher
		if pub != nil {
			p = pub(st)
		}
		r, err := NewRunner(st, p, conf, Options{ID: string(rune('a' + i)), OnTick: log.record})
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewScheduler(r)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() {
			if err := s.Shutdown(); err != nil {
				t.Error(err)
			}
		})
	}
}

// waitRuns waits until job has at least n finished runs and returns them, oldest first.
func waitRuns(t *testing.T, st *store.Store, job string, n int, timeout time.Duration) []store.CronRun {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		runs, err := st.CronRuns(context.Background(), job, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var done []store.CronRun
		for i := len(runs) - 1; i >= 0; i-- {
			if runs[i].FinishedAt != nil {
				done = append(done, runs[i])
			}
		}
		if len(done) >= n {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d finished runs of %s after %v, want %d", len(done), job, timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two replicas scheduling the same train job every second train each classifier once per tick: per tick exactly
// one replica runs, and no two classifier versions are trained on the same data.
func TestTwoReplicasTrainOncePerTick(t *testing.T) {
	t.Parallel()
	cfg := storetest.Config(t)
	st := storetest.Open(t, cfg)
	ctx := context.Background()
	w := seedWorld(t, st, "synth", 300, 8, 2, 5)
	w.label(t, st, 0, 60)

	var log tickLog
	conf := testConfig(Job{Name: "train", Kind: KindTrain, Every: Duration(time.Second)})
	conf.Train.MinSteps = 2000
	startReplicas(t, cfg, 2, conf, nil, &log)

	// Change the labels after each tick so that every tick has something to train.
	const ticks = 4
	for i := 1; i <= ticks; i++ {
		waitRuns(t, st, "train", i, 20*time.Second)
		w.label(t, st, 60+10*i, 70+10*i)
	}
	runs := waitRuns(t, st, "train", ticks, 20*time.Second)

	trained := map[string]int{}
	for _, run := range runs {
		if run.Error != "" {
			t.Errorf("run at %s failed: %s", run.Tick, run.Error)
		}
		var sum TrainSummary
		if err := json.Unmarshal(run.Summary, &sum); err != nil {
			t.Fatal(err)
		}
		for _, res := range sum.Results {
			if res.Action == "trained" {
				trained[res.Attribute]++
			}
		}
	}
	for _, attr := range w.names {
		hist, err := st.ClassifierHistory(ctx, w.model, attr)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != trained[attr] || len(hist) < ticks-1 {
			t.Errorf("%s: %d versions stored, runs report %d trainings over %d ticks", attr, len(hist), trained[attr], len(runs))
		}
		seen := map[string]int{}
		for _, h := range hist {
			if v, dup := seen[h.TrainedOn]; dup {
				t.Errorf("%s: versions %d and %d trained on the same data", attr, v, h.Version)
			}
			seen[h.TrainedOn] = h.Version
		}
	}

	log.mu.Lock()
	defer log.mu.Unlock()
	contended := 0
	for tick, attempts := range log.ticks {
		ran := 0
		for _, r := range attempts {
			if r {
				ran++
			}
		}
		if ran > 1 {
			t.Errorf("tick %s ran %d times (attempts %v)", tick, ran, attempts)
		}
		if len(attempts) > 1 {
			contended++
		}
	}
	if contended < ticks-1 {
		t.Errorf("only %d of %d ticks saw both replicas fire; the test did not exercise the lock", contended, len(log.ticks))
	}
	t.Logf("%d ticks, %d with both replicas firing; versions per attribute: %v", len(log.ticks), contended, trained)
}

// A tick left unfinished by a replica that died mid-run is run again by the next replica that runs the job, and
// given up (recorded as abandoned) once it has been tried maxAttempts times.
func TestAbandonedTicksAreTakenOver(t *testing.T) {
	t.Parallel()
	st := storetest.Fresh(t)
	ctx := context.Background()
	seedWorld(t, st, "m", 20, 4, 2, 3)
	job := Job{Name: "score", Kind: KindScore, Every: Duration(time.Minute)}
	r, err := NewRunner(st, nil, testConfig(job), Options{ID: "live"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	// The dead replica claimed t0 once, and t1 maxAttempts times (a tick that kills its runner).
	if _, _, err := st.ClaimCronRun(ctx, job.Name, t0, "dead"); err != nil {
		t.Fatal(err)
	}
	for range maxAttempts {
		if _, _, err := st.ClaimCronRun(ctx, job.Name, t1, "dead"); err != nil {
			t.Fatal(err)
		}
	}
	if ran, err := r.RunTick(ctx, job, t2); err != nil || !ran {
		t.Fatalf("RunTick: %v, %v", ran, err)
	}
	runs, err := st.CronRuns(ctx, job.Name, 10)
	if err != nil {
		t.Fatal(err)
	}
	byTick := map[time.Time]store.CronRun{}
	for _, run := range runs {
		byTick[run.Tick.UTC()] = run
	}
	if run := byTick[t0]; run.FinishedAt == nil || run.Runner != "live" || run.Attempts != 2 || run.Error != "" {
		t.Errorf("tick t0 left by a dead replica: %+v, want run again by live (attempt 2)", run)
	}
	if run := byTick[t1]; run.FinishedAt == nil || run.Runner != "dead" || !strings.Contains(run.Error, "abandoned") {
		t.Errorf("tick t1 tried %d times: %+v, want it finished as abandoned", maxAttempts, run)
	}
	if run := byTick[t2]; run.FinishedAt == nil || run.Runner != "live" {
		t.Errorf("tick t2: %+v, want run by live", run)
	}
	if got, _ := st.AbandonedCronRuns(ctx, job.Name, t2); len(got) != 0 {
		t.Errorf("unfinished runs left: %+v", got)
	}
}
