package cron

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"

	"dae/store"
)

// world is synthetic data in a store: n latents of dimension d in k well separated Gaussian clusters (class c has
// mean 4·e_c), one class per image.
type world struct {
	model   string
	d       int
	hashes  []string
	classes []int
	names   []string // attribute name per class
}

func attrName(c int) string { return fmt.Sprintf("class-%c", 'a'+c) }

// seedWorld stores a model, n images and their latents.
func seedWorld(tb testing.TB, st *store.Store, model string, n, d, k int, seed uint64) *world {
	tb.Helper()
	ctx := context.Background()
	if err := st.UpsertModel(ctx, store.Model{ID: model, ZDim: d}); err != nil {
		tb.Fatal(err)
	}
	w := &world{model: model, d: d}
	for c := range k {
		w.names = append(w.names, attrName(c))
	}
	w.add(tb, st, n, seed)
	return w
}

// add stores n more images and latents.
func (w *world) add(tb testing.TB, st *store.Store, n int, seed uint64) {
	tb.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 7))
	k := len(w.names)
	ims := make([]store.Image, n)
	ls := make([]store.Latent, n)
	for i := range n {
		idx := len(w.hashes)
		sum := sha256.Sum256(fmt.Appendf(nil, "%s image %d", w.model, idx))
		h := hex.EncodeToString(sum[:])
		c := rng.IntN(k)
		w.hashes = append(w.hashes, h)
		w.classes = append(w.classes, c)
		ims[i] = store.Image{Hash: h, Source: fmt.Sprintf("synthetic/img_%05d.png", idx), ObjectKey: "images/" + h[:2] + "/" + h,
			Size: 100, Width: 4, Height: 4, ContentType: "image/png"}
		z := make([]float32, w.d)
		for j := range z {
			z[j] = float32(rng.NormFloat64())
		}
		z[c] += 4
		ls[i] = store.Latent{ModelID: w.model, ImageHash: h, ZSem: z, XT: []float32{0}, XTShape: []int{1}}
	}
	if _, err := st.WriteImages(ctx, ims); err != nil {
		tb.Fatal(err)
	}
	if _, err := st.WriteLatents(ctx, ls); err != nil {
		tb.Fatal(err)
	}
}

// label labels images [from, to) for every attribute (true for the image's class, false for the others), as a user
// who sorts a few images into classes does, and returns them as a set.
func (w *world) label(tb testing.TB, st *store.Store, from, to int) map[string]bool {
	tb.Helper()
	var ls []store.Label
	done := map[string]bool{}
	for i := from; i < to; i++ {
		for c, a := range w.names {
			ls = append(ls, store.Label{ImageHash: w.hashes[i], Attribute: a, Value: w.classes[i] == c, Source: "test"})
		}
		done[w.hashes[i]] = true
	}
	if err := st.UpsertLabels(context.Background(), ls); err != nil {
		tb.Fatal(err)
	}
	return done
}

func testConfig(jobs ...Job) Config {
	c := DefaultConfig()
	c.Jobs = jobs
	c.Train.Epochs = 20
	c.Train.MinSteps = 10000
	c.Score.Page = 128 // several pages even on small data
	return c
}

type labelRow struct {
	hash  string
	value bool
}

func putLabels(tb testing.TB, st *store.Store, attr string, rows []labelRow) {
	tb.Helper()
	ls := make([]store.Label, len(rows))
	for i, r := range rows {
		ls[i] = store.Label{ImageHash: r.hash, Attribute: attr, Value: r.value, Source: "test"}
	}
	if err := st.UpsertLabels(context.Background(), ls); err != nil {
		tb.Fatal(err)
	}
}
