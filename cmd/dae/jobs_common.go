package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"dae/producer"
	"dae/store"
	"dae/worker"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// openJetStream connects to the NATS server named by DAE_NATS_URL (or .stack/env).
func openJetStream(name string) (*nats.Conn, jetstream.JetStream, error) {
	loadStackEnv()
	url := os.Getenv(envNATSURL)
	if url == "" {
		return nil, nil, fmt.Errorf("%s is not set (source .stack/env after deploy/local/up)", envNATSURL)
	}
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// resolveModel turns a --model argument into a model id: a checkpoint file is registered (uploaded and recorded)
// under id (or its derived id); anything else must be the id of a registered model.
func resolveModel(ctx context.Context, st *store.Store, arg, id string) (string, error) {
	if arg == "" {
		return "", fmt.Errorf("%w: --model is required (a model id or a .safetensors checkpoint)", errUsage)
	}
	if strings.HasSuffix(arg, ".safetensors") || strings.ContainsRune(arg, os.PathSeparator) {
		row, err := worker.RegisterModel(ctx, st, arg, id)
		if err != nil {
			return "", err
		}
		return row.ID, nil
	}
	if _, err := st.GetModel(ctx, arg); err != nil {
		return "", fmt.Errorf("--model %s: %w (pass a checkpoint file to register it)", arg, err)
	}
	return arg, nil
}

// defaultBatchName names a batch after what it encodes, so that re-running the same command resumes the same batch.
func defaultBatchName(source, model string) string {
	abs := source
	if !strings.HasPrefix(source, "s3://") {
		if a, err := filepath.Abs(source); err == nil {
			abs = a
		}
	}
	sum := sha256.Sum256([]byte(abs + "\x00" + model))
	return "encode-" + hex.EncodeToString(sum[:6])
}

// enqueueProgress prints the producer's running totals on stderr, at most once a second.
func enqueueProgress() func(producer.Summary) {
	var last time.Time
	return func(s producer.Summary) {
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		fmt.Fprintf(os.Stderr, "enqueue: %d found, %d new, %d requeued, %d skipped, %d invalid (%.0f files/s)\n",
			s.Found, s.New, s.Requeued, s.Skipped, s.Invalid, float64(s.Found)/max(s.Elapsed.Seconds(), 1e-9))
	}
}
