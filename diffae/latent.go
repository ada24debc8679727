package diffae

import (
	"fmt"
	"math"
	"math/rand/v2"

	"dae/nn"
	"dae/tensor"
)

// mlpLayer is the reference's MLPLNAct: h = Linear(x); with a condition h = h·(bias + Linear(SiLU(c))); then
// LayerNorm and SiLU (none of these on the last layer).
type mlpLayer struct {
	lin      *nn.Linear
	emb      *nn.Linear
	norm     *nn.LayerNorm
	act      *nn.SiLU
	bias     float32
	cat      *nn.Concat
	h, c, dh *tensor.Tensor
	dc, dx   *tensor.Tensor
	pre      *tensor.Tensor
}

// LatentNet is the latent DDIM's ε-network, the reference's MLPSkipNet: z (normalised) and t → ε.
type LatentNet struct {
	cfg          *LatentConfig
	Params       *nn.Params
	time0, time2 *nn.Linear
	timeAct      nn.SiLU
	condAct      nn.SiLU
	layers       []*mlpLayer
	tIn          *tensor.Tensor
	dCond        *tensor.Tensor
}

// NewLatentNet builds the latent MLP with parameters named "latent_net.…", Kaiming-normal initialised.
func NewLatentNet(d tensor.Device, cfg *LatentConfig, rng *rand.Rand) *LatentNet {
	ps := nn.NewParams(d)
	l := &LatentNet{cfg: cfg, Params: ps}
	c := cfg.NumChannels
	l.time0 = nn.NewLinear(ps, "latent_net.time_embed.0", cfg.NumTimeEmbChannels, c)
	l.time2 = nn.NewLinear(ps, "latent_net.time_embed.2", c, c)
	in := nn.Init{Rng: rng}
	kaiming := func(lin *nn.Linear) {
		in.Normal(lin.W, math.Sqrt(2/float64(lin.In)))
		in.Const(lin.B, 0)
	}
	kaiming(l.time0)
	kaiming(l.time2)
	for i := 0; i < cfg.NumLayers; i++ {
		name := fmt.Sprintf("latent_net.layers.%d", i)
		last := i == cfg.NumLayers-1
		inCh, outCh := cfg.NumHidChannels, cfg.NumHidChannels
		if i == 0 {
			inCh = c
		}
		if last {
			outCh = c
		}
		ml := &mlpLayer{bias: float32(cfg.ConditionBias)}
		if contains(cfg.SkipLayers, i) {
			inCh += c
			ml.cat = &nn.Concat{Name: name}
		}
		ml.lin = nn.NewLinear(ps, name+".linear", inCh, outCh)
		kaiming(ml.lin)
		if !last {
			ml.emb = nn.NewLinear(ps, name+".linear_emb", c, outCh)
			ps.Alias(name+".cond_layers.1.weight", name+".linear_emb.weight")
			ps.Alias(name+".cond_layers.1.bias", name+".linear_emb.bias")
			kaiming(ml.emb)
			if cfg.UseNorm {
				ml.norm = nn.NewLayerNorm(ps, name+".norm", outCh)
			}
			ml.act = &nn.SiLU{}
		}
		l.layers = append(l.layers, ml)
	}
	return l
}

// Forward predicts ε for z [N, C] at original timesteps t.
func (l *LatentNet) Forward(z *tensor.Tensor, t []float32) *tensor.Tensor {
	d := z.Dev
	c := l.cfg.NumChannels
	if len(z.Shape) != 2 || z.Shape[1] != c {
		panic(&nn.ShapeError{Layer: "latent net input", Got: z.Shape, Want: fmt.Sprintf("[N, %d]", c)})
	}
	n := z.Shape[0]
	l.tIn = tensor.Ensure(d, l.tIn, n, l.cfg.NumTimeEmbChannels)
	d.Upload(l.tIn, nn.TimestepEmbedding(t, l.cfg.NumTimeEmbChannels, 10000))
	cond := l.time2.Forward(l.timeAct.Forward(l.time0.Forward(l.tIn)))
	condAct := l.condAct.Forward(cond)
	h := z
	for _, ml := range l.layers {
		if ml.cat != nil {
			h = ml.cat.Forward(h, z)
		}
		h = ml.lin.Forward(h)
		if ml.emb == nil {
			break
		}
		// h·(bias + c) = bias·h + h⊙c
		ml.c = ml.emb.Forward(condAct)
		ml.h = h
		ml.pre = tensor.Ensure(d, ml.pre, h.Shape...)
		d.Mul(ml.pre, h, ml.c)
		d.Axpby(ml.bias, h, 1, ml.pre)
		h = ml.pre
		if ml.norm != nil {
			h = ml.norm.Forward(h)
		}
		h = ml.act.Forward(h)
	}
	return h
}

// Backward adds parameter gradients for dL/dε (the input z is data, so its gradient is not returned).
func (l *LatentNet) Backward(dout *tensor.Tensor) {
	d := dout.Dev
	n := dout.Shape[0]
	l.dCond = tensor.Ensure(d, l.dCond, n, l.cfg.NumChannels)
	d.Zero(l.dCond)
	dh := dout
	for i := len(l.layers) - 1; i >= 0; i-- {
		ml := l.layers[i]
		if ml.emb != nil {
			dh = ml.act.Backward(dh)
			if ml.norm != nil {
				dh = ml.norm.Backward(dh)
			}
			ml.dc = tensor.Ensure(d, ml.dc, dh.Shape...)
			d.Mul(ml.dc, dh, ml.h)
			d.Axpby(1, ml.emb.Backward(ml.dc), 1, l.dCond)
			ml.dh = tensor.Ensure(d, ml.dh, dh.Shape...)
			d.Mul(ml.dh, dh, ml.c)
			d.Axpby(ml.bias, dh, 1, ml.dh)
			dh = ml.dh
		}
		dh = ml.lin.Backward(dh)
		if ml.cat != nil {
			dh, _ = ml.cat.Backward(dh)
		}
	}
	dc := l.condAct.Backward(l.dCond)
	l.time0.Backward(l.timeAct.Backward(l.time2.Backward(dc)))
}
