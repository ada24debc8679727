package store

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"dae/schema"
)

func TestJobsClassifiersAndQueries(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	hashes := seed(t, s, "fm32", 3, 4)
	zs := [][]float32{{1, 0, 0}, {0.9, 0.1, 0}, {0, 1, 0}, {-1, 0, 0}}
	ids := make([]int64, len(zs))
	for i, z := range zs {
		l := Latent{ModelID: "fm32", ImageHash: hashes[i], ZSem: z, XT: []float32{1, 2}, XTShape: []int{1, 2}}
		var err error
		if ids[i], _, err = s.UpsertLatent(ctx, l); err != nil {
			t.Fatal(err)
		}
	}

	// Neighbours of image 0 in cosine order: 1 (close), 2 (orthogonal), 3 (opposite).
	model, ns, err := s.Neighbours(ctx, "", hashes[0], 10)
	if err != nil {
		t.Fatal(err)
	}
	if model != "fm32" || len(ns) != 3 || ns[0].ImageHash != hashes[1] || ns[2].ImageHash != hashes[3] || ns[2].Similarity > -0.999 {
		t.Errorf("Neighbours = %s %+v, want images 1, 2, 3 of fm32 with the last at cosine -1", model, ns)
	}

	// Two classifier versions; only the promoted one's scores are listed.
	old, err := s.AddClassifier(ctx, Classifier{ModelID: "fm32", Attribute: "sneaker", Weights: []float32{1, 0, 0}, Promoted: true})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.AddClassifier(ctx, Classifier{ModelID: "fm32", Attribute: "sneaker", Weights: []float32{0, 1, 0}, Bias: 0.5,
		Metrics: []byte(`{"auroc":0.9}`), Promoted: true})
	if err != nil {
		t.Fatal(err)
	}
	if old.Version != 1 || cur.Version != 2 {
		t.Errorf("classifier versions %d, %d; want 1, 2", old.Version, cur.Version)
	}
	if _, err := s.AddClassifier(ctx, Classifier{ModelID: "fm32", Attribute: "sneaker", Weights: []float32{1}}); err == nil {
		t.Error("a classifier with 1 weight was accepted for z_dim 3")
	}
	if p, err := s.PromotedClassifier(ctx, "fm32", "sneaker"); err != nil || p.ID != cur.ID {
		t.Errorf("PromotedClassifier = %+v, %v; want id %d", p, err, cur.ID)
	}
	// A version with its normalisation and pattern keeps both; a pattern of the wrong size is refused.
	one := []float32{1, 1, 1}
	withPattern := ClassifierVersion{Classifier: Classifier{ModelID: "fm32", Attribute: "bag", Weights: []float32{0, 0, 1}},
		Mean: []float32{0, 0, 0}, Std: one, Pattern: []float32{0.6, 0, 0.8}, TrainedOn: "f"}
	if _, err := s.AddClassifierVersion(ctx, withPattern); err != nil {
		t.Fatal(err)
	}
	if h, err := s.ClassifierHistory(ctx, "fm32", "bag"); err != nil || len(h) != 1 || !slices.Equal(h[0].Pattern, withPattern.Pattern) {
		t.Errorf("ClassifierHistory = %+v, %v; want one version with pattern %v", h, err, withPattern.Pattern)
	}
	withPattern.Pattern = []float32{1, 0}
	if _, err := s.AddClassifierVersion(ctx, withPattern); err == nil {
		t.Error("a pattern of 2 values was accepted for z_dim 3")
	}
	if h, _ := s.ClassifierHistory(ctx, "fm32", "sneaker"); len(h) != 2 || h[0].Pattern != nil {
		t.Errorf("versions stored without a pattern read back %+v, want nil patterns", h)
	}
	scores := []Score{
		{ids[0], old.ID, 0.99}, {ids[1], old.ID, 0.98},
		{ids[0], cur.ID, 0.2}, {ids[1], cur.ID, 0.95}, {ids[2], cur.ID, 0.91}, {ids[3], cur.ID, 0.1},
	}
	if err := s.WriteScores(ctx, scores); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteScores(ctx, []Score{{ids[2], cur.ID, 0.97}}); err != nil { // re-scoring replaces
		t.Fatal(err)
	}
	hits, err := s.LatentsByAttribute(ctx, "", "sneaker", 0.9, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 || hits[0].LatentID != ids[2] || hits[0].Score != 0.97 || hits[1].LatentID != ids[1] || hits[0].Version != 2 {
		t.Errorf("LatentsByAttribute = %+v, want latents %d (0.97) and %d (0.95) from version 2", hits, ids[2], ids[1])
	}
	if err := s.WriteScores(ctx, []Score{{ids[0], cur.ID, 1.5}}); err == nil {
		t.Error("a score of 1.5 was accepted")
	}

	// Jobs: recorded once, started, finished; failures listed with their reason.
	if err := s.CreateBatch(ctx, Batch{ID: "b1", Name: "test", Source: "folder"}); err != nil {
		t.Fatal(err)
	}
	jobs := []*schema.Encode{
		{Header: schema.Header{Model: "fm32", Batch: "b1"}, ImageHash: hashes[0]},
		{Header: schema.Header{Model: "fm32", Batch: "b1"}, ImageHash: hashes[1]},
		{Header: schema.Header{Model: "fm32", Batch: "b1"}, ImageHash: hashes[2]},
	}
	for _, j := range jobs {
		if _, ins, err := s.RecordJob(ctx, j); err != nil || !ins {
			t.Fatalf("RecordJob = %v, %v; want inserted", ins, err)
		}
	}
	if _, ins, err := s.RecordJob(ctx, jobs[0]); err != nil || ins {
		t.Errorf("RecordJob again = %v, %v; want not inserted", ins, err)
	}
	for _, j := range jobs[:2] {
		if prev, err := s.StartJob(ctx, j.DedupKey()); err != nil || prev != StateQueued {
			t.Fatalf("StartJob = %q, %v; want previous state queued", prev, err)
		}
	}
	if err := s.FinishJob(ctx, jobs[0].DedupKey(), StateDone, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishJob(ctx, jobs[1].DedupKey(), StateFailed, "imageio: not a PNG"); err != nil {
		t.Fatal(err)
	}
	if prev, err := s.StartJob(ctx, jobs[0].DedupKey()); err != nil || prev != StateDone {
		t.Errorf("StartJob of a done job = %q, %v; want done", prev, err)
	}
	// A late dead letter (or failure) of a job already done leaves it done; a job never recorded is not found.
	if err := s.FinishJob(ctx, jobs[0].DedupKey(), StateDead, "gave up after 5 deliveries: late"); err != nil {
		t.Errorf("FinishJob(dead) of a done job: %v, want no error", err)
	}
	if err := s.FinishJob(ctx, "encode/fm32/"+strings.Repeat("0", 64), StateDead, "x"); !IsNotFound(err) {
		t.Errorf("FinishJob of an unknown job: %v, want ErrNotFound", err)
	}
	st, err := s.Status(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 3 || st.Counts[StateDone] != 1 || st.Counts[StateFailed] != 1 || st.Counts[StateQueued] != 1 || st.Finished1m != 2 {
		t.Errorf("Status(b1) = %+v, want 1 done, 1 failed, 1 queued, 2 finished recently", st)
	}
	fails, err := s.Failures(ctx, "b1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(fails) != 1 || fails[0].Error != "imageio: not a PNG" || fails[0].Attempts != 1 {
		t.Errorf("Failures(b1) = %+v, want the one failed job with its reason", fails)
	}
	if _, err := s.Status(ctx, "nope"); !IsNotFound(err) {
		t.Errorf("Status of an unknown batch: %v, want ErrNotFound", err)
	}
}

// A latent with NaN in z_sem is refused; one stored by an older release comes last among the neighbours (its
// similarity, NaN, sorted above every number before migration 00010).
func TestNeighboursPutCorruptLatentsLast(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	hashes := seed(t, s, "fm32", 3, 4)
	nan := float32(math.NaN())
	for i, z := range [][]float32{{1, 0, 0}, {0.9, 0.1, 0}, {0, 1, 0}} {
		if _, _, err := s.UpsertLatent(ctx, Latent{ModelID: "fm32", ImageHash: hashes[i], ZSem: z, XT: []float32{1}, XTShape: []int{1}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []Latent{
		{ModelID: "fm32", ImageHash: hashes[3], ZSem: []float32{1, nan, 0}, XT: []float32{1}, XTShape: []int{1}},
		{ModelID: "fm32", ImageHash: hashes[3], ZSem: []float32{1, 0, 0}, XT: []float32{float32(math.Inf(1))}, XTShape: []int{1}},
	} {
		if _, _, err := s.UpsertLatent(ctx, l); !errors.Is(err, ErrBadLatent) || !IsRefused(err) {
			t.Errorf("UpsertLatent(z_sem %v, x_T %v): %v, want ErrBadLatent", l.ZSem, l.XT, err)
		}
		if _, err := s.WriteLatents(ctx, []Latent{l}); !errors.Is(err, ErrBadLatent) {
			t.Errorf("WriteLatents(z_sem %v, x_T %v): %v, want ErrBadLatent", l.ZSem, l.XT, err)
		}
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO latents (model_id, z_dim, image_hash, z_sem, x_t, x_t_shape, x_t_dtype)
VALUES ('fm32', 3, $1, $2, $3, '{1}', 'float32')`, hashes[3], []float32{1, nan, 0}, EncodeFloat32s([]float32{1})); err != nil {
		t.Fatal(err)
	}
	_, ns, err := s.Neighbours(ctx, "fm32", hashes[0], 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 3 || ns[0].ImageHash != hashes[1] || ns[2].ImageHash != hashes[3] || ns[2].Similarity != 0 {
		t.Errorf("Neighbours = %+v, want images 1, 2 and the corrupt 3 last (similarity 0)", ns)
	}
}

// A source that changes its label makes it the newest: current_labels takes the correction over another source's
// label given in between.
func TestLabelCorrectionIsCurrent(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	h := seed(t, s, "fm32", 3, 1)[0]
	current := func() (bool, string) {
		t.Helper()
		var v bool
		var src string
		if err := s.pool.QueryRow(ctx, `SELECT value, source FROM current_labels WHERE image_hash = $1 AND attribute = 'smile'`, h).
			Scan(&v, &src); err != nil {
			t.Fatal(err)
		}
		return v, src
	}
	for i, l := range []Label{{h, "smile", true, "review"}, {h, "smile", true, "dataset"}, {h, "smile", false, "review"}} {
		if i > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		if err := s.UpsertLabels(ctx, []Label{l}); err != nil {
			t.Fatal(err)
		}
	}
	if v, src := current(); v || src != "review" {
		t.Errorf("current label %v from %s, want false from review (its correction)", v, src)
	}
	// The same value again is not news: the dataset's label stays older.
	if err := s.UpsertLabels(ctx, []Label{{h, "smile", true, "dataset"}}); err != nil {
		t.Fatal(err)
	}
	if v, src := current(); v || src != "review" {
		t.Errorf("after the dataset repeats its label: %v from %s, want false from review", v, src)
	}
}
