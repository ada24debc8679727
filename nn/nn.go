// Package nn holds the layers of the networks, each with an explicit forward and backward pass written against
// tensor.Device, their parameters, the optimisers (Adam, AdamW), gradient clipping, EMA, and safetensors I/O.
//
// A layer keeps what its backward pass needs from the last forward call and owns its output buffers, which it
// reuses while shapes stay the same, so a steady training step allocates nothing. A layer object is therefore used
// once per forward pass. The package knows nothing of diffusion, files other than safetensors, or queues.
package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"dae/tensor"
)

// Param is a named learnable tensor with its gradient.
type Param struct {
	Name string
	W, G *tensor.Tensor
}

// Params is an ordered set of parameters, named as in the reference implementation's state_dict.
type Params struct {
	Dev    tensor.Device
	List   []*Param
	byName map[string]*Param
}

// NewParams returns an empty set on d.
func NewParams(d tensor.Device) *Params {
	return &Params{Dev: d, byName: map[string]*Param{}}
}

// New adds a zero parameter (and its gradient).
func (ps *Params) New(name string, shape ...int) *Param {
	if _, dup := ps.byName[name]; dup {
		panic("nn: parameter defined twice: " + name)
	}
	p := &Param{Name: name, W: ps.Dev.New(shape...), G: ps.Dev.New(shape...)}
	ps.List = append(ps.List, p)
	ps.byName[name] = p
	return p
}

// Get returns the parameter called name, or nil.
func (ps *Params) Get(name string) *Param { return ps.byName[name] }

// Count is the total number of scalars.
func (ps *Params) Count() int {
	n := 0
	for _, p := range ps.List {
		n += p.W.Len()
	}
	return n
}

// ZeroGrad clears every gradient.
func (ps *Params) ZeroGrad() {
	for _, p := range ps.List {
		ps.Dev.Zero(p.G)
	}
}

// Alias makes name refer to the same parameter as existing (the reference stores some modules under two names).
func (ps *Params) Alias(name, existing string) {
	ps.byName[name] = ps.byName[existing]
}

// Aliases lists alias names (names that are not the primary name of their parameter).
func (ps *Params) Aliases() map[string]string {
	out := map[string]string{}
	for n, p := range ps.byName {
		if p.Name != n {
			out[n] = p.Name
		}
	}
	return out
}

// ShapeError reports a tensor whose shape does not fit the layer it was given to.
type ShapeError struct {
	Layer string
	Got   []int
	Want  string
}

func (e *ShapeError) Error() string {
	return fmt.Sprintf("nn: %s: input has shape %v, want %s", e.Layer, e.Got, e.Want)
}

// Recover turns a *ShapeError panic raised by a layer into *err; call it deferred at an API boundary.
func Recover(err *error) {
	if r := recover(); r != nil {
		if se, ok := r.(*ShapeError); ok {
			*err = se
			return
		}
		panic(r)
	}
}

func shapeFail(layer string, x *tensor.Tensor, want string, args ...any) {
	panic(&ShapeError{Layer: layer, Got: append([]int(nil), x.Shape...), Want: fmt.Sprintf(want, args...)})
}

// checkGrad stops a gradient whose size differs from the layer's output before a kernel reads past its end. Only
// the size is checked, so that callers may pass a reshaped view.
func checkGrad(layer string, dy *tensor.Tensor, shape []int) {
	if dy.Len() != tensor.Numel(shape...) {
		shapeFail(layer+" backward", dy, "%v", shape)
	}
}

// Init fills parameters on the host and uploads them.
type Init struct {
	Rng *rand.Rand
}

// Uniform fills p with U(-bound, bound).
func (in Init) Uniform(p *Param, bound float64) {
	h := make([]float32, p.W.Len())
	for i := range h {
		h[i] = float32((in.Rng.Float64()*2 - 1) * bound)
	}
	p.W.Dev.Upload(p.W, h)
}

// Normal fills p with N(0, std²).
func (in Init) Normal(p *Param, std float64) {
	h := make([]float32, p.W.Len())
	for i := range h {
		h[i] = float32(in.Rng.NormFloat64() * std)
	}
	p.W.Dev.Upload(p.W, h)
}

// Const fills p with v.
func (in Init) Const(p *Param, v float32) { p.W.Dev.Fill(p.W, v) }

// TorchDefault is PyTorch's default for Linear and Conv: weight and bias U(±1/√fan_in).
func (in Init) TorchDefault(w, b *Param, fanIn int) {
	bound := 1 / math.Sqrt(float64(fanIn))
	in.Uniform(w, bound)
	if b != nil {
		in.Uniform(b, bound)
	}
}

// Merge returns a set holding the parameters (and aliases) of all sets, for reading and writing checkpoints.
func Merge(sets ...*Params) *Params {
	out := &Params{byName: map[string]*Param{}}
	for _, s := range sets {
		if s == nil {
			continue
		}
		out.Dev = s.Dev
		out.List = append(out.List, s.List...)
		for n, p := range s.byName {
			if _, dup := out.byName[n]; dup {
				panic("nn: parameter in two sets: " + n)
			}
			out.byName[n] = p
		}
	}
	return out
}
