package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"dae/schema"
	"dae/store"
	"dae/store/storetest"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The integration tests run on the stack deploy/local/up started: a throwaway database and throwaway buckets of
// its Postgres and MinIO, and an in-process NATS server private to the test (no worker consumes its jobs). Without
// a stack they skip, unless DAE_REQUIRE_STACK is set.

type stack struct {
	cfg   store.Config
	st    *store.Store
	js    jetstream.JetStream
	model string
}

func newStack(t *testing.T) *stack {
	t.Helper()
	ctx := context.Background()
	cfg := storetest.Config(t)
	b := make([]byte, 5)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	cfg.BucketImages = "dae-test-img-" + tag
	cfg.BucketOutputs = "dae-test-out-" + tag
	cfg.BucketModels = "dae-test-mod-" + tag
	s := &stack{cfg: cfg, st: storetest.Open(t, cfg), model: "m-" + tag}
	if err := s.st.EnsureBuckets(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, b := range cfg.Buckets() {
			if err := s.st.RemoveBucket(context.Background(), b); err != nil {
				t.Errorf("remove bucket: %v", err)
			}
		}
	})
	if err := s.st.UpsertModel(ctx, store.Model{ID: s.model, ZDim: 4}); err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if _, err := s.js.CreateStream(ctx, jetstream.StreamConfig{Name: schema.StreamJobs, Subjects: []string{schema.SubjectJobsAll},
		Retention: jetstream.WorkQueuePolicy, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	return s
}

// msgs is the number of messages in the job stream.
func (s *stack) msgs(t *testing.T) uint64 {
	t.Helper()
	str, err := s.js.Stream(context.Background(), schema.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func (s *stack) failed(t *testing.T, batch string) []store.FailedJob {
	t.Helper()
	f, err := s.st.FailedJobs(context.Background(), batch, true)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A damaged zip member fails its own job, with a reason naming it; the good members, before and after it, are
// all recorded and published in the one chunk; a re-run records nothing more (its jobs, still queued, are
// published again under their ids, which JetStream drops as duplicates).
func TestEncodeDamagedZipMember(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	src := zipWithBadCRC(t, pngFiles(t, "a.png", "b.png", "c.png", "d.png"), "b.png")
	for run := range 2 {
		sum, err := Encode(context.Background(), s.st, s.js, Options{Source: src, Model: s.model, Batch: "damaged"})
		if err != nil {
			t.Fatalf("run %d: Encode: %v (%v)", run, err, sum)
		}
		want := Summary{Found: 4, New: 3, Invalid: 1}
		if run == 1 {
			want = Summary{Found: 4, Requeued: 3, Skipped: 1}
		}
		if sum.Found != want.Found || sum.New != want.New || sum.Invalid != want.Invalid || sum.Skipped != want.Skipped ||
			sum.Requeued != want.Requeued {
			t.Errorf("run %d: %v, want %d found, %d new, %d invalid, %d requeued, %d skipped", run, sum, want.Found, want.New,
				want.Invalid, want.Requeued, want.Skipped)
		}
	}
	if n := s.msgs(t); n != 3 {
		t.Errorf("%d messages published, want 3", n)
	}
	f := s.failed(t, "damaged")
	if len(f) != 1 || !strings.Contains(f[0].Error, src+":b.png") || !strings.Contains(f[0].Error, "checksum") {
		t.Fatalf("failed jobs = %+v, want one for %s:b.png with its checksum error", f, src)
	}
}

// A tar cut inside a member: the run stops with an error, but the images read before it are published and the
// cut member is recorded as failed.
func TestEncodeTruncatedTar(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	src := truncatedTar(t, pngFiles(t, "a.png", "b.png", "c.png", "d.png"), "c.png")
	sum, err := Encode(context.Background(), s.st, s.js, Options{Source: src, Model: s.model, Batch: "cut"})
	if err == nil {
		t.Fatalf("Encode of a truncated tar: no error (%v)", sum)
	}
	if sum.New != 2 || sum.Invalid != 1 {
		t.Errorf("%v, want 2 new and 1 invalid", sum)
	}
	if n := s.msgs(t); n != 2 {
		t.Errorf("%d messages published, want 2 (a.png and b.png)", n)
	}
	if f := s.failed(t, "cut"); len(f) != 1 || !strings.Contains(f[0].Error, src+":c.png") {
		t.Errorf("failed jobs = %+v, want one for %s:c.png", f, src)
	}
}

// An S3 object deleted between the listing and its reading fails its own job; the others are published.
func TestEncodeS3ObjectGone(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	bucket := s.cfg.BucketOutputs // a throwaway bucket of this test
	for _, f := range pngFiles(t, "src/a.png", "src/b.png", "src/c.png") {
		if err := s.st.PutSourceObject(ctx, bucket, f.name, f.data); err != nil {
			t.Fatal(err)
		}
	}
	mc, err := minio.New(s.cfg.S3Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.cfg.S3AccessKey, s.cfg.S3SecretKey, ""),
		Secure: s.cfg.S3Secure, Region: s.cfg.S3Region})
	if err != nil {
		t.Fatal(err)
	}
	source := "s3://" + bucket + "/src/"
	var once sync.Once
	got := map[string]error{}
	if _, err := Walk(ctx, s.st, source, func(it Item) error {
		once.Do(func() {
			if err := mc.RemoveObject(ctx, bucket, "src/b.png", minio.RemoveObjectOptions{}); err != nil {
				t.Fatal(err)
			}
		})
		got[it.Name] = it.Err
		return nil
	}); err != nil {
		t.Fatalf("Walk(%s): %v", source, err)
	}
	if len(got) != 3 || got[source+"a.png"] != nil || got[source+"c.png"] != nil || !objectGone(got[source+"b.png"]) {
		t.Errorf("Walk(%s) = %v, want a.png and c.png read and b.png gone", source, got)
	}

	// Through Encode: b.png is gone for good now.
	sum, err := Encode(ctx, s.st, s.js, Options{Source: source, Model: s.model, Batch: "s3"})
	if err != nil || sum.New != 2 || sum.Invalid != 0 {
		t.Fatalf("Encode = %v, %v; want 2 new", sum, err)
	}
}

// crashingJS is a connection whose process dies (a panic here) when it is about to publish.
type crashingJS struct{ jetstream.JetStream }

func (crashingJS) Publish(context.Context, string, []byte, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	panic("crash before the publish")
}

// slowJS publishes, then calls after before it returns (a worker receiving the message at once).
type slowJS struct {
	jetstream.JetStream
	after func()
}

func (j slowJS) Publish(ctx context.Context, subj string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.Publish(ctx, subj, data, opts...)
	if err == nil {
		j.after()
	}
	return ack, err
}

// failedJob records an encode job of batch and fails it.
func (s *stack) failedJob(t *testing.T, batch string) string {
	t.Helper()
	ctx := context.Background()
	if err := s.st.CreateBatch(ctx, store.Batch{ID: batch, Name: batch}); err != nil {
		t.Fatal(err)
	}
	j := &schema.Encode{Header: schema.Header{Model: s.model, Batch: batch}, ImageHash: strings.Repeat("ab", 32), Source: "x.png"}
	if _, _, err := s.st.RecordJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := s.st.FinishJob(ctx, j.DedupKey(), store.StateFailed, "worker: something"); err != nil {
		t.Fatal(err)
	}
	return j.DedupKey()
}

func (s *stack) state(t *testing.T, key string) string {
	t.Helper()
	states, err := s.st.JobStates(context.Background(), []string{key})
	if err != nil {
		t.Fatal(err)
	}
	return states[key]
}

// backdate makes a job look last changed an hour ago.
func (s *stack) backdate(t *testing.T, key string) {
	t.Helper()
	storetest.Exec(t, s.st, `UPDATE jobs SET updated_at = now() - interval '1 hour' WHERE dedup_key = $1`, key)
}

// A retry that dies between requeueing a job and publishing it leaves the job queued with no message; a later
// retry publishes it.
func TestRetryFailedCrashBeforePublish(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	key := s.failedJob(t, "crash")
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("RetryFailed did not publish")
			}
		}()
		RetryFailed(context.Background(), s.st, crashingJS{s.js}, "crash", false)
	}()
	if got, n := s.state(t, key), s.msgs(t); got != store.StateQueued || n != 0 {
		t.Fatalf("after a crash before the publish the job is %s with %d messages, want queued with none", got, n)
	}
	// Within RequeueGrace it may be a retry running now, about to publish: left alone.
	if retried, _, err := RetryFailed(context.Background(), s.st, s.js, "crash", false); err != nil || retried != 0 || s.msgs(t) != 0 {
		t.Fatalf("RetryFailed at once = %d retried, %v, %d messages; want none", retried, err, s.msgs(t))
	}
	s.backdate(t, key)
	retried, skipped, err := RetryFailed(context.Background(), s.st, s.js, "crash", false)
	if err != nil || retried != 1 || skipped != 0 {
		t.Fatalf("RetryFailed later = %d retried, %d skipped, %v; want 1 retried", retried, skipped, err)
	}
	if got, n := s.state(t, key), s.msgs(t); got != store.StateQueued || n != 1 {
		t.Errorf("after the retry the job is %s with %d messages, want queued with 1", got, n)
	}
}

// Queued jobs that no retry touched (never failed, or started by a worker since) are not published again, however
// old.
func TestRetryFailedLeavesQueuedJobs(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	key := s.failedJob(t, "queued")
	fresh := &schema.Encode{Header: schema.Header{Model: s.model, Batch: "queued"}, ImageHash: strings.Repeat("cd", 32)}
	if _, _, err := s.st.RecordJob(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if retried, _, err := RetryFailed(ctx, s.st, s.js, "queued", false); err != nil || retried != 1 {
		t.Fatalf("RetryFailed = %d retried, %v; want 1", retried, err)
	}
	if _, err := s.st.StartJob(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.st.RetryJob(ctx, key, "worker: transient"); err != nil {
		t.Fatal(err)
	}
	s.backdate(t, key)
	s.backdate(t, fresh.DedupKey())
	if retried, _, err := RetryFailed(ctx, s.st, s.js, "queued", false); err != nil || retried != 0 {
		t.Fatalf("RetryFailed again = %d retried, %v; want 0", retried, err)
	}
	if n := s.msgs(t); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
}

// A worker handed the retried message while the retry is still publishing sees the job queued (and runs it),
// not failed (which it would acknowledge as settled, losing the retry).
func TestRetryFailedWorkerSeesQueued(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	key := s.failedJob(t, "race")
	worker := storetest.Open(t, s.cfg) // a worker's own pool
	var prev string
	var startErr error
	done := make(chan struct{})
	js := slowJS{JetStream: s.js, after: func() {
		go func() {
			defer close(done)
			prev, startErr = worker.StartJob(context.Background(), key)
		}()
		time.Sleep(200 * time.Millisecond) // the worker gets there before the retry returns
	}}
	retried, _, err := RetryFailed(context.Background(), s.st, js, "race", false)
	if err != nil || retried != 1 {
		t.Fatalf("RetryFailed = %d retried, %v; want 1", retried, err)
	}
	<-done
	if startErr != nil || prev != store.StateQueued {
		t.Errorf("the worker's StartJob during the publish = %q, %v; want queued", prev, startErr)
	}
}
