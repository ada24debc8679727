package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"dae/schema"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
)

// The integration tests run against the stack deploy/local/up started (its settings from DAE_* or .stack/env).
// Without one they skip, unless DAE_REQUIRE_STACK is set (scripts/test sets it): then a missing stack fails them.

// stackConfig returns the stack's configuration, or skips the test when there is none.
func stackConfig(tb testing.TB) Config {
	tb.Helper()
	cfg, err := LoadConfig(filepath.Join("..", ".stack", "env"))
	if err != nil {
		skipOrFail(tb, "no local stack (run deploy/local/up): %v", err)
	}
	return cfg
}

func skipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("DAE_REQUIRE_STACK") != "" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format, args...)
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freshDB creates a throwaway database on the stack's Postgres, dropped when the test ends, and returns the
// configuration pointing at it, with a throwaway bucket for outputs.
func freshDB(tb testing.TB) Config {
	tb.Helper()
	cfg := stackConfig(tb)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cfg.PGURL)
	if err != nil {
		skipOrFail(tb, "local stack's Postgres does not answer (run deploy/local/up): %v", err)
	}
	defer admin.Close(ctx)
	name := "dae_test_" + randomHex(tb, 6)
	// The name is ours (hex), never input; CREATE DATABASE takes no bind parameters.
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	adminURL := cfg.PGURL
	tb.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), adminURL)
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	pc, err := pgx.ParseConfig(cfg.PGURL)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.PGURL = fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", pc.User, pc.Password, pc.Host, pc.Port, name)
	cfg.BucketOutputs = "dae-test-" + randomHex(tb, 6)
	return cfg
}

// openFresh opens a store on a fresh, migrated database.
func openFresh(tb testing.TB) *Store {
	tb.Helper()
	return openOn(tb, freshDB(tb))
}

// openOn opens a store on cfg (from freshDB) and migrates it.
func openOn(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	ctx := context.Background()
	s, err := Open(ctx, cfg)
	if err != nil {
		skipOrFail(tb, "local stack does not answer (run deploy/local/up): %v", err)
	}
	tb.Cleanup(s.Close)
	if _, err := s.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestMigrateEmptyThenIdempotent(t *testing.T) {
	t.Parallel()
	cfg := freshDB(t)
	ctx := context.Background()
	s, err := Open(ctx, cfg)
	if err != nil {
		skipOrFail(t, "local stack does not answer: %v", err)
	}
	defer s.Close()

	before, err := s.Migrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range before {
		if m.Applied {
			t.Errorf("migration %s applied on an empty database", m.Name)
		}
	}
	applied, err := s.Migrate(ctx)
	if err != nil {
		t.Fatalf("migrate an empty database: %v", err)
	}
	if len(applied) == 0 || len(applied) != len(before) {
		t.Fatalf("migrate applied %d migrations, want all %d", len(applied), len(before))
	}
	again, err := s.Migrate(ctx)
	if err != nil {
		t.Fatalf("migrate a migrated database: %v", err)
	}
	if len(again) != 0 {
		t.Errorf("second migrate applied %v, want nothing", again)
	}
	after, err := s.Migrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range after {
		if !m.Applied || m.AppliedAt.IsZero() {
			t.Errorf("migration %s not applied after migrate", m.Name)
		}
	}
	want := []string{"models", "batches", "images", "latents", "jobs", "labels", "classifiers", "attribute_scores", "outputs", "latest_attribute_scores"}
	for _, table := range want {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name = $1`, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("table or view %s: found %d, want 1", table, n)
		}
	}
}

// seed stores a model with the given z_dim and n images, and returns the images' hashes.
func seed(tb testing.TB, s *Store, model string, zDim, n int) []string {
	tb.Helper()
	ctx := context.Background()
	if err := s.UpsertModel(ctx, Model{ID: model, ZDim: zDim, Config: []byte(`{"image_size":32}`)}); err != nil {
		tb.Fatal(err)
	}
	ims := make([]Image, n)
	hashes := make([]string, n)
	for i := range ims {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s image %d", model, i))
		h := hex.EncodeToString(sum[:])
		hashes[i] = h
		ims[i] = Image{Hash: h, Source: fmt.Sprintf("test/%d.png", i), ObjectKey: "images/" + h[:2] + "/" + h, Size: 1000, Width: 32, Height: 32, ContentType: "image/png"}
	}
	if got, err := s.WriteImages(ctx, ims); err != nil || got != int64(n) {
		tb.Fatalf("WriteImages = %d, %v; want %d new", got, err, n)
	}
	return hashes
}

func latentFor(model, hash string, zDim int, seed float32) Latent {
	l := Latent{ModelID: model, ImageHash: hash, ZSem: make([]float32, zDim), XT: make([]float32, 1*32*32), XTShape: []int{1, 32, 32}}
	for i := range l.ZSem {
		l.ZSem[i] = seed + float32(i)*0.001
	}
	for i := range l.XT {
		l.XT[i] = seed - float32(i)*0.0001
	}
	return l
}

func countLatents(tb testing.TB, s *Store) int {
	tb.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM latents`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func TestUpsertLatentTwiceLeavesOneRow(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	h := seed(t, s, "fm32", 16, 1)[0]
	l := latentFor("fm32", h, 16, 0.5)

	id1, ins1, err := s.UpsertLatent(ctx, l)
	if err != nil || !ins1 {
		t.Fatalf("first UpsertLatent = %d, %v, %v; want inserted", id1, ins1, err)
	}
	id2, ins2, err := s.UpsertLatent(ctx, l)
	if err != nil || ins2 || id2 != id1 {
		t.Fatalf("second UpsertLatent = %d, %v, %v; want id %d, not inserted", id2, ins2, err, id1)
	}
	// A redelivered bulk write of the same latent changes nothing either.
	if n, err := s.WriteLatents(ctx, []Latent{l, l}); err != nil || n != 0 {
		t.Fatalf("WriteLatents of an existing latent = %d, %v; want 0 new", n, err)
	}
	if n := countLatents(t, s); n != 1 {
		t.Errorf("%d latent rows after storing the same latent four times, want 1", n)
	}
}

func TestLatentConstraints(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	hashes := seed(t, s, "fm32", 16, 2)

	short := latentFor("fm32", hashes[0], 15, 0) // z_sem one short of the model's z_dim
	if _, _, err := s.UpsertLatent(ctx, short); err == nil {
		t.Error("a z_sem of 15 values was accepted for a model with z_dim 16")
	}
	badShape := latentFor("fm32", hashes[0], 16, 0)
	badShape.XTShape = []int{1, 32, 31}
	if _, _, err := s.UpsertLatent(ctx, badShape); err == nil {
		t.Error("an x_T whose shape does not match its length was accepted")
	}
	unknownImage := latentFor("fm32", randomHex(t, 32), 16, 0)
	if _, _, err := s.UpsertLatent(ctx, unknownImage); err == nil {
		t.Error("a latent of an unknown image was accepted")
	}
	unknownModel := latentFor("other", hashes[1], 16, 0)
	if _, err := s.WriteLatents(ctx, []Latent{unknownModel}); err == nil {
		t.Error("a latent of an unknown model was accepted by WriteLatents")
	}
	if n := countLatents(t, s); n != 0 {
		t.Errorf("%d latents stored from bad input, want 0", n)
	}
}

func TestXTRoundTripsBitExactly(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	hashes := seed(t, s, "fm32", 4, 2)
	// Values that a text or float64 path would mangle: signed zero, subnormals, the smallest normal, extremes, the
	// neighbours of 1. (Infinities and NaN are refused: TestNeighboursPutCorruptLatentsLast.)
	special := []uint32{0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x7f7fffff, 0xff7fffff, 0x00800000,
		0x80000001, 0x3f7fffff, 0xbf800000, 0x3eaaaaab, 0x3f800001}
	xt := make([]float32, 2*3*4)
	for i := range xt {
		xt[i] = math.Float32frombits(special[i%len(special)] ^ uint32(i/len(special)))
	}
	z := []float32{math.Float32frombits(0x80000000), 1e-45, 3.4028235e38, -0.1}
	want := Latent{ModelID: "fm32", ImageHash: hashes[0], ZSem: z, XT: xt, XTShape: []int{2, 3, 4}}
	if _, _, err := s.UpsertLatent(ctx, want); err != nil {
		t.Fatal(err)
	}
	bulk := want
	bulk.ImageHash = hashes[1]
	if _, err := s.WriteLatents(ctx, []Latent{bulk}); err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes {
		got, err := s.GetLatent(ctx, "fm32", h)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got.XTShape) != fmt.Sprint(want.XTShape) {
			t.Errorf("image %s: shape %v, want %v", h[:8], got.XTShape, want.XTShape)
		}
		if d := firstBitDiff(got.XT, want.XT); d != "" {
			t.Errorf("image %s: x_T %s", h[:8], d)
		}
		if d := firstBitDiff(got.ZSem, want.ZSem); d != "" {
			t.Errorf("image %s: z_sem %s", h[:8], d)
		}
	}
	if _, err := s.GetLatent(ctx, "fm32", randomHex(t, 32)); !IsNotFound(err) {
		t.Errorf("GetLatent of a missing latent: %v, want ErrNotFound", err)
	}
}

func firstBitDiff(got, want []float32) string {
	if len(got) != len(want) {
		return fmt.Sprintf("has %d values, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			return fmt.Sprintf("value %d is %#08x, want %#08x", i, math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
	return ""
}

func TestObjectsRoundTrip(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	bucket := s.cfg.BucketOutputs
	if err := s.EnsureBuckets(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for o := range s.s3.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
			_ = s.s3.RemoveObject(ctx, bucket, o.Key, minio.RemoveObjectOptions{})
		}
		if err := s.s3.RemoveBucket(ctx, bucket); err != nil {
			t.Errorf("remove bucket %s: %v", bucket, err)
		}
	})

	data := []byte("\x89PNG\r\n\x1a\nnot really a png, but bytes all the same\x00\xff")
	key := "outputs/decode/" + randomHex(t, 32) + ".png"
	put, err := s.PutObject(ctx, bucket, key, data, "image/png")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if put.SHA256 != hex.EncodeToString(sum[:]) || put.Size != int64(len(data)) {
		t.Errorf("PutObject = %+v, want size %d and sha256 %x", put, len(data), sum)
	}
	got, info, err := s.GetObject(ctx, bucket, key)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) || info.ContentType != "image/png" || info.SHA256 != put.SHA256 {
		t.Errorf("GetObject = %q %+v, want the bytes put, image/png", got, info)
	}
	u, err := s.PresignGet(ctx, bucket, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if body := httpGet(t, u.String()); string(body) != string(data) {
		t.Errorf("presigned GET returned %q, want the bytes put", body)
	}
	if _, _, err := s.GetObject(ctx, bucket, "outputs/decode/"+randomHex(t, 32)+".png"); !IsNotFound(err) {
		t.Errorf("GetObject of a missing key: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"../escape", "outputs/../images/x", "tmp/x"} {
		if _, err := s.PutObject(ctx, bucket, bad, data, "image/png"); err == nil {
			t.Errorf("PutObject accepted key %q", bad)
		}
	}
}

// ProbeWrites sees what Ping cannot: a Postgres that answers but refuses writes (here a database whose sessions are
// read-only, as on a standby), and an outputs bucket that is not there to take a write.
func TestProbeWritesSeesReadOnlyStore(t *testing.T) {
	cfg := freshDB(t)
	ctx := context.Background()
	s := openOn(t, cfg)
	if err := s.EnsureBuckets(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.ProbeWrites(ctx); err != nil {
		t.Fatalf("probe of a healthy store: %v", err)
	}
	// The probe leaves nothing behind: the bucket is empty and can be removed.
	if err := s.s3.RemoveBucket(ctx, cfg.BucketOutputs); err != nil {
		t.Errorf("remove bucket %s after the probe: %v", cfg.BucketOutputs, err)
	}
	pc, err := pgx.ParseConfig(cfg.PGURL)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, stackConfig(t).PGURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// The name is ours (hex); ALTER DATABASE takes no bind parameters.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pc.Database+" SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(ctx, cfg) // new connections take the setting
	if err != nil {
		t.Fatalf("open: %v (Ping should pass on a read-only database)", err)
	}
	defer ro.Close()
	if err := ro.Ping(ctx); err != nil {
		t.Fatalf("ping of the read-only database: %v", err)
	}
	if err := ro.ProbeWrites(ctx); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("probe of the read-only database: %v, want a refusal naming read-only", err)
	}

	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pc.Database+" RESET default_transaction_read_only"); err != nil {
		t.Fatal(err)
	}
	noBucket := cfg
	noBucket.BucketOutputs = "dae-test-" + randomHex(t, 6) // never made
	nb, err := Open(ctx, noBucket)
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	if err := nb.ProbeWrites(ctx); err == nil || !strings.Contains(err.Error(), noBucket.BucketOutputs) {
		t.Errorf("probe with a missing outputs bucket: %v, want a refusal naming the bucket", err)
	}
}

// A message or a reason holding NUL (which Postgres text and jsonb refuse) is still recorded, the NUL replaced, so
// that a hostile message fails once instead of being retried until it is dead.
func TestNulInMessageAndReasonIsRecorded(t *testing.T) {
	t.Parallel()
	s := openFresh(t)
	ctx := context.Background()
	if err := s.FailInvalidJob(ctx, schema.KindEncode, "encode/x/nul-1", []byte("{\"v\":1,\x00}"), "", "bad\x00message"); err != nil {
		t.Fatalf("FailInvalidJob with NUL: %v", err)
	}
	if err := s.RecordDeadJob(ctx, schema.KindEncode, "encode/x/nul-2", []byte(`{"v":1,"source":"a\u0000b"}`), "", "gave up\x00"); err != nil {
		t.Fatalf("RecordDeadJob with an escaped NUL: %v", err)
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE dedup_key LIKE 'encode/x/nul-%' AND last_error LIKE '%'||chr(65533)||'%'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("jobs recorded with the NUL replaced: %d, %v; want 2", n, err)
	}
}
