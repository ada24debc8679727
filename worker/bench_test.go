package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"dae/diffae"
	"dae/imageio"
	"dae/producer"
	"dae/tensor"
)

// BenchmarkEncodePipeline measures encode jobs through the whole pipeline (enqueue: hash, upload, record, publish;
// worker: fetch, read the image from S3, decode, encode, COPY the latents, finish, ack) with the tiny model and one
// worker goroutine on one core, next to the same model encoding the same images in-process. Run it with
// -benchtime=1x: each iteration encodes the folder again under a freshly registered model.
func BenchmarkEncodePipeline(b *testing.B) {
	const n, steps, batch = 200, 3, 8
	e := newEnv(b)
	dir := e.fashion(b, n)

	// The model alone.
	m, err := diffae.Load(tensor.NewCPU(1), filepath.Join(e.dir, e.model+".safetensors"))
	if err != nil {
		b.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	x := make([]float32, 0, len(files)*m.ImageSize())
	for _, f := range files {
		img, err := imageio.DecodeFile(f, imageio.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		x = append(x, imageio.ToCHW(img, m.Cfg.ImageSize, m.Cfg.InChannels, nil)...)
	}
	start := time.Now()
	if _, _, err := m.Encode(context.Background(), x, len(files), diffae.EncodeOptions{Steps: steps, Batch: batch}); err != nil {
		b.Fatal(err)
	}
	own := float64(len(files)) / time.Since(start).Seconds()

	e.startWorker(b, e.st, func(c *Config) { c.Batch, c.EncodeSteps = batch, steps })
	var jobs int
	var enqueue, total time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		e.model = e.registerTiny(b, fmt.Sprintf("bench-%d-%s", i, randomHex(b, 3)))
		b.StartTimer()
		t0 := time.Now()
		sum, err := producer.Encode(context.Background(), e.st, e.js, producer.Options{Source: dir, Model: e.model,
			Batch: "bench-" + e.model})
		if err != nil {
			b.Fatal(err)
		}
		enqueue += time.Since(t0)
		e.waitBatch(b, "bench-"+e.model, sum.New, 5*time.Minute)
		total += time.Since(t0)
		jobs += sum.New
	}
	b.StopTimer()
	rate := float64(jobs) / total.Seconds()
	b.ReportMetric(rate, "jobs/s")
	b.ReportMetric(float64(jobs)/enqueue.Seconds(), "enqueued/s")
	b.ReportMetric(own, "inproc-images/s")
	b.ReportMetric(rate/own, "pipeline/inproc")
	fmt.Fprintf(os.Stderr, "pipeline %.1f jobs/s (enqueue %.0f/s), in-process %.1f images/s, ratio %.2f\n",
		rate, float64(jobs)/enqueue.Seconds(), own, rate/own)
}
