package nn

import "dae/tensor"

// Conv2d is a stride-1 convolution with a K×K kernel and padding (K−1)/2 (so 3×3 pad 1, or 1×1): the device's own
// convolution where it has one (tensor.ConvDevice), else im2col + GEMM over the whole batch.
// Weight [Cout, Cin, K, K], bias [Cout].
type Conv2d struct {
	Name          string
	W, B          *Param
	Cin, Cout, K  int
	NoInputGrad   bool // skip dx (first layer on data)
	x             *tensor.Tensor
	col, ycn, y   *tensor.Tensor
	dx, dycn, xcn *tensor.Tensor
	dcol          *tensor.Tensor
}

// NewConv2d defines name.weight and name.bias in ps.
func NewConv2d(ps *Params, name string, cin, cout, k int) *Conv2d {
	return &Conv2d{Name: name, Cin: cin, Cout: cout, K: k,
		W: ps.New(name+".weight", cout, cin, k, k), B: ps.New(name+".bias", cout)}
}

// Forward computes the convolution of x [N, Cin, H, W].
func (c *Conv2d) Forward(x *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 4 || x.Shape[1] != c.Cin {
		shapeFail(c.Name, x, "[N, %d, H, W]", c.Cin)
	}
	d := x.Dev
	n, h, w := x.Shape[0], x.Shape[2], x.Shape[3]
	hw := h * w
	c.x = x
	c.y = tensor.Ensure(d, c.y, n, c.Cout, h, w)
	if cd, ok := d.(tensor.ConvDevice); ok {
		cd.Conv2dForward(c.y, x, c.W.W, c.B.W, n, c.Cin, c.Cout, h, w, c.K)
		return c.y
	}
	if c.K == 1 {
		d.Gemm(tensor.GemmArgs{M: c.Cout, N: hw, K: c.Cin, Alpha: 1, A: c.W.W, B: x, C: c.y,
			Batch: n, StrideB: c.Cin * hw, StrideC: c.Cout * hw})
		d.AddChannelBias(c.y, c.B.W, n, c.Cout, hw)
		return c.y
	}
	rows := c.Cin * c.K * c.K
	c.col = tensor.Ensure(d, c.col, rows, n*hw)
	d.Im2Col(c.col, x, n, c.Cin, h, w, c.K, c.K/2)
	c.ycn = tensor.Ensure(d, c.ycn, c.Cout, n*hw)
	d.Gemm(tensor.GemmArgs{M: c.Cout, N: n * hw, K: rows, Alpha: 1, A: c.W.W, B: c.col, C: c.ycn})
	d.CNHWToNCHW(c.y, c.ycn, c.B.W, n, c.Cout, hw)
	return c.y
}

// ForwardAdd computes the convolution of x plus res [N, Cout, H, W] (a residual connection; its gradient is the
// output's, which Backward leaves to the caller). Devices with their own convolution add res as they store the
// output; others add it afterwards, so res must not be this layer's own output tensor from an earlier call.
func (c *Conv2d) ForwardAdd(x, res *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 4 || x.Shape[1] != c.Cin {
		shapeFail(c.Name, x, "[N, %d, H, W]", c.Cin)
	}
	n, h, w := x.Shape[0], x.Shape[2], x.Shape[3]
	if !res.ShapeEq(n, c.Cout, h, w) {
		shapeFail(c.Name+" residual", res, "[%d, %d, %d, %d]", n, c.Cout, h, w)
	}
	d := x.Dev
	if cd, ok := d.(tensor.ConvDevice); ok {
		c.x = x
		c.y = tensor.Ensure(d, c.y, n, c.Cout, h, w)
		cd.Conv2dForwardAdd(c.y, x, c.W.W, c.B.W, res, n, c.Cin, c.Cout, h, w, c.K)
		return c.y
	}
	y := c.Forward(x)
	d.Lincomb(y, 1, y, 1, res)
	return y
}

// Backward adds to the parameter gradients and returns dL/dx (nil with NoInputGrad).
func (c *Conv2d) Backward(dy *tensor.Tensor) *tensor.Tensor {
	d := dy.Dev
	n, h, w := c.x.Shape[0], c.x.Shape[2], c.x.Shape[3]
	hw := h * w
	if !dy.ShapeEq(n, c.Cout, h, w) {
		shapeFail(c.Name+" backward", dy, "%v", c.y.Shape)
	}
	if cd, ok := d.(tensor.ConvDevice); ok {
		var dx *tensor.Tensor
		if !c.NoInputGrad {
			c.dx = tensor.Ensure(d, c.dx, n, c.Cin, h, w)
			dx = c.dx
		}
		cd.Conv2dBackward(dx, c.W.G, c.B.G, dy, c.x, c.W.W, n, c.Cin, c.Cout, h, w, c.K)
		return dx
	}
	d.ChannelSumAcc(c.B.G, dy, n, c.Cout, hw)
	c.dycn = tensor.Ensure(d, c.dycn, c.Cout, n*hw)
	d.NCHWToCNHW(c.dycn, dy, n, c.Cout, hw)
	if c.K == 1 {
		c.xcn = tensor.Ensure(d, c.xcn, c.Cin, n*hw)
		d.NCHWToCNHW(c.xcn, c.x, n, c.Cin, hw)
		d.Gemm(tensor.GemmArgs{TransB: true, M: c.Cout, N: c.Cin, K: n * hw, Alpha: 1, Beta: 1,
			A: c.dycn, B: c.xcn, C: c.W.G})
		if c.NoInputGrad {
			return nil
		}
		c.dx = tensor.Ensure(d, c.dx, n, c.Cin, h, w)
		d.Gemm(tensor.GemmArgs{TransA: true, M: c.Cin, N: hw, K: c.Cout, Alpha: 1, A: c.W.W, B: dy, C: c.dx,
			Batch: n, StrideB: c.Cout * hw, StrideC: c.Cin * hw})
		return c.dx
	}
	rows := c.Cin * c.K * c.K
	d.Gemm(tensor.GemmArgs{TransB: true, M: c.Cout, N: rows, K: n * hw, Alpha: 1, Beta: 1,
		A: c.dycn, B: c.col, C: c.W.G})
	if c.NoInputGrad {
		return nil
	}
	c.dcol = tensor.Ensure(d, c.dcol, rows, n*hw)
	d.Gemm(tensor.GemmArgs{TransA: true, M: rows, N: n * hw, K: c.Cout, Alpha: 1, A: c.W.W, B: c.dycn, C: c.dcol})
	c.dx = tensor.Ensure(d, c.dx, n, c.Cin, h, w)
	d.Zero(c.dx)
	d.Col2ImAcc(c.dx, c.dcol, n, c.Cin, h, w, c.K, c.K/2)
	return c.dx
}

// Linear is y = x·Wᵀ + b for x [N, In]. Weight [Out, In], bias [Out].
type Linear struct {
	Name    string
	W, B    *Param
	In, Out int
	x, y    *tensor.Tensor
	dx      *tensor.Tensor
}

// NewLinear defines name.weight and name.bias in ps.
func NewLinear(ps *Params, name string, in, out int) *Linear {
	return &Linear{Name: name, In: in, Out: out, W: ps.New(name+".weight", out, in), B: ps.New(name+".bias", out)}
}

func (l *Linear) Forward(x *tensor.Tensor) *tensor.Tensor {
	if len(x.Shape) != 2 || x.Shape[1] != l.In {
		shapeFail(l.Name, x, "[N, %d]", l.In)
	}
	d := x.Dev
	n := x.Shape[0]
	l.x = x
	l.y = tensor.Ensure(d, l.y, n, l.Out)
	d.Gemm(tensor.GemmArgs{TransB: true, M: n, N: l.Out, K: l.In, Alpha: 1, A: x, B: l.W.W, C: l.y})
	d.AddChannelBias(l.y, l.B.W, n, l.Out, 1)
	return l.y
}

func (l *Linear) Backward(dy *tensor.Tensor) *tensor.Tensor {
	d := dy.Dev
	n := l.x.Shape[0]
	if !dy.ShapeEq(n, l.Out) {
		shapeFail(l.Name+" backward", dy, "[%d, %d]", n, l.Out)
	}
	d.Gemm(tensor.GemmArgs{TransA: true, M: l.Out, N: l.In, K: n, Alpha: 1, Beta: 1, A: dy, B: l.x, C: l.W.G})
	d.ChannelSumAcc(l.B.G, dy, n, l.Out, 1)
	l.dx = tensor.Ensure(d, l.dx, n, l.In)
	d.Gemm(tensor.GemmArgs{M: n, N: l.In, K: l.Out, Alpha: 1, A: dy, B: l.W.W, C: l.dx})
	return l.dx
}
