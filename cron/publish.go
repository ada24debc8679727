package cron

import (
	"context"
	"fmt"

	"dae/schema"
	"dae/store"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStreamPublisher records each job in SQL (queued, keyed by its dedup key) and then publishes it on its kind's
// subject with the dedup key as Nats-Msg-Id, so the stream drops a duplicate published within its duplicate window
// and the jobs table keeps one row whatever happens.
type JetStreamPublisher struct {
	st *store.Store
	js jetstream.JetStream
}

// NewJetStreamPublisher returns a publisher over a store and a JetStream context.
func NewJetStreamPublisher(st *store.Store, js jetstream.JetStream) *JetStreamPublisher {
	return &JetStreamPublisher{st: st, js: js}
}

// Publish records and publishes j.
func (p *JetStreamPublisher) Publish(ctx context.Context, j schema.Job) error {
	data, err := schema.Marshal(j)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if _, _, err := p.st.RecordJob(ctx, j); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	key := j.DedupKey()
	if _, err := p.js.Publish(ctx, schema.Subject(j.JobKind()), data, jetstream.WithMsgID(key)); err != nil {
		return fmt.Errorf("publish %s: %w", key, err)
	}
	return nil
}
