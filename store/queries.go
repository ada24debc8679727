package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// BatchStatus counts a batch's jobs (or all jobs) by state, with the rate of finished jobs.
type BatchStatus struct {
	Batch       string         // "" for all jobs
	Counts      map[string]int // by state; every state present
	Total       int
	Finished1m  int // jobs finished in the last minute
	FirstStart  *time.Time
	LastFinish  *time.Time
	CreatedAt   *time.Time // the batch's creation, nil for all jobs
	BatchFinish *time.Time
}

// Rate is the finished jobs per second over the last minute.
func (b BatchStatus) Rate() float64 { return float64(b.Finished1m) / 60 }

// Status counts jobs by state for one batch, or for all jobs when batch is "". An unknown batch matches ErrNotFound.
func (s *Store) Status(ctx context.Context, batch string) (BatchStatus, error) {
	st := BatchStatus{Batch: batch, Counts: map[string]int{}}
	for _, k := range []string{StateQueued, StateRunning, StateDone, StateFailed, StateDead} {
		st.Counts[k] = 0
	}
	if batch != "" {
		err := s.pool.QueryRow(ctx, `SELECT created_at, finished_at FROM batches WHERE id = $1`, batch).
			Scan(&st.CreatedAt, &st.BatchFinish)
		if errors.Is(err, pgx.ErrNoRows) {
			err = ErrNotFound
		}
		if err != nil {
			return st, fmt.Errorf("store: status of batch %s: %w", batch, err)
		}
	}
	rows, err := s.pool.Query(ctx, `
SELECT state, count(*), count(*) FILTER (WHERE finished_at > now() - interval '1 minute'), min(started_at), max(finished_at)
FROM jobs WHERE $1 = '' OR batch_id = $1 GROUP BY state`, batch)
	if err != nil {
		return st, fmt.Errorf("store: status of batch %q: %w", batch, err)
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var n, recent int
		var first, last *time.Time
		if err := rows.Scan(&state, &n, &recent, &first, &last); err != nil {
			return st, fmt.Errorf("store: status of batch %q: %w", batch, err)
		}
		st.Counts[state] = n
		st.Total += n
		st.Finished1m += recent
		if first != nil && (st.FirstStart == nil || first.Before(*st.FirstStart)) {
			st.FirstStart = first
		}
		if last != nil && (st.LastFinish == nil || last.After(*st.LastFinish)) {
			st.LastFinish = last
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("store: status of batch %q: %w", batch, err)
	}
	return st, nil
}

// AttributeHit is a latent whose promoted classifier score for an attribute passed a threshold.
type AttributeHit struct {
	LatentID  int64
	ImageHash string
	ModelID   string
	Score     float32
	Version   int // the classifier's version
	// ClassifierID is the classifier version's id (set by SelectForRegeneration).
	ClassifierID int64
}

// LatentsByAttribute lists latents scored at least minScore for the attribute by its promoted classifier, best
// first. modelID "" means any model.
func (s *Store) LatentsByAttribute(ctx context.Context, modelID, attribute string, minScore float32, limit int) ([]AttributeHit, error) {
	rows, err := s.pool.Query(ctx, `
SELECT latent_id, image_hash, model_id, score, version FROM latest_attribute_scores
WHERE attribute = $1 AND score >= $2 AND ($3 = '' OR model_id = $3)
ORDER BY score DESC, latent_id LIMIT $4`, attribute, minScore, modelID, limit)
	if err != nil {
		return nil, fmt.Errorf("store: latents with %s >= %g: %w", attribute, minScore, err)
	}
	hits, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AttributeHit, error) {
		var h AttributeHit
		err := r.Scan(&h.LatentID, &h.ImageHash, &h.ModelID, &h.Score, &h.Version)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: latents with %s >= %g: %w", attribute, minScore, err)
	}
	return hits, nil
}

// Neighbour is a latent near another in z_sem.
type Neighbour struct {
	LatentID   int64
	ImageHash  string
	Similarity float64 // cosine similarity of z_sem, -1..1
}

// Neighbours lists the k latents of the same model whose z_sem is most similar (cosine) to the image's. modelID ""
// means the model of the image's most recent latent. It is the exact scan of the SQL function
// nearest_latents_exact (see NearestLatents for the sketched candidates).
func (s *Store) Neighbours(ctx context.Context, modelID, imageHash string, k int) (model string, _ []Neighbour, _ error) {
	err := s.pool.QueryRow(ctx, `
SELECT model_id FROM latents WHERE image_hash = $1 AND ($2 = '' OR model_id = $2) ORDER BY created_at DESC LIMIT 1`,
		imageHash, modelID).Scan(&model)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return "", nil, fmt.Errorf("store: neighbours of image %s (model %q): %w", imageHash, modelID, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT latent_id, image_hash, similarity FROM nearest_latents_exact($1, $2, $3)`,
		imageHash, model, k)
	if err != nil {
		return model, nil, fmt.Errorf("store: neighbours of image %s (model %s): %w", imageHash, model, err)
	}
	ns, err := pgx.CollectRows(rows, scanNeighbour)
	if err != nil {
		return model, nil, fmt.Errorf("store: neighbours of image %s (model %s): %w", imageHash, model, err)
	}
	return model, ns, nil
}

// scanNeighbour reads a (latent_id, image_hash, similarity) row; a NULL similarity (a zero z_sem) reads as 0.
func scanNeighbour(r pgx.CollectableRow) (Neighbour, error) {
	var n Neighbour
	var sim *float64
	err := r.Scan(&n.LatentID, &n.ImageHash, &sim)
	if sim != nil {
		n.Similarity = *sim
	}
	return n, err
}

// Failure is a job that failed for good, with its reason.
type Failure struct {
	JobID     int64
	Kind      string
	DedupKey  string
	State     string // failed or dead
	Attempts  int
	Error     string
	UpdatedAt time.Time
}

// Failures lists a batch's failed and dead jobs, newest first. batch "" means all batches.
func (s *Store) Failures(ctx context.Context, batch string, limit int) ([]Failure, error) {
	rows, err := s.pool.Query(ctx, `
SELECT id, kind, dedup_key, state, attempts, COALESCE(last_error, ''), updated_at FROM jobs
WHERE state IN ('failed', 'dead') AND ($1 = '' OR batch_id = $1)
ORDER BY updated_at DESC, id DESC LIMIT $2`, batch, limit)
	if err != nil {
		return nil, fmt.Errorf("store: failures of batch %q: %w", batch, err)
	}
	fs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Failure, error) {
		var f Failure
		err := r.Scan(&f.JobID, &f.Kind, &f.DedupKey, &f.State, &f.Attempts, &f.Error, &f.UpdatedAt)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: failures of batch %q: %w", batch, err)
	}
	return fs, nil
}
