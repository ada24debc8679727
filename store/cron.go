package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"dae/schema"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// What the scheduled jobs (package cron) need: advisory locks and per-tick run records, training data, classifier
// versions with their normalisation, bulk scoring, regeneration definitions and their runs.

// ErrLocked is returned by WithLock when another session holds the lock.
var ErrLocked = errors.New("locked by another session")

// WithLock runs fn while holding a Postgres session-level advisory lock named name, taken with
// pg_try_advisory_lock so that a second caller does not wait but gets ErrLocked. The lock lives on a connection of
// its own, outside the pool, held for the duration; fn uses the pool as usual (locks held from the pool could take
// every pooled connection and leave fn waiting for one for ever). A session lock (rather than a transaction-level
// one) keeps no transaction open during long work, and Postgres drops it if the process dies.
func (s *Store) WithLock(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("store: lock %s: %w", name, err)
	}
	defer func() {
		// Closing the session releases the lock, whether or not ctx was cancelled.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, "dae/"+name).Scan(&got); err != nil {
		return fmt.Errorf("store: lock %s: %w", name, err)
	}
	if !got {
		return fmt.Errorf("store: lock %s: %w", name, ErrLocked)
	}
	return fn(ctx)
}

// CronRun is one run of a scheduled job for one tick.
type CronRun struct {
	ID         int64
	Job        string
	Tick       time.Time
	Attempts   int
	Runner     string
	StartedAt  time.Time
	FinishedAt *time.Time
	Error      string
	Summary    json.RawMessage
}

// ClaimCronRun records that runner starts job for tick and reports whether the caller should run it: true when no
// run of that tick exists, or one exists unfinished (its runner died: callers hold the job's lock, see WithLock);
// false when the tick has already been run.
func (s *Store) ClaimCronRun(ctx context.Context, job string, tick time.Time, runner string) (id int64, claimed bool, err error) {
	if err := schema.CheckName(job); err != nil {
		return 0, false, fmt.Errorf("store: claim cron run: job: %w", err)
	}
	err = s.pool.QueryRow(ctx, `
INSERT INTO cron_runs (job, tick, runner) VALUES ($1, $2, $3)
ON CONFLICT (job, tick) DO UPDATE SET attempts = cron_runs.attempts + 1, runner = EXCLUDED.runner, started_at = now()
    WHERE cron_runs.finished_at IS NULL
RETURNING id`, job, tick, runner).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: claim cron run %s at %s: %w", job, tick.Format(time.RFC3339), err)
	}
	return id, true, nil
}

// AbandonedCronRuns lists the job's unfinished runs other than tick's, oldest first. Called under the job's lock
// (WithLock), these are runs whose runner died mid-run: a live runner would hold the lock.
func (s *Store) AbandonedCronRuns(ctx context.Context, job string, tick time.Time) ([]CronRun, error) {
	rows, err := s.pool.Query(ctx, `
SELECT id, job, tick, attempts, runner, started_at, finished_at, COALESCE(error, ''), summary FROM cron_runs
WHERE job = $1 AND tick <> $2 AND finished_at IS NULL ORDER BY tick`, job, tick)
	if err != nil {
		return nil, fmt.Errorf("store: abandoned runs of %s: %w", job, err)
	}
	runs, err := pgx.CollectRows(rows, scanCronRun)
	if err != nil {
		return nil, fmt.Errorf("store: abandoned runs of %s: %w", job, err)
	}
	return runs, nil
}

// FinishCronRun marks a claimed run finished, with its summary (a JSON object; nil means {}) and error ("" when it
// succeeded). A failed tick is finished too: it is not retried, the next tick is.
func (s *Store) FinishCronRun(ctx context.Context, id int64, summary json.RawMessage, runErr string) error {
	if summary == nil {
		summary = json.RawMessage("{}")
	}
	_, err := s.pool.Exec(ctx, `UPDATE cron_runs SET finished_at = now(), summary = $2, error = NULLIF($3, '') WHERE id = $1`,
		id, summary, runErr)
	if err != nil {
		return fmt.Errorf("store: finish cron run %d: %w", id, err)
	}
	return nil
}

// CronRuns lists a job's runs, newest first; job "" means every job.
func (s *Store) CronRuns(ctx context.Context, job string, limit int) ([]CronRun, error) {
	rows, err := s.pool.Query(ctx, `
SELECT id, job, tick, attempts, runner, started_at, finished_at, COALESCE(error, ''), summary FROM cron_runs
WHERE $1 = '' OR job = $1 ORDER BY started_at DESC, id DESC LIMIT $2`, job, limit)
	if err != nil {
		return nil, fmt.Errorf("store: cron runs of %q: %w", job, err)
	}
	runs, err := pgx.CollectRows(rows, scanCronRun)
	if err != nil {
		return nil, fmt.Errorf("store: cron runs of %q: %w", job, err)
	}
	return runs, nil
}

func scanCronRun(r pgx.CollectableRow) (CronRun, error) {
	var c CronRun
	err := r.Scan(&c.ID, &c.Job, &c.Tick, &c.Attempts, &c.Runner, &c.StartedAt, &c.FinishedAt, &c.Error, &c.Summary)
	return c, err
}

// LabelSet describes the current labels of one attribute over the latents of one model.
type LabelSet struct {
	ModelID   string
	ZDim      int
	Attribute string
	Positives int
	Negatives int
	// Fingerprint changes whenever the labelled latents or their labels change; when there are no negative labels
	// (positive-unlabelled training) it also covers the model's other latents, which serve as unlabelled data.
	Fingerprint string
}

// LabelSets lists, for every model (or only modelID), each attribute with at least one label on one of the model's
// latents. The label that counts for an image and attribute is the newest over all sources (view current_labels).
func (s *Store) LabelSets(ctx context.Context, modelID string) ([]LabelSet, error) {
	rows, err := s.pool.Query(ctx, `
SELECT l.model_id, min(l.z_dim), lab.attribute, count(*) FILTER (WHERE lab.value), count(*) FILTER (WHERE NOT lab.value),
    md5(string_agg(l.id::text || CASE WHEN lab.value THEN '+' ELSE '-' END, ',' ORDER BY l.id))
FROM current_labels lab JOIN latents l ON l.image_hash = lab.image_hash
WHERE $1 = '' OR l.model_id = $1
GROUP BY l.model_id, lab.attribute
ORDER BY l.model_id, lab.attribute`, modelID)
	if err != nil {
		return nil, fmt.Errorf("store: label sets of model %q: %w", modelID, err)
	}
	sets, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LabelSet, error) {
		var ls LabelSet
		err := r.Scan(&ls.ModelID, &ls.ZDim, &ls.Attribute, &ls.Positives, &ls.Negatives, &ls.Fingerprint)
		return ls, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: label sets of model %q: %w", modelID, err)
	}
	latentState := map[string]string{}
	for i := range sets {
		ls := &sets[i]
		if ls.Negatives > 0 {
			continue
		}
		st, ok := latentState[ls.ModelID]
		if !ok {
			var n, maxID int64
			if err := s.pool.QueryRow(ctx, `SELECT count(*), COALESCE(max(id), 0) FROM latents WHERE model_id = $1`, ls.ModelID).
				Scan(&n, &maxID); err != nil {
				return nil, fmt.Errorf("store: latents of model %s: %w", ls.ModelID, err)
			}
			st = fmt.Sprintf("/n%d/max%d", n, maxID)
			latentState[ls.ModelID] = st
		}
		ls.Fingerprint += st
	}
	return sets, nil
}

// LatentZ is a latent's id, image and z_sem, with a label when it comes from training data.
type LatentZ struct {
	ID        int64
	ImageHash string
	ZSem      []float32
	Label     bool
}

func collectLatentZ(rows pgx.Rows) ([]LatentZ, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (LatentZ, error) {
		var l LatentZ
		err := r.Scan(&l.ID, &l.ImageHash, &l.ZSem, &l.Label)
		return l, err
	})
}

// LabelledLatents returns the model's latents that have a current label for the attribute, with the label, in id
// order.
func (s *Store) LabelledLatents(ctx context.Context, modelID, attribute string) ([]LatentZ, error) {
	rows, err := s.pool.Query(ctx, `
SELECT l.id, l.image_hash, l.z_sem, lab.value
FROM current_labels lab JOIN latents l ON l.image_hash = lab.image_hash
WHERE l.model_id = $1 AND lab.attribute = $2
ORDER BY l.id`, modelID, attribute)
	if err != nil {
		return nil, fmt.Errorf("store: labelled latents (model %s, attribute %s): %w", modelID, attribute, err)
	}
	ls, err := collectLatentZ(rows)
	if err != nil {
		return nil, fmt.Errorf("store: labelled latents (model %s, attribute %s): %w", modelID, attribute, err)
	}
	return ls, nil
}

// SampleLatents returns up to n of the model's latents in a fixed pseudo-random order (by a hash of the id), so
// repeated calls on unchanged data return the same sample. With exceptPositive set, latents labelled positive for
// that attribute are left out (the unlabelled pool of positive-unlabelled training). Label is false.
func (s *Store) SampleLatents(ctx context.Context, modelID string, n int, exceptPositive string) ([]LatentZ, error) {
	rows, err := s.pool.Query(ctx, `
WITH ids AS (
    SELECT l.id FROM latents l
    WHERE l.model_id = $1 AND ($3 = '' OR NOT EXISTS (
        SELECT 1 FROM current_labels c WHERE c.image_hash = l.image_hash AND c.attribute = $3 AND c.value))
    ORDER BY hashint8(l.id), l.id LIMIT $2
)
SELECT l.id, l.image_hash, l.z_sem, false FROM latents l JOIN ids USING (id) ORDER BY l.id`, modelID, n, exceptPositive)
	if err != nil {
		return nil, fmt.Errorf("store: sample of %d latents of model %s: %w", n, modelID, err)
	}
	ls, err := collectLatentZ(rows)
	if err != nil {
		return nil, fmt.Errorf("store: sample of %d latents of model %s: %w", n, modelID, err)
	}
	return ls, nil
}

// ClassifierVersion is a stored classifier with the normalisation it was trained with and the fingerprint of its
// training data.
type ClassifierVersion struct {
	Classifier
	Mean, Std []float32 // per-dimension z_sem normalisation; nil when not recorded
	Pattern   []float32 // the direction manipulation moves along (diffae.Classifier.Pattern); nil when not recorded
	TrainedOn string    // LabelSet.Fingerprint of the training data
	// Pending: chosen to replace the promoted version once a scoring pass has scored every latent with it
	// (PromotePending); never together with Promoted.
	Pending bool
}

// AddClassifierVersion stores c as the next version for its model and attribute. If c.Promoted, it replaces the
// promoted version in the same transaction; if c.Pending, the promoted one stays until PromotePending. Either way
// an older pending version stops being pending: a version trained on newer labels, promoted, pending or rejected,
// supersedes it. It returns the stored row (id, version, time filled in).
func (s *Store) AddClassifierVersion(ctx context.Context, c ClassifierVersion) (ClassifierVersion, error) {
	if err := schema.CheckName(c.Attribute); err != nil {
		return c, fmt.Errorf("store: add classifier: attribute: %w", err)
	}
	if (c.Mean == nil) != (c.Std == nil) {
		return c, fmt.Errorf("store: add classifier (model %s, attribute %s): mean and std must both be set or both nil", c.ModelID, c.Attribute)
	}
	if c.Promoted && c.Pending {
		return c, fmt.Errorf("store: add classifier (model %s, attribute %s): promoted and pending at once", c.ModelID, c.Attribute)
	}
	if c.Metrics == nil {
		c.Metrics = json.RawMessage("{}")
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The lock on the model row serialises version numbering per model.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM models WHERE id = $1 FOR NO KEY UPDATE`, c.ModelID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE classifiers SET promoted = false, pending = false
WHERE model_id = $1 AND attribute = $2 AND (promoted AND $3 OR pending)`, c.ModelID, c.Attribute, c.Promoted); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
INSERT INTO classifiers (model_id, z_dim, attribute, version, weights, bias, metrics, promoted, z_mean, z_std, trained_on, pattern, pending)
SELECT $1, $2, $3, COALESCE(max(version), 0) + 1, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM classifiers WHERE model_id = $1 AND attribute = $3
RETURNING id, version, trained_at`, c.ModelID, len(c.Weights), c.Attribute, c.Weights, c.Bias, c.Metrics, c.Promoted,
			c.Mean, c.Std, c.TrainedOn, c.Pattern, c.Pending).Scan(&c.ID, &c.Version, &c.TrainedAt)
	})
	if err != nil {
		return c, fmt.Errorf("store: add classifier (model %s, attribute %s): %w", c.ModelID, c.Attribute, err)
	}
	return c, nil
}

const classifierColumns = `id, model_id, attribute, version, weights, bias, metrics, promoted, trained_at, z_mean, z_std, trained_on, pattern, pending`

func scanClassifier(r pgx.Row) (ClassifierVersion, error) {
	var c ClassifierVersion
	err := r.Scan(&c.ID, &c.ModelID, &c.Attribute, &c.Version, &c.Weights, &c.Bias, &c.Metrics, &c.Promoted, &c.TrainedAt,
		&c.Mean, &c.Std, &c.TrainedOn, &c.Pattern, &c.Pending)
	return c, err
}

// ClassifierHistory lists every version of a model's attribute classifier, newest first.
func (s *Store) ClassifierHistory(ctx context.Context, modelID, attribute string) ([]ClassifierVersion, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+classifierColumns+` FROM classifiers
WHERE model_id = $1 AND attribute = $2 ORDER BY version DESC`, modelID, attribute)
	if err != nil {
		return nil, fmt.Errorf("store: classifier history (model %s, attribute %s): %w", modelID, attribute, err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ClassifierVersion, error) { return scanClassifier(r) })
	if err != nil {
		return nil, fmt.Errorf("store: classifier history (model %s, attribute %s): %w", modelID, attribute, err)
	}
	return cs, nil
}

// PromotedClassifiers lists the promoted classifier of every attribute of a model ("" means every model), by
// attribute.
func (s *Store) PromotedClassifiers(ctx context.Context, modelID string) ([]ClassifierVersion, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+classifierColumns+` FROM classifiers
WHERE promoted AND ($1 = '' OR model_id = $1) ORDER BY model_id, attribute`, modelID)
	if err != nil {
		return nil, fmt.Errorf("store: promoted classifiers of model %q: %w", modelID, err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ClassifierVersion, error) { return scanClassifier(r) })
	if err != nil {
		return nil, fmt.Errorf("store: promoted classifiers of model %q: %w", modelID, err)
	}
	return cs, nil
}

// ClassifiersToScore lists a model's promoted and pending classifiers, by attribute and version: the ones a
// scoring pass scores every latent with.
func (s *Store) ClassifiersToScore(ctx context.Context, modelID string) ([]ClassifierVersion, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+classifierColumns+` FROM classifiers
WHERE (promoted OR pending) AND model_id = $1 ORDER BY attribute, version`, modelID)
	if err != nil {
		return nil, fmt.Errorf("store: classifiers to score of model %s: %w", modelID, err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ClassifierVersion, error) { return scanClassifier(r) })
	if err != nil {
		return nil, fmt.Errorf("store: classifiers to score of model %s: %w", modelID, err)
	}
	return cs, nil
}

// PromotePending promotes those of the given classifiers that are still pending, each replacing its attribute's
// promoted version, all in one transaction, and returns how many it promoted. A scoring pass calls it once every
// latent it saw has a score from each of them.
func (s *Store) PromotePending(ctx context.Context, modelID string, ids []int64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n = 0
		// The model row's lock, as AddClassifierVersion takes it: a version added meanwhile cannot clear a pending
		// flag between the demotion and the promotion below (which would leave no version promoted).
		if _, err := tx.Exec(ctx, `SELECT 1 FROM models WHERE id = $1 FOR NO KEY UPDATE`, modelID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
UPDATE classifiers o SET promoted = false FROM classifiers p
WHERE p.id = ANY ($2) AND p.pending AND p.model_id = $1 AND o.model_id = p.model_id AND o.attribute = p.attribute AND o.promoted`,
			modelID, ids); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE classifiers SET promoted = true, pending = false WHERE id = ANY ($2) AND pending AND model_id = $1`,
			modelID, ids)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: promote pending classifiers of model %s: %w", modelID, err)
	}
	return n, nil
}

// PromotedClassifierVersion returns the promoted classifier of one attribute of a model with its normalisation.
func (s *Store) PromotedClassifierVersion(ctx context.Context, modelID, attribute string) (ClassifierVersion, error) {
	c, err := scanClassifier(s.pool.QueryRow(ctx, `SELECT `+classifierColumns+` FROM classifiers
WHERE promoted AND model_id = $1 AND attribute = $2`, modelID, attribute))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("store: promoted classifier (model %s, attribute %s): %w", modelID, attribute, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("store: promoted classifier (model %s, attribute %s): %w", modelID, attribute, err)
	}
	return c, nil
}

// ModelsWithLatents lists the ids of models that have latents.
func (s *Store) ModelsWithLatents(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT m.id FROM models m WHERE EXISTS (SELECT 1 FROM latents l WHERE l.model_id = m.id) ORDER BY m.id`)
	if err != nil {
		return nil, fmt.Errorf("store: models with latents: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("store: models with latents: %w", err)
	}
	return ids, nil
}

// UnscoredLatent is a latent a scoring pass has work for: the classifiers (of those asked about) that have already
// scored it, and whether it has a sketch.
type UnscoredLatent struct {
	LatentZ
	ScoredBy []int64
	Sketched bool
}

// UnscoredLatents returns up to limit of the model's latents with id > after, in id order, that lack a score from
// at least one of the classifiers or lack a sketch, with what they have: the next page of an incremental scoring
// pass, which then computes and writes only what is missing.
func (s *Store) UnscoredLatents(ctx context.Context, modelID string, classifierIDs []int64, after int64, limit int) ([]UnscoredLatent, error) {
	if classifierIDs == nil {
		classifierIDs = []int64{}
	}
	rows, err := s.pool.Query(ctx, `
SELECT l.id, l.image_hash, l.z_sem, sc.ids, EXISTS (SELECT 1 FROM latent_sketches k WHERE k.latent_id = l.id)
FROM latents l
CROSS JOIN LATERAL (SELECT COALESCE(array_agg(s.classifier_id), '{}') AS ids FROM attribute_scores s
                    WHERE s.latent_id = l.id AND s.classifier_id = ANY ($2)) sc
WHERE l.model_id = $1 AND l.id > $3
  AND (NOT EXISTS (SELECT 1 FROM latent_sketches k WHERE k.latent_id = l.id)
       OR cardinality(sc.ids) < cardinality($2::bigint[]))
ORDER BY l.id LIMIT $4`, modelID, classifierIDs, after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: unscored latents of model %s after %d: %w", modelID, after, err)
	}
	ls, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UnscoredLatent, error) {
		var l UnscoredLatent
		err := r.Scan(&l.ID, &l.ImageHash, &l.ZSem, &l.ScoredBy, &l.Sketched)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: unscored latents of model %s after %d: %w", modelID, after, err)
	}
	return ls, nil
}

// SketchBits is the length of a latent sketch in bits.
const SketchBits = 256

// Sketch is a latent's z_sem sketch (see the latent_sketches table) and its z_sem's norm.
type Sketch struct {
	LatentID int64
	ModelID  string
	Bits     []byte // SketchBits/8 bytes, most significant bit first
	Norm     float32
}

// WriteScoresAndSketches records scores and sketches in one transaction, each COPYed into a temporary table and
// then upserted, so a page of a scoring pass is all or nothing and re-running it changes nothing.
func (s *Store) WriteScoresAndSketches(ctx context.Context, scores []Score, sketches []Sketch) error {
	for i := range sketches {
		if len(sketches[i].Bits) != SketchBits/8 || math.IsNaN(float64(sketches[i].Norm)) {
			return fmt.Errorf("store: sketch %d (latent %d): want %d bytes and a norm", i, sketches[i].LatentID, SketchBits/8)
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if len(scores) > 0 {
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE scores_in (latent_id bigint, classifier_id bigint, score real) ON COMMIT DROP`); err != nil {
				return fmt.Errorf("temp table: %w", err)
			}
			rows := pgx.CopyFromSlice(len(scores), func(i int) ([]any, error) {
				return []any{scores[i].LatentID, scores[i].ClassifierID, scores[i].Score}, nil
			})
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"scores_in"}, []string{"latent_id", "classifier_id", "score"}, rows); err != nil {
				return fmt.Errorf("copy scores: %w", err)
			}
			if _, err := tx.Exec(ctx, `
INSERT INTO attribute_scores (latent_id, classifier_id, attribute, score)
SELECT i.latent_id, i.classifier_id, c.attribute, i.score FROM scores_in i JOIN classifiers c ON c.id = i.classifier_id
ON CONFLICT (latent_id, classifier_id) DO UPDATE SET score = EXCLUDED.score, scored_at = now()`); err != nil {
				return fmt.Errorf("upsert scores: %w", err)
			}
		}
		if len(sketches) > 0 {
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE sketches_in (latent_id bigint, model_id text, sketch bit(256), norm real) ON COMMIT DROP`); err != nil {
				return fmt.Errorf("temp table: %w", err)
			}
			rows := pgx.CopyFromSlice(len(sketches), func(i int) ([]any, error) {
				k := &sketches[i]
				return []any{k.LatentID, k.ModelID, pgtype.Bits{Bytes: k.Bits, Len: SketchBits, Valid: true}, k.Norm}, nil
			})
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"sketches_in"}, []string{"latent_id", "model_id", "sketch", "norm"}, rows); err != nil {
				return fmt.Errorf("copy sketches: %w", err)
			}
			if _, err := tx.Exec(ctx, `
INSERT INTO latent_sketches (latent_id, model_id, sketch, norm) SELECT latent_id, model_id, sketch, norm FROM sketches_in
ON CONFLICT (latent_id) DO UPDATE SET sketch = EXCLUDED.sketch, norm = EXCLUDED.norm`); err != nil {
				return fmt.Errorf("upsert sketches: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: write %d scores and %d sketches: %w", len(scores), len(sketches), err)
	}
	return nil
}

// PruneScores deletes the scores of a model's classifiers that are no longer promoted (pending ones keep theirs),
// for attributes whose promoted classifier has scored every latent a scoring pass has taken (every latent with a
// sketch: a pass writes a latent's sketch with its scores, and skips corrupt latents); the classifiers themselves
// stay, as history. It returns how many scores it deleted.
func (s *Store) PruneScores(ctx context.Context, modelID string) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
WITH done AS (
    SELECT p.attribute FROM classifiers p
    WHERE p.model_id = $1 AND p.promoted
      AND (SELECT count(*) FROM attribute_scores s WHERE s.classifier_id = p.id) >= (SELECT count(*) FROM latent_sketches WHERE model_id = $1)
)
DELETE FROM attribute_scores s USING classifiers c
WHERE s.classifier_id = c.id AND c.model_id = $1 AND NOT c.promoted AND NOT c.pending AND c.attribute IN (SELECT attribute FROM done)`, modelID)
	if err != nil {
		return 0, fmt.Errorf("store: prune scores of model %s: %w", modelID, err)
	}
	return tag.RowsAffected(), nil
}

// Regeneration is a saved regeneration definition: which latents (the promoted classifier of Attribute scored them
// within [MinScore, MaxScore], optionally only images of Batch, at most MaxImages, best first) and what to do with
// each (Op decode, or manipulate along OpAttribute by Scale or to Target), with Steps DDIM steps.
type Regeneration struct {
	ID          string
	ModelID     string
	Attribute   string
	MinScore    float32
	MaxScore    float32
	BatchID     string // "" for any batch
	MaxImages   int
	Op          schema.Kind // schema.KindDecode or schema.KindManipulate
	OpAttribute string
	Scale       float64
	Target      string // instead of Scale: a logit target of the classifier (schema.ManipulateTargets)
	Rounds      int    // with Target: rounds of the refined edit (0 and 1: one edit; schema.Manipulate.Rounds)
	Steps       int
	Enabled     bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Validate checks a definition before it is saved, naming the bad field.
func (r *Regeneration) Validate() error {
	if err := schema.CheckName(r.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if err := schema.CheckName(r.ModelID); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if err := schema.CheckName(r.Attribute); err != nil {
		return fmt.Errorf("attribute: %w", err)
	}
	if r.BatchID != "" {
		if err := schema.CheckName(r.BatchID); err != nil {
			return fmt.Errorf("batch: %w", err)
		}
	}
	if !(r.MinScore >= 0 && r.MinScore <= r.MaxScore && r.MaxScore <= 1) {
		return fmt.Errorf("scores: want 0 <= min (%g) <= max (%g) <= 1", r.MinScore, r.MaxScore)
	}
	if r.MaxImages < 1 || r.MaxImages > 100000 {
		return fmt.Errorf("max images %d outside 1..100000", r.MaxImages)
	}
	// The job message's own validation covers op, attribute, scale and steps.
	probe := schema.Regenerate{Header: schema.Header{V: schema.Version, Kind: schema.KindRegenerate, Model: r.ModelID},
		ImageHash: "0000000000000000000000000000000000000000000000000000000000000000", Op: r.Op,
		Attribute: r.OpAttribute, Scale: r.Scale, Target: r.Target, Rounds: r.Rounds, Steps: r.Steps, Generation: 1, Query: r.ID}
	return probe.Validate()
}

// SaveRegeneration creates or replaces a definition.
func (s *Store) SaveRegeneration(ctx context.Context, r Regeneration) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("store: save regeneration %q: %w", r.ID, err)
	}
	var opAttr, target *string
	var scale *float64
	if r.Op == schema.KindManipulate {
		opAttr = &r.OpAttribute
		if r.Target != "" {
			target = &r.Target
		} else {
			scale = &r.Scale
		}
	}
	var batch *string
	if r.BatchID != "" {
		batch = &r.BatchID
	}
	_, err := s.pool.Exec(ctx, `
INSERT INTO regenerations (id, model_id, attribute, min_score, max_score, batch_id, max_images, op, op_attribute, scale, steps, enabled, target, rounds)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (id) DO UPDATE SET model_id = EXCLUDED.model_id, attribute = EXCLUDED.attribute, min_score = EXCLUDED.min_score,
    max_score = EXCLUDED.max_score, batch_id = EXCLUDED.batch_id, max_images = EXCLUDED.max_images, op = EXCLUDED.op,
    op_attribute = EXCLUDED.op_attribute, scale = EXCLUDED.scale, steps = EXCLUDED.steps, enabled = EXCLUDED.enabled,
    target = EXCLUDED.target, rounds = EXCLUDED.rounds, updated_at = now()`,
		r.ID, r.ModelID, r.Attribute, r.MinScore, r.MaxScore, batch, r.MaxImages, string(r.Op), opAttr, scale, r.Steps, r.Enabled,
		target, max(r.Rounds, 1))
	if err != nil {
		return fmt.Errorf("store: save regeneration %s: %w", r.ID, err)
	}
	return nil
}

const regenerationColumns = `id, model_id, attribute, min_score, max_score, COALESCE(batch_id, ''), max_images, op,
    COALESCE(op_attribute, ''), COALESCE(scale, 0), steps, enabled, created_at, updated_at, COALESCE(target, ''), rounds`

func scanRegeneration(r pgx.Row) (Regeneration, error) {
	var g Regeneration
	var op string
	err := r.Scan(&g.ID, &g.ModelID, &g.Attribute, &g.MinScore, &g.MaxScore, &g.BatchID, &g.MaxImages, &op,
		&g.OpAttribute, &g.Scale, &g.Steps, &g.Enabled, &g.CreatedAt, &g.UpdatedAt, &g.Target, &g.Rounds)
	g.Op = schema.Kind(op)
	return g, err
}

// GetRegeneration reads a definition. A missing one matches ErrNotFound.
func (s *Store) GetRegeneration(ctx context.Context, id string) (Regeneration, error) {
	g, err := scanRegeneration(s.pool.QueryRow(ctx, `SELECT `+regenerationColumns+` FROM regenerations WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Regeneration{}, fmt.Errorf("store: regeneration %s: %w", id, err)
	}
	return g, nil
}

// Regenerations lists the definitions by id; enabledOnly leaves out disabled ones.
func (s *Store) Regenerations(ctx context.Context, enabledOnly bool) ([]Regeneration, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+regenerationColumns+` FROM regenerations WHERE enabled OR NOT $1 ORDER BY id`, enabledOnly)
	if err != nil {
		return nil, fmt.Errorf("store: regenerations: %w", err)
	}
	gs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Regeneration, error) { return scanRegeneration(r) })
	if err != nil {
		return nil, fmt.Errorf("store: regenerations: %w", err)
	}
	return gs, nil
}

// RegenerationRun is one tick of a definition. Its ID is the generation of the jobs it enqueues.
type RegenerationRun struct {
	ID             int64
	RegenerationID string
	Tick           time.Time
	ClassifierID   int64 // the promoted classifier that selected the latents; 0 when none
	Selected       int
	Enqueued       int
	CreatedAt      time.Time
	FinishedAt     *time.Time
}

// StartRegenerationRun returns the run of definition id for tick, creating it if needed: a tick run again (after a
// crash) gets the same run, hence the same generation and the same job dedup keys.
func (s *Store) StartRegenerationRun(ctx context.Context, id string, tick time.Time) (RegenerationRun, error) {
	run := RegenerationRun{RegenerationID: id, Tick: tick}
	var cid *int64
	var err error
	// A concurrent start of the same tick (two jobs naming the definition) that commits while this statement
	// waits leaves both branches empty (its row is not in this statement's snapshot): try again.
	for range 3 {
		err = s.pool.QueryRow(ctx, `
WITH ins AS (
    INSERT INTO regeneration_runs (regeneration_id, tick) VALUES ($1, $2)
    ON CONFLICT (regeneration_id, tick) DO NOTHING
    RETURNING id, classifier_id, selected, enqueued, created_at, finished_at
)
SELECT * FROM ins
UNION ALL
SELECT id, classifier_id, selected, enqueued, created_at, finished_at FROM regeneration_runs WHERE regeneration_id = $1 AND tick = $2
LIMIT 1`, id, tick).Scan(&run.ID, &cid, &run.Selected, &run.Enqueued, &run.CreatedAt, &run.FinishedAt)
		if !errors.Is(err, pgx.ErrNoRows) {
			break
		}
	}
	if err != nil {
		return run, fmt.Errorf("store: start regeneration %s at %s: %w", id, tick.Format(time.RFC3339), err)
	}
	if cid != nil {
		run.ClassifierID = *cid
	}
	return run, nil
}

// FinishRegenerationRun records what a run selected and enqueued.
func (s *Store) FinishRegenerationRun(ctx context.Context, run RegenerationRun) error {
	var cid *int64
	if run.ClassifierID != 0 {
		cid = &run.ClassifierID
	}
	_, err := s.pool.Exec(ctx, `
UPDATE regeneration_runs SET classifier_id = $2, selected = $3, enqueued = $4, finished_at = now() WHERE id = $1`,
		run.ID, cid, run.Selected, run.Enqueued)
	if err != nil {
		return fmt.Errorf("store: finish regeneration run %d: %w", run.ID, err)
	}
	return nil
}

// RegenerationRuns lists a definition's runs, newest first.
func (s *Store) RegenerationRuns(ctx context.Context, id string, limit int) ([]RegenerationRun, error) {
	rows, err := s.pool.Query(ctx, `
SELECT id, regeneration_id, tick, COALESCE(classifier_id, 0), selected, enqueued, created_at, finished_at
FROM regeneration_runs WHERE regeneration_id = $1 ORDER BY tick DESC LIMIT $2`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("store: runs of regeneration %s: %w", id, err)
	}
	runs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RegenerationRun, error) {
		var g RegenerationRun
		err := r.Scan(&g.ID, &g.RegenerationID, &g.Tick, &g.ClassifierID, &g.Selected, &g.Enqueued, &g.CreatedAt, &g.FinishedAt)
		return g, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: runs of regeneration %s: %w", id, err)
	}
	return runs, nil
}

// SelectForRegeneration runs a definition's selection: a fixed query over latest_attribute_scores whose only inputs
// are the definition's typed fields, bound as parameters. Best scores first, ties by latent id.
func (s *Store) SelectForRegeneration(ctx context.Context, r Regeneration) ([]AttributeHit, error) {
	rows, err := s.pool.Query(ctx, `
SELECT s.latent_id, s.image_hash, s.model_id, s.score, s.version, s.classifier_id FROM latest_attribute_scores s
WHERE s.model_id = $1 AND s.attribute = $2 AND s.score >= $3 AND s.score <= $4
  AND ($5 = '' OR EXISTS (SELECT 1 FROM batch_images b WHERE b.batch_id = $5 AND b.image_hash = s.image_hash))
ORDER BY s.score DESC, s.latent_id LIMIT $6`, r.ModelID, r.Attribute, r.MinScore, r.MaxScore, r.BatchID, r.MaxImages)
	if err != nil {
		return nil, fmt.Errorf("store: select for regeneration %s: %w", r.ID, err)
	}
	hits, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AttributeHit, error) {
		var h AttributeHit
		err := r.Scan(&h.LatentID, &h.ImageHash, &h.ModelID, &h.Score, &h.Version, &h.ClassifierID)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: select for regeneration %s: %w", r.ID, err)
	}
	return hits, nil
}

// ImageRef is an image found by hash or by source name.
type ImageRef struct {
	Hash   string
	Source string
}

// FindImages resolves references to images: a 64-digit hash names an image by content, anything else is matched
// against the source names the producer recorded, exactly or as the last path element. It returns, per reference,
// the images found (none, one, or several when a base name is ambiguous).
func (s *Store) FindImages(ctx context.Context, refs []string) (map[string][]ImageRef, error) {
	var hashes, names []string
	for _, r := range refs {
		if schema.CheckHash(r) == nil {
			hashes = append(hashes, r)
		} else {
			names = append(names, r)
		}
	}
	out := make(map[string][]ImageRef, len(refs))
	rows, err := s.pool.Query(ctx, `SELECT hash, source FROM images WHERE hash = ANY ($1)`, hashes)
	if err != nil {
		return nil, fmt.Errorf("store: find %d images by hash: %w", len(hashes), err)
	}
	var im ImageRef
	if _, err := pgx.ForEachRow(rows, []any{&im.Hash, &im.Source}, func() error {
		out[im.Hash] = append(out[im.Hash], im)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("store: find %d images by hash: %w", len(hashes), err)
	}
	if len(names) == 0 {
		return out, nil
	}
	// Base names are matched in Go over one scan of (hash, source): an index cannot serve a suffix match, and one
	// scan beats a query per name.
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	rows, err = s.pool.Query(ctx, `SELECT hash, source FROM images WHERE source <> ''`)
	if err != nil {
		return nil, fmt.Errorf("store: find %d images by source: %w", len(names), err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&im.Hash, &im.Source}, func() error {
		if want[im.Source] {
			out[im.Source] = append(out[im.Source], im)
		}
		if base := baseName(im.Source); base != im.Source && want[base] {
			out[base] = append(out[base], im)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("store: find %d images by source: %w", len(names), err)
	}
	return out, nil
}

// baseName is the part of a source name after its last '/' (paths, URLs and S3 keys all use '/').
func baseName(source string) string {
	for i := len(source) - 1; i >= 0; i-- {
		if source[i] == '/' {
			return source[i+1:]
		}
	}
	return source
}

// ImagesWithLatents returns the hashes, of those given, that have a latent under the model (any model when "").
func (s *Store) ImagesWithLatents(ctx context.Context, modelID string, hashes []string) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `
SELECT DISTINCT image_hash FROM latents WHERE image_hash = ANY ($1) AND ($2 = '' OR model_id = $2)`, hashes, modelID)
	if err != nil {
		return nil, fmt.Errorf("store: latents of %d images: %w", len(hashes), err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("store: latents of %d images: %w", len(hashes), err)
	}
	out := make(map[string]bool, len(found))
	for _, h := range found {
		out[h] = true
	}
	return out, nil
}

// Analyze refreshes the planner's statistics of the whole database (after a bulk load, before timing queries).
func (s *Store) Analyze(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `ANALYZE`); err != nil {
		return fmt.Errorf("store: analyze: %w", err)
	}
	return nil
}

// ImageAttribute is one attribute score of an image (view image_attributes).
type ImageAttribute struct {
	ModelID   string
	LatentID  int64
	Attribute string
	Score     float32
	Version   int
}

// ImageAttributes lists every promoted classifier's score of an image's latents, by model and attribute.
func (s *Store) ImageAttributes(ctx context.Context, imageHash string) ([]ImageAttribute, error) {
	rows, err := s.pool.Query(ctx, `
SELECT model_id, latent_id, attribute, score, classifier_version FROM image_attributes WHERE image_hash = $1
ORDER BY model_id, attribute`, imageHash)
	if err != nil {
		return nil, fmt.Errorf("store: attributes of image %s: %w", imageHash, err)
	}
	as, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ImageAttribute, error) {
		var a ImageAttribute
		err := r.Scan(&a.ModelID, &a.LatentID, &a.Attribute, &a.Score, &a.Version)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: attributes of image %s: %w", imageHash, err)
	}
	return as, nil
}

// NearestLatents lists the k latents of a model nearest to an image's latent by cosine similarity of z_sem. With
// candidates 0 it scans exactly (SQL function nearest_latents_exact); otherwise it ranks exactly only the
// candidates latents whose sketches are nearest (nearest_latents): approximate, and much faster on many latents.
func (s *Store) NearestLatents(ctx context.Context, modelID, imageHash string, k, candidates int) ([]Neighbour, error) {
	var rows pgx.Rows
	var err error
	if candidates == 0 {
		rows, err = s.pool.Query(ctx, `SELECT latent_id, image_hash, similarity FROM nearest_latents_exact($1, $2, $3)`, imageHash, modelID, k)
	} else {
		rows, err = s.pool.Query(ctx, `SELECT latent_id, image_hash, similarity FROM nearest_latents($1, $2, $3, $4)`, imageHash, modelID, k, candidates)
	}
	if err != nil {
		return nil, fmt.Errorf("store: nearest latents of image %s (model %s): %w", imageHash, modelID, err)
	}
	ns, err := pgx.CollectRows(rows, scanNeighbour)
	if err != nil {
		return nil, fmt.Errorf("store: nearest latents of image %s (model %s): %w", imageHash, modelID, err)
	}
	return ns, nil
}
