package cron

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"dae/store"
	"dae/store/storetest"
)

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func benchHash(i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "bench image %d", i))
	return hex.EncodeToString(sum[:])
}

// BenchmarkQueries1M loads DAE_BENCH_LATENTS (default 1,000,000) synthetic latents with z_sem of DAE_BENCH_ZDIM
// (default 64; 512 is the fm32 size but takes far longer to load on two shared cores) into a throwaway database,
// in 1,000 clusters, scores them with four promoted classifiers through the cron's scoring pass (which also writes
// the sketches), and then times the documented queries: an attribute filter with a score threshold (top 100, and
// every row), the attributes of one image, and the 20 nearest neighbours in z_sem, exact and sketch-shortlisted, with
// the shortlist's recall of the exact top 20. Run it alone:
//
//	nice -n 15 go test ./cron -run '^$' -bench Queries1M -benchtime 5x -timeout 60m
func BenchmarkQueries1M(b *testing.B) {
	n := envInt(b, "DAE_BENCH_LATENTS", 1_000_000)
	d := envInt(b, "DAE_BENCH_ZDIM", 64)
	st := storetest.Fresh(b)
	ctx := context.Background()
	const model, clusters, chunk = "bench", 1000, 20000
	if err := st.UpsertModel(ctx, store.Model{ID: model, ZDim: d}); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	centres := make([]float32, clusters*d)
	for i := range centres {
		centres[i] = float32(rng.NormFloat64())
	}
	start := time.Now()
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		ims := make([]store.Image, 0, hi-lo)
		ls := make([]store.Latent, 0, hi-lo)
		for i := lo; i < hi; i++ {
			h := benchHash(i)
			ims = append(ims, store.Image{Hash: h, Source: fmt.Sprintf("bench/%07d.png", i), ObjectKey: "images/" + h[:2] + "/" + h, Size: 1})
			c := centres[rng.IntN(clusters)*d:][:d]
			z := make([]float32, d)
			for j := range z {
				z[j] = c[j] + 0.35*float32(rng.NormFloat64())
			}
			ls = append(ls, store.Latent{ModelID: model, ImageHash: h, ZSem: z, XT: []float32{0}, XTShape: []int{1}})
		}
		if _, err := st.WriteImages(ctx, ims); err != nil {
			b.Fatal(err)
		}
		if _, err := st.WriteLatents(ctx, ls); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("loaded %d latents (z_sem %d) in %v", n, d, time.Since(start).Round(time.Second))

	attrs := []string{"attr-0", "attr-1", "attr-2", "attr-3"}
	ones, zeros := make([]float32, d), make([]float32, d)
	for j := range ones {
		ones[j] = 1
	}
	for _, a := range attrs {
		w := make([]float32, d)
		for j := range w {
			w[j] = float32(4 * rng.NormFloat64() / math.Sqrt(float64(d)))
		}
		if _, err := st.AddClassifierVersion(ctx, store.ClassifierVersion{Classifier: store.Classifier{ModelID: model,
			Attribute: a, Weights: w, Bias: -1, Promoted: true}, Mean: zeros, Std: ones}); err != nil {
			b.Fatal(err)
		}
	}
	conf := DefaultConfig()
	conf.Jobs = nil
	conf.Score.Page = 10000
	r, err := NewRunner(st, nil, conf, Options{})
	if err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	sum, err := r.Score(ctx, model)
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	b.Logf("scored and sketched %d latents (%d scores) in %v: %.0f latents/s", sum.Latents, sum.Scores, took.Round(time.Second),
		float64(sum.Latents)/took.Seconds())
	start = time.Now()
	if sum, err = r.Score(ctx, model); err != nil || sum.Latents != 0 {
		b.Fatalf("second scoring pass: %+v, %v; want nothing to do", sum, err)
	}
	b.Logf("incremental scoring pass with nothing new: %v", time.Since(start).Round(time.Millisecond))
	if err := st.Analyze(ctx); err != nil {
		b.Fatal(err)
	}

	queries := []string{benchHash(12345 % n), benchHash(777777 % n), benchHash(424242 % n)}
	b.Run("attribute-top100", func(b *testing.B) {
		for b.Loop() {
			hits, err := st.LatentsByAttribute(ctx, model, "attr-0", 0.9, 100)
			if err != nil || len(hits) != 100 {
				b.Fatalf("%d hits, %v", len(hits), err)
			}
		}
	})
	b.Run("attribute-all", func(b *testing.B) {
		var rows int
		for b.Loop() {
			hits, err := st.LatentsByAttribute(ctx, model, "attr-0", 0.9, n)
			if err != nil {
				b.Fatal(err)
			}
			rows = len(hits)
		}
		b.ReportMetric(float64(rows), "rows")
	})
	b.Run("image-attributes", func(b *testing.B) {
		for b.Loop() {
			as, err := st.ImageAttributes(ctx, queries[0])
			if err != nil || len(as) != len(attrs) {
				b.Fatalf("%d attributes, %v", len(as), err)
			}
		}
	})
	exact := map[string][]store.Neighbour{}
	b.Run("neighbours-exact", func(b *testing.B) {
		i := 0
		for b.Loop() {
			q := queries[i%len(queries)]
			ns, err := st.NearestLatents(ctx, model, q, 20, 0)
			if err != nil || len(ns) != 20 {
				b.Fatalf("%d neighbours, %v", len(ns), err)
			}
			exact[q] = ns
			i++
		}
	})
	b.Run("neighbours-sketch2000", func(b *testing.B) {
		i := 0
		var found, total int
		for b.Loop() {
			q := queries[i%len(queries)]
			ns, err := st.NearestLatents(ctx, model, q, 20, 2000)
			if err != nil || len(ns) != 20 {
				b.Fatalf("%d neighbours, %v", len(ns), err)
			}
			if ex, ok := exact[q]; ok {
				in := map[int64]bool{}
				for _, e := range ex {
					in[e.LatentID] = true
				}
				for _, a := range ns {
					if in[a.LatentID] {
						found++
					}
				}
				total += len(ex)
			}
			i++
		}
		if total > 0 {
			b.ReportMetric(float64(found)/float64(total), "recall@20")
		}
	})
}
