package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"dae/schema"

	"github.com/jackc/pgx/v5"
)

// Model is a trained model: its id, the length of its z_sem, its configuration (JSON) and where its checkpoint is.
type Model struct {
	ID            string
	ZDim          int
	Config        json.RawMessage // a JSON object; nil means {}
	CheckpointKey string          // "" when not uploaded
	CreatedAt     time.Time
}

// UpsertModel records a model, or updates its configuration and checkpoint key if it exists. Its z_dim cannot
// change once latents refer to it.
func (s *Store) UpsertModel(ctx context.Context, m Model) error {
	if err := schema.CheckName(m.ID); err != nil {
		return fmt.Errorf("store: upsert model: id: %w", err)
	}
	if m.CheckpointKey != "" {
		if err := schema.CheckObjectKey(m.CheckpointKey); err != nil {
			return fmt.Errorf("store: upsert model %s: %w", m.ID, err)
		}
	}
	cfg := m.Config
	if cfg == nil {
		cfg = json.RawMessage("{}")
	}
	_, err := s.pool.Exec(ctx, `
INSERT INTO models (id, z_dim, config, checkpoint_key) VALUES ($1, $2, $3, NULLIF($4, ''))
ON CONFLICT (id) DO UPDATE SET z_dim = EXCLUDED.z_dim, config = EXCLUDED.config,
    checkpoint_key = COALESCE(EXCLUDED.checkpoint_key, models.checkpoint_key)`,
		m.ID, m.ZDim, cfg, m.CheckpointKey)
	if err != nil {
		return fmt.Errorf("store: upsert model %s: %w", m.ID, err)
	}
	return nil
}

// GetModel reads a model. A missing one matches ErrNotFound.
func (s *Store) GetModel(ctx context.Context, id string) (Model, error) {
	m := Model{ID: id}
	var key *string
	err := s.pool.QueryRow(ctx, `SELECT z_dim, config, checkpoint_key, created_at FROM models WHERE id = $1`, id).
		Scan(&m.ZDim, &m.Config, &key, &m.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Model{}, fmt.Errorf("store: model %s: %w", id, err)
	}
	if key != nil {
		m.CheckpointKey = *key
	}
	return m, nil
}

// Batch is a user's bulk request; its jobs carry its id.
type Batch struct {
	ID         string
	Name       string
	Source     string
	CreatedAt  time.Time
	FinishedAt *time.Time
}

// CreateBatch records a batch; creating it again (a re-run of the same request) changes nothing.
func (s *Store) CreateBatch(ctx context.Context, b Batch) error {
	if err := schema.CheckName(b.ID); err != nil {
		return fmt.Errorf("store: create batch: id: %w", err)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO batches (id, name, source) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`,
		b.ID, b.Name, b.Source)
	if err != nil {
		return fmt.Errorf("store: create batch %s: %w", b.ID, err)
	}
	return nil
}

// FinishBatch stamps the batch's finish time, once.
func (s *Store) FinishBatch(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `UPDATE batches SET finished_at = now() WHERE id = $1 AND finished_at IS NULL`, id)
	if err != nil {
		return fmt.Errorf("store: finish batch %s: %w", id, err)
	}
	return nil
}

// Image is a source image, addressed by the SHA-256 of its bytes.
type Image struct {
	Hash          string
	Source        string // where it came from, for people
	ObjectKey     string // schema.ImageKey(Hash)
	Size          int64  // bytes
	Width, Height int    // 0 when not known yet
	ContentType   string
}

func (im *Image) check() error {
	if err := schema.CheckHash(im.Hash); err != nil {
		return err
	}
	return schema.CheckObjectKey(im.ObjectKey)
}

func nullInt(v int) *int {
	if v == 0 {
		return nil
	}
	return &v
}

// UpsertImage records an image unless it is known, and says whether this call inserted it. Width and height fill
// in when they were unknown.
func (s *Store) UpsertImage(ctx context.Context, im Image) (inserted bool, err error) {
	if err := im.check(); err != nil {
		return false, fmt.Errorf("store: upsert image %s: %w", im.Hash, err)
	}
	// xmax = 0 holds for a freshly inserted row and not for an updated one.
	err = s.pool.QueryRow(ctx, `
INSERT INTO images (hash, source, object_key, size_bytes, width, height, content_type)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (hash) DO UPDATE SET width = COALESCE(images.width, EXCLUDED.width),
    height = COALESCE(images.height, EXCLUDED.height)
RETURNING (xmax = 0)`, im.Hash, im.Source, im.ObjectKey, im.Size, nullInt(im.Width), nullInt(im.Height), im.ContentType).
		Scan(&inserted)
	if err != nil {
		return false, fmt.Errorf("store: upsert image %s: %w", im.Hash, err)
	}
	return inserted, nil
}

// WriteImages records many images at once (COPY into a temporary table, then ON CONFLICT DO NOTHING) and returns
// how many were new.
func (s *Store) WriteImages(ctx context.Context, ims []Image) (inserted int64, err error) {
	for i := range ims {
		if err := ims[i].check(); err != nil {
			return 0, fmt.Errorf("store: write images: image %d (%s): %w", i, ims[i].Hash, err)
		}
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
CREATE TEMP TABLE images_in (
    hash text, source text, object_key text, size_bytes bigint, width integer, height integer, content_type text
) ON COMMIT DROP`); err != nil {
			return fmt.Errorf("temp table: %w", err)
		}
		cols := []string{"hash", "source", "object_key", "size_bytes", "width", "height", "content_type"}
		rows := pgx.CopyFromSlice(len(ims), func(i int) ([]any, error) {
			im := &ims[i]
			return []any{im.Hash, im.Source, im.ObjectKey, im.Size, nullInt(im.Width), nullInt(im.Height), im.ContentType}, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"images_in"}, cols, rows); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		tag, err := tx.Exec(ctx, `
INSERT INTO images (hash, source, object_key, size_bytes, width, height, content_type)
SELECT hash, source, object_key, size_bytes, width, height, content_type FROM images_in
ON CONFLICT (hash) DO NOTHING`)
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		inserted = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: write %d images: %w", len(ims), err)
	}
	return inserted, nil
}

// Job states, as stored in jobs.state.
const (
	StateQueued  = "queued"
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed" // a permanent failure: bad input; not retried
	StateDead    = "dead"   // kept failing until JetStream gave up; its message is on the dead-letter stream
)

// RecordJob records a job as queued before it is published, keyed by its dedup key, and returns its row id and
// whether it is new. A job already recorded keeps its state, so re-running a producer does not reset finished work.
func (s *Store) RecordJob(ctx context.Context, j schema.Job) (id int64, inserted bool, err error) {
	payload, err := schema.Marshal(j)
	if err != nil {
		return 0, false, fmt.Errorf("store: record job: %w", err)
	}
	h := j.Meta()
	key := j.DedupKey()
	var batch *string
	if h.Batch != "" {
		batch = &h.Batch
	}
	err = s.pool.QueryRow(ctx, `
INSERT INTO jobs (batch_id, kind, dedup_key, payload) VALUES ($1, $2, $3, $4)
ON CONFLICT (dedup_key) DO UPDATE SET dedup_key = EXCLUDED.dedup_key
RETURNING id, (xmax = 0)`, batch, string(j.JobKind()), key, payload).Scan(&id, &inserted)
	if err != nil {
		return 0, false, fmt.Errorf("store: record job %s: %w", key, err)
	}
	return id, inserted, nil
}

// StartJob marks a job running and counts the attempt. It returns the job's state before the call, so a worker can
// see a redelivered job that is already done and just acknowledge it.
func (s *Store) StartJob(ctx context.Context, dedupKey string) (previous string, err error) {
	err = s.pool.QueryRow(ctx, `
UPDATE jobs j SET state = CASE WHEN old.state IN ('done', 'failed', 'dead') THEN old.state ELSE 'running' END,
    attempts = j.attempts + CASE WHEN old.state IN ('done', 'failed', 'dead') THEN 0 ELSE 1 END,
    started_at = COALESCE(j.started_at, now()), updated_at = now()
FROM (SELECT id, state FROM jobs WHERE dedup_key = $1 FOR UPDATE) old
WHERE j.id = old.id
RETURNING old.state`, dedupKey).Scan(&previous)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("store: start job %s: %w", dedupKey, err)
	}
	return previous, nil
}

// FinishJob moves a job to a final state: StateDone (reason ignored), StateFailed or StateDead (reason required).
// A job already done stays done (its results are stored): failing it is a no-op.
func (s *Store) FinishJob(ctx context.Context, dedupKey, state, reason string) error {
	switch state {
	case StateDone:
		reason = ""
	case StateFailed, StateDead:
		if reason == "" {
			return fmt.Errorf("store: finish job %s as %s: empty reason", dedupKey, state)
		}
	default:
		return fmt.Errorf("store: finish job %s: %q is not a final state", dedupKey, state)
	}
	reason = pgText(reason)
	var exists bool
	err := s.pool.QueryRow(ctx, `
WITH u AS (
	UPDATE jobs SET state = $2, last_error = COALESCE(NULLIF($3, ''), last_error), finished_at = now(), updated_at = now()
	WHERE dedup_key = $1 AND (state <> 'done' OR $2 = 'done')
	RETURNING 1)
SELECT EXISTS (SELECT 1 FROM jobs WHERE dedup_key = $1)`, dedupKey, state, reason).Scan(&exists)
	if err != nil {
		return fmt.Errorf("store: finish job %s as %s: %w", dedupKey, state, err)
	}
	if !exists {
		return fmt.Errorf("store: finish job %s: %w", dedupKey, ErrNotFound)
	}
	return nil
}

// RetryJob records a transient failure: the job goes back to queued with its reason, to be redelivered.
func (s *Store) RetryJob(ctx context.Context, dedupKey, reason string) error {
	tag, err := s.pool.Exec(ctx, `
UPDATE jobs SET state = 'queued', last_error = $2, updated_at = now()
WHERE dedup_key = $1 AND state IN ('queued', 'running')`, dedupKey, pgText(reason))
	if err != nil {
		return fmt.Errorf("store: retry job %s: %w", dedupKey, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: retry job %s: no queued or running job: %w", dedupKey, ErrNotFound)
	}
	return nil
}

// Label says whether an image has an attribute, according to a source (a data set, a person).
type Label struct {
	ImageHash string
	Attribute string
	Value     bool
	Source    string
}

// UpsertLabels records labels; a label from the same source for the same image and attribute is replaced, and when
// its value changes it counts as new (created_at is now), so that current_labels takes a source's correction over
// another source's label given in between.
func (s *Store) UpsertLabels(ctx context.Context, ls []Label) error {
	b := &pgx.Batch{}
	for _, l := range ls {
		if err := schema.CheckHash(l.ImageHash); err != nil {
			return fmt.Errorf("store: label: %w", err)
		}
		if err := schema.CheckName(l.Attribute); err != nil {
			return fmt.Errorf("store: label of %s: attribute: %w", l.ImageHash, err)
		}
		b.Queue(`
INSERT INTO labels (image_hash, attribute, value, source) VALUES ($1, $2, $3, $4)
ON CONFLICT (image_hash, attribute, source) DO UPDATE SET value = EXCLUDED.value,
    created_at = CASE WHEN labels.value IS DISTINCT FROM EXCLUDED.value THEN now() ELSE labels.created_at END`, l.ImageHash, l.Attribute, l.Value, l.Source)
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store: upsert %d labels: %w", len(ls), err)
	}
	return nil
}

// Classifier is a linear probe on normalised z_sem for one attribute of one model.
type Classifier struct {
	ID        int64 // set by the database
	ModelID   string
	Attribute string
	Version   int // set by the database: one more than the attribute's last version
	Weights   []float32
	Bias      float32
	Metrics   json.RawMessage // a JSON object, e.g. {"auroc":0.93}
	Promoted  bool
	TrainedAt time.Time
}

// AddClassifier stores a newly trained classifier as the next version for its model and attribute; if c.Promoted,
// it also becomes the promoted one (replacing the previous, and any pending version) in the same transaction. It
// is AddClassifierVersion without a normalisation, pattern or fingerprint. It returns the stored row.
func (s *Store) AddClassifier(ctx context.Context, c Classifier) (Classifier, error) {
	v, err := s.AddClassifierVersion(ctx, ClassifierVersion{Classifier: c})
	if err != nil {
		return Classifier{}, err
	}
	return v.Classifier, nil
}

// PromotedClassifier reads the promoted classifier of a model's attribute. None matches ErrNotFound.
func (s *Store) PromotedClassifier(ctx context.Context, modelID, attribute string) (Classifier, error) {
	c := Classifier{ModelID: modelID, Attribute: attribute, Promoted: true}
	err := s.pool.QueryRow(ctx, `
SELECT id, version, weights, bias, metrics, trained_at FROM classifiers
WHERE model_id = $1 AND attribute = $2 AND promoted`, modelID, attribute).
		Scan(&c.ID, &c.Version, &c.Weights, &c.Bias, &c.Metrics, &c.TrainedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Classifier{}, fmt.Errorf("store: promoted classifier (model %s, attribute %s): %w", modelID, attribute, err)
	}
	return c, nil
}

// Score is a classifier's probability that a latent has its attribute.
type Score struct {
	LatentID     int64
	ClassifierID int64
	Score        float32 // 0..1
}

// WriteScores records scores (COPY into a temporary table, then upsert): re-scoring with the same classifier
// replaces the old score.
func (s *Store) WriteScores(ctx context.Context, scores []Score) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE scores_in (latent_id bigint, classifier_id bigint, score real) ON COMMIT DROP`); err != nil {
			return fmt.Errorf("temp table: %w", err)
		}
		rows := pgx.CopyFromSlice(len(scores), func(i int) ([]any, error) {
			return []any{scores[i].LatentID, scores[i].ClassifierID, scores[i].Score}, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"scores_in"}, []string{"latent_id", "classifier_id", "score"}, rows); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		_, err := tx.Exec(ctx, `
INSERT INTO attribute_scores (latent_id, classifier_id, attribute, score)
SELECT i.latent_id, i.classifier_id, c.attribute, i.score FROM scores_in i JOIN classifiers c ON c.id = i.classifier_id
ON CONFLICT (latent_id, classifier_id) DO UPDATE SET score = EXCLUDED.score, scored_at = now()`)
		if err != nil {
			return fmt.Errorf("upsert: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: write %d scores: %w", len(scores), err)
	}
	return nil
}

// Output is a generated image (or frame set) and how it was made.
type Output struct {
	ID          int64 // set by the database
	Kind        schema.Kind
	DedupKey    string // the job's dedup key: one output per job effect
	ObjectKey   string // schema.OutputKey(Kind, DedupKey, ext)
	ContentType string
	Size        int64
	ModelID     string
	JobID       int64 // 0 when not made by a recorded job
	LatentIDs   []int64
	Params      json.RawMessage // a JSON object
	CreatedAt   time.Time
}

// UpsertOutput records an output by its dedup key; a redelivered job's output replaces the earlier record's object
// details. It returns the row id.
func (s *Store) UpsertOutput(ctx context.Context, o Output) (int64, error) {
	if err := schema.CheckObjectKey(o.ObjectKey); err != nil {
		return 0, fmt.Errorf("store: upsert output %s: %w", o.DedupKey, err)
	}
	params := o.Params
	if params == nil {
		params = json.RawMessage("{}")
	}
	latents := o.LatentIDs
	if latents == nil {
		latents = []int64{}
	}
	var jobID *int64
	if o.JobID != 0 {
		jobID = &o.JobID
	}
	var model *string
	if o.ModelID != "" {
		model = &o.ModelID
	}
	var id int64
	err := s.pool.QueryRow(ctx, `
INSERT INTO outputs (kind, dedup_key, object_key, content_type, size_bytes, model_id, job_id, latent_ids, params)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (dedup_key) DO UPDATE SET object_key = EXCLUDED.object_key, content_type = EXCLUDED.content_type,
    size_bytes = EXCLUDED.size_bytes
RETURNING id`, string(o.Kind), o.DedupKey, o.ObjectKey, o.ContentType, o.Size, model, jobID, latents, params).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("store: upsert output %s: %w", o.DedupKey, err)
	}
	return id, nil
}
