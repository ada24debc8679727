package main

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dae/dataset"
	"dae/store"
	"dae/store/storetest"
)

// useStack points the commands at cfg's database for the rest of the test.
func useStack(t *testing.T, cfg store.Config) {
	t.Setenv(store.EnvPGURL, cfg.PGURL)
	t.Setenv(store.EnvS3Endpoint, cfg.S3Endpoint)
	t.Setenv(store.EnvS3AccessKey, cfg.S3AccessKey)
	t.Setenv(store.EnvS3SecretKey, cfg.S3SecretKey)
	t.Setenv(store.EnvS3Secure, fmt.Sprint(cfg.S3Secure))
	t.Setenv(store.EnvS3Region, cfg.S3Region)
}

// The few-shot user, end to end on real Fashion-MNIST files with synthetic latents (one cluster per class):
// import-fmnist labels 15 images per class and holds out the rest, `dae cron run-now train` trains and scores the ten
// classifiers, and "sneaker score > 0.9" selects held-out sneakers. A CSV import by hash and by file name works too.
func TestLabelsImportFMNISTTrainCheck(t *testing.T) {
	const fmnist = "/usr/share/datasets/fashion-mnist"
	if _, err := os.Stat(fmnist); err != nil {
		t.Skipf("Fashion-MNIST not installed: %v", err)
	}
	cfg := storetest.Config(t)
	st := storetest.Open(t, cfg)
	useStack(t, cfg)
	ctx := context.Background()

	m, err := dataset.LoadFashionMNIST(fmnist, "test")
	if err != nil {
		t.Fatal(err)
	}
	const n, d = 600, 16
	dir := t.TempDir()
	files, err := dataset.ExportPNG(m, dir, n)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UpsertModel(ctx, store.Model{ID: "fm-test", ZDim: d}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var ims []store.Image
	var ls []store.Latent
	class := map[string]int{}
	for i, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		h := hex.EncodeToString(sum[:])
		class[h] = m.Labels[i]
		ims = append(ims, store.Image{Hash: h, Source: filepath.Join(dir, f), ObjectKey: "images/" + h[:2] + "/" + h, Size: int64(len(data)), ContentType: "image/png"})
		z := make([]float32, d)
		for j := range z {
			z[j] = float32(rng.NormFloat64())
		}
		z[m.Labels[i]] += 5
		ls = append(ls, store.Latent{ModelID: "fm-test", ImageHash: h, ZSem: z, XT: []float32{0}, XTShape: []int{1}})
	}
	if _, err := st.WriteImages(ctx, ims); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteLatents(ctx, ls); err != nil {
		t.Fatal(err)
	}

	heldout := filepath.Join(t.TempDir(), "heldout.csv")
	err = runLabels(ctx, []string{"import-fmnist", "--labels", filepath.Join(fmnist, "t10k-labels-idx1-ubyte.gz"),
		"--images-dir", dir, "--per-class", "15", "--heldout", heldout, "--model", "fm-test"})
	if err != nil {
		t.Fatal(err)
	}
	sets, err := st.LabelSets(ctx, "fm-test")
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 10 {
		t.Fatalf("%d labelled attributes, want 10", len(sets))
	}
	for _, s := range sets {
		if s.Positives != 15 || s.Negatives != 135 {
			t.Errorf("%s: %d positive and %d negative labels, want 15 and 135", s.Attribute, s.Positives, s.Negatives)
		}
	}
	f, err := os.Open(heldout)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+n-150 {
		t.Fatalf("held-out file has %d rows, want %d", len(recs)-1, n-150)
	}
	for _, r := range recs[1:] {
		if want, _ := attributeName(m.ClassNames[class[r[0]]]); r[3] != want {
			t.Fatalf("held-out row %v: attribute %s, want %s", r, r[3], want)
		}
	}

	if err := runCron(ctx, []string{"run-now", "train"}); err != nil {
		t.Fatal(err)
	}
	hits, err := st.LatentsByAttribute(ctx, "fm-test", "sneaker", 0.9, 10000)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, r := range recs[1:] {
		held[r[0]] = true
	}
	var sel, tp int
	for _, h := range hits {
		if held[h.ImageHash] {
			sel++
			if class[h.ImageHash] == 7 { // Sneaker
				tp++
			}
		}
	}
	if sel == 0 || float64(tp) < 0.9*float64(sel) {
		t.Errorf("sneaker score > 0.9: %d of %d held-out selections are sneakers, want ≥ 90%%", tp, sel)
	}
	if err := runLabels(ctx, []string{"check", "--truth", heldout, "--attribute", "sneaker"}); err != nil {
		t.Fatal(err)
	}

	// CSV import: one row by hash, one by file name, one unknown; a header row.
	csvPath := filepath.Join(t.TempDir(), "labels.csv")
	body := fmt.Sprintf("image,attribute,value\n%s,Striped,1\n%s,Striped,no\nnope.png,Striped,1\n", ims[0].Hash, files[1])
	if err := os.WriteFile(csvPath, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runLabels(ctx, []string{"import", csvPath, "--source", "me"}); err != nil {
		t.Fatal(err)
	}
	got, err := st.LabelledLatents(ctx, "fm-test", "striped")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ImageHash != ims[0].Hash || !got[0].Label || got[1].Label {
		t.Errorf("CSV import: labelled latents %+v, want image 0 true and image 1 false", got)
	}
	if err := runLabels(ctx, []string{"import", csvPath, "--source", " "}); err == nil || !strings.Contains(err.Error(), "source") {
		t.Errorf("empty source: %v, want a usage error", err)
	}
}
