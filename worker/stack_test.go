package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"dae/dataset"
	"dae/diffae"
	"dae/schema"
	"dae/store"
	"dae/store/storetest"
	"dae/tensor"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The integration tests run on the stack deploy/local/up started: each on a fresh database and fresh buckets of
// its Postgres and MinIO, and on its own NATS server (the stack's nats-server binary on a free port), so that they
// neither see nor disturb the shared streams. Without a stack they skip, unless DAE_REQUIRE_STACK is set.

const helperEnv = "DAE_WORKER_TEST_HELPER"

// TestMain lets the test binary act as a worker process (for the SIGKILL test).
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperWorker())
	}
	os.Exit(m.Run())
}

// helperWorker runs a worker configured by the environment until it is killed or signalled.
func helperWorker() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := store.ConfigFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st, err := store.Open(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	nc, err := nats.Connect(os.Getenv("DAE_NATS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	w, err := New(Config{Store: st, JS: js, NewDevice: func() tensor.Device { return tensor.NewCPU(1) },
		Batch: 8, EncodeSteps: 3, Backoff: 200 * time.Millisecond, Grace: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// env is one test's private slice of the stack.
type env struct {
	cfg     store.Config
	st      *store.Store
	natsURL string
	js      jetstream.JetStream
	model   string // a registered tiny model
	dir     string // temporary folder (model checkpoint, exported images)
}

// stackDir is the folder deploy/local/up uses.
func stackDir() string {
	if d := os.Getenv("DAE_STACK_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", ".stack")
}

// newEnv sets up a fresh database, buckets, NATS server with the dae streams (short ack wait) and a tiny model.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	ctx := context.Background()
	cfg := storetest.Config(tb) // a throwaway database, dropped when the test ends
	tag := randomHex(tb, 5)
	cfg.BucketImages = "dae-test-img-" + tag
	cfg.BucketOutputs = "dae-test-out-" + tag
	cfg.BucketModels = "dae-test-mod-" + tag
	e := &env{cfg: cfg, dir: tb.TempDir()}
	e.st = e.open(tb, cfg)
	if err := e.st.EnsureBuckets(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for _, b := range cfg.Buckets() {
			if err := e.st.RemoveBucket(context.Background(), b); err != nil {
				tb.Errorf("remove bucket: %v", err)
			}
		}
	})
	if _, err := e.st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	e.natsURL = startNATS(tb)
	e.js = e.connect(tb)
	if err := EnsureStreams(ctx, e.js, StreamOptions{AckWait: 3 * time.Second}); err != nil {
		tb.Fatal(err)
	}
	e.model = e.registerTiny(tb, "tiny-"+tag)
	return e
}

func (e *env) open(tb testing.TB, cfg store.Config) *store.Store {
	tb.Helper()
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		storetest.SkipOrFail(tb, "the stack does not answer: %v", err)
	}
	tb.Cleanup(st.Close)
	return st
}

func (e *env) connect(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(e.natsURL, nats.MaxReconnects(-1))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// startNATS runs the stack's nats-server with JetStream on a free port and returns its URL.
func startNATS(tb testing.TB) string {
	tb.Helper()
	bins, _ := filepath.Glob(filepath.Join(stackDir(), "bin", "nats-server-*"))
	if len(bins) == 0 {
		storetest.SkipOrFail(tb, "no nats-server in %s/bin (run deploy/local/up)", stackDir())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bins[0], "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", tb.TempDir())
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	for range 100 {
		if nc, err := nats.Connect(url); err == nil {
			nc.Close()
			return url
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("nats-server on port %d did not start", port)
	return ""
}

// tinyConfig is the tiny preset for 16×16 grey images: Fashion-MNIST exports are resized to it by the worker.
func tinyConfig(tb testing.TB) *diffae.Config {
	tb.Helper()
	cfg, err := diffae.Preset("tiny")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.InChannels, cfg.OutChannels = 1, 1
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// registerTiny saves a random tiny model (with unit latent statistics, so that sampling and manipulation work)
// and registers it under id.
func (e *env) registerTiny(tb testing.TB, id string) string {
	tb.Helper()
	cfg := tinyConfig(tb)
	m := diffae.New(tensor.NewCPU(1), cfg, 7)
	// The reference zero-initialises each block's last convolution and the output convolution, so a fresh model
	// predicts ε = 0 whatever z_sem is; small weights there make z_sem (and so manipulation) change the images.
	rng := mrand.New(mrand.NewPCG(7, 8))
	for _, p := range m.Params().List {
		if allZero(p.W.Data) {
			for i := range p.W.Data {
				p.W.Data[i] = float32(0.05 * rng.NormFloat64())
			}
		}
	}
	st := &diffae.LatentStats{Mean: make([]float32, cfg.ZDim()), Std: make([]float32, cfg.ZDim())}
	for i := range st.Std {
		st.Std[i] = 1
	}
	m.Stats = st
	path := filepath.Join(e.dir, id+".safetensors")
	if err := m.Save(path, "F32", nil); err != nil {
		tb.Fatal(err)
	}
	row, err := RegisterModel(context.Background(), e.st, path, id)
	if err != nil {
		tb.Fatal(err)
	}
	return row.ID
}

// fashion exports the first n Fashion-MNIST test images as PNG into a new folder.
func (e *env) fashion(tb testing.TB, n int) string {
	tb.Helper()
	m, err := dataset.LoadFashionMNIST(dataset.DefaultFashionMNISTDir, "test")
	if err != nil {
		storetest.SkipOrFail(tb, "Fashion-MNIST not installed: %v", err)
	}
	dir := filepath.Join(e.dir, "images-"+randomHex(tb, 3))
	if _, err := dataset.ExportPNG(m, dir, n); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// startWorker runs an in-process worker until the test ends (or stop is called) and returns stop.
func (e *env) startWorker(tb testing.TB, st *store.Store, mod func(*Config)) (stop func()) {
	tb.Helper()
	cfg := Config{Store: st, JS: e.connect(tb), NewDevice: func() tensor.Device { return tensor.NewCPU(1) },
		Batch: 8, EncodeSteps: 3, Backoff: 200 * time.Millisecond, Grace: time.Second, Idle: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			tb.Errorf("worker: %v", err)
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	tb.Cleanup(stop)
	return stop
}

// waitBatch waits until the batch has no queued or running job (and at least want finished), and returns its
// status.
func (e *env) waitBatch(tb testing.TB, batch string, want int, timeout time.Duration) store.BatchStatus {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := e.st.Status(context.Background(), batch)
		if err == nil {
			fin := s.Counts[store.StateDone] + s.Counts[store.StateFailed] + s.Counts[store.StateDead]
			if fin >= want && s.Counts[store.StateQueued]+s.Counts[store.StateRunning] == 0 {
				return s
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("batch %s not finished after %v: %+v (%v)", batch, timeout, s.Counts, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// query runs a one-value SQL query on the test database.
func (e *env) query(tb testing.TB, sql string, args ...any) int {
	tb.Helper()
	c, err := pgx.Connect(context.Background(), e.cfg.PGURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}

// streamMsgs is the number of messages in the job stream (acknowledged jobs leave it).
func (e *env) streamMsgs(tb testing.TB) uint64 {
	tb.Helper()
	s, err := e.js.Stream(context.Background(), schema.StreamJobs)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

func allZero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}
