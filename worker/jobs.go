package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"dae/diffae"
	"dae/imageio"
	"dae/schema"
	"dae/store"

	"github.com/nats-io/nats.go/jetstream"
)

// encode runs a micro-batch of encode jobs with one database round trip per step: the jobs start together, each
// model's images go to the device together, their latents are written in one COPY, and the jobs finish together
// before they are acknowledged. A bad image fails alone.
func (r *runner) encode(ctx context.Context, msgs []jetstream.Msg) {
	w := r.w
	tasks := r.beginAll(ctx, schema.KindEncode, msgs)
	// Jobs go to the device together when they share the model and the number of encoder steps (a job's own
	// steps, else the worker's).
	type group struct {
		model string
		steps int
	}
	byGroup := map[group][]*task{}
	var order []group
	for _, t := range tasks {
		g := group{t.job.Meta().Model, w.cfg.EncodeSteps}
		if s := t.job.(*schema.Encode).Steps; s > 0 {
			g.steps = s
		}
		if _, seen := byGroup[g]; !seen {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], t)
	}
	for _, g := range order {
		tasks, id := byGroup[g], g.model
		m, err := r.model(ctx, id)
		if err != nil {
			for _, t := range tasks {
				w.fail(ctx, t, err)
			}
			continue
		}
		per := m.ImageSize()
		pix := make([][]float32, len(tasks))
		errs := make([]error, len(tasks))
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8) // object reads overlap; decoding is cheap next to the model
		for i, t := range tasks {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				pix[i], errs[i] = w.loadImage(ctx, t.job.(*schema.Encode), m)
			})
		}
		wg.Wait()
		x := make([]float32, 0, len(tasks)*per)
		var ok []*task
		for i, t := range tasks {
			if errs[i] != nil {
				w.fail(ctx, t, errs[i])
				continue
			}
			x = append(x, pix[i]...)
			ok = append(ok, t)
		}
		if len(ok) == 0 {
			continue
		}
		w.metrics.BatchSize.Observe(float64(len(ok)))
		start := time.Now()
		z, xT, err := m.Encode(ctx, x, len(ok), diffae.EncodeOptions{Steps: g.steps, Batch: len(ok)})
		if err != nil {
			err = fmt.Errorf("encode %d images with model %s: %w", len(ok), id, err)
			for _, t := range ok {
				w.fail(ctx, t, err)
			}
			continue
		}
		w.metrics.DeviceSeconds.WithLabelValues(string(schema.KindEncode)).Observe(time.Since(start).Seconds() / float64(len(ok)))
		e := m.Cfg.ZDim()
		shape := []int{m.Cfg.InChannels, m.Cfg.ImageSize, m.Cfg.ImageSize}
		ls := make([]store.Latent, len(ok))
		keys := make([]string, len(ok))
		for i, t := range ok {
			ls[i] = store.Latent{ModelID: id, ImageHash: t.job.(*schema.Encode).ImageHash,
				ZSem: z[i*e : (i+1)*e], XT: xT[i*per : (i+1)*per], XTShape: shape}
			keys[i] = t.key
		}
		_, err = w.st.WriteLatents(ctx, ls)
		if err == nil {
			err = w.st.FinishJobsDone(ctx, keys)
		}
		if err != nil && store.IsRefused(err) && len(ok) > 1 {
			// The database refuses one of the rows: one by one, so that only that job fails.
			for i, t := range ok {
				_, err := w.st.WriteLatents(ctx, ls[i:i+1])
				if err == nil {
					err = w.st.FinishJob(ctx, t.key, store.StateDone, "")
				}
				if err != nil {
					w.fail(ctx, t, err)
					continue
				}
				w.ack(t, OutcomeDone)
			}
			continue
		}
		if err != nil {
			for _, t := range ok {
				w.fail(ctx, t, err)
			}
			continue
		}
		for _, t := range ok {
			w.ack(t, OutcomeDone)
		}
	}
}

// loadImage reads a job's image from the images bucket and converts it to the model's input.
func (w *Worker) loadImage(ctx context.Context, j *schema.Encode, m *diffae.Model) ([]float32, error) {
	key, err := schema.ImageKey(j.ImageHash)
	if err != nil {
		return nil, permanent(err)
	}
	data, _, err := w.st.GetObject(ctx, w.st.Config().BucketImages, key)
	if store.IsNotFound(err) {
		return nil, permanent(fmt.Errorf("image %s is not in bucket %s (enqueue it with dae enqueue): %w", j.ImageHash, w.st.Config().BucketImages, err))
	}
	if err != nil {
		return nil, err
	}
	name := j.Source
	if name == "" {
		name = key
	}
	img, err := imageio.Decode(bytes.NewReader(data), name, w.cfg.Limits)
	if err != nil {
		return nil, err
	}
	return imageio.ToCHW(img, m.Cfg.ImageSize, m.Cfg.InChannels, nil), nil
}

// one runs a job of a kind that makes an output image: decode, manipulate, interpolate, sample, regenerate.
func (r *runner) one(ctx context.Context, k schema.Kind, msg jetstream.Msg) {
	w := r.w
	t, ok := r.begin(ctx, k, msg)
	if !ok {
		return
	}
	m, err := r.model(ctx, t.job.Meta().Model)
	if err != nil {
		w.fail(ctx, t, err)
		return
	}
	start := time.Now()
	out, err := w.render(ctx, m, t.job)
	if err != nil {
		w.fail(ctx, t, err)
		return
	}
	w.metrics.DeviceSeconds.WithLabelValues(string(k)).Observe(time.Since(start).Seconds() / float64(max(out.frames, 1)))
	if err := w.storeOutput(ctx, t, out); err != nil {
		w.fail(ctx, t, err)
		return
	}
	w.done(ctx, t)
}

// output is a rendered image and what it was made from.
type output struct {
	img     image.Image
	frames  int
	latents []int64
}

func (w *Worker) storeOutput(ctx context.Context, t *task, o output) error {
	var buf bytes.Buffer
	if err := imageio.EncodePNG(&buf, o.img); err != nil {
		return fmt.Errorf("output of %s: %w", t.key, err)
	}
	key, err := schema.OutputKey(t.kind, t.key, "png")
	if err != nil {
		return permanent(err)
	}
	obj, err := w.st.PutObject(ctx, w.st.Config().BucketOutputs, key, buf.Bytes(), "image/png")
	if err != nil {
		return err
	}
	jobID, err := w.st.JobID(ctx, t.key)
	if err != nil {
		return err
	}
	params, err := json.Marshal(t.job)
	if err != nil {
		return permanent(err)
	}
	_, err = w.st.UpsertOutput(ctx, store.Output{Kind: t.kind, DedupKey: t.key, ObjectKey: obj.Key,
		ContentType: "image/png", Size: obj.Size, ModelID: t.job.Meta().Model, JobID: jobID,
		LatentIDs: o.latents, Params: params})
	return err
}

// render computes a job's output image.
func (w *Worker) render(ctx context.Context, m *diffae.Model, job schema.Job) (output, error) {
	switch j := job.(type) {
	case *schema.Decode:
		return w.decode(ctx, m, j.ImageHash, j.Noise, j.Seed, j.Steps)
	case *schema.Manipulate:
		return w.manipulate(ctx, m, j.ImageHash, j.Attribute, j.Scale, j.Target, j.Steps, j.Rounds)
	case *schema.Regenerate:
		if j.Op == schema.KindManipulate {
			return w.manipulate(ctx, m, j.ImageHash, j.Attribute, j.Scale, j.Target, j.Steps, j.Rounds)
		}
		return w.decode(ctx, m, j.ImageHash, "encoded", 0, j.Steps)
	case *schema.Interpolate:
		return w.interpolate(ctx, m, j)
	case *schema.Sample:
		return w.sample(ctx, m, j)
	}
	return output{}, permanent(fmt.Errorf("job kind %s makes no output", job.JobKind()))
}

// latent reads a stored latent and checks that it fits the model.
func (w *Worker) latent(ctx context.Context, m *diffae.Model, hash string) (store.Latent, error) {
	l, err := w.st.GetLatent(ctx, m.ID, hash)
	if store.IsNotFound(err) {
		return l, permanent(fmt.Errorf("image %s has no latent under model %s (encode it first): %w", hash, m.ID, err))
	}
	if err != nil {
		return l, err
	}
	if len(l.ZSem) != m.Cfg.ZDim() || len(l.XT) != m.ImageSize() {
		return l, permanent(fmt.Errorf("latent %d: z_sem %d and x_T %d values, model %s wants %d and %d",
			l.ID, len(l.ZSem), len(l.XT), m.ID, m.Cfg.ZDim(), m.ImageSize()))
	}
	return l, nil
}

// noise is x ~ N(0, I) of n values from seed, the same on every worker.
func noise(seed int64, n int) []float32 {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6a09e667f3bcc909))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func (w *Worker) frames(m *diffae.Model, x []float32, n int) []image.Image {
	c, s := m.Cfg.InChannels, m.Cfg.ImageSize
	per := m.ImageSize()
	imgs := make([]image.Image, n)
	for i := range imgs {
		imgs[i] = imageio.FromCHW(x[i*per:(i+1)*per], c, s, s)
	}
	return imgs
}

func (w *Worker) decode(ctx context.Context, m *diffae.Model, hash, xt string, seed int64, steps int) (output, error) {
	l, err := w.latent(ctx, m, hash)
	if err != nil {
		return output{}, err
	}
	xT := l.XT
	if xt == "random" {
		xT = noise(seed, m.ImageSize())
	}
	x, err := m.Decode(ctx, l.ZSem, xT, 1, diffae.DecodeOptions{Steps: steps})
	if err != nil {
		return output{}, fmt.Errorf("decode latent %d: %w", l.ID, err)
	}
	return output{img: w.frames(m, x, 1)[0], frames: 1, latents: []int64{l.ID}}, nil
}

// classifier reads the promoted classifier of an attribute and pairs it with the model's latent statistics (the
// normalisation the classifiers are trained in).
func (w *Worker) classifier(ctx context.Context, m *diffae.Model, attr string) (*diffae.Classifier, error) {
	row, err := w.st.PromotedClassifierVersion(ctx, m.ID, attr)
	if store.IsNotFound(err) {
		return nil, permanent(fmt.Errorf("model %s has no promoted classifier for %q: %w", m.ID, attr, err))
	}
	if err != nil {
		return nil, err
	}
	// The weights are relative to the normalisation they were trained in: the one stored with them (the scheduled
	// retraining records it) or else the model's latent statistics.
	c := &diffae.Classifier{Attribute: attr, ModelID: m.ID, W: row.Weights, B: row.Bias, Mean: row.Mean, Std: row.Std,
		Pattern: row.Pattern, Metrics: numericMetrics(row.Metrics)}
	if row.Mean == nil || row.Std == nil {
		if m.Stats == nil {
			return nil, permanent(fmt.Errorf("classifier %d of %q was stored without its normalisation and model %s has no latent statistics to use instead", row.ID, attr, m.ID))
		}
		c.Mean, c.Std = m.Stats.Mean, m.Stats.Std
	}
	if err := c.CheckModel(m); err != nil {
		return nil, permanent(fmt.Errorf("classifier %d: %w", row.ID, err))
	}
	if err := c.Validate(); err != nil {
		return nil, permanent(fmt.Errorf("classifier %d: %w", row.ID, err))
	}
	var norm float64
	for _, v := range c.W {
		norm += float64(v) * float64(v)
	}
	if norm == 0 {
		return nil, permanent(fmt.Errorf("classifier %d has zero weights: no direction to move along", row.ID))
	}
	return c, nil
}

// numericMetrics reads the numbers of a stored classifier's metrics object (the logit targets among them); other
// entries, and an unreadable object, are skipped.
func numericMetrics(raw []byte) map[string]float64 {
	var all map[string]any
	if json.Unmarshal(raw, &all) != nil {
		return nil
	}
	out := map[string]float64{}
	for k, v := range all {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}

// manipulate moves the normalised z_sem along the promoted classifier's direction and decodes it with the stored
// x_T: z' = denorm(norm(z) + s·√d·u), u its pattern Σw/‖Σw‖ (as dae manipulate does by default), or, for a
// version stored before patterns were recorded, its weight w/‖w‖ (the reference's).
func (w *Worker) manipulate(ctx context.Context, m *diffae.Model, hash, attr string, scale float64, target string, steps, rounds int) (output, error) {
	l, err := w.latent(ctx, m, hash)
	if err != nil {
		return output{}, err
	}
	c, err := w.classifier(ctx, m, attr)
	if err != nil {
		return output{}, err
	}
	along := diffae.AlongPattern
	if c.Pattern == nil {
		along = diffae.AlongWeight
	}
	e := diffae.Edit{Scale: scale, Along: along}
	if target != "" {
		v, err := c.TargetLogit(target)
		if err != nil {
			return output{}, permanent(fmt.Errorf("manipulate to %s: %w", target, err))
		}
		// Later rounds encode the edit with the steps the stored x_T was encoded with.
		e = diffae.Edit{ToLogit: true, TargetLogit: v, Along: along, Rounds: rounds, EncodeSteps: w.cfg.EncodeSteps}
	}
	x, _, _, err := m.Manipulate(ctx, c, l.ZSem, l.XT, 1, e, diffae.DecodeOptions{Steps: steps})
	if err != nil {
		return output{}, fmt.Errorf("manipulate latent %d: %w", l.ID, err)
	}
	return output{img: w.frames(m, x, 1)[0], frames: 1, latents: []int64{l.ID}}, nil
}

// interpolate decodes frames between two latents: z_sem by lerp, x_T by slerp; the output is a strip.
func (w *Worker) interpolate(ctx context.Context, m *diffae.Model, j *schema.Interpolate) (output, error) {
	a, err := w.latent(ctx, m, j.ImageHashA)
	if err != nil {
		return output{}, err
	}
	b, err := w.latent(ctx, m, j.ImageHashB)
	if err != nil {
		return output{}, err
	}
	n := j.Frames
	e, per := m.Cfg.ZDim(), m.ImageSize()
	z := make([]float32, 0, n*e)
	xT := make([]float32, 0, n*per)
	for i := range n {
		alpha := float64(i) / float64(n-1)
		zi, err := diffae.Lerp(a.ZSem, b.ZSem, alpha)
		if err != nil {
			return output{}, permanent(err)
		}
		xi, err := diffae.Slerp(a.XT, b.XT, alpha)
		if err != nil {
			return output{}, permanent(err)
		}
		z, xT = append(z, zi...), append(xT, xi...)
	}
	x, err := m.Decode(ctx, z, xT, n, diffae.DecodeOptions{Steps: j.Steps})
	if err != nil {
		return output{}, fmt.Errorf("decode %d interpolation frames: %w", n, err)
	}
	return output{img: imageio.Strip(w.frames(m, x, n), 2, 1), frames: n, latents: []int64{a.ID, b.ID}}, nil
}

// sample draws z from the latent DDIM and decodes it with random x_T, as `dae sample` does for the same seed; with
// an attribute, codes are drawn until the promoted classifier accepts enough (few-shot conditional sampling, paper
// §5.6). The output is a grid.
func (w *Worker) sample(ctx context.Context, m *diffae.Model, j *schema.Sample) (output, error) {
	if m.Latent == nil || m.Stats == nil {
		return output{}, permanent(fmt.Errorf("model %s cannot sample: it has no latent DDIM or no latent statistics", m.ID))
	}
	// Its output row names the model: a model found only in --models, with no row, would fail only after the
	// images were rendered and uploaded (an object no row records).
	if _, err := w.st.GetModel(ctx, m.ID); store.IsNotFound(err) {
		return output{}, permanent(fmt.Errorf("model %s: %w: no row in models (register it with dae models register)", m.ID, ErrUnknownModel))
	} else if err != nil {
		return output{}, err
	}
	n := j.Count
	o := diffae.SampleOptions{LatentSteps: j.LatentSteps, Steps: j.Steps, Seed: uint64(j.Seed), MinProb: j.MinProb}
	var x []float32
	var err error
	if j.Attribute == "" {
		_, _, x, err = m.Sample(ctx, n, o)
	} else {
		var c *diffae.Classifier
		if c, err = w.classifier(ctx, m, j.Attribute); err != nil {
			return output{}, err
		}
		_, _, x, _, err = m.SampleConditional(ctx, c, n, o)
	}
	if errors.Is(err, diffae.ErrRejectionExhausted) {
		return output{}, permanent(fmt.Errorf("sample %d images: %w (the draws are seeded: a retry would repeat them)", n, err))
	}
	if err != nil {
		return output{}, fmt.Errorf("sample %d images: %w", n, err)
	}
	imgs := w.frames(m, x, n)
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	var grid [][]image.Image
	for lo := 0; lo < n; lo += cols {
		grid = append(grid, imgs[lo:min(lo+cols, n)])
	}
	return output{img: imageio.Grid(grid, 2, 1), frames: n}, nil
}
