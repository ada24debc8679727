package nn

import (
	"math"
	"math/rand/v2"

	"dae/tensor"
)

// SiLU is x·σ(x).
type SiLU struct{ x, y, dx *tensor.Tensor }

func (s *SiLU) Forward(x *tensor.Tensor) *tensor.Tensor {
	s.x = x
	s.y = tensor.Ensure(x.Dev, s.y, x.Shape...)
	x.Dev.SiLU(s.y, x)
	return s.y
}

func (s *SiLU) Backward(dy *tensor.Tensor) *tensor.Tensor {
	checkGrad("silu", dy, s.x.Shape)
	s.dx = tensor.Ensure(dy.Dev, s.dx, s.x.Shape...)
	dy.Dev.SiLUBackward(s.dx, s.x, dy)
	return s.dx
}

// AvgPool2 halves H and W of [N, C, H, W] by 2×2 averaging (H and W even).
type AvgPool2 struct {
	Name  string
	shape []int
	y, dx *tensor.Tensor
}

func (p *AvgPool2) Forward(x *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 4 || x.Shape[2]%2 != 0 || x.Shape[3]%2 != 0 {
		shapeFail(p.Name+" avgpool", x, "[N, C, H, W] with even H and W")
	}
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	p.shape = x.Shape
	p.y = tensor.Ensure(x.Dev, p.y, n, c, h/2, w/2)
	x.Dev.AvgPool2(p.y, x, n*c, h, w)
	return p.y
}

func (p *AvgPool2) Backward(dy *tensor.Tensor) *tensor.Tensor {
	s := p.shape
	checkGrad(p.Name+" avgpool", dy, []int{s[0], s[1], s[2] / 2, s[3] / 2})
	p.dx = tensor.Ensure(dy.Dev, p.dx, s...)
	dy.Dev.AvgPool2Backward(p.dx, dy, s[0]*s[1], s[2], s[3])
	return p.dx
}

// Upsample2 doubles H and W of [N, C, H, W] (nearest).
type Upsample2 struct {
	Name  string
	shape []int
	y, dx *tensor.Tensor
}

func (u *Upsample2) Forward(x *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 4 {
		shapeFail(u.Name+" upsample", x, "[N, C, H, W]")
	}
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	u.shape = x.Shape
	u.y = tensor.Ensure(x.Dev, u.y, n, c, 2*h, 2*w)
	x.Dev.Upsample2(u.y, x, n*c, h, w)
	return u.y
}

func (u *Upsample2) Backward(dy *tensor.Tensor) *tensor.Tensor {
	s := u.shape
	checkGrad(u.Name+" upsample", dy, []int{s[0], s[1], 2 * s[2], 2 * s[3]})
	u.dx = tensor.Ensure(dy.Dev, u.dx, s...)
	dy.Dev.Upsample2Backward(u.dx, dy, s[0]*s[1], s[2], s[3])
	return u.dx
}

// Concat joins [N, Ca, ...] and [N, Cb, ...] along channels.
type Concat struct {
	Name   string
	ca, cb int
	y      *tensor.Tensor
	da, db *tensor.Tensor
}

func (c *Concat) Forward(a, b *tensor.Tensor) *tensor.Tensor {
	if len(a.Shape) < 2 || len(a.Shape) != len(b.Shape) || a.Shape[0] != b.Shape[0] {
		shapeFail(c.Name+" concat", b, "to match %v except in channels", a.Shape)
	}
	for i := 2; i < len(a.Shape); i++ {
		if a.Shape[i] != b.Shape[i] {
			shapeFail(c.Name+" concat", b, "to match %v except in channels", a.Shape)
		}
	}
	n := a.Shape[0]
	c.ca, c.cb = a.Shape[1], b.Shape[1]
	sp := a.Len() / (n * c.ca)
	shape := append([]int{n, c.ca + c.cb}, a.Shape[2:]...)
	d := a.Dev
	c.y = tensor.Ensure(d, c.y, shape...)
	tot := (c.ca + c.cb) * sp
	d.CopyBlocks(c.y, 0, tot, a, 0, c.ca*sp, c.ca*sp, n, false)
	d.CopyBlocks(c.y, c.ca*sp, tot, b, 0, c.cb*sp, c.cb*sp, n, false)
	return c.y
}

// Backward splits dy into the gradients of a and b.
func (c *Concat) Backward(dy *tensor.Tensor) (da, db *tensor.Tensor) {
	checkGrad(c.Name+" concat", dy, c.y.Shape)
	d := dy.Dev
	n := c.y.Shape[0]
	sp := dy.Len() / (n * (c.ca + c.cb))
	rest := c.y.Shape[2:]
	c.da = tensor.Ensure(d, c.da, append([]int{n, c.ca}, rest...)...)
	c.db = tensor.Ensure(d, c.db, append([]int{n, c.cb}, rest...)...)
	tot := (c.ca + c.cb) * sp
	d.CopyBlocks(c.da, 0, c.ca*sp, dy, 0, tot, c.ca*sp, n, false)
	d.CopyBlocks(c.db, 0, c.cb*sp, dy, c.ca*sp, tot, c.cb*sp, n, false)
	return c.da, c.db
}

// SpatialMean is global average pooling: [N, C, H, W] → [N, C, 1, 1].
type SpatialMean struct {
	shape []int
	y, dx *tensor.Tensor
}

func (s *SpatialMean) Forward(x *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 4 {
		shapeFail("global average pool", x, "[N, C, H, W]")
	}
	s.shape = x.Shape
	n, c := x.Shape[0], x.Shape[1]
	s.y = tensor.Ensure(x.Dev, s.y, n, c, 1, 1)
	x.Dev.SpatialMean(s.y, x, n*c, x.Shape[2]*x.Shape[3])
	return s.y
}

func (s *SpatialMean) Backward(dy *tensor.Tensor) *tensor.Tensor {
	sh := s.shape
	checkGrad("global average pool", dy, []int{sh[0], sh[1], 1, 1})
	s.dx = tensor.Ensure(dy.Dev, s.dx, sh...)
	dy.Dev.SpatialMeanBackward(s.dx, dy, sh[0]*sh[1], sh[2]*sh[3])
	return s.dx
}

// Dropout zeroes elements with probability P during training and scales the rest by 1/(1−P). Each forward pass
// draws its mask from a seed taken from Rng (the mask itself comes from the device's counter-based generator).
type Dropout struct {
	P        float64
	Training bool
	Rng      *rand.Rand
	mask, y  *tensor.Tensor
	dx       *tensor.Tensor
	active   bool
}

func (dr *Dropout) Forward(x *tensor.Tensor) *tensor.Tensor {
	dr.active = dr.Training && dr.P > 0
	if !dr.active {
		return x
	}
	d := x.Dev
	dr.mask = tensor.Ensure(d, dr.mask, x.Shape...)
	d.DropoutMask(dr.mask, float32(dr.P), dr.Rng.Uint64())
	dr.y = tensor.Ensure(d, dr.y, x.Shape...)
	d.Mul(dr.y, x, dr.mask)
	return dr.y
}

func (dr *Dropout) Backward(dy *tensor.Tensor) *tensor.Tensor {
	if !dr.active {
		return dy
	}
	checkGrad("dropout", dy, dr.y.Shape)
	dr.dx = tensor.Ensure(dy.Dev, dr.dx, dy.Shape...)
	dy.Dev.Mul(dr.dx, dy, dr.mask)
	return dr.dx
}

// TimestepEmbedding returns the reference's sinusoidal embedding of t as [len(t), dim] on the host: cos of the
// first half of the frequencies then sin, frequencies exp(−ln(maxPeriod)·i/half), computed in float32 as the
// reference does (the argument t·f is rounded to float32 before cos and sin).
func TimestepEmbedding(t []float32, dim int, maxPeriod float64) []float32 {
	half := dim / 2
	out := make([]float32, len(t)*dim)
	freqs := make([]float32, half)
	for i := range freqs {
		freqs[i] = float32(math.Exp(float64(float32(-math.Log(maxPeriod)) * float32(i) / float32(half))))
	}
	for r, tv := range t {
		row := out[r*dim : (r+1)*dim]
		for i, f := range freqs {
			a := float64(tv * f)
			row[i] = float32(math.Cos(a))
			row[half+i] = float32(math.Sin(a))
		}
	}
	return out
}

// MSELoss returns mean((p−t)²) and writes its gradient with respect to p into grad (if not nil).
func MSELoss(grad, p, t *tensor.Tensor) float64 {
	checkLoss("mse loss", grad, p, t)
	return p.Dev.MSE(grad, p, t, 1)
}

// L1Loss returns mean|p−t| and writes its gradient into grad (if not nil).
func L1Loss(grad, p, t *tensor.Tensor) float64 {
	checkLoss("l1 loss", grad, p, t)
	return p.Dev.L1(grad, p, t, 1)
}

func checkLoss(name string, grad, p, t *tensor.Tensor) {
	if t.Len() != p.Len() {
		shapeFail(name+" target", t, "%v like the prediction", p.Shape)
	}
	if grad != nil && grad.Len() != p.Len() {
		shapeFail(name+" gradient", grad, "%v like the prediction", p.Shape)
	}
}
