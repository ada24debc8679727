// Package producer turns sources (a folder, an S3 prefix, a tar or zip archive) into jobs on NATS JetStream, and
// records them first, so that each job is visible in SQL before any worker sees it.
//
// Re-running a producer is safe and cheap: an image is addressed by the SHA-256 of its bytes, its job by the dedup
// key (model id + hash) that JetStream also uses as the message id, and an image the model has already encoded,
// or whose job is already final, is skipped. Files that are not images (by a header check: not a PNG, JPEG or
// GIF, a zero or oversized dimension), and files that cannot be read (corrupt archive members, unreadable or
// vanished files), are recorded as failed jobs with their reason and not published; damage past the header is
// found by the worker, which fails the job the same way.
//
// The producer speaks SQL and S3 only through store and knows nothing of the model.
package producer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"sync"
	"time"

	"dae/imageio"
	"dae/schema"
	"dae/store"

	"github.com/nats-io/nats.go/jetstream"
)

// Options describe one encode run.
type Options struct {
	Source string // folder, .tar/.tar.gz/.tgz/.zip, or s3://bucket/prefix
	Model  string // model id; it must have a row (register it first)
	Batch  string // batch id (a schema name)
	// Steps is the DDIM steps of the stochastic encoder each job asks for (0: the worker's default).
	Steps int
	// Chunk is the number of files handled together: one query, one COPY, one round of publishes (default 256).
	Chunk int
	// Limits bound the header check (the same pixel budget the workers use).
	Limits imageio.Limits
	// Progress, when set, is called after each chunk with the running totals.
	Progress func(Summary)
	Logger   *slog.Logger
}

// Summary counts what an encode run did with the files it found.
type Summary struct {
	Batch    string
	Found    int // image files in the source
	New      int // jobs recorded and published by this run
	Requeued int // jobs recorded earlier but still queued: published again (JetStream drops duplicates)
	Skipped  int // already encoded by the model, or already final, or a duplicate of another file
	Invalid  int // failed the header check: recorded as failed jobs with their reason
	Ignored  int // files without an image extension
	Elapsed  time.Duration
}

func (s Summary) String() string {
	return fmt.Sprintf("batch %s: %d images found, %d new jobs, %d requeued, %d skipped, %d invalid, %d other files ignored (%v)",
		s.Batch, s.Found, s.New, s.Requeued, s.Skipped, s.Invalid, s.Ignored, s.Elapsed.Round(time.Millisecond))
}

// pending is a file of the current chunk.
type pending struct {
	name    string
	data    []byte
	hash    string
	cfg     image.Config
	format  string
	invalid error
}

// Encode records the batch, then reads the source chunk by chunk, uploading new images, recording their jobs and
// publishing them. It returns the totals; on error they cover what was done before it.
func Encode(ctx context.Context, st *store.Store, js jetstream.JetStream, o Options) (Summary, error) {
	start := time.Now()
	sum := Summary{Batch: o.Batch}
	if o.Chunk <= 0 {
		o.Chunk = 256
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := schema.CheckName(o.Model); err != nil {
		return sum, fmt.Errorf("enqueue encode: model: %w", err)
	}
	if _, err := st.GetModel(ctx, o.Model); err != nil {
		return sum, fmt.Errorf("enqueue encode: %w (register the checkpoint first)", err)
	}
	if err := st.CreateBatch(ctx, store.Batch{ID: o.Batch, Name: o.Batch, Source: o.Source}); err != nil {
		return sum, fmt.Errorf("enqueue encode: %w", err)
	}
	var chunk []pending
	flush := func() error {
		err := encodeChunk(ctx, st, js, o, chunk, &sum)
		chunk = chunk[:0]
		sum.Elapsed = time.Since(start)
		if o.Progress != nil {
			o.Progress(sum)
		}
		return err
	}
	ignored, err := Walk(ctx, st, o.Source, func(it Item) error {
		sum.Found++
		p := pending{name: it.Name, data: it.Data}
		switch {
		case it.Err != nil:
			// Its content is out of reach, so its key is the hash of its name: a re-run finds the failed job
			// instead of recording another; once the file reads, its content makes a new job.
			p.data = nil
			p.hash = unreadableHash(it.Name)
			p.invalid = fmt.Errorf("%s: %w: %v", it.Name, ErrUnreadable, it.Err)
		case it.TooBig:
			p.hash = it.Hash
			p.invalid = fmt.Errorf("%s: %w: file of %d bytes exceeds %d", it.Name, imageio.ErrTooLarge, it.Size, MaxFileBytes)
		default:
			h := sha256.Sum256(it.Data)
			p.hash = hex.EncodeToString(h[:])
			p.cfg, p.format, p.invalid = checkHeader(it.Data, it.Name, o.Limits)
		}
		chunk = append(chunk, p)
		if len(chunk) >= o.Chunk {
			return flush()
		}
		return nil
	})
	sum.Ignored = ignored
	// The files read before an error that stopped the walk are handled all the same.
	ferr := flush()
	if err == nil {
		return sum, ferr
	}
	if ferr != nil {
		return sum, errors.Join(err, ferr)
	}
	return sum, err
}

// ErrUnreadable is the reason of a file that could not be read (Item.Err): a failed job, like a file that is not
// an image.
var ErrUnreadable = errors.New("file cannot be read")

// unreadableHash is the image hash, and so the job key, of a file whose content could not be read: the SHA-256 of
// its name, in a domain of its own.
func unreadableHash(name string) string {
	h := sha256.Sum256([]byte("dae unreadable file\x00" + name))
	return hex.EncodeToString(h[:])
}

// checkHeader reads only the image header: the format, and dimensions that are neither zero nor over the pixel
// budget. Errors match imageio's sentinels (imageio.IsInvalid).
func checkHeader(data []byte, name string, lim imageio.Limits) (image.Config, string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		switch {
		case len(data) == 0:
			return cfg, "", fmt.Errorf("%s: %w: the file is empty", name, imageio.ErrNotImage)
		case len(data) >= 24 && string(data[:8]) == "\x89PNG\r\n\x1a\n" && string(data[12:16]) == "IHDR" &&
			(binary.BigEndian.Uint32(data[16:]) == 0 || binary.BigEndian.Uint32(data[20:]) == 0):
			return cfg, "", fmt.Errorf("%s: %w: png header says %d×%d", name, imageio.ErrEmpty,
				binary.BigEndian.Uint32(data[16:]), binary.BigEndian.Uint32(data[20:]))
		case errors.Is(err, image.ErrFormat):
			return cfg, "", fmt.Errorf("%s: %w (starts with %q)", name, imageio.ErrNotImage, data[:min(8, len(data))])
		}
		return cfg, "", fmt.Errorf("%s: %w: bad header: %v", name, imageio.ErrCorrupt, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return cfg, format, fmt.Errorf("%s: %w: %s header says %d×%d", name, imageio.ErrEmpty, format, cfg.Width, cfg.Height)
	}
	limit := lim.MaxPixels
	if limit == 0 {
		limit = imageio.DefaultMaxPixels
	}
	if px := int64(cfg.Width) * int64(cfg.Height); limit > 0 && px > limit {
		return cfg, format, fmt.Errorf("%s: %w: %s header says %d×%d = %d pixels, limit %d", name, imageio.ErrTooLarge,
			format, cfg.Width, cfg.Height, px, limit)
	}
	return cfg, format, nil
}

// encodeChunk handles one chunk: look up what is known, upload and record what is new, publish.
func encodeChunk(ctx context.Context, st *store.Store, js jetstream.JetStream, o Options, chunk []pending, sum *Summary) error {
	if len(chunk) == 0 {
		return nil
	}
	hashes := make([]string, len(chunk))
	keys := make([]string, len(chunk))
	jobs := make([]*schema.Encode, len(chunk))
	for i, p := range chunk {
		hashes[i] = p.hash
		jobs[i] = &schema.Encode{Header: schema.Header{Model: o.Model, Batch: o.Batch}, ImageHash: p.hash, Source: sourceName(p.name),
			Steps: o.Steps}
		keys[i] = jobs[i].DedupKey()
	}
	encoded, err := st.EncodedImages(ctx, o.Model, hashes)
	if err != nil {
		return err
	}
	states, err := st.JobStates(ctx, keys)
	if err != nil {
		return err
	}
	known, err := st.KnownImages(ctx, hashes)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var publish []*schema.Encode
	var images []store.Image
	var uploads [][]byte
	for i, p := range chunk {
		state, recorded := states[keys[i]]
		switch {
		case seen[p.hash] || encoded[p.hash]:
			sum.Skipped++
			continue
		case recorded && state != store.StateQueued:
			sum.Skipped++ // running, done, failed or dead: its worker or its row has it
			continue
		case recorded && p.invalid != nil:
			// Recorded but not yet failed (an earlier run stopped between the two statements below): fail it now;
			// publishing it would only tell the worker its image was never uploaded.
			if err := st.FinishJob(ctx, keys[i], store.StateFailed, p.invalid.Error()); err != nil {
				return err
			}
			seen[p.hash] = true
			sum.Invalid++
			continue
		case recorded:
			sum.Requeued++
			publish = append(publish, jobs[i])
			seen[p.hash] = true
			continue
		}
		seen[p.hash] = true
		if p.invalid != nil {
			if _, _, err := st.RecordJob(ctx, jobs[i]); err != nil {
				return err
			}
			if err := st.FinishJob(ctx, keys[i], store.StateFailed, p.invalid.Error()); err != nil {
				return err
			}
			o.Logger.Warn("not an image", "file", p.name, "reason", p.invalid)
			sum.Invalid++
			continue
		}
		if !known[p.hash] {
			key, err := schema.ImageKey(p.hash)
			if err != nil {
				return err
			}
			images = append(images, store.Image{Hash: p.hash, Source: sourceName(p.name), ObjectKey: key,
				Size: int64(len(p.data)), Width: p.cfg.Width, Height: p.cfg.Height, ContentType: "image/" + p.format})
			uploads = append(uploads, p.data)
		}
		publish = append(publish, jobs[i])
		sum.New++
	}
	if err := upload(ctx, st, images, uploads); err != nil {
		return err
	}
	if len(images) > 0 {
		if _, err := st.WriteImages(ctx, images); err != nil {
			return err
		}
	}
	if len(publish) > 0 {
		recs := make([]schema.Job, len(publish))
		for i, j := range publish {
			recs[i] = j
		}
		if err := st.RecordJobs(ctx, recs); err != nil {
			return err
		}
	}
	return publishAll(ctx, js, publish)
}

// upload puts new images into the images bucket, several at a time (each PUT waits on the object store's disk).
func upload(ctx context.Context, st *store.Store, images []store.Image, data [][]byte) error {
	errs := make([]error, len(images))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range images {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, errs[i] = st.PutObject(ctx, st.Config().BucketImages, images[i].ObjectKey, data[i], images[i].ContentType)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sourceName fits a file name into the job's source field (4096 bytes, no control characters).
func sourceName(name string) string {
	b := []rune(name)
	out := make([]rune, 0, len(b))
	for _, r := range b {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	s := string(out)
	for len(s) > 4096 {
		s = s[len(s)-4096:]
	}
	return s
}

// publishAll publishes jobs asynchronously, each with its dedup key as the message id, and waits for every ack.
func publishAll[J schema.Job](ctx context.Context, js jetstream.JetStream, jobs []J) error {
	futures := make([]jetstream.PubAckFuture, 0, len(jobs))
	for _, j := range jobs {
		data, err := schema.Marshal(j)
		if err != nil {
			return err
		}
		f, err := js.PublishAsync(schema.Subject(j.JobKind()), data, jetstream.WithMsgID(j.DedupKey()))
		if err != nil {
			return fmt.Errorf("publish %s: %w", j.DedupKey(), err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", jobs[i].DedupKey(), err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Publish records one job and publishes it (for `dae enqueue decode|manipulate|interpolate|sample` and cron). A
// job already recorded in a final state is not published again; its state is returned so the caller can say so.
func Publish(ctx context.Context, st *store.Store, js jetstream.JetStream, j schema.Job) (state string, err error) {
	if b := j.Meta().Batch; b != "" {
		if err := st.CreateBatch(ctx, store.Batch{ID: b, Name: b}); err != nil {
			return "", err
		}
	}
	if _, _, err := st.RecordJob(ctx, j); err != nil {
		return "", err
	}
	states, err := st.JobStates(ctx, []string{j.DedupKey()})
	if err != nil {
		return "", err
	}
	state = states[j.DedupKey()]
	if state == store.StateDone || state == store.StateFailed || state == store.StateDead {
		return state, nil
	}
	return state, publishAll(ctx, js, []schema.Job{j})
}

// RequeueGrace is how long a job requeued by RetryFailed may stay queued and unstarted before a later RetryFailed
// takes it for one whose retry stopped before publishing it, and publishes it again. It only has to outlast a
// retry running at the same time (the time between its requeueing a job and publishing it).
var RequeueGrace = time.Minute

// RetryFailed re-enqueues a batch's failed jobs (and dead ones when dead is true): each goes back to queued and is
// published under a fresh message id, so that JetStream's duplicate window does not drop it. Messages that never
// parsed cannot be retried and are counted in skipped.
//
// A job is requeued before its message is published: a worker handed the message of a job whose row still says
// failed or dead acknowledges it as settled, so publishing first would lose the retry. A retry that stops in
// between (a crash) leaves the job queued with no message; RetryFailed therefore also publishes again, and counts
// in retried, the batch's jobs that an earlier retry requeued more than RequeueGrace ago and that no worker has
// started since. Those whose message is only waiting in the stream get a duplicate, which the worker settles.
func RetryFailed(ctx context.Context, st *store.Store, js jetstream.JetStream, batch string, dead bool) (retried, skipped int, err error) {
	stale, err := st.StaleRequeuedJobs(ctx, batch, RequeueGrace)
	if err != nil {
		return 0, 0, err
	}
	failed, err := st.FailedJobs(ctx, batch, dead)
	if err != nil {
		return 0, 0, err
	}
	stamp := time.Now().UTC().Format("20060102T150405.000000000")
	publish := func(j schema.Job) error {
		data, err := schema.Marshal(j)
		if err != nil {
			return err
		}
		_, err = js.Publish(ctx, schema.Subject(j.JobKind()), data, jetstream.WithMsgID(j.DedupKey()+"/retry/"+stamp))
		return err
	}
	for _, f := range stale {
		j, perr := schema.Parse(f.Payload)
		if perr != nil {
			skipped++
			continue
		}
		if err := publish(j); err != nil {
			return retried, skipped, fmt.Errorf("publish retry of %s: %w", j.DedupKey(), err)
		}
		retried++
	}
	for _, f := range failed {
		j, perr := schema.Parse(f.Payload)
		if perr != nil {
			skipped++
			continue
		}
		ok, err := st.RequeueJob(ctx, f.DedupKey)
		if err != nil {
			return retried, skipped, err
		}
		if !ok {
			skipped++
			continue
		}
		if err := publish(j); err != nil {
			// Not sent: the row goes back to what it was, so that it is not left queued with no message (and a
			// later retry finds it again).
			if rerr := st.FinishJob(context.WithoutCancel(ctx), f.DedupKey, f.State, f.Error); rerr != nil {
				return retried, skipped, fmt.Errorf("publish retry of %s: %w (and the job stays queued: %v)", j.DedupKey(), err, rerr)
			}
			return retried, skipped, fmt.Errorf("publish retry of %s: %w", j.DedupKey(), err)
		}
		retried++
	}
	return retried, skipped, nil
}
