package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"dae/schema"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
)

// What producers and workers need beyond single-row upserts: set lookups for a chunk of an archive, failed jobs
// of messages that do not parse, and retries of failed jobs.

// KnownImages returns the subset of hashes that have an image row (and so an uploaded object).
func (s *Store) KnownImages(ctx context.Context, hashes []string) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT hash FROM images WHERE hash = ANY($1)`, hashes)
	if err != nil {
		return nil, fmt.Errorf("store: known images (%d hashes): %w", len(hashes), err)
	}
	return collectSet(rows, "known images")
}

// EncodedImages returns the subset of hashes the model already has a latent for.
func (s *Store) EncodedImages(ctx context.Context, modelID string, hashes []string) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT image_hash FROM latents WHERE model_id = $1 AND image_hash = ANY($2)`, modelID, hashes)
	if err != nil {
		return nil, fmt.Errorf("store: encoded images of model %s (%d hashes): %w", modelID, len(hashes), err)
	}
	return collectSet(rows, "encoded images")
}

func collectSet(rows pgx.Rows, what string) (map[string]bool, error) {
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	set := make(map[string]bool, len(keys))
	for _, k := range keys {
		set[k] = true
	}
	return set, nil
}

// JobStates returns the state of each recorded job among the dedup keys; keys with no job are absent.
func (s *Store) JobStates(ctx context.Context, keys []string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT dedup_key, state FROM jobs WHERE dedup_key = ANY($1)`, keys)
	if err != nil {
		return nil, fmt.Errorf("store: job states (%d keys): %w", len(keys), err)
	}
	defer rows.Close()
	out := make(map[string]string, len(keys))
	for rows.Next() {
		var k, st string
		if err := rows.Scan(&k, &st); err != nil {
			return nil, fmt.Errorf("store: job states: %w", err)
		}
		out[k] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: job states: %w", err)
	}
	return out, nil
}

// JobID returns the row id of the job with the dedup key. None matches ErrNotFound.
func (s *Store) JobID(ctx context.Context, dedupKey string) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT id FROM jobs WHERE dedup_key = $1`, dedupKey).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("store: job %s: %w", dedupKey, err)
	}
	return id, nil
}

// FailInvalidJob records a message that is not a valid job (it does not parse, or misses a field) as a failed job
// with its reason, so that it is visible in SQL like any other failure. The raw bytes are kept as a JSON string
// under "raw" (invalid UTF-8 is replaced). The batch is taken from the message when it names a known batch.
// Recording the same key twice keeps the first row.
func (s *Store) FailInvalidJob(ctx context.Context, kind schema.Kind, dedupKey string, raw []byte, batch, reason string) error {
	if err := s.insertRowless(ctx, StateFailed, kind, dedupKey, rawPayload(raw), batch, reason); err != nil {
		return fmt.Errorf("store: fail invalid job %s: %w", dedupKey, err)
	}
	return nil
}

// RecordDeadJob records a dead letter whose job has no row (published past the producer, say) as a dead job with
// its reason, so that it shows in SQL and `dae retry --dead` can send it again: msg, the job's message, is kept as
// its payload when it is a JSON object, else as {"raw": …} like FailInvalidJob. The batch is taken when it names a
// known batch. Recording the same key twice keeps the first row.
func (s *Store) RecordDeadJob(ctx context.Context, kind schema.Kind, dedupKey string, msg []byte, batch, reason string) error {
	payload := msg
	var obj map[string]json.RawMessage
	if json.Unmarshal(msg, &obj) != nil || bytes.Contains(msg, []byte(`\u0000`)) {
		payload = rawPayload(msg)
	}
	if err := s.insertRowless(ctx, StateDead, kind, dedupKey, payload, batch, reason); err != nil {
		return fmt.Errorf("store: record dead job %s: %w", dedupKey, err)
	}
	return nil
}

// rawPayload wraps bytes that are not a job message as {"raw": …} (at most 4096 bytes, invalid UTF-8 replaced).
func rawPayload(raw []byte) []byte {
	const maxRaw = 4096
	if len(raw) > maxRaw {
		raw = raw[:maxRaw]
	}
	// Postgres text and jsonb hold no NUL character (jsonb refuses \u0000): it becomes U+FFFD like invalid UTF-8.
	b, _ := json.Marshal(map[string]string{"raw": pgText(string(raw))}) // a string always marshals
	return b
}

// pgText makes s storable in a Postgres text or jsonb string: valid UTF-8 without NUL (each becomes U+FFFD).
func pgText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// insertRowless inserts a finished job (state failed or dead) for a message that had no row, keeping any row the
// key already has.
func (s *Store) insertRowless(ctx context.Context, state string, kind schema.Kind, dedupKey string, payload []byte, batch, reason string) error {
	if !kind.Valid() {
		return fmt.Errorf("unknown kind %q", kind)
	}
	if reason == "" {
		return errors.New("empty reason")
	}
	reason = pgText(reason)
	_, err := s.pool.Exec(ctx, `
INSERT INTO jobs (batch_id, kind, dedup_key, payload, state, attempts, last_error, started_at, finished_at)
VALUES ((SELECT id FROM batches WHERE id = $1), $2, $3, $4, $5, 1, $6, now(), now())
ON CONFLICT (dedup_key) DO NOTHING`, batch, string(kind), dedupKey, payload, state, reason)
	return err
}

// FailedJob is a job in state failed or dead, with the message it was published with.
type FailedJob struct {
	DedupKey string
	Kind     schema.Kind
	State    string
	Payload  []byte // the job's message (schema.Marshal output); {"raw": …} for a message that never parsed
	Error    string
}

// FailedJobs lists a batch's failed (and, with dead, dead) jobs, oldest first.
func (s *Store) FailedJobs(ctx context.Context, batch string, dead bool) ([]FailedJob, error) {
	states := []string{StateFailed}
	if dead {
		states = append(states, StateDead)
	}
	rows, err := s.pool.Query(ctx, `
SELECT dedup_key, kind, state, payload, COALESCE(last_error, '') FROM jobs
WHERE batch_id = $1 AND state = ANY($2) ORDER BY id`, batch, states)
	if err != nil {
		return nil, fmt.Errorf("store: failed jobs of batch %s: %w", batch, err)
	}
	out, err := pgx.CollectRows(rows, scanFailedJob)
	if err != nil {
		return nil, fmt.Errorf("store: failed jobs of batch %s: %w", batch, err)
	}
	return out, nil
}

// scanFailedJob reads a (dedup_key, kind, state, payload, error) row.
func scanFailedJob(r pgx.CollectableRow) (FailedJob, error) {
	var f FailedJob
	var kind string
	err := r.Scan(&f.DedupKey, &kind, &f.State, &f.Payload, &f.Error)
	f.Kind = schema.Kind(kind)
	return f, err
}

// RequeueJob moves a failed or dead job back to queued (its last error is kept until it runs again), so that a
// re-published message is processed instead of skipped. It reports whether the job was failed or dead.
func (s *Store) RequeueJob(ctx context.Context, dedupKey string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
UPDATE jobs SET state = 'queued', attempts = 0, finished_at = NULL, started_at = NULL, updated_at = now()
WHERE dedup_key = $1 AND state IN ('failed', 'dead')`, dedupKey)
	if err != nil {
		return false, fmt.Errorf("store: requeue job %s: %w", dedupKey, err)
	}
	return tag.RowsAffected() == 1, nil
}

// MaxSourceObject is the largest source object GetSourceObject reads.
const MaxSourceObject = 256 << 20

// SourceObject is an object listed under a user's S3 prefix.
type SourceObject struct {
	Key  string
	Size int64
}

// ListSource lists the objects under prefix in a user's bucket (an archive to encode), in key order. The bucket
// and prefix come from the user's command line, not from job messages; they reach S3 only as API parameters.
func (s *Store) ListSource(ctx context.Context, bucket, prefix string, fn func(SourceObject) error) error {
	// Returning early must stop the listing goroutine, which otherwise blocks for ever sending the next object.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for info := range s.s3.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			return fmt.Errorf("store: list s3://%s/%s: %w", bucket, prefix, info.Err)
		}
		if strings.HasSuffix(info.Key, "/") {
			continue
		}
		if err := fn(SourceObject{Key: info.Key, Size: info.Size}); err != nil {
			return err
		}
	}
	return nil
}

// GetSourceObject reads one object of a user's S3 source, up to MaxSourceObject bytes.
func (s *Store) GetSourceObject(ctx context.Context, bucket, key string) ([]byte, error) {
	obj, err := s.s3.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("store: get s3://%s/%s: %w", bucket, key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, MaxSourceObject+1))
	if err != nil {
		return nil, fmt.Errorf("store: get s3://%s/%s: %w", bucket, key, err)
	}
	if len(data) > MaxSourceObject {
		return nil, fmt.Errorf("store: s3://%s/%s: larger than %d bytes", bucket, key, MaxSourceObject)
	}
	return data, nil
}

// OpenSourceObject opens any object of any bucket the store's credentials can read, to be streamed (the producer
// hashes objects too large to read whole this way).
func (s *Store) OpenSourceObject(ctx context.Context, bucket, key string) (io.ReadCloser, error) {
	obj, err := s.s3.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("store: get s3://%s/%s: %w", bucket, key, err)
	}
	return obj, nil
}

// PutSourceObject stores data under any key of a bucket; tests and demos use it to build an S3 source.
func (s *Store) PutSourceObject(ctx context.Context, bucket, key string, data []byte) error {
	if _, err := s.s3.PutObject(ctx, bucket, key, strings.NewReader(string(data)), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("store: put s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// RemoveBucket empties and removes a bucket; tests use it to clean up their throwaway buckets.
func (s *Store) RemoveBucket(ctx context.Context, bucket string) error {
	err := s.s3.RemoveBucketWithOptions(ctx, bucket, minio.RemoveBucketOptions{ForceDelete: true})
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchBucket" {
		return fmt.Errorf("store: remove bucket %s: %w", bucket, err)
	}
	return nil
}

// ImageSources returns the recorded source (file name or URL) of each known image among hashes.
func (s *Store) ImageSources(ctx context.Context, hashes []string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT hash, source FROM images WHERE hash = ANY($1)`, hashes)
	if err != nil {
		return nil, fmt.Errorf("store: image sources (%d hashes): %w", len(hashes), err)
	}
	defer rows.Close()
	out := make(map[string]string, len(hashes))
	for rows.Next() {
		var h, src string
		if err := rows.Scan(&h, &src); err != nil {
			return nil, fmt.Errorf("store: image sources: %w", err)
		}
		out[h] = src
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: image sources: %w", err)
	}
	return out, nil
}

// ListLatentHashes calls fn with the image hashes of up to limit latents of the model, oldest first.
func (s *Store) ListLatentHashes(ctx context.Context, modelID string, limit int, fn func(hash string)) error {
	rows, err := s.pool.Query(ctx, `SELECT image_hash FROM latents WHERE model_id = $1 ORDER BY id LIMIT $2`, modelID, limit)
	if err != nil {
		return fmt.Errorf("store: latents of model %s: %w", modelID, err)
	}
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("store: latents of model %s: %w", modelID, err)
	}
	for _, h := range hashes {
		fn(h)
	}
	return nil
}

// RecordJobs is RecordJob for many jobs in one round trip (a producer's chunk). Jobs already recorded keep their
// state.
func (s *Store) RecordJobs(ctx context.Context, jobs []schema.Job) error {
	b := &pgx.Batch{}
	for _, j := range jobs {
		payload, err := schema.Marshal(j)
		if err != nil {
			return fmt.Errorf("store: record jobs: %w", err)
		}
		var batch *string
		if h := j.Meta(); h.Batch != "" {
			batch = &h.Batch
		}
		b.Queue(`INSERT INTO jobs (batch_id, kind, dedup_key, payload) VALUES ($1, $2, $3, $4) ON CONFLICT (dedup_key) DO NOTHING`,
			batch, string(j.JobKind()), j.DedupKey(), payload)
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store: record %d jobs: %w", len(jobs), err)
	}
	return nil
}

// StartJobs is StartJob for many jobs in one statement: it returns each job's state before the call; keys with no
// job are absent. Rows are locked in id order, so that workers starting overlapping sets cannot deadlock.
func (s *Store) StartJobs(ctx context.Context, keys []string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `
WITH old AS (SELECT id, dedup_key, state FROM jobs WHERE dedup_key = ANY($1) ORDER BY id FOR UPDATE)
UPDATE jobs j SET state = CASE WHEN old.state IN ('done', 'failed', 'dead') THEN old.state ELSE 'running' END,
    attempts = j.attempts + CASE WHEN old.state IN ('done', 'failed', 'dead') THEN 0 ELSE 1 END,
    started_at = COALESCE(j.started_at, now()), updated_at = now()
FROM old WHERE j.id = old.id
RETURNING old.dedup_key, old.state`, keys)
	if err != nil {
		return nil, fmt.Errorf("store: start %d jobs: %w", len(keys), err)
	}
	defer rows.Close()
	prev := make(map[string]string, len(keys))
	for rows.Next() {
		var k, st string
		if err := rows.Scan(&k, &st); err != nil {
			return nil, fmt.Errorf("store: start %d jobs: %w", len(keys), err)
		}
		prev[k] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: start %d jobs: %w", len(keys), err)
	}
	return prev, nil
}

// FinishJobsDone marks many jobs done in one statement.
func (s *Store) FinishJobsDone(ctx context.Context, keys []string) error {
	_, err := s.pool.Exec(ctx, `
UPDATE jobs SET state = 'done', finished_at = now(), updated_at = now() WHERE dedup_key = ANY($1)`, keys)
	if err != nil {
		return fmt.Errorf("store: finish %d jobs: %w", len(keys), err)
	}
	return nil
}
