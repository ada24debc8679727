package store

import (
	"context"
	"testing"
	"time"
)

// BenchmarkWriteLatents10k stores 10,000 latents of a 32×32 grey model (z_sem 512, x_T 1×32×32) per iteration with
// WriteLatents (COPY into a temporary table, then INSERT … ON CONFLICT), and reports latents per second.
func BenchmarkWriteLatents10k(b *testing.B) {
	const n, zDim = 10000, 512
	s := openFresh(b)
	ctx := context.Background()
	hashes := seed(b, s, "fm32", zDim, n)
	ls := make([]Latent, n)
	for i, h := range hashes {
		ls[i] = latentFor("fm32", h, zDim, float32(i))
	}
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		if _, err := s.pool.Exec(ctx, `TRUNCATE latents CASCADE`); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		got, err := s.WriteLatents(ctx, ls)
		elapsed += time.Since(start)
		if err != nil || got != n {
			b.Fatalf("WriteLatents = %d, %v; want %d new", got, err, n)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "latents/s")
	b.ReportMetric(float64(n)*(4*zDim+4*32*32)*float64(b.N)/elapsed.Seconds()/1e6, "MB/s")
}
