package diffae

import (
	"errors"
	"fmt"
	"math"

	"dae/tensor"
)

// NumTrainSteps is the length of the training diffusion process.
const NumTrainSteps = 1000

// Schedule is a diffusion process: ᾱ_t for each of its steps and, once respaced, the original timestep each step
// stands for (the network is always given the original timestep).
type Schedule struct {
	AlphaBar  []float64 // ᾱ of each step, float64 as the reference keeps them
	Timesteps []int     // original timestep of each step
}

// LinearSchedule is the image schedule: β linear from 1e-4 to 0.02 over 1000 steps (np.linspace in float64).
func LinearSchedule() *Schedule {
	betas := make([]float64, NumTrainSteps)
	for i := range betas {
		betas[i] = 1e-4 + (0.02-1e-4)*float64(i)/float64(NumTrainSteps-1)
	}
	return fromBetas(betas)
}

// ConstSchedule is the latent schedule: β = 0.008 at every step.
func ConstSchedule() *Schedule {
	betas := make([]float64, NumTrainSteps)
	for i := range betas {
		betas[i] = 0.008
	}
	return fromBetas(betas)
}

func fromBetas(betas []float64) *Schedule {
	s := &Schedule{AlphaBar: make([]float64, len(betas)), Timesteps: make([]int, len(betas))}
	a := 1.0
	for i, b := range betas {
		a *= 1 - b
		s.AlphaBar[i] = a
		s.Timesteps[i] = i
	}
	return s
}

// Respace keeps n of the steps as the reference's space_timesteps("ddimN") does: the smallest stride s with
// len(range(0, T, s)) == n.
func (s *Schedule) Respace(n int) (*Schedule, error) {
	total := len(s.AlphaBar)
	if n <= 0 || n > total {
		return nil, fmt.Errorf("%w: steps %d: must be in 1..%d", ErrSteps, n, total)
	}
	for stride := 1; stride <= total; stride++ {
		if (total+stride-1)/stride == n {
			out := &Schedule{}
			for i := 0; i < total; i += stride {
				out.AlphaBar = append(out.AlphaBar, s.AlphaBar[i])
				out.Timesteps = append(out.Timesteps, s.Timesteps[i])
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: steps %d: no stride of %d steps gives exactly %d (the reference's ddim%d is undefined)",
		ErrSteps, n, total, n, n)
}

// ErrSteps marks a step count that no respacing of the schedule gives.
var ErrSteps = errors.New("bad step count")

// Len is the number of steps.
func (s *Schedule) Len() int { return len(s.AlphaBar) }

// EpsFunc predicts ε for x at step i of a schedule (the caller maps i to the original timestep).
type EpsFunc func(x *tensor.Tensor, t int) *tensor.Tensor

// Sampler runs DDIM (η = 0) on a device, reusing its buffers across steps.
type Sampler struct {
	Sched *Schedule
	Clamp bool // clamp x̂0 to [-1, 1] (images); false for latents
	// OnX0, if set, is called by Sample at each step (0 first) with the x̂0 predicted there.
	OnX0 func(step int, x0 *tensor.Tensor)
	x0   *tensor.Tensor
	epsH *tensor.Tensor
}

// coefficients as float32, cast from float64 as the reference does.
func f32(v float64) float32 { return float32(v) }

// predict sets x0 = √(1/ᾱ)x − √(1/ᾱ−1)ε (clamped) and epsH = (√(1/ᾱ)x − x0)/√(1/ᾱ−1).
func (s *Sampler) predict(x, eps *tensor.Tensor, ab float64) {
	d := x.Dev
	s.x0 = tensor.Ensure(d, s.x0, x.Shape...)
	s.epsH = tensor.Ensure(d, s.epsH, x.Shape...)
	rec, recm1 := math.Sqrt(1/ab), math.Sqrt(1/ab-1)
	d.Lincomb(s.x0, f32(rec), x, -f32(recm1), eps)
	if s.Clamp {
		d.Clamp(s.x0, -1, 1)
	}
	d.Lincomb(s.epsH, f32(rec)/f32(recm1), x, -1/f32(recm1), s.x0)
}

// Sample runs DDIM from x (x_T, overwritten) down to x0 and returns x. progress, if set, is called after each step.
func (s *Sampler) Sample(x *tensor.Tensor, eps EpsFunc, progress func(done, total int)) *tensor.Tensor {
	n := s.Sched.Len()
	for i := n - 1; i >= 0; i-- {
		e := eps(x, s.Sched.Timesteps[i])
		ab := s.Sched.AlphaBar[i]
		s.predict(x, e, ab)
		if s.OnX0 != nil {
			s.OnX0(n-1-i, s.x0)
		}
		prev := 1.0
		if i > 0 {
			prev = s.Sched.AlphaBar[i-1]
		}
		x.Dev.Lincomb(x, f32(math.Sqrt(prev)), s.x0, f32(math.Sqrt(1-prev)), s.epsH)
		if progress != nil {
			progress(n-i, n)
		}
	}
	return x
}

// Reverse runs the deterministic DDIM process upwards from x (x0, overwritten) to x_T: the stochastic encoder.
func (s *Sampler) Reverse(x *tensor.Tensor, eps EpsFunc, progress func(done, total int)) *tensor.Tensor {
	n := s.Sched.Len()
	for i := 0; i < n; i++ {
		e := eps(x, s.Sched.Timesteps[i])
		s.predict(x, e, s.Sched.AlphaBar[i])
		next := 0.0
		if i+1 < n {
			next = s.Sched.AlphaBar[i+1]
		}
		x.Dev.Lincomb(x, f32(math.Sqrt(next)), s.x0, f32(math.Sqrt(1-next)), s.epsH)
		if progress != nil {
			progress(i+1, n)
		}
	}
	return x
}

// QSample sets xt = √ᾱ_t·x0 + √(1−ᾱ_t)·noise per sample (t[i] is an index into the schedule).
func QSample(xt, x0, noise *tensor.Tensor, s *Schedule, t []int) {
	d := x0.Dev
	n := x0.Shape[0]
	per := x0.Len() / n
	for i := 0; i < n; i++ {
		ab := s.AlphaBar[t[i]]
		d.Lincomb(xt.View(i*per, per), f32(math.Sqrt(ab)), x0.View(i*per, per), f32(math.Sqrt(1-ab)), noise.View(i*per, per))
	}
}
