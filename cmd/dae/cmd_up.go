package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"dae/schema"
	"dae/store"
	"dae/worker"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func init() {
	register(command{"up", "wait for Postgres, NATS and S3 (from DAE_* / .stack/env); create streams, buckets, tables", runUp})
}

// envNATSURL names the NATS server, credentials included.
const envNATSURL = "DAE_NATS_URL"

// loadStackEnv fills DAE_* variables that are not set from the env file deploy/local/up wrote, so that commands
// work in a fresh shell of the checkout without `source .stack/env`.
func loadStackEnv() {
	path := filepath.Join(".stack", "env")
	if d := os.Getenv("DAE_STACK_DIR"); d != "" {
		path = filepath.Join(d, "env")
	}
	vars, err := store.ReadEnvFile(path)
	if err != nil {
		return // no stack file: the environment alone must do
	}
	for k, v := range vars {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
}

// openStore opens the store named by the environment.
func openStore(ctx context.Context) (*store.Store, error) {
	loadStackEnv()
	cfg, err := store.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	return store.Open(ctx, cfg)
}

func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	wait := fs.Duration("wait", 60*time.Second, "how long to wait for each service to answer")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae up [--wait 60s]\n\nWaits for the services named by DAE_* (or .stack/env), then creates the JetStream\nstreams and consumers, the buckets and the tables. Safe to run again. deploy/local/up starts the services first.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *wait < 0 {
		return fmt.Errorf("%w: --wait %s: want 0 (one try) or more", errUsage, *wait)
	}
	loadStackEnv()
	cfg, err := store.ConfigFromEnv()
	if err != nil {
		return err
	}
	natsURL := os.Getenv(envNATSURL)
	if natsURL == "" {
		return fmt.Errorf("%s is not set (source .stack/env after deploy/local/up)", envNATSURL)
	}

	st, err := retry(ctx, *wait, "Postgres and S3", func(ctx context.Context) (*store.Store, error) { return store.Open(ctx, cfg) })
	if err != nil {
		return err
	}
	defer st.Close()
	slog.Info("postgres and s3 answer", "s3", cfg.S3Endpoint)

	nc, err := retry(ctx, *wait, "NATS", func(ctx context.Context) (*nats.Conn, error) {
		return nats.Connect(natsURL, nats.Name("dae up"), nats.Timeout(5*time.Second))
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := ensureStreams(ctx, nc); err != nil {
		return err
	}
	slog.Info("jetstream ready", "streams", []string{schema.StreamJobs, schema.StreamDead})

	if err := st.EnsureBuckets(ctx); err != nil {
		return err
	}
	slog.Info("buckets ready", "buckets", cfg.Buckets())

	applied, err := st.Migrate(ctx)
	if err != nil {
		return err
	}
	for _, m := range applied {
		slog.Info("migration applied", "version", m.Version, "file", m.Name)
	}
	slog.Info("database ready", "applied", len(applied))
	return nil
}

// ensureStreams creates or updates the job and dead-letter streams and their durable consumers, with the same
// configuration the workers use.
func ensureStreams(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return worker.EnsureStreams(ctx, js, worker.StreamOptions{})
}

// retry calls fn until it succeeds or wait has passed, and then returns its last error naming what it waited for.
func retry[T any](ctx context.Context, wait time.Duration, what string, fn func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(wait)
	delay := 100 * time.Millisecond
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := fn(attemptCtx)
		cancel()
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
			return v, fmt.Errorf("%s did not answer within %v: %w", what, wait, errors.Join(err, ctx.Err()))
		}
		slog.Debug("waiting", "for", what, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}
