package diffae

import (
	"fmt"
	"math/rand/v2"

	"dae/nn"
	"dae/tensor"
)

// resBlock is the reference's ResBlock. With cond it takes the time embedding (AdaGN scale and shift) and, with
// twoCond, z_sem (a second scale); without cond (the encoder) it is GN–SiLU–conv plus the skip. up/down resample
// both paths before the first convolution.
type resBlock struct {
	name            string
	cin, cout       int
	cond, twoCond   bool
	up, down        bool
	inNorm          *nn.GroupNorm
	inConv          *nn.Conv2d
	hPool, xPool    *nn.AvgPool2
	hUp, xUp        *nn.Upsample2
	embLin, condLin *nn.Linear
	outNorm         *nn.GroupNorm
	drop            *nn.Dropout
	outConv         *nn.Conv2d
	skip            *nn.Conv2d
	scale, shift    *tensor.Tensor
	de              *tensor.Tensor
	out, dx, dsum   *tensor.Tensor
	xs              *tensor.Tensor
	dEmb, dCond     *tensor.Tensor
}

func newResBlock(ps *nn.Params, name string, cin, cout, emb int, cond, twoCond, up, down bool, dropout float64,
	rng *rand.Rand) *resBlock {
	r := &resBlock{name: name, cin: cin, cout: cout, cond: cond, twoCond: twoCond, up: up, down: down}
	r.inNorm = nn.NewGroupNorm(ps, name+".in_layers.0", cin)
	r.inConv = nn.NewConv2d(ps, name+".in_layers.2", cin, cout, 3)
	if down {
		r.hPool, r.xPool = &nn.AvgPool2{Name: name}, &nn.AvgPool2{Name: name}
	}
	if up {
		r.hUp, r.xUp = &nn.Upsample2{Name: name}, &nn.Upsample2{Name: name}
	}
	if cond {
		r.embLin = nn.NewLinear(ps, name+".emb_layers.1", emb, 2*cout)
		if twoCond {
			r.condLin = nn.NewLinear(ps, name+".cond_emb_layers.1", emb, cout)
		}
		r.outNorm = nn.NewGroupNorm(ps, name+".out_layers.0", cout)
		r.drop = &nn.Dropout{P: dropout, Rng: rng}
		r.outConv = nn.NewConv2d(ps, name+".out_layers.3", cout, cout, 3)
	}
	if cin != cout {
		r.skip = nn.NewConv2d(ps, name+".skip_connection", cin, cout, 1)
	}
	return r
}

func (r *resBlock) init(in nn.Init) {
	in.TorchDefault(r.inConv.W, r.inConv.B, r.cin*9)
	if r.cond {
		in.TorchDefault(r.embLin.W, r.embLin.B, r.embLin.In)
		if r.condLin != nil {
			in.TorchDefault(r.condLin.W, r.condLin.B, r.condLin.In)
		}
		// The reference zero-initialises the last convolution so that each block starts as the identity.
		in.Const(r.outConv.W, 0)
		in.Const(r.outConv.B, 0)
	}
	if r.skip != nil {
		in.TorchDefault(r.skip.W, r.skip.B, r.cin)
	}
}

func (r *resBlock) setTraining(on bool) {
	if r.drop != nil {
		r.drop.Training = on
	}
}

// forward takes x [N, cin, H, W], the activated time embedding embAct [N, E] and activated z condAct [N, E].
func (r *resBlock) forward(x, embAct, condAct *tensor.Tensor) *tensor.Tensor {
	d := x.Dev
	h := r.inNorm.Forward(x, tensor.GNMod{SiLU: true})
	xs := x
	switch {
	case r.down:
		h = r.hPool.Forward(h)
		xs = r.xPool.Forward(x)
	case r.up:
		h = r.hUp.Forward(h)
		xs = r.xUp.Forward(x)
	}
	r.xs = xs
	// The skip path first: the block's last convolution adds it as it writes its output.
	skip := xs
	if r.skip != nil {
		skip = r.skip.Forward(xs)
	}
	if !r.cond {
		r.out = r.inConv.ForwardAdd(h, skip)
		return r.out
	}
	h = r.inConv.Forward(h)
	n := x.Shape[0]
	e := r.embLin.Forward(embAct)
	r.scale = tensor.Ensure(d, r.scale, n, r.cout)
	r.shift = tensor.Ensure(d, r.shift, n, r.cout)
	d.CopyBlocks(r.scale, 0, r.cout, e, 0, 2*r.cout, r.cout, n, false)
	d.CopyBlocks(r.shift, 0, r.cout, e, r.cout, 2*r.cout, r.cout, n, false)
	mod := tensor.GNMod{Scale: r.scale, Shift: r.shift, SiLU: true}
	if r.condLin != nil {
		mod.ZScale = r.condLin.Forward(condAct)
	}
	h = r.outNorm.Forward(h, mod)
	h = r.drop.Forward(h)
	r.out = r.outConv.ForwardAdd(h, skip)
	return r.out
}

// backward returns dL/dx and leaves the gradients of embAct and condAct in r.dEmb and r.dCond.
func (r *resBlock) backward(dout *tensor.Tensor) *tensor.Tensor {
	d := dout.Dev
	dxs := dout
	if r.skip != nil {
		dxs = r.skip.Backward(dout)
	}
	dh := dout
	if r.cond {
		n := dout.Shape[0]
		dh = r.outConv.Backward(dh)
		dh = r.drop.Backward(dh)
		dh = r.outNorm.Backward(dh)
		r.de = tensor.Ensure(d, r.de, n, 2*r.cout)
		d.CopyBlocks(r.de, 0, 2*r.cout, r.outNorm.DScale, 0, r.cout, r.cout, n, false)
		d.CopyBlocks(r.de, r.cout, 2*r.cout, r.outNorm.DShift, 0, r.cout, r.cout, n, false)
		r.dEmb = r.embLin.Backward(r.de)
		if r.condLin != nil {
			r.dCond = r.condLin.Backward(r.outNorm.DZ)
		}
	}
	dh = r.inConv.Backward(dh)
	switch {
	case r.down:
		dh = r.hPool.Backward(dh)
		dxs = r.xPool.Backward(dxs)
	case r.up:
		dh = r.hUp.Backward(dh)
		dxs = r.xUp.Backward(dxs)
	}
	dx := r.inNorm.Backward(dh)
	r.dx = tensor.Ensure(d, r.dx, dx.Shape...)
	d.Lincomb(r.dx, 1, dx, 1, dxs)
	return r.dx
}

func (r *resBlock) String() string { return fmt.Sprintf("ResBlock(%s %d→%d)", r.name, r.cin, r.cout) }
