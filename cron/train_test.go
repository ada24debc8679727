package cron

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/jackc/pgx/v5"
	"math"
	"strings"
	"testing"

	"dae/diffae"
	"dae/diffae/metrics"
	"dae/store"
	"dae/store/storetest"
)

// The cron trains a classifier per attribute from a few labels, scores every latent, and `score > 0.9` picks latents
// that truly have the attribute; unchanged labels train nothing, new labels train a new version, new latents are
// scored incrementally.
func TestTrainAndScore(t *testing.T) {
	t.Parallel()
	st := storetest.Fresh(t)
	ctx := context.Background()
	const n, d, k = 900, 16, 3
	w := seedWorld(t, st, "synth", n, d, k, 1)
	labelled := w.label(t, st, 0, 90)
	r, err := NewRunner(st, nil, testConfig(), Options{ID: "t"})
	if err != nil {
		t.Fatal(err)
	}

	sum, err := r.Train(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Results) != k {
		t.Fatalf("trained %d attributes, want %d: %+v", len(sum.Results), k, sum.Results)
	}
	for _, res := range sum.Results {
		if res.Action != "trained" || res.Version != 1 || !res.Promoted || res.Mode != "binary" {
			t.Errorf("first training of %s: %+v, want version 1 trained, binary, promoted", res.Attribute, res)
		}
		if res.AUROC < 0.9 {
			t.Errorf("%s: held-out AUROC %.3f, want ≥ 0.9 on separable data", res.Attribute, res.AUROC)
		}
	}
	if sum.Scored == nil || sum.Scored.Scores != n*k || sum.Scored.Sketches != n {
		t.Fatalf("training scored %+v, want %d scores and %d sketches", sum.Scored, n*k, n)
	}

	for c, attr := range w.names {
		all, err := st.LatentsByAttribute(ctx, w.model, attr, 0, 10*n)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != n {
			t.Errorf("%s: %d latents scored, want %d", attr, len(all), n)
		}
		hits, err := st.LatentsByAttribute(ctx, w.model, attr, 0.9, 10*n)
		if err != nil {
			t.Fatal(err)
		}
		truth := map[string]bool{}
		positives := 0
		for i, h := range w.hashes {
			if !labelled[h] {
				truth[h] = w.classes[i] == c
				if w.classes[i] == c {
					positives++
				}
			}
		}
		var tp, fp int
		for _, h := range hits {
			v, ok := truth[h.ImageHash]
			if !ok {
				continue // a labelled image
			}
			if v {
				tp++
			} else {
				fp++
			}
		}
		precision := float64(tp) / float64(tp+fp)
		recall := float64(tp) / float64(positives)
		t.Logf("%s: score > 0.9 on held-out images: %d hits, precision %.3f, recall %.3f", attr, tp+fp, precision, recall)
		if tp+fp == 0 || precision < 0.9 || recall < 0.5 {
			t.Errorf("%s: precision %.3f (want ≥ 0.9), recall %.3f (want ≥ 0.5) of score > 0.9", attr, precision, recall)
		}
	}

	// Nothing changed: no new versions, nothing to score.
	sum, err = r.Train(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range sum.Results {
		if res.Action != "unchanged" {
			t.Errorf("retraining unchanged %s: %+v, want unchanged", res.Attribute, res)
		}
	}
	sc, err := r.Score(ctx, "")
	if err != nil || sc.Scores != 0 || sc.Sketches != 0 {
		t.Errorf("rescoring unchanged data: %+v, %v; want nothing written", sc, err)
	}

	// More labels: a second version of each, compared with the first on the same held-out latents.
	w.label(t, st, 90, 180)
	sum, err = r.Train(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range sum.Results {
		if res.Action != "trained" || res.Version != 2 {
			t.Errorf("training %s after new labels: %+v, want version 2", res.Attribute, res)
		}
		hist, err := st.ClassifierHistory(ctx, w.model, res.Attribute)
		if err != nil {
			t.Fatal(err)
		}
		promoted := 0
		for _, h := range hist {
			if h.Promoted {
				promoted++
			}
		}
		var met struct {
			L2     float64  `json:"l2"`
			Median *float64 `json:"median_positive_logit"`
			P95    *float64 `json:"positive_logit_p95"`
		}
		if json.Unmarshal(hist[0].Metrics, &met) != nil || met.L2 != diffae.DefaultClassifierL2 {
			t.Errorf("%s v2: metrics %s do not record the default ridge penalty", res.Attribute, hist[0].Metrics)
		}
		// The logit targets that manipulate jobs may name.
		if met.Median == nil || met.P95 == nil || *met.P95 < *met.Median {
			t.Errorf("%s v2: metrics %s lack the median and the 95th percentile of the positives' logits, in order", res.Attribute, hist[0].Metrics)
		}
		if len(hist[0].Pattern) != len(hist[0].Weights) {
			t.Errorf("%s v2: pattern of %d values for %d weights", res.Attribute, len(hist[0].Pattern), len(hist[0].Weights))
		}
		if len(hist) != 2 || promoted != 1 || hist[0].Promoted != res.Promoted {
			t.Errorf("%s: history %d versions, %d promoted (v2 promoted %v, result says %v)", res.Attribute, len(hist), promoted,
				hist[0].Promoted, res.Promoted)
		}
	}

	// The new versions' pass wrote their scores and nothing the latents had already.
	if sum.Scored == nil || sum.Scored.Scores != n*k || sum.Scored.Sketches != 0 || sum.Scored.Promoted != k {
		t.Errorf("second training's scoring pass: %+v, want %d scores of the new versions, no sketches, %d promotions",
			sum.Scored, n*k, k)
	}

	// New latents are scored, and only they.
	w.add(t, st, 50, 2)
	sc, err = r.Score(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Latents != 50 || sc.Scores != 50*k {
		t.Errorf("scoring 50 new latents: %+v, want 50 latents and %d scores", sc, 50*k)
	}
}

// With positive labels only, the classifier is trained positive–unlabelled and still separates the class.
func TestTrainPositiveUnlabelled(t *testing.T) {
	t.Parallel()
	st := storetest.Fresh(t)
	ctx := context.Background()
	w := seedWorld(t, st, "synth", 600, 16, 3, 3)
	var ls []labelRow
	for i, c := range w.classes {
		if c == 0 && len(ls) < 30 {
			ls = append(ls, labelRow{w.hashes[i], true})
		}
	}
	putLabels(t, st, w.names[0], ls)
	r, err := NewRunner(st, nil, testConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := r.Train(ctx, w.model)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Results) != 1 || sum.Results[0].Mode != "pu" || sum.Results[0].Action != "trained" {
		t.Fatalf("PU training: %+v", sum.Results)
	}
	// The held-out AUROC counts unlabelled positives as negatives, so it understates; against the truth the
	// scores must rank the class well.
	if a := sum.Results[0].AUROC; a <= 0.5 || math.IsNaN(a) {
		t.Errorf("PU held-out AUROC %.3f, want > 0.5", a)
	}
	hits, err := st.LatentsByAttribute(ctx, w.model, w.names[0], 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	class := map[string]int{}
	for i, h := range w.hashes {
		class[h] = w.classes[i]
	}
	scores := make([]float64, len(hits))
	truth := make([]bool, len(hits))
	for i, h := range hits {
		scores[i], truth[i] = float64(h.Score), class[h.ImageHash] == 0
	}
	if a := metrics.AUROC(scores, truth); len(hits) != len(w.hashes) || a < 0.95 {
		t.Errorf("PU scores of %d latents (want %d): AUROC against the truth %.3f, want ≥ 0.95", len(hits), len(w.hashes), a)
	}
	// A few new latents (10 on 600, under pu_retrain_growth's 10%) do not retrain it: a new version would mean a
	// scoring pass over every latent.
	w.add(t, st, 10, 4)
	sum, err = r.Train(ctx, w.model)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Results[0].Action != "unchanged" || sum.Results[0].Version != 1 || sum.Scored != nil {
		t.Errorf("PU after 10 new latents: %+v, scored %+v; want version 1 unchanged, nothing scored", sum.Results[0], sum.Scored)
	}
	// Enough of them change the unlabelled pool: a PU classifier is retrained.
	w.add(t, st, 60, 5)
	sum, err = r.Train(ctx, w.model)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Results[0].Action != "trained" || sum.Results[0].Version != 2 {
		t.Errorf("PU after 70 new latents: %+v, want version 2", sum.Results[0])
	}
}

// A latent whose z_sem is not finite is left unscored and reported, without holding up its model; and a model
// whose pass fails does not keep the other models' latents unscored: the pass goes on and returns the error.
func TestScoreSkipsCorruptLatentsAndFailingModels(t *testing.T) {
	st := storetest.Fresh(t)
	ctx := context.Background()
	const d = 8
	w := seedWorld(t, st, "corrupt", 20, d, 2, 1)
	w.label(t, st, 0, 20)
	seedWorld(t, st, "fine", 20, d, 2, 2)
	seedWorld(t, st, "failing", 20, d, 2, 3)
	h := strings.Repeat("ef", 32)
	if _, err := st.WriteImages(ctx, []store.Image{{Hash: h, Source: "synthetic/nan.png", ObjectKey: "images/ef/" + h,
		Size: 100, Width: 4, Height: 4, ContentType: "image/png"}}); err != nil {
		t.Fatal(err)
	}
	z := make([]float32, d)
	z[0] = float32(math.NaN())
	// The store refuses such a latent now; an older release stored them.
	if _, err := st.WriteLatents(ctx, []store.Latent{{ModelID: "corrupt", ImageHash: h, ZSem: z,
		XT: []float32{0}, XTShape: []int{1}}}); !errors.Is(err, store.ErrBadLatent) || !store.IsRefused(err) {
		t.Fatalf("writing a latent whose z_sem holds NaN: %v, want ErrBadLatent", err)
	}
	storetest.Exec(t, st, `INSERT INTO latents (model_id, z_dim, image_hash, z_sem, x_t, x_t_shape, x_t_dtype)
VALUES ('corrupt', $1, $2, $3, $4, '{1}', 'float32')`, d, h, z, store.EncodeFloat32s([]float32{0}))
	r, err := NewRunner(st, nil, testConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.beforeWrite = func(m string) error {
		if m == "failing" {
			return errors.New("page refused")
		}
		return nil
	}
	// Training "corrupt" leaves the corrupt latent out of the classifiers (it would make every score NaN) and
	// scores the other 20.
	sum, err := r.Train(ctx, "corrupt")
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range sum.Results {
		if res.Action != "trained" || !res.Promoted || math.IsNaN(res.AUROC) {
			t.Errorf("training beside a corrupt latent: %+v, want trained and promoted", res)
		}
	}
	if sum.Scored == nil || sum.Scored.Skipped != 1 || sum.Scored.Sketches != 20 {
		t.Errorf("training's scoring pass: %+v, want 20 latents scored and the corrupt one skipped", sum.Scored)
	}
	sc, err := r.Score(ctx, "")
	if err == nil || !strings.Contains(err.Error(), "failing") || strings.Contains(err.Error(), "corrupt") {
		t.Errorf("Score: %v, want the failing model's error alone", err)
	}
	if sc.Sketches < 20 || sc.Skipped != 1 {
		t.Errorf("Score: %+v, want at least the 20 latents of the fine model sketched and the corrupt one skipped", sc)
	}
}

// A retrained classifier is promoted only by a scoring pass that has scored every latent with it: while the pass
// fails, queries by attribute keep reading the old version's complete scores and the new version waits, pending;
// the next pass that gets through promotes it and prunes the old version's scores.
func TestPromotionWaitsForScores(t *testing.T) {
	t.Parallel()
	st := storetest.Fresh(t)
	ctx := context.Background()
	const n, d, k = 300, 8, 2
	w := seedWorld(t, st, "synth", n, d, k, 3)
	w.label(t, st, 0, 60)
	r, err := NewRunner(st, nil, testConfig(), Options{ID: "t"})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := r.Train(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range sum.Results {
		if res.Version != 1 || !res.Promoted || res.Pending {
			t.Errorf("first training of %s: %+v, want version 1 promoted by its scoring pass", res.Attribute, res)
		}
	}
	if sum.Scored == nil || sum.Scored.Promoted != k || sum.Scored.Scores != n*k {
		t.Errorf("first training's scoring pass: %+v, want %d scores and %d promotions", sum.Scored, n*k, k)
	}

	// Scoring passes now fail after their first page (the database refusing the second, say).
	pages := 0
	r.beforeWrite = func(string) error {
		if pages++; pages > 1 {
			return errors.New("page refused")
		}
		return nil
	}
	w.label(t, st, 60, 120)
	sum, err = r.Train(ctx, "")
	if err == nil {
		t.Fatal("training with a failing scoring pass: no error")
	}
	for _, res := range sum.Results {
		if res.Action != "trained" || res.Version != 2 || res.Promoted || !res.Pending ||
			!strings.Contains(res.Reason, "not promoted yet") {
			t.Errorf("second training of %s: %+v, want version 2 trained and pending, saying why", res.Attribute, res)
		}
		hist, err := st.ClassifierHistory(ctx, w.model, res.Attribute)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 2 || !hist[0].Pending || hist[0].Promoted || !hist[1].Promoted || hist[1].Pending {
			t.Errorf("%s: history %+v, want v2 pending and v1 still promoted", res.Attribute, hist)
		}
		// Queries read v1 and its score for every latent, not v2's first page.
		got, err := st.LatentsByAttribute(ctx, w.model, res.Attribute, 0, 10*n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Errorf("%s: a query by attribute sees %d scored latents while v2 is pending, want v1's %d", res.Attribute, len(got), n)
		}
	}
	// Training again changes nothing but still tries the pass; it fails the same way and v2 stays pending.
	pages = 0
	sum, err = r.Train(ctx, "")
	if err == nil || len(sum.Results) != k || sum.Results[0].Action != "unchanged" || !sum.Results[0].Pending {
		t.Errorf("training again: %+v, %v; want unchanged, still pending, and the pass's error", sum.Results, err)
	}

	// The next pass that gets through promotes v2 and prunes v1's scores.
	r.beforeWrite = nil
	sc, err := r.Score(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Promoted != k || sc.Pruned != n*k {
		t.Errorf("scoring pass after the fix: %+v, want %d promotions and v1's %d scores pruned", sc, k, n*k)
	}
	for _, attr := range w.names {
		hist, err := st.ClassifierHistory(ctx, w.model, attr)
		if err != nil {
			t.Fatal(err)
		}
		if !hist[0].Promoted || hist[0].Pending || hist[1].Promoted {
			t.Errorf("%s after the pass: v2 promoted %v pending %v, v1 promoted %v; want v2 alone promoted", attr,
				hist[0].Promoted, hist[0].Pending, hist[1].Promoted)
		}
		got, err := st.LatentsByAttribute(ctx, w.model, attr, 0, 10*n)
		if err != nil || len(got) != n {
			t.Errorf("%s: %d latents scored by v2 (%v), want %d", attr, len(got), err, n)
		}
	}
}

// A latent whose insert commits after the scoring pass has paged past its id is scored before the pending version
// is promoted: the pass sweeps a second time from the start.
func TestPromotionWaitsForLateLatents(t *testing.T) {
	t.Parallel()
	st := storetest.Fresh(t)
	ctx := context.Background()
	const n, d, k = 200, 8, 2
	w := seedWorld(t, st, "late", n, d, k, 5)
	w.label(t, st, 0, 60)
	r, err := NewRunner(st, nil, testConfig(), Options{ID: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Train(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// A worker's transaction takes the next latent id and commits late; another latent commits after it at once.
	h := strings.Repeat("ab", 32)
	if _, err := st.WriteImages(ctx, []store.Image{{Hash: h, Source: "synthetic/late.png", ObjectKey: "images/ab/" + h,
		Size: 100, Width: 4, Height: 4, ContentType: "image/png"}}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, st.Config().PGURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	z := make([]float32, d)
	z[0] = 4
	if _, err := tx.Exec(ctx, `INSERT INTO latents (model_id, z_dim, image_hash, z_sem, x_t, x_t_shape, x_t_dtype)
VALUES ('late', $1, $2, $3, $4, '{1}', 'float32')`, d, h, z, store.EncodeFloat32s([]float32{0})); err != nil {
		t.Fatal(err)
	}
	w.add(t, st, 1, 6)
	// The late one commits while the pass writes its last page (n+1 visible latents, pages of 128).
	pages := 0
	r.beforeWrite = func(string) error {
		if pages++; pages == 2 {
			return tx.Commit(ctx)
		}
		return nil
	}
	w.label(t, st, 60, 120)
	sum, err := r.Train(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range sum.Results {
		if res.Version != 2 || !res.Promoted {
			t.Fatalf("retraining %s: %+v, want version 2 promoted", res.Attribute, res)
		}
		got, err := st.LatentsByAttribute(ctx, w.model, res.Attribute, 0, 10*n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n+2 {
			t.Errorf("%s: version 2 promoted with %d latents scored, want all %d", res.Attribute, len(got), n+2)
		}
	}
}

// One pass at a time scores a model: a model whose lock another pass holds is counted busy and left alone.
func TestScoreLeavesABusyModel(t *testing.T) {
	t.Parallel()
	st := storetest.Fresh(t)
	ctx := context.Background()
	seedWorld(t, st, "busy", 50, 4, 2, 7)
	seedWorld(t, st, "free", 50, 4, 2, 8)
	r, err := NewRunner(st, nil, testConfig(), Options{ID: "t"})
	if err != nil {
		t.Fatal(err)
	}
	err = st.WithLock(ctx, "score/busy", func(ctx context.Context) error {
		sum, err := r.Score(ctx, "")
		if err != nil {
			return err
		}
		if sum.Busy != 1 || sum.Models != 1 || sum.Sketches != 50 {
			t.Errorf("scoring beside a pass that holds model busy: %+v, want busy 1 and free's 50 sketches", sum)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := r.Score(ctx, "busy"); err != nil || sum.Busy != 0 || sum.Sketches != 50 {
		t.Errorf("scoring busy once free: %+v, %v; want its 50 sketches", sum, err)
	}
}
