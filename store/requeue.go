package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StaleRequeuedJobs lists a batch's jobs that RequeueJob moved back to queued at least age ago and that no worker
// has started since, oldest first: a retry that stopped between requeueing a job and publishing it leaves such a
// row, which no message will ever run. They are told apart by what RequeueJob leaves and a worker changes: no
// attempt and no start, but a failure's reason kept. A job whose retry message is still waiting in the stream
// looks the same; publishing it again only makes a duplicate, which the worker settles.
func (s *Store) StaleRequeuedJobs(ctx context.Context, batch string, age time.Duration) ([]FailedJob, error) {
	rows, err := s.pool.Query(ctx, `
SELECT dedup_key, kind, state, payload, last_error FROM jobs
WHERE batch_id = $1 AND state = 'queued' AND attempts = 0 AND started_at IS NULL AND last_error IS NOT NULL
  AND updated_at <= now() - make_interval(secs => $2)
ORDER BY id`, batch, age.Seconds())
	if err != nil {
		return nil, fmt.Errorf("store: stale requeued jobs of batch %s: %w", batch, err)
	}
	out, err := pgx.CollectRows(rows, scanFailedJob)
	if err != nil {
		return nil, fmt.Errorf("store: stale requeued jobs of batch %s: %w", batch, err)
	}
	return out, nil
}
