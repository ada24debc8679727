package diffae

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"dae/nn"
	"dae/tensor"
)

// ImageSource yields training images: Batch copies images idx (flipped horizontally at random when flip is not
// nil) into dst as N×C×H×W values in [-1, 1].
type ImageSource interface {
	Batch(idx []int, dst []float32, flip *rand.Rand) []float32
}

// TrainOptions are the reference's training hyper-parameters (SPEC A5), scaled to the machine.
type TrainOptions struct {
	Batch       int     // images (or latents) per step
	LR          float64 // Adam learning rate (1e-4)
	WeightDecay float64 // AdamW decoupled weight decay (0 for the autoencoder)
	ClipNorm    float64 // global gradient-norm clip (1.0)
	EMADecay    float64 // 0.9999, with the warm-up min(decay, (1+n)/(10+n))
	Flip        bool    // random horizontal flips (images only)
	Seed        uint64
}

func (o *TrainOptions) fill() {
	if o.Batch <= 0 {
		o.Batch = 32
	}
	if o.LR <= 0 {
		o.LR = 1e-4
	}
	if o.ClipNorm <= 0 {
		o.ClipNorm = 1
	}
	if o.EMADecay <= 0 {
		o.EMADecay = 0.9999
	}
}

// TrainState is what a training checkpoint records besides tensors; with it a run resumes exactly.
type TrainState struct {
	Kind    string       `json:"kind"` // "autoencoder", "ddpm" or "latent"
	Step    int          `json:"step"`
	Options TrainOptions `json:"options"`
	Loss    float64      `json:"last_loss"`
}

// MetaTrainState is the metadata key of the training state.
const MetaTrainState = "train_state"

// Trainer trains either the image networks (decoder and encoder, or the baseline's decoder) with the ε-MSE loss,
// or the latent DDIM with the ε-L1 loss on normalised z_sem. Every random draw of step s comes from a generator
// seeded by (Seed, s), and the data order from (Seed, epoch), so a resumed run repeats an uninterrupted one.
type Trainer struct {
	Model *Model
	Opts  TrainOptions
	State TrainState
	Opt   *nn.Adam
	EMA   *nn.EMA
	ps    *nn.Params
	obj   objective
	n     int
}

type objective interface {
	// step runs forward and backward for the examples idx with draws from rng and returns the loss.
	step(idx []int, rng *rand.Rand) float64
}

// NewImageTrainer trains m's decoder (and encoder) on n images from data.
func NewImageTrainer(m *Model, data ImageSource, n int, o TrainOptions) *Trainer {
	o.fill()
	sets := []*nn.Params{m.UNet.Params}
	kind := "ddpm"
	if m.Enc != nil {
		sets = append(sets, m.Enc.Params)
		kind = "autoencoder"
	}
	obj := &imageObjective{m: m, data: data, flip: o.Flip, sched: LinearSchedule()}
	return newTrainer(m, nn.Merge(sets...), obj, n, kind, o)
}

// NewLatentTrainer trains m's latent DDIM on z (n×E raw z_sem, normalised here with m.Stats).
func NewLatentTrainer(m *Model, z []float32, n int, o TrainOptions) (*Trainer, error) {
	if m.Latent == nil {
		return nil, fmt.Errorf("the model's configuration has no latent_net_conf")
	}
	if m.Stats == nil {
		return nil, fmt.Errorf("latent statistics are not set")
	}
	zn := append([]float32(nil), z...)
	if err := m.Normalize(zn); err != nil {
		return nil, err
	}
	o.fill()
	obj := &latentObjective{m: m, z: zn, e: m.Cfg.ZDim(), sched: ConstSchedule()}
	return newTrainer(m, m.Latent.Params, obj, n, "latent", o), nil
}

func newTrainer(m *Model, ps *nn.Params, obj objective, n int, kind string, o TrainOptions) *Trainer {
	return &Trainer{Model: m, Opts: o, ps: ps, obj: obj, n: n,
		State: TrainState{Kind: kind, Options: o},
		Opt:   nn.NewAdam(float32(o.LR), float32(o.WeightDecay)),
		EMA:   nn.NewEMA(ps, o.EMADecay)}
}

// indices returns the examples of the next step: epoch e visits a permutation drawn from (Seed, e).
func (t *Trainer) indices(step int) []int {
	idx := make([]int, t.Opts.Batch)
	var perm []int
	permEpoch := -1
	for j := range idx {
		k := step*t.Opts.Batch + j
		e := k / t.n
		if e != permEpoch {
			perm = rand.New(rand.NewPCG(t.Opts.Seed, uint64(e)^0xa5a5a5a5)).Perm(t.n)
			permEpoch = e
		}
		idx[j] = perm[k%t.n]
	}
	return idx
}

// Step runs one optimisation step and returns its loss.
func (t *Trainer) Step() (loss float64, err error) {
	defer nn.Recover(&err)
	step := t.State.Step
	rng := rand.New(rand.NewPCG(t.Opts.Seed, uint64(step)))
	t.Model.SetTraining(true)
	defer t.Model.SetTraining(false)
	for _, r := range t.Model.UNet.allRes() {
		if r.drop != nil {
			r.drop.Rng = rng
		}
	}
	t.ps.ZeroGrad()
	loss = t.obj.step(t.indices(step), rng)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, fmt.Errorf("step %d: loss is %v", step, loss)
	}
	nn.ClipGradNorm(t.ps, t.Opts.ClipNorm)
	t.Opt.Update(t.ps)
	t.EMA.Update(t.ps, nn.WarmDecay(t.Opts.EMADecay, step))
	t.State.Step++
	t.State.Loss = loss
	return loss, nil
}

type imageObjective struct {
	m                 *Model
	data              ImageSource
	flip              bool
	sched             *Schedule
	host, noiseH      []float32
	x0, xt, noise, de *tensor.Tensor
	tf                []float32
	ti                []int
}

func (o *imageObjective) step(idx []int, rng *rand.Rand) float64 {
	m := o.m
	d := m.Dev
	b := len(idx)
	per := m.ImageSize()
	var flip *rand.Rand
	if o.flip {
		flip = rng
	}
	if cap(o.host) < b*per {
		o.host, o.noiseH = make([]float32, b*per), make([]float32, b*per)
		o.tf, o.ti = make([]float32, b), make([]int, b)
	}
	o.host = o.data.Batch(idx, o.host[:b*per], flip)
	for i := range o.ti {
		o.ti[i] = rng.IntN(NumTrainSteps)
		o.tf[i] = float32(o.ti[i])
	}
	for i := range o.noiseH[:b*per] {
		o.noiseH[i] = float32(rng.NormFloat64())
	}
	shape := []int{b, m.Cfg.InChannels, m.Cfg.ImageSize, m.Cfg.ImageSize}
	o.x0 = tensor.Ensure(d, o.x0, shape...)
	o.xt = tensor.Ensure(d, o.xt, shape...)
	o.noise = tensor.Ensure(d, o.noise, shape...)
	o.de = tensor.Ensure(d, o.de, shape...)
	d.Upload(o.x0, o.host[:b*per])
	d.Upload(o.noise, o.noiseH[:b*per])
	QSample(o.xt, o.x0, o.noise, o.sched, o.ti)
	var z *tensor.Tensor
	if m.Enc != nil {
		z = m.Enc.Forward(o.x0)
	}
	eps := m.UNet.Forward(o.xt, o.tf, z)
	loss := nn.MSELoss(o.de, eps, o.noise)
	dz := m.UNet.Backward(o.de)
	if m.Enc != nil {
		m.Enc.Backward(dz)
	}
	return loss
}

type latentObjective struct {
	m             *Model
	z             []float32
	e             int
	sched         *Schedule
	host, noiseH  []float32
	x0, xt, noise *tensor.Tensor
	de            *tensor.Tensor
	tf            []float32
	ti            []int
}

func (o *latentObjective) step(idx []int, rng *rand.Rand) float64 {
	d := o.m.Dev
	b := len(idx)
	if cap(o.host) < b*o.e {
		o.host, o.noiseH = make([]float32, b*o.e), make([]float32, b*o.e)
		o.tf, o.ti = make([]float32, b), make([]int, b)
	}
	for j, i := range idx {
		copy(o.host[j*o.e:(j+1)*o.e], o.z[i*o.e:(i+1)*o.e])
		o.ti[j] = rng.IntN(NumTrainSteps)
		o.tf[j] = float32(o.ti[j])
	}
	for i := range o.noiseH[:b*o.e] {
		o.noiseH[i] = float32(rng.NormFloat64())
	}
	o.x0 = tensor.Ensure(d, o.x0, b, o.e)
	o.xt = tensor.Ensure(d, o.xt, b, o.e)
	o.noise = tensor.Ensure(d, o.noise, b, o.e)
	o.de = tensor.Ensure(d, o.de, b, o.e)
	d.Upload(o.x0, o.host[:b*o.e])
	d.Upload(o.noise, o.noiseH[:b*o.e])
	QSample(o.xt, o.x0, o.noise, o.sched, o.ti)
	eps := o.m.Latent.Forward(o.xt, o.tf)
	loss := nn.L1Loss(o.de, eps, o.noise)
	o.m.Latent.Backward(o.de)
	return loss
}

// Checkpoint writes a training checkpoint: the model with the EMA weights of the trained networks under their
// reference names (so it is a usable model), plus the raw weights and Adam moments under "train." and the state.
func (t *Trainer) Checkpoint(path string) error {
	all := t.Model.Params()
	ema := map[string]*tensor.Tensor{}
	for _, p := range t.EMA.Shadow.List {
		ema[p.Name] = p.W
	}
	var ts []nn.STTensor
	for _, p := range all.List {
		w := p.W
		if e, ok := ema[p.Name]; ok {
			w = e
		}
		ts = append(ts, nn.STTensor{Name: p.Name, Shape: p.W.Shape, Data: w.Host()})
	}
	for alias, primary := range all.Aliases() {
		w := all.Get(primary).W
		if e, ok := ema[primary]; ok {
			w = e
		}
		ts = append(ts, nn.STTensor{Name: alias, Shape: w.Shape, Data: w.Host()})
	}
	for _, p := range t.ps.List {
		mo, v := t.Opt.Moments(p)
		ts = append(ts,
			nn.STTensor{Name: TrainPrefix + "weight." + p.Name, Shape: p.W.Shape, Data: p.W.Host()},
			nn.STTensor{Name: TrainPrefix + "adam_m." + p.Name, Shape: p.W.Shape, Data: mo.Host()},
			nn.STTensor{Name: TrainPrefix + "adam_v." + p.Name, Shape: p.W.Shape, Data: v.Host()})
	}
	st, _ := json.Marshal(t.State)
	meta := map[string]string{}
	for k, v := range t.Model.Meta {
		meta[k] = v
	}
	meta[MetaTrainState] = string(st)
	meta[MetaConfig] = t.Model.Cfg.JSON()
	meta[MetaFormat] = FormatVersion
	if t.Model.Stats != nil {
		b, _ := json.Marshal(t.Model.Stats)
		meta[MetaLatentStats] = string(b)
	}
	return nn.WriteSafetensors(path, ts, "F32", meta)
}

// Resume restores the raw weights, EMA, Adam moments and step from a training checkpoint written by Checkpoint
// for the same kind of training. The trainer's model must have been loaded from the same file.
func (t *Trainer) Resume(path string) error {
	f, err := nn.ReadSafetensors(path)
	if err != nil {
		return err
	}
	var st TrainState
	if err := json.Unmarshal([]byte(f.Meta[MetaTrainState]), &st); err != nil {
		return fmt.Errorf("%s: no training state to resume from: %v", path, err)
	}
	if st.Kind != t.State.Kind {
		return fmt.Errorf("%s: holds %s training, not %s", path, st.Kind, t.State.Kind)
	}
	// Every tensor is read and checked before any is uploaded, so that a bad file leaves the trainer as it was.
	type upload struct {
		dst *tensor.Tensor
		v   []float32
	}
	var uploads []upload
	load := func(name string, dst *tensor.Tensor) error {
		v, shape, err := f.Get(name)
		if err != nil {
			return err
		}
		if !slices.Equal(shape, dst.Shape) {
			return fmt.Errorf("%s: tensor %q has shape %v, the model needs %v", path, name, shape, dst.Shape)
		}
		uploads = append(uploads, upload{dst, v})
		return nil
	}
	for i, p := range t.ps.List {
		for _, part := range []struct {
			prefix string
			dst    *tensor.Tensor
		}{{"weight.", p.W}, {"adam_m.", nil}, {"adam_v.", nil}} {
			dst := part.dst
			if dst == nil {
				mo, vv := t.Opt.Moments(p)
				dst = mo
				if strings.HasPrefix(part.prefix, "adam_v") {
					dst = vv
				}
			}
			if err := load(TrainPrefix+part.prefix+p.Name, dst); err != nil {
				return err
			}
		}
		if err := load(p.Name, t.EMA.Shadow.List[i].W); err != nil {
			return err
		}
	}
	for _, u := range uploads {
		t.Model.Dev.Upload(u.dst, u.v)
	}
	t.Opts = st.Options
	if o, ok := t.obj.(*imageObjective); ok {
		o.flip = st.Options.Flip // the stored options win, flips included
	}
	t.State.Options = st.Options
	t.Opt.LR, t.Opt.WeightDecay = float32(st.Options.LR), float32(st.Options.WeightDecay)
	t.Opt.Step = st.Step
	t.State.Step = st.Step
	t.State.Loss = st.Loss
	return nil
}

// ApplyEMA copies the EMA weights into the model (for evaluation or export after training).
func (t *Trainer) ApplyEMA() {
	for i, p := range t.ps.List {
		t.Model.Dev.Copy(p.W, t.EMA.Shadow.List[i].W)
	}
}
