package nn_test

import (
	"fmt"
	"math/rand/v2"

	"dae/nn"
	"dae/tensor"
)

// A two-layer network trained for a few steps: forward, loss, backward through each layer in reverse, one
// Adam step. Layers own their outputs, so the loop allocates nothing once shapes are settled.
func Example() {
	dev := tensor.NewCPU(0)
	rng := rand.New(rand.NewPCG(1, 2))
	ps := nn.NewParams(dev)
	l1 := nn.NewLinear(ps, "net.0", 4, 16)
	act := &nn.SiLU{}
	l2 := nn.NewLinear(ps, "net.2", 16, 1)
	nn.Init{Rng: rng}.TorchDefault(l1.W, l1.B, 4)
	nn.Init{Rng: rng}.TorchDefault(l2.W, l2.B, 16)

	// Learn y = x₀ − x₁ on a fixed batch of 8.
	x, y := dev.New(8, 4), dev.New(8, 1)
	for i := range 8 {
		for j := range 4 {
			x.Data[i*4+j] = float32(rng.NormFloat64())
		}
		y.Data[i] = x.Data[i*4] - x.Data[i*4+1]
	}
	grad := dev.New(8, 1)
	opt := nn.NewAdam(1e-2, 0)
	var first, last float64
	for step := range 200 {
		pred := l2.Forward(act.Forward(l1.Forward(x)))
		loss := nn.MSELoss(grad, pred, y)
		ps.ZeroGrad()
		l1.Backward(act.Backward(l2.Backward(grad)))
		nn.ClipGradNorm(ps, 1)
		opt.Update(ps)
		if step == 0 {
			first = loss
		}
		last = loss
	}
	fmt.Println("parameters:", ps.Count())
	fmt.Println("loss fell tenfold:", last < first/10)
	// Output:
	// parameters: 97
	// loss fell tenfold: true
}

// A shape mismatch inside a layer becomes an error at the API boundary that defers nn.Recover.
func ExampleRecover() {
	dev := tensor.NewCPU(0)
	conv := nn.NewConv2d(nn.NewParams(dev), "enc.conv_in", 3, 8, 3)
	encode := func(img *tensor.Tensor) (err error) {
		defer nn.Recover(&err)
		conv.Forward(img)
		return nil
	}
	fmt.Println(encode(dev.New(1, 1, 32, 32)))
	// Output: nn: enc.conv_in: input has shape [1 1 32 32], want [N, 3, H, W]
}
