package diffae

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"dae/nn"
	"dae/tensor"
)

// LatentStats are the per-dimension mean and (unbiased) std of z_sem over the training set; the latent DDIM works
// on z normalised by them.
type LatentStats struct {
	Mean []float32 `json:"mean"`
	Std  []float32 `json:"std"`
}

// Model is a complete network: the decoder, the semantic encoder (nil for the DDIM baseline), the latent DDIM (nil
// if the configuration has none) and the latent statistics. A Model keeps per-layer buffers, so one goroutine uses
// it at a time.
type Model struct {
	Cfg    *Config
	Dev    tensor.Device
	UNet   *UNet
	Enc    *Encoder
	Latent *LatentNet
	Stats  *LatentStats
	// Meta is extra checkpoint metadata (training progress, provenance).
	Meta map[string]string
	// ID identifies the weights: a hash of the checkpoint file, or empty for a fresh model.
	ID string
}

// New builds a freshly initialised model of cfg on d.
func New(d tensor.Device, cfg *Config, seed uint64) *Model {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	m := &Model{Cfg: cfg, Dev: d, Meta: map[string]string{}}
	m.UNet = NewUNet(d, cfg, rng)
	if cfg.IsAutoencoder() {
		m.Enc = NewEncoder(d, cfg, rng)
	}
	if cfg.LatentNet != nil {
		m.Latent = NewLatentNet(d, cfg.LatentNet, rng)
	}
	return m
}

// Params returns every parameter of the model under its reference name.
func (m *Model) Params() *nn.Params {
	sets := []*nn.Params{m.UNet.Params}
	if m.Enc != nil {
		sets = append(sets, m.Enc.Params)
	}
	if m.Latent != nil {
		sets = append(sets, m.Latent.Params)
	}
	return nn.Merge(sets...)
}

// ErrCheckpoint marks a checkpoint that cannot be used: unreadable, without configuration, or not matching it.
var ErrCheckpoint = errors.New("invalid checkpoint")

// Metadata keys of a checkpoint.
const (
	MetaConfig      = "config"
	MetaLatentStats = "latent_stats"
	MetaFormat      = "format"
	FormatVersion   = "dae-checkpoint/1"
	// TrainPrefix prefixes tensors of the training state (raw weights, optimiser moments) in a training checkpoint.
	TrainPrefix = "train."
)

// Load reads a safetensors checkpoint: the configuration from its metadata, every tensor by its reference name.
func Load(d tensor.Device, path string) (*Model, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	f, err := nn.ParseSafetensors(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, path, err)
	}
	f.Path = path
	m, err := FromSafetensors(d, f)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	m.ID = hex.EncodeToString(sum[:8])
	return m, nil
}

// FromSafetensors builds the model a parsed checkpoint describes and loads its weights.
func FromSafetensors(d tensor.Device, f *nn.STFile) (*Model, error) {
	cj, ok := f.Meta[MetaConfig]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no %q metadata (a checkpoint must describe its network)", ErrCheckpoint,
			f.Path, MetaConfig)
	}
	cfg, err := ParseConfig([]byte(cj))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, f.Path, err)
	}
	m := New(d, cfg, 0)
	if err := nn.LoadParams(m.Params(), f, true, TrainPrefix); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	if s, ok := f.Meta[MetaLatentStats]; ok {
		var st LatentStats
		if err := json.Unmarshal([]byte(s), &st); err != nil {
			return nil, fmt.Errorf("%w: %s: latent_stats: %v", ErrCheckpoint, f.Path, err)
		}
		if len(st.Mean) != cfg.ZDim() || len(st.Std) != cfg.ZDim() {
			return nil, fmt.Errorf("%w: %s: latent_stats has %d/%d values, z_sem has %d", ErrCheckpoint, f.Path,
				len(st.Mean), len(st.Std), cfg.ZDim())
		}
		m.Stats = &st
	}
	for k, v := range f.Meta {
		if k != MetaConfig && k != MetaLatentStats {
			m.Meta[k] = v
		}
	}
	return m, nil
}

// Save writes the model as a checkpoint (dtype "F32" or "F16"), with extra tensors (e.g. the training state).
func (m *Model) Save(path, dtype string, extra []nn.STTensor) error {
	meta := map[string]string{}
	for k, v := range m.Meta {
		meta[k] = v
	}
	meta[MetaConfig] = m.Cfg.JSON()
	meta[MetaFormat] = FormatVersion
	if m.Stats != nil {
		b, _ := json.Marshal(m.Stats)
		meta[MetaLatentStats] = string(b)
	}
	ts := append(nn.ParamTensors(m.Params(), ""), extra...)
	return nn.WriteSafetensors(path, ts, dtype, meta)
}

// Name describes the model for logs.
func (m *Model) Name() string {
	kind := "Diff-AE"
	if !m.Cfg.IsAutoencoder() {
		kind = "DDIM baseline"
	}
	id := m.ID
	if id == "" {
		id = "untrained"
	}
	return fmt.Sprintf("%s %dx%dx%d %s", kind, m.Cfg.InChannels, m.Cfg.ImageSize, m.Cfg.ImageSize, id)
}

// SetTraining switches dropout on or off.
func (m *Model) SetTraining(on bool) { m.UNet.SetTraining(on) }

// Progress reports work done on a long operation.
type Progress func(done, total int)

// ImageSize is C·H·W of one image.
func (m *Model) ImageSize() int { return m.Cfg.InChannels * m.Cfg.ImageSize * m.Cfg.ImageSize }

func (m *Model) imageTensor(n int) *tensor.Tensor {
	return m.Dev.New(n, m.Cfg.InChannels, m.Cfg.ImageSize, m.Cfg.ImageSize)
}

// EncodeOptions control Encode.
type EncodeOptions struct {
	Steps        int  // DDIM steps of the stochastic encoder (default DefaultSteps)
	Batch        int  // images per forward pass (default 16)
	SemanticOnly bool // skip x_T
	Progress     Progress
}

// DefaultSteps is the number of DDIM steps used when none is given.
const DefaultSteps = 100

func (o *EncodeOptions) fill() {
	if o.Steps <= 0 {
		o.Steps = DefaultSteps
	}
	if o.Batch <= 0 {
		o.Batch = 16
	}
}

// Encode maps n images (x0 in [-1,1], n×C×H×W values) to z_sem (n×E) and, unless SemanticOnly, x_T (n×C×H×W).
func (m *Model) Encode(ctx context.Context, x0 []float32, n int, o EncodeOptions) (z, xT []float32, err error) {
	defer nn.Recover(&err)
	if m.Enc == nil {
		return nil, nil, errors.New("the DDIM baseline has no semantic encoder; use Invert")
	}
	o.fill()
	per := m.ImageSize()
	if len(x0) != n*per {
		return nil, nil, fmt.Errorf("encode: %d values for %d images of %d", len(x0), n, per)
	}
	e := m.Cfg.ZDim()
	z = make([]float32, n*e)
	if !o.SemanticOnly {
		xT = make([]float32, n*per)
	}
	var sampler *Sampler
	if !o.SemanticOnly {
		sched, err := LinearSchedule().Respace(o.Steps)
		if err != nil {
			return nil, nil, err
		}
		sampler = &Sampler{Sched: sched, Clamp: true}
	}
	total := n
	if !o.SemanticOnly {
		total = n * o.Steps
	}
	done := 0
	for lo := 0; lo < n; lo += o.Batch {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		b := min(o.Batch, n-lo)
		x := m.imageTensor(b)
		m.Dev.Upload(x, x0[lo*per:(lo+b)*per])
		zt := m.Enc.Forward(x)
		m.Dev.Download(z[lo*e:(lo+b)*e], zt)
		if o.SemanticOnly {
			done += b
			if o.Progress != nil {
				o.Progress(done, total)
			}
			continue
		}
		zc := m.Dev.New(b, e)
		m.Dev.Copy(zc, zt)
		if err := m.ddim(ctx, sampler, x, zc, true, func(d int) {
			if o.Progress != nil {
				o.Progress(done+d*b, total)
			}
		}); err != nil {
			return nil, nil, err
		}
		done += b * o.Steps
		m.Dev.Download(xT[lo*per:(lo+b)*per], x)
	}
	return z, xT, nil
}

// DecodeOptions control Decode.
type DecodeOptions struct {
	Steps    int
	Batch    int
	Progress Progress
	// X0, if set, is called after each step (0 first) with the x̂0 the decoder predicts there for the images
	// first … first+count−1 (count×C×H×W values, valid during the call).
	X0 func(first, count, step int, x0 []float32)
}

// Decode runs conditional DDIM from x_T (n×C×H×W) given z_sem (n×E; nil for the baseline) and returns the images
// in [-1,1].
func (m *Model) Decode(ctx context.Context, z, xT []float32, n int, o DecodeOptions) (x0 []float32, err error) {
	defer nn.Recover(&err)
	eo := EncodeOptions{Steps: o.Steps, Batch: o.Batch}
	eo.fill()
	per := m.ImageSize()
	e := m.Cfg.ZDim()
	if len(xT) != n*per {
		return nil, fmt.Errorf("decode: x_T has %d values for %d images of %d", len(xT), n, per)
	}
	if m.Enc != nil && len(z) != n*e {
		return nil, fmt.Errorf("decode: z_sem has %d values for %d codes of %d", len(z), n, e)
	}
	sched, err := LinearSchedule().Respace(eo.Steps)
	if err != nil {
		return nil, err
	}
	sampler := &Sampler{Sched: sched, Clamp: true}
	x0 = make([]float32, n*per)
	total := n * eo.Steps
	done := 0
	for lo := 0; lo < n; lo += eo.Batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := min(eo.Batch, n-lo)
		x := m.imageTensor(b)
		m.Dev.Upload(x, xT[lo*per:(lo+b)*per])
		var zc *tensor.Tensor
		if m.Enc != nil {
			zc = m.Dev.New(b, e)
			m.Dev.Upload(zc, z[lo*e:(lo+b)*e])
		}
		if o.X0 != nil {
			host := make([]float32, b*per)
			first := lo
			sampler.OnX0 = func(step int, t *tensor.Tensor) {
				m.Dev.Download(host, t)
				o.X0(first, b, step, host)
			}
		}
		if err := m.ddim(ctx, sampler, x, zc, false, func(d int) {
			if o.Progress != nil {
				o.Progress(done+d*b, total)
			}
		}); err != nil {
			return nil, err
		}
		done += b * eo.Steps
		m.Dev.Download(x0[lo*per:(lo+b)*per], x)
	}
	return x0, nil
}

// Invert is the baseline's (or any model's unconditional) stochastic encoding: reverse DDIM without z_sem.
func (m *Model) Invert(ctx context.Context, x0 []float32, n int, o EncodeOptions) (xT []float32, err error) {
	defer nn.Recover(&err)
	if m.Enc != nil {
		_, xT, err = m.Encode(ctx, x0, n, o)
		return xT, err
	}
	o.fill()
	per := m.ImageSize()
	if len(x0) != n*per {
		return nil, fmt.Errorf("invert: %d values for %d images of %d", len(x0), n, per)
	}
	sched, err := LinearSchedule().Respace(o.Steps)
	if err != nil {
		return nil, err
	}
	sampler := &Sampler{Sched: sched, Clamp: true}
	xT = make([]float32, n*per)
	for lo := 0; lo < n; lo += o.Batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := min(o.Batch, n-lo)
		x := m.imageTensor(b)
		m.Dev.Upload(x, x0[lo*per:(lo+b)*per])
		if err := m.ddim(ctx, sampler, x, nil, true, nil); err != nil {
			return nil, err
		}
		if o.Progress != nil {
			o.Progress(lo+b, n)
		}
		m.Dev.Download(xT[lo*per:(lo+b)*per], x)
	}
	return xT, nil
}

// ddim runs the image sampler on one batch x (overwritten): upwards (the stochastic encoder) or downwards
// (decoding), conditioned on z (nil for the baseline). report gets the number of steps done; the run stops with
// ctx's error when ctx ends.
func (m *Model) ddim(ctx context.Context, s *Sampler, x, z *tensor.Tensor, up bool, report func(steps int)) error {
	tb := make([]float32, x.Shape[0])
	eps := func(x *tensor.Tensor, t int) *tensor.Tensor {
		for i := range tb {
			tb[i] = float32(t)
		}
		return m.UNet.Forward(x, tb, z)
	}
	var cerr error
	progress := func(done, _ int) {
		if report != nil {
			report(done)
		}
		if cerr == nil {
			cerr = ctx.Err()
		}
	}
	if up {
		s.Reverse(x, eps, progress)
	} else {
		s.Sample(x, eps, progress)
	}
	return cerr
}

// SampleLatentNormalized runs the latent DDIM (no clamp) from noise (n×E, in the normalised space) and returns the
// normalised samples.
func (m *Model) SampleLatentNormalized(noise []float32, n, steps int) (zn []float32, err error) {
	defer nn.Recover(&err)
	if m.Latent == nil {
		return nil, errors.New("this model has no latent DDIM (train one with `dae train-latent`)")
	}
	e := m.Cfg.ZDim()
	if len(noise) != n*e {
		return nil, fmt.Errorf("latent sample: %d noise values for %d codes of %d", len(noise), n, e)
	}
	sched, err := ConstSchedule().Respace(steps)
	if err != nil {
		return nil, err
	}
	s := &Sampler{Sched: sched}
	x := m.Dev.New(n, e)
	m.Dev.Upload(x, noise)
	tb := make([]float32, n)
	s.Sample(x, func(x *tensor.Tensor, t int) *tensor.Tensor {
		for i := range tb {
			tb[i] = float32(t)
		}
		return m.Latent.Forward(x, tb)
	}, nil)
	return x.Host(), nil
}

// Normalize maps z_sem to the latent DDIM's space in place; Denormalize is its inverse.
func (m *Model) Normalize(z []float32) error {
	if m.Stats == nil {
		return errors.New("this model has no latent statistics (train the latent DDIM first)")
	}
	e := len(m.Stats.Mean)
	for i := range z {
		z[i] = (z[i] - m.Stats.Mean[i%e]) / m.Stats.Std[i%e]
	}
	return nil
}

// Denormalize maps normalised z back to z_sem in place.
func (m *Model) Denormalize(z []float32) error {
	if m.Stats == nil {
		return errors.New("this model has no latent statistics (train the latent DDIM first)")
	}
	e := len(m.Stats.Mean)
	for i := range z {
		z[i] = z[i]*m.Stats.Std[i%e] + m.Stats.Mean[i%e]
	}
	return nil
}

// Describe is a one-line summary of the configuration for CLI output.
func (m *Model) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d parameters", m.Name(), m.Params().Count())
	return b.String()
}
