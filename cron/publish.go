package cron

import (
	"context"
	"fmt"

	"dae/producer"
	"dae/schema"
	"dae/store"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStreamPublisher publishes jobs the way the producer does (producer.Publish): each job is recorded in SQL
// (queued, keyed by its dedup key) and published with the dedup key as Nats-Msg-Id, and a job already finished is
// not published again.
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
	if _, err := producer.Publish(ctx, p.st, p.js, j); err != nil {
		return fmt.Errorf("publish %s: %w", j.DedupKey(), err)
	}
	return nil
}
