package diffae

import (
	"math/rand/v2"

	"dae/nn"
	"dae/tensor"
)

// block is one entry of the reference's input_blocks / output_blocks: a plain convolution (input_blocks.0), or a
// ResBlock optionally followed by attention and, on the way up, a resampling ResBlock.
type block struct {
	conv   *nn.Conv2d
	res    *resBlock
	attn   *nn.Attention
	resamp *resBlock
	cat    *nn.Concat // output blocks: concatenation with the skip
}

func (b *block) resBlocks() []*resBlock {
	var out []*resBlock
	if b.res != nil {
		out = append(out, b.res)
	}
	if b.resamp != nil {
		out = append(out, b.resamp)
	}
	return out
}

func (b *block) forward(h, embAct, condAct *tensor.Tensor) *tensor.Tensor {
	if b.conv != nil {
		return b.conv.Forward(h)
	}
	h = b.res.forward(h, embAct, condAct)
	if b.attn != nil {
		h = b.attn.Forward(h)
	}
	if b.resamp != nil {
		h = b.resamp.forward(h, embAct, condAct)
	}
	return h
}

func (b *block) backward(dh *tensor.Tensor) *tensor.Tensor {
	if b.conv != nil {
		return b.conv.Backward(dh)
	}
	if b.resamp != nil {
		dh = b.resamp.backward(dh)
	}
	if b.attn != nil {
		dh = b.attn.Backward(dh)
	}
	return b.res.backward(dh)
}

// UNet is the decoder: the reference's BeatGANsAutoencModel UNet (conditioned on t and z_sem) or, for the DDIM
// baseline, BeatGANsUNetModel (t only). It predicts ε from (x_t, t, z_sem).
type UNet struct {
	cfg                   *Config
	Params                *nn.Params
	cond                  bool
	time0, time2          *nn.Linear
	timeAct, embAct, zAct nn.SiLU
	input, output         []*block
	middle                *block
	midRes2               *resBlock
	outNorm               *nn.GroupNorm
	outConv               *nn.Conv2d
	tIn                   *tensor.Tensor
	tHost                 []float32
	dEmb, dCond           *tensor.Tensor
	gsum                  []*tensor.Tensor
	dskip                 []*tensor.Tensor
}

// NewUNet lays out the decoder of cfg on d with parameters named as in the reference, initialised as the
// reference initialises them (PyTorch defaults, zero last convolutions).
func NewUNet(d tensor.Device, cfg *Config, rng *rand.Rand) *UNet {
	ps := nn.NewParams(d)
	u := &UNet{cfg: cfg, Params: ps, cond: cfg.IsAutoencoder()}
	mc, emb := cfg.ModelChannels, cfg.EmbedChannels
	if u.cond {
		u.time0 = nn.NewLinear(ps, "time_embed.time_embed.0", mc, emb)
		u.time2 = nn.NewLinear(ps, "time_embed.time_embed.2", emb, emb)
	} else {
		u.time0 = nn.NewLinear(ps, "time_embed.0", mc, emb)
		u.time2 = nn.NewLinear(ps, "time_embed.2", emb, emb)
	}
	newRes := func(name string, cin, cout int, up, down bool) *resBlock {
		return newResBlock(ps, name, cin, cout, emb, true, u.cond, up, down, cfg.Dropout, rng)
	}
	ch := cfg.ChannelMult[0] * mc
	inCh := ch
	u.input = append(u.input, &block{conv: nn.NewConv2d(ps, "input_blocks.0.0", cfg.InChannels, ch, 3)})
	u.input[0].conv.NoInputGrad = true
	chans := []int{ch}
	res := cfg.ImageSize
	for level, mult := range cfg.ChannelMult {
		for range cfg.NumResBlocks {
			name := blockName("input_blocks", len(u.input))
			b := &block{res: newRes(name+".0", ch, mult*mc, false, false)}
			ch = mult * mc
			if contains(cfg.AttentionResolutions, res) {
				b.attn = nn.NewAttention(ps, name+".1", ch)
			}
			u.input = append(u.input, b)
			chans = append(chans, ch)
		}
		if level != len(cfg.ChannelMult)-1 {
			name := blockName("input_blocks", len(u.input))
			u.input = append(u.input, &block{res: newRes(name+".0", ch, ch, false, true)})
			chans = append(chans, ch)
			res /= 2
		}
	}
	u.middle = &block{res: newRes("middle_block.0", ch, ch, false, false), attn: nn.NewAttention(ps, "middle_block.1", ch)}
	u.midRes2 = newRes("middle_block.2", ch, ch, false, false)
	for level := len(cfg.ChannelMult) - 1; level >= 0; level-- {
		mult := cfg.ChannelMult[level]
		for i := 0; i <= cfg.NumResBlocks; i++ {
			ich := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			name := blockName("output_blocks", len(u.output))
			b := &block{cat: &nn.Concat{Name: name}, res: newRes(name+".0", ch+ich, mc*mult, false, false)}
			ch = mc * mult
			idx := 1
			if contains(cfg.AttentionResolutions, res) {
				b.attn = nn.NewAttention(ps, name+".1", ch)
				idx++
			}
			if level > 0 && i == cfg.NumResBlocks {
				b.resamp = newRes(blockName(name, idx), ch, ch, true, false)
				res *= 2
			}
			u.output = append(u.output, b)
		}
	}
	u.outNorm = nn.NewGroupNorm(ps, "out.0", ch)
	u.outConv = nn.NewConv2d(ps, "out.2", inCh, cfg.OutChannels, 3)
	u.init(nn.Init{Rng: rng})
	return u
}

func (u *UNet) allRes() []*resBlock {
	var out []*resBlock
	for _, b := range u.input {
		out = append(out, b.resBlocks()...)
	}
	out = append(out, u.middle.res, u.midRes2)
	for _, b := range u.output {
		out = append(out, b.resBlocks()...)
	}
	return out
}

func (u *UNet) allAttn() []*nn.Attention {
	var out []*nn.Attention
	for _, b := range append(append(append([]*block{}, u.input...), u.middle), u.output...) {
		if b.attn != nil {
			out = append(out, b.attn)
		}
	}
	return out
}

func initAttention(in nn.Init, a *nn.Attention) {
	in.TorchDefault(a.QKV.W, a.QKV.B, a.C)
	in.Const(a.Proj.W, 0)
	in.Const(a.Proj.B, 0)
}

func (u *UNet) init(in nn.Init) {
	in.TorchDefault(u.time0.W, u.time0.B, u.time0.In)
	in.TorchDefault(u.time2.W, u.time2.B, u.time2.In)
	c0 := u.input[0].conv
	in.TorchDefault(c0.W, c0.B, c0.Cin*9)
	for _, r := range u.allRes() {
		r.init(in)
	}
	for _, a := range u.allAttn() {
		initAttention(in, a)
	}
	in.Const(u.outConv.W, 0)
	in.Const(u.outConv.B, 0)
}

// SetTraining switches dropout on or off.
func (u *UNet) SetTraining(on bool) {
	for _, r := range u.allRes() {
		r.setTraining(on)
	}
}

// Forward predicts ε for x [N, C, H, W] at integer timesteps t (len N, original 0..999 scale) given z [N, E]
// (nil for the baseline).
func (u *UNet) Forward(x *tensor.Tensor, t []float32, z *tensor.Tensor) *tensor.Tensor {
	d := x.Dev
	cfg := u.cfg
	if len(x.Shape) != 4 || x.Shape[1] != cfg.InChannels || x.Shape[2] != cfg.ImageSize || x.Shape[3] != cfg.ImageSize {
		panic(&nn.ShapeError{Layer: "decoder input", Got: x.Shape, Want: shapeStr(cfg)})
	}
	n := x.Shape[0]
	if len(t) != n {
		panic(&nn.ShapeError{Layer: "decoder timesteps", Got: []int{len(t)}, Want: shapeN(n)})
	}
	if u.cond && (z == nil || !z.ShapeEq(n, cfg.EmbedChannels)) {
		got := []int(nil)
		if z != nil {
			got = z.Shape
		}
		panic(&nn.ShapeError{Layer: "decoder z_sem", Got: got, Want: shapeNE(n, cfg.EmbedChannels)})
	}
	u.tHost = nn.TimestepEmbedding(t, cfg.ModelChannels, 10000)
	u.tIn = tensor.Ensure(d, u.tIn, n, cfg.ModelChannels)
	d.Upload(u.tIn, u.tHost)
	temb := u.time2.Forward(u.timeAct.Forward(u.time0.Forward(u.tIn)))
	embAct := u.embAct.Forward(temb)
	var condAct *tensor.Tensor
	if u.cond {
		condAct = u.zAct.Forward(z)
	}
	h := x
	hs := make([]*tensor.Tensor, 0, len(u.input))
	for _, b := range u.input {
		h = b.forward(h, embAct, condAct)
		hs = append(hs, h)
	}
	h = u.middle.forward(h, embAct, condAct)
	h = u.midRes2.forward(h, embAct, condAct)
	for _, b := range u.output {
		skip := hs[len(hs)-1]
		hs = hs[:len(hs)-1]
		h = b.forward(b.cat.Forward(h, skip), embAct, condAct)
	}
	h = u.outNorm.Forward(h, tensor.GNMod{SiLU: true})
	return u.outConv.Forward(h)
}

// Backward adds the gradients of all parameters for dL/dε and returns dL/dz (nil for the baseline).
func (u *UNet) Backward(deps *tensor.Tensor) *tensor.Tensor {
	d := deps.Dev
	n := deps.Shape[0]
	e := u.cfg.EmbedChannels
	u.dEmb = tensor.Ensure(d, u.dEmb, n, e)
	d.Zero(u.dEmb)
	if u.cond {
		u.dCond = tensor.Ensure(d, u.dCond, n, e)
		d.Zero(u.dCond)
	}
	collect := func(rs []*resBlock) {
		for _, r := range rs {
			d.Axpby(1, r.dEmb, 1, u.dEmb)
			if u.cond {
				d.Axpby(1, r.dCond, 1, u.dCond)
			}
		}
	}
	dh := u.outConv.Backward(deps)
	dh = u.outNorm.Backward(dh)
	if len(u.dskip) != len(u.input) {
		u.dskip = make([]*tensor.Tensor, len(u.input))
		u.gsum = make([]*tensor.Tensor, len(u.input))
	}
	for i := len(u.output) - 1; i >= 0; i-- {
		b := u.output[i]
		dh = b.backward(dh)
		collect(b.resBlocks())
		var ds *tensor.Tensor
		dh, ds = b.cat.Backward(dh)
		u.dskip[len(u.output)-1-i] = ds
	}
	dh = u.midRes2.backward(dh)
	collect([]*resBlock{u.midRes2})
	dh = u.middle.backward(dh)
	collect(u.middle.resBlocks())
	for i := len(u.input) - 1; i >= 0; i-- {
		b := u.input[i]
		u.gsum[i] = tensor.Ensure(d, u.gsum[i], dh.Shape...)
		d.Lincomb(u.gsum[i], 1, dh, 1, u.dskip[i])
		dh = b.backward(u.gsum[i])
		collect(b.resBlocks())
	}
	dt := u.embAct.Backward(u.dEmb)
	u.time0.Backward(u.timeAct.Backward(u.time2.Backward(dt)))
	if !u.cond {
		return nil
	}
	return u.zAct.Backward(u.dCond)
}

// Encoder is the semantic encoder (the reference's BeatGANsEncoderModel with enc_pool adaptivenonzero): x0 → z_sem.
type Encoder struct {
	cfg     *Config
	Params  *nn.Params
	input   []*block
	middle  *block
	midRes2 *resBlock
	outNorm *nn.GroupNorm
	pool    nn.SpatialMean
	outConv *nn.Conv2d
	gsum    *tensor.Tensor
}

// NewEncoder lays out the semantic encoder of cfg; parameters are named "encoder.…".
func NewEncoder(d tensor.Device, cfg *Config, rng *rand.Rand) *Encoder {
	ps := nn.NewParams(d)
	e := &Encoder{cfg: cfg, Params: ps}
	mc := cfg.ModelChannels
	newRes := func(name string, cin, cout int, down bool) *resBlock {
		return newResBlock(ps, name, cin, cout, 0, false, false, false, down, 0, rng)
	}
	ch := cfg.EncChannelMult[0] * mc
	e.input = append(e.input, &block{conv: nn.NewConv2d(ps, "encoder.input_blocks.0.0", cfg.InChannels, ch, 3)})
	e.input[0].conv.NoInputGrad = true
	res := cfg.ImageSize
	for level, mult := range cfg.EncChannelMult {
		for range cfg.EncNumResBlock {
			name := blockName("encoder.input_blocks", len(e.input))
			b := &block{res: newRes(name+".0", ch, mult*mc, false)}
			ch = mult * mc
			if contains(cfg.EncAttnResolutions, res) {
				b.attn = nn.NewAttention(ps, name+".1", ch)
			}
			e.input = append(e.input, b)
		}
		if level != len(cfg.EncChannelMult)-1 {
			name := blockName("encoder.input_blocks", len(e.input))
			e.input = append(e.input, &block{res: newRes(name+".0", ch, ch, true)})
			res /= 2
		}
	}
	e.middle = &block{res: newRes("encoder.middle_block.0", ch, ch, false),
		attn: nn.NewAttention(ps, "encoder.middle_block.1", ch)}
	e.midRes2 = newRes("encoder.middle_block.2", ch, ch, false)
	e.outNorm = nn.NewGroupNorm(ps, "encoder.out.0", ch)
	e.outConv = nn.NewConv2d(ps, "encoder.out.3", ch, cfg.EncOutChannels, 1)
	in := nn.Init{Rng: rng}
	c0 := e.input[0].conv
	in.TorchDefault(c0.W, c0.B, c0.Cin*9)
	for _, b := range append(append([]*block{}, e.input...), e.middle) {
		for _, r := range b.resBlocks() {
			r.init(in)
		}
		if b.attn != nil {
			initAttention(in, b.attn)
		}
	}
	e.midRes2.init(in)
	in.TorchDefault(e.outConv.W, e.outConv.B, ch)
	return e
}

// Forward maps images x0 [N, C, H, W] in [-1, 1] to z_sem [N, E].
func (e *Encoder) Forward(x *tensor.Tensor) *tensor.Tensor {
	cfg := e.cfg
	if len(x.Shape) != 4 || x.Shape[1] != cfg.InChannels || x.Shape[2] != cfg.ImageSize || x.Shape[3] != cfg.ImageSize {
		panic(&nn.ShapeError{Layer: "encoder input", Got: x.Shape, Want: shapeStr(cfg)})
	}
	h := x
	for _, b := range e.input {
		h = b.forward(h, nil, nil)
	}
	h = e.middle.forward(h, nil, nil)
	h = e.midRes2.forward(h, nil, nil)
	h = e.outNorm.Forward(h, tensor.GNMod{SiLU: true})
	h = e.outConv.Forward(e.pool.Forward(h))
	return h.Reshape(x.Shape[0], cfg.EncOutChannels)
}

// Backward adds the parameter gradients for dL/dz [N, E].
func (e *Encoder) Backward(dz *tensor.Tensor) {
	n := dz.Shape[0]
	dh := e.outConv.Backward(dz.Reshape(n, e.cfg.EncOutChannels, 1, 1))
	dh = e.outNorm.Backward(e.pool.Backward(dh))
	dh = e.midRes2.backward(dh)
	dh = e.middle.backward(dh)
	for i := len(e.input) - 1; i >= 0; i-- {
		dh = e.input[i].backward(dh)
	}
}
