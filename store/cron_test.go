package store

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"dae/schema"
)

func TestWithLockExcludes(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- s.WithLock(ctx, "job-a", func(context.Context) error {
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	ran := false
	err := s.WithLock(ctx, "job-a", func(context.Context) error { ran = true; return nil })
	if !errors.Is(err, ErrLocked) || ran {
		t.Errorf("second WithLock while held: ran %v, err %v; want ErrLocked", ran, err)
	}
	if err := s.WithLock(ctx, "job-b", func(context.Context) error { return nil }); err != nil {
		t.Errorf("another lock name: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := errors.New("boom")
	if err := s.WithLock(ctx, "job-a", func(context.Context) error { return want }); !errors.Is(err, want) {
		t.Errorf("WithLock after release: %v, want fn's error", err)
	}
}

// Locks do not take connections from the pool: with a pool of one, work under a lock still gets its connection.
func TestWithLockLeavesThePool(t *testing.T) {
	t.Parallel()
	cfg := freshDB(t)
	cfg.MaxConns = 1
	ctx := context.Background()
	s, err := Open(ctx, cfg)
	if err != nil {
		skipOrFail(t, "local stack does not answer (run deploy/local/up): %v", err)
	}
	t.Cleanup(s.Close)
	err = s.WithLock(ctx, "job-a", func(ctx context.Context) error {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return s.Ping(qctx)
	})
	if err != nil {
		t.Errorf("a query under the lock with a pool of one: %v", err)
	}
}

func TestClaimCronRunOncePerTick(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	tick := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	id, ok, err := s.ClaimCronRun(ctx, "train", tick, "a")
	if err != nil || !ok {
		t.Fatalf("first claim: %v, %v", ok, err)
	}
	// Unfinished: the claimer died; the next holder of the lock takes it over.
	id2, ok, err := s.ClaimCronRun(ctx, "train", tick, "b")
	if err != nil || !ok || id2 != id {
		t.Fatalf("claim of an unfinished run: %d %v %v; want id %d taken over", id2, ok, err, id)
	}
	if err := s.FinishCronRun(ctx, id, []byte(`{"n":1}`), ""); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.ClaimCronRun(ctx, "train", tick, "c"); err != nil || ok {
		t.Errorf("claim of a finished tick: %v, %v; want false", ok, err)
	}
	if _, ok, err := s.ClaimCronRun(ctx, "train", tick.Add(time.Minute), "c"); err != nil || !ok {
		t.Errorf("claim of the next tick: %v, %v; want true", ok, err)
	}
	runs, err := s.CronRuns(ctx, "train", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[1].Attempts != 2 || runs[1].Runner != "b" || string(runs[1].Summary) != `{"n": 1}` {
		t.Errorf("runs = %+v", runs)
	}
	if _, _, err := s.ClaimCronRun(ctx, "Bad Name", tick, "a"); err == nil {
		t.Error("claim with a bad job name: no error")
	}
}

// The views and functions of the SQL surface on a small model: attribute selection (with a batch), the attributes
// of one image, and nearest neighbours, whose sketch-shortlisted version equals the exact one when the shortlist
// holds every latent.
func TestSQLSurface(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	const n, d = 60, 8
	hashes := seed(t, s, "m1", d, n)
	rng := rand.New(rand.NewPCG(3, 4))
	ls := make([]Latent, n)
	for i, h := range hashes {
		z := make([]float32, d)
		for j := range z {
			z[j] = float32(rng.NormFloat64())
		}
		ls[i] = Latent{ModelID: "m1", ImageHash: h, ZSem: z, XT: []float32{0}, XTShape: []int{1}}
	}
	if _, err := s.WriteLatents(ctx, ls); err != nil {
		t.Fatal(err)
	}
	c, err := s.AddClassifierVersion(ctx, ClassifierVersion{Classifier: Classifier{ModelID: "m1", Attribute: "round",
		Weights: make([]float32, d), Promoted: true}, Mean: make([]float32, d), Std: make([]float32, d), TrainedOn: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	rows, err := s.pool.Query(ctx, `SELECT id FROM latents ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		ids = append(ids, id)
	}
	scores := make([]Score, n)
	sketches := make([]Sketch, n)
	for i, id := range ids {
		scores[i] = Score{LatentID: id, ClassifierID: c.ID, Score: float32(i) / n}
		sketches[i] = Sketch{LatentID: id, ModelID: "m1", Bits: make([]byte, SketchBits/8), Norm: norm(ls[i].ZSem)}
	}
	if err := s.WriteScoresAndSketches(ctx, scores, sketches); err != nil {
		t.Fatal(err)
	}
	// Images 50..59 score ≥ 50/60; images 55..59 were encoded in batch b1.
	if err := s.CreateBatch(ctx, Batch{ID: "b1"}); err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes[55:] {
		if _, _, err := s.RecordJob(ctx, &schema.Encode{Header: schema.Header{Model: "m1", Batch: "b1"}, ImageHash: h}); err != nil {
			t.Fatal(err)
		}
	}
	def := Regeneration{ID: "r", ModelID: "m1", Attribute: "round", MinScore: 50.0 / n, MaxScore: 1, MaxImages: 100,
		Op: schema.KindDecode, Steps: 5, Enabled: true}
	for _, tc := range []struct {
		batch string
		want  int
	}{{"", 10}, {"b1", 5}} {
		def.BatchID = tc.batch
		hits, err := s.SelectForRegeneration(ctx, def)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != tc.want || hits[0].ImageHash != hashes[n-1] {
			t.Errorf("selection with batch %q: %d hits, want %d, best first", tc.batch, len(hits), tc.want)
		}
	}
	attrs, err := s.ImageAttributes(ctx, hashes[30])
	if err != nil {
		t.Fatal(err)
	}
	if len(attrs) != 1 || attrs[0].Attribute != "round" || attrs[0].Score != 0.5 || attrs[0].Version != 1 {
		t.Errorf("attributes of image 30: %+v", attrs)
	}

	exact, err := s.NearestLatents(ctx, "m1", hashes[0], 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	approx, err := s.NearestLatents(ctx, "m1", hashes[0], 5, n)
	if err != nil {
		t.Fatal(err)
	}
	// The brute force in Go.
	best := make([]float64, 0, n)
	for i := 1; i < n; i++ {
		best = append(best, cosine(ls[0].ZSem, ls[i].ZSem))
	}
	for i := range best {
		for j := i + 1; j < len(best); j++ {
			if best[j] > best[i] {
				best[i], best[j] = best[j], best[i]
			}
		}
	}
	if len(exact) != 5 || len(approx) != 5 {
		t.Fatalf("neighbours: exact %d, approx %d, want 5", len(exact), len(approx))
	}
	for i := range exact {
		if math.Abs(exact[i].Similarity-best[i]) > 1e-5 || exact[i].LatentID != approx[i].LatentID ||
			math.Abs(approx[i].Similarity-best[i]) > 1e-5 {
			t.Errorf("neighbour %d: exact %+v, approx %+v, brute force cosine %.6f", i, exact[i], approx[i], best[i])
		}
	}
}

func norm(z []float32) float32 {
	var s float64
	for _, v := range z {
		s += float64(v) * float64(v)
	}
	return float32(math.Sqrt(s))
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

// Pending versions: at most one per attribute, never promoted and pending at once; any newer version (promoted,
// pending or rejected) supersedes a pending one; PromotePending swaps it in for the promoted one.
func TestPendingClassifierVersions(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	const d = 4
	if err := s.UpsertModel(ctx, Model{ID: "m1", ZDim: d}); err != nil {
		t.Fatal(err)
	}
	add := func(promoted, pending bool) ClassifierVersion {
		t.Helper()
		c, err := s.AddClassifierVersion(ctx, ClassifierVersion{Classifier: Classifier{ModelID: "m1", Attribute: "round",
			Weights: make([]float32, d), Promoted: promoted}, Pending: pending})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	state := func() string {
		t.Helper()
		hist, err := s.ClassifierHistory(ctx, "m1", "round")
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for i := len(hist) - 1; i >= 0; i-- {
			switch {
			case hist[i].Promoted:
				out += "P"
			case hist[i].Pending:
				out += "p"
			default:
				out += "-"
			}
		}
		return out
	}
	if _, err := s.AddClassifierVersion(ctx, ClassifierVersion{Classifier: Classifier{ModelID: "m1", Attribute: "round",
		Weights: make([]float32, d), Promoted: true}, Pending: true}); err == nil {
		t.Error("a version promoted and pending at once: no error")
	}
	add(true, false)
	v2 := add(false, true)
	if got := state(); got != "Pp" {
		t.Fatalf("after v1 promoted and v2 pending: %s, want Pp", got)
	}
	add(false, false) // v3, trained on newer labels and rejected: v2 is stale
	if got := state(); got != "P--" {
		t.Fatalf("after a rejected v3: %s, want P-- (v2 no longer pending)", got)
	}
	if n, err := s.PromotePending(ctx, "m1", []int64{v2.ID}); err != nil || n != 0 {
		t.Fatalf("promoting the superseded v2: %d, %v; want nothing promoted", n, err)
	}
	v4 := add(false, true)
	if n, err := s.PromotePending(ctx, "m1", []int64{v4.ID}); err != nil || n != 1 {
		t.Fatalf("promoting v4: %d, %v; want 1", n, err)
	}
	if got := state(); got != "---P" {
		t.Fatalf("after promoting v4: %s, want ---P", got)
	}
}

// classifier_history shows the pending flag.
func TestClassifierHistoryShowsPending(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	if err := s.UpsertModel(ctx, Model{ID: "m1", ZDim: 2}); err != nil {
		t.Fatal(err)
	}
	for _, pending := range []bool{false, true} {
		if _, err := s.AddClassifierVersion(ctx, ClassifierVersion{Classifier: Classifier{ModelID: "m1", Attribute: "a",
			Weights: make([]float32, 2), Promoted: !pending}, Pending: pending}); err != nil {
			t.Fatal(err)
		}
	}
	var got string
	if err := s.pool.QueryRow(ctx, `SELECT string_agg(version || ':' || promoted || ':' || pending, ' ' ORDER BY version)
FROM classifier_history WHERE model_id = 'm1'`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1:true:false 2:false:true" {
		t.Errorf("classifier_history: %q, want v1 promoted and v2 pending", got)
	}
}

// Adding and promoting classifier versions does not wait for latent writes on the same model: their foreign-key
// checks hold the model row in KEY SHARE mode for the length of each worker's transaction, which a FOR UPDATE lock
// would queue behind (and, under a steady stream of overlapping writes, never get).
func TestClassifierVersionsDoNotWaitForLatentWrites(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	if err := s.UpsertModel(ctx, Model{ID: "m1", ZDim: 2}); err != nil {
		t.Fatal(err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// What a latent insert's foreign-key check takes on its model's row.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM models WHERE id = 'm1' FOR KEY SHARE`); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := s.AddClassifierVersion(wctx, ClassifierVersion{Classifier: Classifier{ModelID: "m1", Attribute: "a",
		Weights: make([]float32, 2)}, Pending: true})
	if err != nil {
		t.Fatalf("adding a version while a latent write is open: %v", err)
	}
	if n, err := s.PromotePending(wctx, "m1", []int64{c.ID}); err != nil || n != 1 {
		t.Fatalf("promoting while a latent write is open: %d, %v", n, err)
	}
}
