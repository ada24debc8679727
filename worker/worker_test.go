package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"dae/diffae"
	"dae/tensor"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dae/imageio"
	"dae/producer"
	"dae/schema"
	"dae/store"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func enqueue(tb testing.TB, e *env, source, batch string) producer.Summary {
	tb.Helper()
	s, err := producer.Encode(context.Background(), e.st, e.js, producer.Options{Source: source, Model: e.model, Batch: batch})
	if err != nil {
		tb.Fatalf("enqueue %s: %v", source, err)
	}
	return s
}

// checkEncodedOnce checks that every image of the batch has exactly one latent and every job is done.
func checkEncodedOnce(tb testing.TB, e *env, batch string, n int) {
	tb.Helper()
	if got := e.query(tb, `SELECT count(*) FROM latents WHERE model_id = $1`, e.model); got != n {
		tb.Errorf("latents = %d, want %d", got, n)
	}
	if got := e.query(tb, `SELECT count(DISTINCT image_hash) FROM latents WHERE model_id = $1`, e.model); got != n {
		tb.Errorf("distinct images with latents = %d, want %d", got, n)
	}
	if got := e.query(tb, `SELECT count(*) FROM jobs WHERE batch_id = $1 AND state = 'done'`, batch); got != n {
		tb.Errorf("done jobs = %d, want %d", got, n)
	}
	// Every done job's image has its latent: nothing acknowledged without its effect.
	if got := e.query(tb, `SELECT count(*) FROM jobs j WHERE j.batch_id = $1 AND j.state = 'done' AND NOT EXISTS (
		SELECT 1 FROM latents l WHERE l.model_id = $2 AND l.image_hash = j.payload->>'image_hash')`, batch, e.model); got != 0 {
		tb.Errorf("%d done jobs without a latent", got)
	}
}

func TestEncodeFolderTwoWorkers(t *testing.T) {
	e := newEnv(t)
	const n = 500
	dir := e.fashion(t, n)
	batch := "two-workers-" + randomHex(t, 3)
	first := enqueue(t, e, dir, batch)
	if first.Found != n || first.New != n || first.Invalid != 0 || first.Ignored != 1 {
		t.Fatalf("first enqueue: %v; want %d found and new, labels.csv ignored", first, n)
	}
	again := enqueue(t, e, dir, batch)
	if again.New != 0 || again.Requeued != n {
		t.Errorf("second enqueue before any work: %v; want 0 new, %d requeued", again, n)
	}
	if got := e.streamMsgs(t); got != n {
		t.Errorf("job stream holds %d messages after two enqueues, want %d (duplicates dropped)", got, n)
	}
	e.startWorker(t, e.st, nil)
	e.startWorker(t, e.st, nil)
	s := e.waitBatch(t, batch, n, 3*time.Minute)
	if s.Counts[store.StateDone] != n {
		t.Fatalf("batch: %v, want %d done", s.Counts, n)
	}
	checkEncodedOnce(t, e, batch, n)
	third := enqueue(t, e, dir, batch)
	if third.New != 0 || third.Requeued != 0 || third.Skipped != n {
		t.Errorf("enqueue after the batch finished: %v; want 0 new, %d skipped", third, n)
	}
	if got := e.query(t, `SELECT count(*) FROM jobs`); got != n {
		t.Errorf("jobs = %d after three enqueues, want %d", got, n)
	}
	time.Sleep(300 * time.Millisecond)
	if got := e.streamMsgs(t); got != 0 {
		t.Errorf("job stream holds %d messages after the batch, want 0", got)
	}
}

func TestSIGKILLedWorkerLosesNothing(t *testing.T) {
	e := newEnv(t)
	const n = 200
	dir := e.fashion(t, n)
	batch := "kill-" + randomHex(t, 3)
	enqueue(t, e, dir, batch)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	c := e.cfg
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DAE_NATS_URL="+e.natsURL,
		store.EnvPGURL+"="+c.PGURL, store.EnvS3Endpoint+"="+c.S3Endpoint, store.EnvS3AccessKey+"="+c.S3AccessKey,
		store.EnvS3SecretKey+"="+c.S3SecretKey, store.EnvS3Secure+"="+fmt.Sprint(c.S3Secure), store.EnvS3Region+"="+c.S3Region,
		store.EnvBucketImages+"="+c.BucketImages, store.EnvBucketOutputs+"="+c.BucketOutputs, store.EnvBucketModels+"="+c.BucketModels)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for e.query(t, `SELECT count(*) FROM jobs WHERE state = 'done'`) < n/4 {
		select {
		case err := <-exited:
			t.Fatalf("the worker process exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the worker process finished no quarter of the batch in 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	killedAt := e.query(t, `SELECT count(*) FROM jobs WHERE state = 'done'`)
	if killedAt >= n {
		t.Fatalf("the worker finished all %d jobs before it was killed; nothing tested", n)
	}
	running := e.query(t, `SELECT count(*) FROM jobs WHERE state = 'running'`)
	t.Logf("killed the worker process with %d/%d done and %d running", killedAt, n, running)

	e.startWorker(t, e.st, nil)
	s := e.waitBatch(t, batch, n, 3*time.Minute)
	if s.Counts[store.StateDone] != n {
		t.Fatalf("batch after restart: %v, want %d done", s.Counts, n)
	}
	checkEncodedOnce(t, e, batch, n)
	if running > 0 {
		if got := e.query(t, `SELECT count(*) FROM jobs WHERE batch_id = $1 AND attempts > 1`, batch); got == 0 {
			t.Errorf("%d jobs were running at the kill, but no job was attempted twice", running)
		}
	}
}

// pngHeader is a PNG signature and IHDR chunk (with a correct CRC) declaring w×h 8-bit grey, and no data.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 17)
	copy(ihdr, "IHDR")
	binary.BigEndian.PutUint32(ihdr[4:], w)
	binary.BigEndian.PutUint32(ihdr[8:], h)
	ihdr[12] = 8 // bit depth; colour type 0 (grey), compression, filter, interlace 0
	binary.Write(&b, binary.BigEndian, uint32(13))
	b.Write(ihdr)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(ihdr))
	return b.Bytes()
}

func TestBadInputsFailAlone(t *testing.T) {
	e := newEnv(t)
	const good = 20
	dir := e.fashion(t, good)
	var real bytes.Buffer
	if err := png.Encode(&real, image.NewGray(image.Rect(0, 0, 32, 32))); err != nil {
		t.Fatal(err)
	}
	noisy := image.NewGray(image.Rect(0, 0, 64, 64))
	for i := range noisy.Pix {
		noisy.Pix[i] = uint8(i * 7919 >> 3)
	}
	real.Reset()
	if err := png.Encode(&real, noisy); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"truncated.png": real.Bytes()[:real.Len()/2],
		"notes.jpg":     []byte("this is a text file, not a JPEG\n"),
		"empty0x0.png":  pngHeader(0, 0),
		"huge.png":      pngHeader(20000, 20000),
	}
	for name, data := range bad {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	batch := "bad-" + randomHex(t, 3)
	sum := enqueue(t, e, dir, batch)
	if sum.Found != good+4 || sum.New != good+1 || sum.Invalid != 3 {
		t.Errorf("enqueue: %v; want %d found, %d new (truncated data passes the header check), 3 invalid", sum, good+4, good+1)
	}
	// A message with a missing field, published past the producer.
	raw := fmt.Sprintf(`{"v":1,"kind":"encode","model":%q,"batch":%q}`, e.model, batch)
	if _, err := e.js.Publish(context.Background(), schema.Subject(schema.KindEncode), []byte(raw), jetstream.WithMsgID("hand-made-1")); err != nil {
		t.Fatal(err)
	}
	// A recorded job whose message this worker cannot read (published under the job's dedup key, as the producer
	// does, by a newer producer, say): the job's own row fails with the reason, no second row appears.
	skew := &schema.Encode{Header: schema.Header{Model: e.model, Batch: batch}, ImageHash: strings.Repeat("ab", 32)}
	if _, _, err := e.st.RecordJob(context.Background(), skew); err != nil {
		t.Fatal(err)
	}
	raw = fmt.Sprintf(`{"v":99,"kind":"encode","model":%q,"batch":%q,"image_hash":%q}`, e.model, batch, skew.ImageHash)
	if _, err := e.js.Publish(context.Background(), schema.Subject(schema.KindEncode), []byte(raw), jetstream.WithMsgID(skew.DedupKey())); err != nil {
		t.Fatal(err)
	}
	e.startWorker(t, e.st, nil)
	s := e.waitBatch(t, batch, good+6, 2*time.Minute)
	if s.Counts[store.StateDone] != good || s.Counts[store.StateFailed] != 6 || s.Counts[store.StateDead] != 0 ||
		s.Counts[store.StateQueued] != 0 {
		t.Fatalf("batch: %v; want %d done and 6 failed", s.Counts, good)
	}
	if n := e.query(t, `SELECT count(*) FROM jobs WHERE dedup_key = $1 AND state = 'failed' AND last_error LIKE '%version%'`,
		skew.DedupKey()); n != 1 {
		t.Errorf("the recorded job with an unreadable message: %d failed rows naming the version, want 1", n)
	}
	if n := e.query(t, `SELECT count(*) FROM jobs WHERE dedup_key = $1`, "invalid/"+skew.DedupKey()); n != 0 {
		t.Errorf("the unreadable message of a recorded job got a row of its own")
	}
	fails, err := e.st.Failures(context.Background(), batch, 100)
	if err != nil {
		t.Fatal(err)
	}
	wants := map[string]string{
		"truncated.png": imageio.ErrCorrupt.Error(),
		"notes.jpg":     imageio.ErrNotImage.Error(),
		"empty0x0.png":  imageio.ErrEmpty.Error(),
		"huge.png":      "20000×20000",
		"hand-made-1":   `field "image_hash": missing`,
	}
	for what, want := range wants {
		found := false
		for _, f := range fails {
			if strings.Contains(f.Error, want) && (strings.Contains(f.Error, what) || strings.Contains(f.DedupKey, what)) {
				found = true
				if f.Attempts > 1 {
					t.Errorf("%s was attempted %d times; a bad input must not be retried", what, f.Attempts)
				}
			}
		}
		if !found {
			t.Errorf("no stored failure for %s containing %q; failures: %+v", what, want, fails)
		}
	}
	checkLatents := e.query(t, `SELECT count(*) FROM latents`)
	if checkLatents != good {
		t.Errorf("latents = %d, want %d", checkLatents, good)
	}

	// Retrying the failed items re-runs the four image jobs (they fail again, with the same reasons) and the
	// recorded job from its stored message (its image was never uploaded: it fails, naming that); the message that
	// never parsed cannot be retried.
	retried, skipped, err := producer.RetryFailed(context.Background(), e.st, e.js, batch, false)
	if err != nil || retried != 5 || skipped != 1 {
		t.Fatalf("RetryFailed = %d retried, %d skipped, %v; want 5 and 1", retried, skipped, err)
	}
	s = e.waitBatch(t, batch, good+6, time.Minute)
	if s.Counts[store.StateDone] != good || s.Counts[store.StateFailed] != 6 {
		t.Errorf("batch after retry: %v; want %d done and 6 failed", s.Counts, good)
	}
}

// proxy forwards TCP connections to target until it is cut; Cut closes the listener and every connection (the
// database "goes away"), Restore listens again on the same port.
type proxy struct {
	target string
	addr   string
	mu     sync.Mutex
	l      net.Listener
	conns  []net.Conn
}

func newProxy(tb testing.TB, target string) *proxy {
	p := &proxy{target: target}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p.addr = l.Addr().String()
	p.serve(l)
	tb.Cleanup(p.Cut)
	return p
}

func (p *proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { defer c.Close(); defer u.Close(); copyConn(u, c) }()
			go func() { defer c.Close(); defer u.Close(); copyConn(c, u) }()
		}
	}()
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) Restore(tb testing.TB) {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		tb.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(l)
}

func TestDatabaseOutageJobsWait(t *testing.T) {
	e := newEnv(t)
	const n = 150
	dir := e.fashion(t, n)
	batch := "outage-" + randomHex(t, 3)
	enqueue(t, e, dir, batch)

	// The worker reaches Postgres through a proxy that the test cuts for a while: a real outage for the worker,
	// none for the other users of the shared server.
	host := strings.SplitN(strings.SplitN(e.cfg.PGURL, "@", 2)[1], "/", 2)[0]
	px := newProxy(t, host)
	wcfg := e.cfg
	wcfg.PGURL = strings.Replace(e.cfg.PGURL, "@"+host+"/", "@"+px.addr+"/", 1)
	wst := e.open(t, wcfg)
	e.startWorker(t, wst, nil)

	for e.query(t, `SELECT count(*) FROM jobs WHERE state = 'done'`) < n/5 {
		time.Sleep(20 * time.Millisecond)
	}
	px.Cut()
	const outage = 4 * time.Second
	t.Logf("database cut off for %v with %d/%d done", outage, e.query(t, `SELECT count(*) FROM jobs WHERE state = 'done'`), n)
	time.Sleep(outage)
	px.Restore(t)
	s := e.waitBatch(t, batch, n, 3*time.Minute)
	if s.Counts[store.StateDone] != n {
		t.Fatalf("batch after the outage: %v, want %d done", s.Counts, n)
	}
	checkEncodedOnce(t, e, batch, n)
	if got := e.query(t, `SELECT count(*) FROM jobs WHERE attempts > 1`); got == 0 {
		t.Log("no job was retried: the outage hit no job in flight")
	}
}

func TestOutputJobs(t *testing.T) {
	e := newEnv(t)
	dir := e.fashion(t, 3)
	batch := "outputs-" + randomHex(t, 3)
	enqueue(t, e, dir, batch)
	e.startWorker(t, e.st, nil)
	e.waitBatch(t, batch, 3, time.Minute)
	ctx := context.Background()
	rows := e.query(t, `SELECT count(*) FROM latents`)
	if rows != 3 {
		t.Fatalf("latents = %d, want 3", rows)
	}
	fails, _ := e.st.Failures(ctx, "", 10)
	if len(fails) != 0 {
		t.Fatalf("failures: %+v", fails)
	}
	hashes := e.hashes(t)
	z := tinyConfig(t).ZDim()
	w := make([]float32, z)
	for i := range w {
		w[i] = float32(i%3) - 1
	}
	if _, err := e.st.AddClassifier(ctx, store.Classifier{ModelID: e.model, Attribute: "bag", Weights: w, Bias: 0.1, Promoted: true}); err != nil {
		t.Fatal(err)
	}
	// A version trained by the scheduled job records its pattern: manipulation moves along it.
	pat := make([]float32, z)
	pat[2] = 1 // w[2] = 1: the logit grows along it
	// It records the median logit of its positives too (as the scheduled job does), a target manipulate jobs may name.
	if _, err := e.st.AddClassifierVersion(ctx, store.ClassifierVersion{Classifier: store.Classifier{ModelID: e.model,
		Attribute: "shoe", Weights: w, Promoted: true, Metrics: json.RawMessage(`{"mode":"binary","median_positive_logit":1.5}`)},
		Pattern: pat}); err != nil {
		t.Fatal(err)
	}
	h := schema.Header{Model: e.model, Batch: batch + "-out"}
	jobs := []schema.Job{
		&schema.Decode{Header: h, ImageHash: hashes[0], Steps: 3, Noise: "encoded"},
		&schema.Decode{Header: h, ImageHash: hashes[0], Steps: 3, Noise: "random", Seed: 5},
		&schema.Manipulate{Header: h, ImageHash: hashes[1], Attribute: "bag", Scale: 0.5, Steps: 3},
		&schema.Manipulate{Header: h, ImageHash: hashes[1], Attribute: "shoe", Scale: 0.5, Steps: 3},
		&schema.Manipulate{Header: h, ImageHash: hashes[1], Attribute: "shoe", Target: "median", Steps: 3},
		&schema.Manipulate{Header: h, ImageHash: hashes[1], Attribute: "shoe", Target: "median", Steps: 3, Rounds: 2},
		&schema.Interpolate{Header: h, ImageHashA: hashes[0], ImageHashB: hashes[2], Frames: 4, Steps: 3},
		&schema.Sample{Header: h, Count: 4, Steps: 3, LatentSteps: 3, Seed: 1},
		&schema.Sample{Header: h, Count: 2, Steps: 3, LatentSteps: 3, Seed: 2, Attribute: "bag"},
		&schema.Sample{Header: h, Count: 2, Steps: 3, LatentSteps: 3, Seed: 2, Attribute: "bag", MinProb: 0.55},
		&schema.Regenerate{Header: h, ImageHash: hashes[2], Op: schema.KindDecode, Steps: 3, Generation: 1},
	}
	failing := []schema.Job{
		&schema.Manipulate{Header: h, ImageHash: hashes[1], Attribute: "smiling", Scale: 1, Steps: 3},
		&schema.Manipulate{Header: h, ImageHash: hashes[1], Attribute: "shoe", Target: "p95", Steps: 3},
		&schema.Decode{Header: h, ImageHash: strings.Repeat("ab", 32), Steps: 3, Noise: "encoded"},
	}
	for _, j := range append(append([]schema.Job{}, jobs...), failing...) {
		if _, err := producer.Publish(ctx, e.st, e.js, j); err != nil {
			t.Fatal(err)
		}
	}
	s := e.waitBatch(t, h.Batch, len(jobs)+len(failing), 2*time.Minute)
	if s.Counts[store.StateDone] != len(jobs) || s.Counts[store.StateFailed] != len(failing) {
		fails, _ := e.st.Failures(ctx, h.Batch, 10)
		t.Fatalf("output jobs: %v; want %d done, %d failed; failures %+v", s.Counts, len(jobs), len(failing), fails)
	}
	edits := map[string][]byte{}
	for _, j := range jobs {
		key, _ := schema.OutputKey(j.JobKind(), j.DedupKey(), "png")
		if got := e.query(t, `SELECT count(*) FROM outputs o JOIN jobs j ON j.id = o.job_id
			WHERE o.dedup_key = $1 AND o.object_key = $2 AND o.model_id = $3`, j.DedupKey(), key, e.model); got != 1 {
			t.Errorf("%s: %d output rows, want 1", j.DedupKey(), got)
		}
		data, _, err := e.st.GetObject(ctx, e.cfg.BucketOutputs, key)
		if err != nil {
			t.Errorf("%s: %v", j.DedupKey(), err)
			continue
		}
		if mj, ok := j.(*schema.Manipulate); ok && mj.Target == "" {
			edits[mj.Attribute] = data
		}
		if mj, ok := j.(*schema.Manipulate); ok && mj.Target != "" {
			edits[fmt.Sprintf("%s/r%d", mj.Target, max(mj.Rounds, 1))] = data
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Errorf("%s: output is not a PNG: %v", j.DedupKey(), err)
			continue
		}
		want := 16
		switch j := j.(type) {
		case *schema.Interpolate:
			want = j.Frames*16 + (j.Frames+1)*2
		}
		if j.JobKind() != schema.KindSample && img.Bounds().Dx() != want {
			t.Errorf("%s: output %v wide, want %d", j.DedupKey(), img.Bounds(), want)
		}
	}
	// "bag" and "shoe" share their weights; only the shoe version has a pattern, so only its edit moves along it.
	if edits["bag"] == nil || bytes.Equal(edits["bag"], edits["shoe"]) {
		t.Errorf("the edits along the weight and along the pattern are the same image (%d edits)", len(edits))
	}
	// A second round encodes the first round's edit and moves it again: another image.
	if edits["median/r1"] == nil || bytes.Equal(edits["median/r1"], edits["median/r2"]) {
		t.Errorf("the edit to the median in one round and in two are the same image (%d edits)", len(edits))
	}
	fails, err := e.st.Failures(ctx, h.Batch, 10)
	if err != nil {
		t.Fatal(err)
	}
	reasons := ""
	for _, f := range fails {
		reasons += f.Error + "\n"
	}
	for _, want := range []string{`no promoted classifier for "smiling"`, "has no latent", "records no p95"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("failures do not mention %q:\n%s", want, reasons)
		}
	}
}

// hashes lists the image hashes with latents under the env's model, in order.
func (e *env) hashes(tb testing.TB) []string {
	tb.Helper()
	c, err := pgx.Connect(context.Background(), e.cfg.PGURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), `SELECT image_hash FROM latents WHERE model_id = $1 ORDER BY image_hash`, e.model)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestKeepsFailingGoesDead(t *testing.T) {
	e := newEnv(t)
	dir := e.fashion(t, 2)
	batch := "dead-" + randomHex(t, 3)
	enqueue(t, e, dir, batch)
	// This worker reads images from a bucket that does not exist: a transient error (the store answers, the
	// object store refuses) on every delivery.
	wcfg := e.cfg
	wcfg.BucketImages = "dae-test-missing-" + randomHex(t, 4)
	e.startWorker(t, e.open(t, wcfg), nil)
	s := e.waitBatch(t, batch, 2, time.Minute)
	if s.Counts[store.StateDead] != 2 {
		t.Fatalf("batch: %v; want 2 dead", s.Counts)
	}
	fails, err := e.st.Failures(context.Background(), batch, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fails {
		if f.State != store.StateDead || f.Attempts != schema.MaxDeliver || !strings.Contains(f.Error, "gave up after 5 deliveries") ||
			!strings.Contains(f.Error, "bucket") {
			t.Errorf("dead job %+v: want %d attempts and a reason naming the bucket", f, schema.MaxDeliver)
		}
	}
	ds, err := e.js.Stream(context.Background(), schema.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ds.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("dead-letter stream holds %d messages, want 2", info.State.Msgs)
	}
	if got := e.streamMsgs(t); got != 0 {
		t.Errorf("job stream holds %d messages, want 0", got)
	}
	// A retry whose publish fails leaves the rows as they were (dead), not queued with no message.
	closed := e.connect(t)
	closed.Conn().Close()
	if _, _, err := producer.RetryFailed(context.Background(), e.st, closed, batch, true); err == nil {
		t.Fatal("RetryFailed through a closed connection: no error")
	}
	if n := e.query(t, `SELECT count(*) FROM jobs WHERE batch_id = $1 AND state = 'dead' AND last_error LIKE 'gave up%'`, batch); n != 2 {
		t.Fatalf("after a retry that could not publish: %d dead jobs with their reason, want 2", n)
	}
	// Retried by an operator while the cause persists, they die again, within the dead stream's duplicate window:
	// the second dead letters are not taken for duplicates of the first, so the rows end dead, not queued.
	retried, _, err := producer.RetryFailed(context.Background(), e.st, e.js, batch, true)
	if err != nil || retried != 2 {
		t.Fatalf("RetryFailed = %d retried, %v; want 2", retried, err)
	}
	if s := e.waitBatch(t, batch, 2, time.Minute); s.Counts[store.StateDead] != 2 {
		t.Fatalf("batch after a retry: %v; want 2 dead again", s.Counts)
	}
	if info, err := ds.Info(context.Background()); err != nil || info.State.Msgs != 4 {
		t.Errorf("dead-letter stream after a retry: %+v, %v; want 4 messages", info.State, err)
	}
}

func TestEncodeFromTarZipAndS3(t *testing.T) {
	e := newEnv(t)
	const n = 6
	dir := e.fashion(t, n)
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	// The same images as a tar.gz, a zip and an S3 prefix (in the test's images bucket, outside images/).
	tgz := filepath.Join(e.dir, "a.tar.gz")
	zp := filepath.Join(e.dir, "a.zip")
	if out, err := exec.Command("tar", "-czf", tgz, "-C", dir, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	if out, err := exec.Command("sh", "-c", "cd '"+dir+"' && zip -q -r '"+zp+"' .").CombinedOutput(); err != nil {
		t.Skipf("zip: %v %s", err, out)
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if err := e.st.PutSourceObject(context.Background(), e.cfg.BucketOutputs, "src/"+filepath.Base(f), data); err != nil {
			t.Fatal(err)
		}
	}
	s3 := "s3://" + e.cfg.BucketOutputs + "/src/"
	for i, src := range []string{tgz, zp, s3} {
		sum := enqueue(t, e, src, fmt.Sprintf("arch-%d-%s", i, randomHex(t, 2)))
		if sum.Found != n {
			t.Errorf("%s: found %d, want %d", src, sum.Found, n)
		}
		if i == 0 && sum.New != n {
			t.Errorf("%s: %d new, want %d", src, sum.New, n)
		}
		if i > 0 && sum.New != 0 {
			t.Errorf("%s: %d new jobs for images already enqueued from another source, want 0", src, sum.New)
		}
	}
	e.startWorker(t, e.st, nil)
	deadline := time.Now().Add(time.Minute)
	for e.query(t, `SELECT count(*) FROM latents`) < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := e.query(t, `SELECT count(*) FROM latents`); got != n {
		t.Errorf("latents = %d, want %d", got, n)
	}
	// An S3 object over producer.MaxFileBytes is hashed as it streams and recorded as failed, naming it, like a
	// file of a folder or an archive.
	big := make([]byte, producer.MaxFileBytes+1)
	if err := e.st.PutSourceObject(context.Background(), e.cfg.BucketOutputs, "big/huge.png", big); err != nil {
		t.Fatal(err)
	}
	batch := "big-" + randomHex(t, 2)
	if sum := enqueue(t, e, "s3://"+e.cfg.BucketOutputs+"/big/", batch); sum.Found != 1 || sum.Invalid != 1 || sum.New != 0 {
		t.Errorf("enqueue of an over-large S3 object: %+v, want 1 found, 1 invalid", sum)
	}
	fails, err := e.st.Failures(context.Background(), batch, 10)
	if err != nil || len(fails) != 1 || !strings.Contains(fails[0].Error, "huge.png") || !strings.Contains(fails[0].Error, "exceeds") {
		t.Errorf("failures of the over-large S3 object: %+v, %v; want one naming it", fails, err)
	}
}

func TestShutdownReleasesInFlight(t *testing.T) {
	e := newEnv(t)
	const n = 120
	dir := e.fashion(t, n)
	batch := "shutdown-" + randomHex(t, 3)
	enqueue(t, e, dir, batch)
	metrics := NewMetrics(prometheus.NewRegistry())
	// No grace: what is in flight at the stop is released, not finished.
	stop := e.startWorker(t, e.st, func(c *Config) { c.Grace = time.Nanosecond; c.Metrics = metrics; c.EncodeSteps = 20 })
	for e.query(t, `SELECT count(*) FROM jobs WHERE state = 'done'`) < n/4 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	var mv dto.Metric
	if err := metrics.Jobs.WithLabelValues(string(schema.KindEncode), OutcomeReleased).Write(&mv); err != nil {
		t.Fatal(err)
	}
	released := mv.GetCounter().GetValue()
	done := e.query(t, `SELECT count(*) FROM jobs WHERE state = 'done'`)
	t.Logf("stopped with %d/%d done, %v released", done, n, released)
	if done == n {
		t.Fatal("the batch finished before the stop; nothing tested")
	}
	e.startWorker(t, e.st, nil)
	s := e.waitBatch(t, batch, n, 2*time.Minute)
	if s.Counts[store.StateDone] != n {
		t.Fatalf("batch after restart: %v, want %d done", s.Counts, n)
	}
	checkEncodedOnce(t, e, batch, n)
}

// A job whose workers keep being stopped before they settle it is not stranded by the server after
// schema.MaxDeliver deliveries (its row `running` for ever): the next worker runs it. A job received
// schema.MaxReceipts times unsettled goes dead with its reason instead of running again.
func TestUnsettledJobsAreRedeliveredThenDead(t *testing.T) {
	e := newEnv(t)
	dir := e.fashion(t, 2)
	files, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil || len(files) != 2 {
		t.Fatalf("exported images: %v, %v", files, err)
	}
	dir2 := filepath.Join(e.dir, "images-second")
	if err := os.MkdirAll(dir2, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(files[1], filepath.Join(dir2, filepath.Base(files[1]))); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cons, err := e.js.Consumer(ctx, schema.StreamJobs, schema.Consumer(schema.KindEncode))
	if err != nil {
		t.Fatal(err)
	}
	// release takes the one pending job and gives it back unsettled, as a worker stopped mid-job does, until it has
	// been delivered n times.
	release := func(n uint64) {
		t.Helper()
		for {
			b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var got uint64
			for m := range b.Messages() {
				md, err := m.Metadata()
				if err != nil {
					t.Fatal(err)
				}
				got = md.NumDelivered
				if err := m.Nak(); err != nil {
					t.Fatal(err)
				}
			}
			if got == 0 {
				t.Fatal("the released job was not delivered again: the server stranded it")
			}
			if got >= n {
				return
			}
		}
	}

	first := "unsettled-" + randomHex(t, 3)
	enqueue(t, e, dir, first)
	release(schema.MaxDeliver)
	stop := e.startWorker(t, e.st, nil)
	if s := e.waitBatch(t, first, 1, time.Minute); s.Counts[store.StateDone] != 1 {
		t.Fatalf("job released %d times, then run: %v, want done", schema.MaxDeliver, s.Counts)
	}
	stop()

	second := "unsettled-" + randomHex(t, 3)
	enqueue(t, e, dir2, second)
	release(schema.MaxReceipts - 1)
	e.startWorker(t, e.st, nil)
	if s := e.waitBatch(t, second, 1, time.Minute); s.Counts[store.StateDead] != 1 {
		t.Fatalf("job released %d times: %v, want dead", schema.MaxReceipts-1, s.Counts)
	}
	fails, err := e.st.Failures(ctx, second, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("delivered %d times without a worker settling it", schema.MaxReceipts-1)
	if len(fails) != 1 || !strings.Contains(fails[0].Error, want) {
		t.Errorf("failures %+v: want one whose reason says %q", fails, want)
	}
	if got := e.streamMsgs(t); got != 0 {
		t.Errorf("job stream holds %d messages, want 0", got)
	}
}

// A bad file whose job an earlier run recorded but did not fail (it stopped between the two statements) is failed
// with its reason by the next run, not published as a job whose image was never uploaded.
func TestBadFileRecordedEarlierIsFailedNotPublished(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.dir, "bad-only")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := []byte("this is a text file, not a PNG\n")
	if err := os.WriteFile(filepath.Join(dir, "notes.png"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	half := &schema.Encode{Header: schema.Header{Model: e.model}, ImageHash: hex.EncodeToString(h[:])}
	if _, _, err := e.st.RecordJob(context.Background(), half); err != nil {
		t.Fatal(err)
	}
	sum := enqueue(t, e, dir, "half-"+randomHex(t, 3))
	if sum.Invalid != 1 || sum.Requeued != 0 {
		t.Errorf("enqueue: %+v; want the file counted invalid, nothing requeued", sum)
	}
	if n := e.query(t, `SELECT count(*) FROM jobs WHERE dedup_key = $1 AND state = 'failed' AND last_error LIKE '%notes.png%'`,
		half.DedupKey()); n != 1 {
		t.Errorf("the half-recorded job: %d failed rows naming the file, want 1", n)
	}
	if got := e.streamMsgs(t); got != 0 {
		t.Errorf("job stream holds %d messages, want 0", got)
	}
}

// Jobs published past the producer whose rows the database refuses (one names a batch that does not exist, one an
// image never registered) fail alone, with the database's reason, at once; the jobs fetched with them in one
// micro-batch are done.
func TestRefusedJobFailsAlone(t *testing.T) {
	e := newEnv(t)
	const n = 6
	batch := "ok-" + randomHex(t, 3)
	enqueue(t, e, e.fashion(t, n), batch)
	ext := &schema.Encode{Header: schema.Header{Model: e.model, Batch: "no-such-batch"}, ImageHash: strings.Repeat("cd", 32)}
	data, err := schema.Marshal(ext)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), schema.Subject(schema.KindEncode), data, jetstream.WithMsgID(ext.DedupKey())); err != nil {
		t.Fatal(err)
	}
	// And one whose image is in the images bucket but was never registered (put there past the producer): its
	// latent row is refused, after the encoder ran with the others in one batch.
	more, _ := filepath.Glob(filepath.Join(e.fashion(t, n+1), "*.png"))
	slices.Sort(more)
	png7, err := os.ReadFile(more[n])
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(png7)
	orphan := &schema.Encode{Header: schema.Header{Model: e.model, Batch: batch}, ImageHash: hex.EncodeToString(h[:])}
	key, _ := schema.ImageKey(orphan.ImageHash)
	if err := e.st.PutSourceObject(context.Background(), e.cfg.BucketImages, key, png7); err != nil {
		t.Fatal(err)
	}
	if data, err = schema.Marshal(orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), schema.Subject(schema.KindEncode), data, jetstream.WithMsgID(orphan.DedupKey())); err != nil {
		t.Fatal(err)
	}
	e.startWorker(t, e.st, nil) // one fetch of up to 8 takes all eight
	s := e.waitBatch(t, batch, n+1, time.Minute)
	if s.Counts[store.StateDone] != n || s.Counts[store.StateFailed] != 1 {
		t.Fatalf("batch: %v, want %d done and the unregistered image's job failed", s.Counts, n)
	}
	if got := e.query(t, `SELECT count(*) FROM jobs WHERE dedup_key = $1 AND state = 'failed' AND last_error LIKE '%foreign key%'`,
		orphan.DedupKey()); got != 1 {
		t.Errorf("the unregistered image's job: %d rows failed with the database's reason, want 1", got)
	}
	deadline := time.Now().Add(time.Minute)
	for e.query(t, `SELECT count(*) FROM jobs WHERE dedup_key = $1 AND state IN ('failed', 'dead')`, ext.DedupKey()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the refused job has no failed row after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := e.query(t, `SELECT count(*) FROM jobs WHERE dedup_key = $1 AND state = 'failed' AND attempts = 1
		AND last_error LIKE '%foreign key%'`, ext.DedupKey()); got != 1 {
		t.Errorf("the refused job: %d rows failed at once with the database's reason, want 1", got)
	}
	checkEncodedOnce(t, e, batch, n)
}

// A database that answers but refuses writes (a read-only server, as a standby or a failover in progress) makes
// every job fail transiently; the worker then waits for a probe write to pass instead of spending the jobs'
// deliveries, so the batch finishes once writes are accepted again rather than going to the dead-letter stream.
func TestReadOnlyDatabaseJobsWait(t *testing.T) {
	e := newEnv(t)
	const n = 6
	dir := e.fashion(t, n)
	batch := "readonly-" + randomHex(t, 3)
	enqueue(t, e, dir, batch)

	pc, err := pgx.ParseConfig(e.cfg.PGURL)
	if err != nil {
		t.Fatal(err)
	}
	db := pc.Database
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, e.cfg.PGURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// The names are ours (hex); ALTER DATABASE takes no bind parameters. Sessions opened from now on are read-only.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	wcfg := e.cfg
	wcfg.PGURL += "&application_name=dae_readonly_worker"
	e.startWorker(t, e.open(t, wcfg), func(c *Config) { c.Backoff, c.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond })

	// Without the probe, five deliveries 50, 100, 200, 200 ms apart would send every job to the dead-letter stream
	// within a second or two.
	time.Sleep(4 * time.Second)
	if got := e.query(t, `SELECT count(*) FROM jobs WHERE batch_id = $1 AND state IN ('done', 'dead', 'failed')`, batch); got != 0 {
		t.Fatalf("%d jobs settled while the database refused writes, want 0 (waiting)", got)
	}
	attempts := e.query(t, `SELECT COALESCE(max(attempts), 0) FROM jobs WHERE batch_id = $1`, batch)

	// Writes accepted again (the worker's sessions were opened read-only: end them, as a failover would).
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" RESET default_transaction_read_only"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = $1 AND application_name = 'dae_readonly_worker'`, db); err != nil {
		t.Fatal(err)
	}
	s := e.waitBatch(t, batch, n, 2*time.Minute)
	if s.Counts[store.StateDone] != n {
		t.Fatalf("batch after writes came back: %v, want %d done", s.Counts, n)
	}
	checkEncodedOnce(t, e, batch, n)
	t.Logf("%d jobs done; at most %d recorded attempts while read-only", n, attempts)
}

// A dead letter whose job has no row (published past the producer) is recorded dead in SQL with its message, so
// that it shows with the batch's failures and `dae retry --dead` can send it again, instead of being acknowledged
// and seen nowhere but the dead-letter stream.
func TestDeadLetterWithoutRowIsRecorded(t *testing.T) {
	e := newEnv(t)
	batch := "ghost-" + randomHex(t, 3)
	enqueue(t, e, e.fashion(t, 1), batch)
	ghost := &schema.Encode{Header: schema.Header{Model: e.model, Batch: batch}, ImageHash: strings.Repeat("9a", 32)}
	data, err := schema.Marshal(ghost)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(schema.DeadSubject(schema.KindEncode))
	msg.Data = data
	msg.Header.Set(HeaderJob, ghost.DedupKey())
	msg.Header.Set(schema.HeaderError, "gave up after 5 deliveries: object store unavailable")
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	e.startWorker(t, e.st, nil)
	s := e.waitBatch(t, batch, 2, time.Minute)
	if s.Counts[store.StateDone] != 1 || s.Counts[store.StateDead] != 1 {
		t.Fatalf("batch: %v, want the enqueued job done and the dead letter's job dead", s.Counts)
	}
	dead, err := e.st.FailedJobs(context.Background(), batch, true)
	if err != nil || len(dead) != 1 {
		t.Fatalf("failed jobs of the batch: %+v, %v; want the dead letter's", dead, err)
	}
	var got schema.Encode
	if dead[0].DedupKey != ghost.DedupKey() || dead[0].State != store.StateDead ||
		!strings.Contains(dead[0].Error, "gave up after 5 deliveries") || json.Unmarshal(dead[0].Payload, &got) != nil ||
		got.ImageHash != ghost.ImageHash {
		t.Errorf("recorded %+v (payload %s), want the job dead with its reason and message", dead[0], dead[0].Payload)
	}
}

// Registering a checkpoint under an id that already names another one is refused (workers would go on with the
// stored weights); the same file again is fine. A DDIM baseline found in a --models folder fails its jobs for good.
func TestRegisterModelKeepsIdsToOneCheckpoint(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first := filepath.Join(e.dir, e.model+".safetensors")
	if _, err := RegisterModel(ctx, e.st, first, e.model); err != nil {
		t.Fatalf("registering the same checkpoint again: %v", err)
	}
	other := diffae.New(tensor.NewCPU(1), tinyConfig(t), 8)
	path := filepath.Join(e.dir, "other.safetensors")
	if err := other.Save(path, "F32", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := RegisterModel(ctx, e.st, path, e.model); err == nil || !strings.Contains(err.Error(), "different checkpoint") {
		t.Fatalf("registering another checkpoint as %s: %v, want a refusal", e.model, err)
	}
	base := diffae.New(tensor.NewCPU(1), tinyConfig(t).Baseline(), 9)
	dir := t.TempDir()
	if err := base.Save(filepath.Join(dir, "base.safetensors"), "F32", nil); err != nil {
		t.Fatal(err)
	}
	_, err := modelSource{dir: dir}.load(ctx, tensor.NewCPU(1), "base")
	if !IsPermanent(err) || !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("loading a DDIM baseline: %v, want a permanent ErrUnknownModel", err)
	}
}

// Work that runs past the job timeout is cancelled and counts a failed delivery: the jobs are retried and, still
// too slow, end dead with the reason, instead of being held (and kept alive) for ever.
func TestJobTimeoutRetriesThenDead(t *testing.T) {
	e := newEnv(t)
	batch := "slow-" + randomHex(t, 3)
	enqueue(t, e, e.fashion(t, 2), batch)
	e.startWorker(t, e.st, func(c *Config) { c.JobTimeout = time.Millisecond })
	s := e.waitBatch(t, batch, 2, time.Minute)
	if s.Counts[store.StateDead] != 2 {
		t.Fatalf("batch: %v; want 2 dead", s.Counts)
	}
	fails, err := e.st.Failures(context.Background(), batch, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fails {
		if !strings.Contains(f.Error, "gave up after 5 deliveries") || !strings.Contains(f.Error, "job timeout") {
			t.Errorf("dead job %+v: want the job timeout as its reason", f)
		}
	}
}

// A sample job for a model found only in --models (no row in models) fails before it renders anything, instead
// of uploading its grid and then failing on the output row's foreign key (an object no row records); a manipulate
// job on a model without latent statistics works when the classifier carries its own normalisation.
func TestOutputJobsWithoutModelRowOrStats(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(e.dir, e.model+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ghost.safetensors"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	// A model without latent statistics, registered, with one latent and a classifier that has its own.
	cfg := tinyConfig(t)
	bare := diffae.New(tensor.NewCPU(1), cfg, 11)
	barePath := filepath.Join(e.dir, "bare.safetensors")
	if err := bare.Save(barePath, "F32", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := RegisterModel(ctx, e.st, barePath, "bare"); err != nil {
		t.Fatal(err)
	}
	h := strings.Repeat("cd", 32)
	if _, err := e.st.WriteImages(ctx, []store.Image{{Hash: h, Source: "synthetic.png", ObjectKey: "images/cd/" + h,
		Size: 1, ContentType: "image/png"}}); err != nil {
		t.Fatal(err)
	}
	d, px := cfg.ZDim(), cfg.InChannels*cfg.ImageSize*cfg.ImageSize
	z, xT := make([]float32, d), make([]float32, px)
	one := make([]float32, d)
	for i := range z {
		z[i], one[i] = float32(i%5)-2, 1
	}
	if _, _, err := e.st.UpsertLatent(ctx, store.Latent{ModelID: "bare", ImageHash: h, ZSem: z, XT: xT,
		XTShape: []int{cfg.InChannels, cfg.ImageSize, cfg.ImageSize}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.AddClassifierVersion(ctx, store.ClassifierVersion{Classifier: store.Classifier{ModelID: "bare",
		Attribute: "bag", Weights: one, Promoted: true}, Mean: make([]float32, d), Std: one}); err != nil {
		t.Fatal(err)
	}
	e.startWorker(t, e.st, func(c *Config) { c.ModelDir = dir })
	batch := "norow-" + randomHex(t, 3)
	ghost := &schema.Sample{Header: schema.Header{Model: "ghost", Batch: batch}, Count: 2, Steps: 3, LatentSteps: 3, Seed: 1}
	edit := &schema.Manipulate{Header: schema.Header{Model: "bare", Batch: batch}, ImageHash: h, Attribute: "bag", Scale: 0.5, Steps: 3}
	for _, j := range []schema.Job{ghost, edit} {
		if _, err := producer.Publish(ctx, e.st, e.js, j); err != nil {
			t.Fatal(err)
		}
	}
	s := e.waitBatch(t, batch, 2, time.Minute)
	fails, _ := e.st.Failures(ctx, batch, 10)
	if s.Counts[store.StateFailed] != 1 || s.Counts[store.StateDone] != 1 || len(fails) != 1 ||
		fails[0].DedupKey != ghost.DedupKey() || !strings.Contains(fails[0].Error, "no row in models") {
		t.Fatalf("batch %v, failures %+v; want the ghost sample failed (no row in models) and the edit done", s.Counts, fails)
	}
	key, _ := schema.OutputKey(schema.KindSample, ghost.DedupKey(), "png")
	if _, err := e.st.StatObject(ctx, e.cfg.BucketOutputs, key); !store.IsNotFound(err) {
		t.Errorf("the failed sample's output object: %v, want none", err)
	}
}
