package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"dae/dataset"
	"dae/diffae"
	"dae/imageio"
	"dae/producer"
	"dae/store"
	"dae/worker"

	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	register(command{"demo", "the main job end to end: export Fashion-MNIST PNGs, bulk-encode them through the queue, query the latents", runDemo})
}

// defaultDemoModel is the model the repository ships.
const defaultDemoModel = "models/fmnist32.safetensors"

func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	n := fs.Int("images", 500, "Fashion-MNIST test images to export and encode")
	data := fs.String("data", dataset.DefaultFashionMNISTDir, "Fashion-MNIST IDX folder")
	dir := fs.String("dir", "", "folder for the exported PNGs, all of which are enqueued (default: demo/fashion-mnist-test-N in the stack folder)")
	model := fs.String("model", defaultDemoModel, "checkpoint (or registered model id) to encode with")
	batchName := fs.String("batch-name", "", "batch id (default: demo-<model id>)")
	wf := addWorkerFlags(fs)
	inproc := fs.Int("compare", 32, "images to encode in-process as well, for the pipeline's overhead ratio (0: skip)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae demo [--images 500] [--model CHECKPOINT] [--concurrency K] [--encode-steps T]\n\nExports Fashion-MNIST test images as PNG, registers the model, enqueues one encode job per image\n(dae enqueue encode), runs workers until the batch is done (dae worker), and prints the batch summary and a\nquery over the stored latents. Re-running resumes: nothing is encoded twice.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *wf.encodeSteps == 100 && len(givenFlags(fs, "encode-steps")) == 0 {
		*wf.encodeSteps = 20 // a demo on a CPU: 20 DDIM steps for x_T
	}
	if *n < 1 {
		return fmt.Errorf("%w: --images must be positive", errUsage)
	}
	if err := atLeast("compare", *inproc, 0); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	wcfg, err := wf.config(log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	nc, js, err := openJetStream("dae demo")
	if err != nil {
		return err
	}
	defer nc.Close()

	if *dir == "" {
		stack := os.Getenv("DAE_STACK_DIR")
		if stack == "" {
			stack = ".stack"
		}
		// One folder per count: the whole folder is enqueued, so a folder left by a larger run would be too.
		*dir = filepath.Join(stack, "demo", fmt.Sprintf("fashion-mnist-test-%d", *n))
	}
	imgs, err := dataset.LoadFashionMNIST(*data, "test")
	if err != nil {
		return err
	}
	files, err := dataset.ExportPNG(imgs, *dir, *n)
	if err != nil {
		return err
	}
	fmt.Printf("1. exported %d Fashion-MNIST test images as PNG to %s\n", len(files), *dir)

	id, err := resolveModel(ctx, st, *model, "")
	if err != nil {
		return err
	}
	fmt.Printf("2. model %s registered (checkpoint in the models bucket, row in models)\n", id)
	batch := *batchName
	if batch == "" {
		batch = "demo-" + id
	}
	sum, err := producer.Encode(ctx, st, js, producer.Options{Source: *dir, Model: id, Batch: batch,
		Limits: imageio.Limits{MaxPixels: *wf.maxPixels}, Progress: enqueueProgress(), Logger: log})
	if err != nil {
		return err
	}
	fmt.Printf("3. enqueued: %v\n", sum)

	wcfg.Store, wcfg.JS = st, js
	w, err := worker.New(wcfg)
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	start := time.Now()
	fmt.Printf("4. %d worker goroutine(s) on %s, micro-batches of %d, %d encoder steps:\n", *wf.concurrency, *wf.device, *wf.batch, *wf.encodeSteps)
	status, err := waitForBatch(ctx, st, batch, start)
	stop()
	wg.Wait()
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if err := st.FinishBatch(ctx, batch); err != nil {
		return err
	}
	done := status.Counts[store.StateDone]
	fmt.Printf("5. batch %s: %d done, %d failed, %d dead of %d; %d encoded by this run in %v (%.2f images/s end to end)\n",
		batch, done, status.Counts[store.StateFailed], status.Counts[store.StateDead], status.Total, sum.New,
		elapsed.Round(time.Millisecond), float64(sum.New)/elapsed.Seconds())
	if fails, err := st.Failures(ctx, batch, 5); err == nil {
		for _, f := range fails {
			fmt.Printf("   failed: %s: %s\n", f.DedupKey, f.Error)
		}
	}

	if *inproc > 0 && sum.New > 0 {
		if err := compareInProcess(ctx, wcfg, *model, imgs, min(*inproc, imgs.N), *wf.encodeSteps, *wf.batch,
			float64(sum.New)/elapsed.Seconds()); err != nil {
			return err
		}
	}
	return demoQuery(ctx, st, id)
}

// waitForBatch prints the batch's progress every two seconds until nothing is queued or running.
func waitForBatch(ctx context.Context, st *store.Store, batch string, start time.Time) (store.BatchStatus, error) {
	for {
		s, err := st.Status(ctx, batch)
		if err != nil {
			return s, err
		}
		open := s.Counts[store.StateQueued] + s.Counts[store.StateRunning]
		fin := s.Total - open
		el := time.Since(start).Seconds()
		rate := float64(fin) / max(el, 1e-9)
		eta := "-"
		if rate > 0 && open > 0 {
			eta = (time.Duration(float64(open)/rate) * time.Second).Round(time.Second).String()
		}
		fmt.Fprintf(os.Stderr, "   %d/%d finished (%d done, %d failed), %d running, %.2f jobs/s, ETA %s\n",
			fin, s.Total, s.Counts[store.StateDone], s.Counts[store.StateFailed], s.Counts[store.StateRunning], rate, eta)
		if open == 0 {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// compareInProcess encodes k images with the model directly, on the workers' device, and prints the ratio of the
// pipeline's end-to-end rate to it.
func compareInProcess(ctx context.Context, wcfg worker.Config, path string, imgs *dataset.Images, k, steps, batch int, pipeline float64) error {
	dev := wcfg.NewDevice()
	m, err := diffae.Load(dev, path)
	if err != nil {
		return nil // a registered id rather than a file: nothing to compare with
	}
	x := make([]float32, 0, k*m.ImageSize())
	for i := range k {
		x = append(x, imgs.Image(i)...)
	}
	start := time.Now()
	if _, _, err := m.Encode(ctx, x, k, diffae.EncodeOptions{Steps: steps, Batch: batch}); err != nil {
		return err
	}
	own := float64(k) / time.Since(start).Seconds()
	conc := max(wcfg.Concurrency, 1)
	fmt.Printf("6. in-process, one goroutine: %.2f images/s (%d images); pipeline with %d goroutine(s): %.2f images/s; ratio %.2f\n",
		own, k, conc, pipeline, pipeline/own)
	return nil
}

// demoQuery shows what the latents are for: nearest neighbours in z_sem, computed in SQL.
func demoQuery(ctx context.Context, st *store.Store, model string) error {
	srcs := map[string]string{}
	var hashes []string
	// The first few exported files, by name, as queries.
	err := st.ListLatentHashes(ctx, model, 3, func(h string) { hashes = append(hashes, h) })
	if err != nil {
		return err
	}
	fmt.Printf("7. SQL over the stored latents: cosine nearest neighbours in z_sem (store.Neighbours)\n")
	for _, h := range hashes {
		_, ns, err := st.Neighbours(ctx, model, h, 5)
		if err != nil {
			return err
		}
		all := []string{h}
		for _, n := range ns {
			all = append(all, n.ImageHash)
		}
		got, err := st.ImageSources(ctx, all)
		if err != nil {
			return err
		}
		for k, v := range got {
			srcs[k] = v
		}
		var parts []string
		for _, n := range ns {
			parts = append(parts, fmt.Sprintf("%s (%.4f)", className(srcs[n.ImageHash]), n.Similarity))
		}
		fmt.Printf("   %s %s → %s\n", h[:12], className(srcs[h]), strings.Join(parts, ", "))
	}
	return nil
}

// className takes the class from an exported file name such as test_00012_Ankle_boot.png.
func className(src string) string {
	base := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	parts := strings.SplitN(base, "_", 3)
	if len(parts) == 3 {
		return parts[2]
	}
	return base
}
