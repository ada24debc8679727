package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"dae/imageio"
	"dae/schema"
	"dae/tensor"
	"dae/worker"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func init() {
	register(command{"worker", "pull jobs from JetStream, run the model, store results (Prometheus metrics, SIGTERM-safe)", runWorker})
}

// workerFlags are the flags `dae worker` and `dae demo` share.
type workerFlags struct {
	device      *string
	threads     *int
	concurrency *int
	batch       *int
	models      *string
	encodeSteps *int
	kinds       *string
	grace       *time.Duration
	jobTimeout  *time.Duration
	maxPixels   *int64
}

func addWorkerFlags(fs *flag.FlagSet) workerFlags {
	return workerFlags{
		device:      fs.String("device", "cpu", deviceFlagHelp),
		threads:     fs.Int("threads", 0, "CPU cores per worker goroutine (0: all cores shared out over --concurrency)"),
		concurrency: fs.Int("concurrency", 1, "worker goroutines, each with its own copy of the models"),
		batch:       fs.Int("batch", 16, "most encode jobs sent to the device at once"),
		models:      fs.String("models", "", "folder of <model id>.safetensors checkpoints, tried before the models bucket"),
		encodeSteps: fs.Int("encode-steps", 100, "DDIM steps of the stochastic encoder (x_T)"),
		kinds:       fs.String("kinds", "", "comma-separated job kinds to pull (default all)"),
		grace:       fs.Duration("grace", 30*time.Second, "after SIGTERM, how long in-flight jobs may finish before they are released"),
		jobTimeout:  fs.Duration("job-timeout", time.Hour, "longest a fetched set of jobs may run before it is cancelled and retried"),
		maxPixels:   fs.Int64("max-pixels", 0, "largest width×height decoded (0: the default budget)"),
	}
}

// config builds the worker configuration (store and JetStream are filled by the caller).
func (f workerFlags) config(log *slog.Logger, reg prometheus.Registerer) (worker.Config, error) {
	cfg := worker.Config{
		ModelDir: *f.models, Concurrency: *f.concurrency, Batch: *f.batch, EncodeSteps: *f.encodeSteps,
		Grace: *f.grace, JobTimeout: *f.jobTimeout, Limits: imageio.Limits{MaxPixels: *f.maxPixels}, Logger: log, Metrics: worker.NewMetrics(reg),
	}
	if *f.jobTimeout <= 0 {
		return cfg, fmt.Errorf("%w: --job-timeout %s: want a positive duration", errUsage, *f.jobTimeout)
	}
	if *f.grace <= 0 {
		return cfg, fmt.Errorf("%w: --grace %s: want a positive duration", errUsage, *f.grace)
	}
	if *f.concurrency < 1 || *f.batch < 1 || *f.encodeSteps < 1 || *f.encodeSteps > schema.MaxSteps {
		return cfg, fmt.Errorf("%w: --concurrency, --batch must be positive and --encode-steps within 1..%d", errUsage, schema.MaxSteps)
	}
	if *f.kinds != "" {
		for _, k := range strings.Split(*f.kinds, ",") {
			if !schema.Kind(k).Valid() {
				return cfg, fmt.Errorf("%w: --kinds: unknown kind %q", errUsage, k)
			}
			cfg.Kinds = append(cfg.Kinds, schema.Kind(k))
		}
	}
	threads := *f.threads
	if threads == 0 {
		threads = max(1, runtime.GOMAXPROCS(0) / *f.concurrency)
	}
	// Fail here, not in a goroutine, when the device cannot be opened.
	if _, err := openDevice(*f.device, threads); err != nil {
		return cfg, err
	}
	name := *f.device
	cfg.NewDevice = func() tensor.Device {
		d, _ := openDevice(name, threads)
		return d
	}
	return cfg, nil
}

func runWorker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	wf := addWorkerFlags(fs)
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9464", "where to serve Prometheus /metrics (empty: nowhere)")
	jsonLogs := fs.Bool("json-logs", false, "log JSON lines instead of text")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae worker [--device cpu] [--concurrency K] [--batch B] [--models DIR] [--metrics-addr ADDR]\n\nPulls jobs from the durable JetStream consumers (one per kind), micro-batches encode jobs for the device,\nwrites latents and outputs idempotently, then acknowledges. SIGTERM: stop pulling, let in-flight jobs finish\nfor --grace, release the rest.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *jsonLogs {
		handler = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(handler)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg, err := wf.config(log, reg)
	if err != nil {
		return err
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	nc, js, err := openJetStream("dae worker")
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg.Store, cfg.JS = st, js
	w, err := worker.New(cfg)
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		stop, err := serveMetrics(*metricsAddr, reg, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	return w.Run(ctx)
}

// serveMetrics serves /metrics from reg on addr until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", "http://"+l.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
