package worker

import (
	"context"
	"fmt"
	"time"

	"dae/schema"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions tune the streams and consumers EnsureStreams creates.
type StreamOptions struct {
	// AckWait is how long a delivered job may go without an acknowledgement or an in-progress signal before
	// JetStream redelivers it (default 5 minutes). Workers signal progress at a third of it.
	AckWait time.Duration
}

// EnsureStreams creates or updates the job stream, the dead-letter stream and their durable consumers: one
// work-queue consumer per job kind and the dead recorder. With the default options it is exactly what `dae up`
// sets up (cmd/dae/cmd_up.go; keep the two equal); tests run it on their own server with a short AckWait.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	if o.AckWait <= 0 {
		o.AckWait = 5 * time.Minute
	}
	streams := []jetstream.StreamConfig{{
		Name:        schema.StreamJobs,
		Description: "dae jobs, one consumer per kind",
		Subjects:    []string{schema.SubjectJobsAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxMsgSize:  schema.MaxMessageBytes,
		Duplicates:  10 * time.Minute,
	}, {
		Name:        schema.StreamDead,
		Description: "dae jobs that failed for good, with the reason in the " + schema.HeaderError + " header",
		Subjects:    []string{schema.SubjectDeadAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      90 * 24 * time.Hour,
		// A dead letter's id names its job message: a later delivery of that message (after an ack wait of
		// minutes, when the Term was lost) must still fall within the window to be dropped as a duplicate.
		Duplicates: time.Hour,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("jetstream: stream %s: %w", sc.Name, err)
		}
	}
	for _, k := range schema.Kinds() {
		cc := jetstream.ConsumerConfig{
			Durable:       schema.Consumer(k),
			Description:   "dae workers for " + string(k) + " jobs",
			FilterSubject: schema.Subject(k),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       o.AckWait,
			MaxDeliver:    -1, // unlimited: the workers enforce schema.MaxDeliver and schema.MaxReceipts
			MaxAckPending: 1024,
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, schema.StreamJobs, cc); err != nil {
			return fmt.Errorf("jetstream: consumer %s on %s: %w", cc.Durable, schema.StreamJobs, err)
		}
	}
	dead := jetstream.ConsumerConfig{
		Durable:       schema.ConsumerDeadRecorder,
		Description:   "copies dead letters into SQL",
		FilterSubject: schema.SubjectDeadAll,
		AckPolicy:     jetstream.AckExplicitPolicy,
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, schema.StreamDead, dead); err != nil {
		return fmt.Errorf("jetstream: consumer %s on %s: %w", dead.Durable, schema.StreamDead, err)
	}
	return nil
}
