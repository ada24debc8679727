package diffae

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// This file holds the uses of the latent space (paper §5.2–5.7, SPEC A6): attribute manipulation, interpolation
// and unconditional and few-shot conditional sampling. The CLI, the workers and the scheduled jobs all call it.

// Along names the direction in the classifier's normalised z space that manipulation moves codes along.
type Along string

const (
	// AlongWeight is w/‖w‖, the reference implementation's direction (the zero Along means it too).
	AlongWeight Along = "weight"
	// AlongPattern is Σw/‖Σw‖ (Classifier.Pattern): the same linear classifier read as a pattern rather than a
	// filter. w points to where the logit grows fastest per unit of distance, which with hundreds of correlated
	// dimensions is largely along directions of little variance that the decoder hardly reads; Σw is where the
	// codes themselves move as the logit grows (for a linear discriminant, the difference of the class means).
	AlongPattern Along = "pattern"
)

// ParseAlong reads an Along from its name.
func ParseAlong(s string) (Along, error) {
	switch a := Along(s); a {
	case AlongWeight, AlongPattern:
		return a, nil
	case "":
		return AlongWeight, nil
	}
	return "", fmt.Errorf("direction %q: want %q or %q", s, AlongWeight, AlongPattern)
}

// Direction is the unit vector of a in the classifier's normalised z space.
func (c *Classifier) Direction(a Along) ([]float32, error) {
	switch a {
	case "", AlongWeight:
		return unit(c.W), nil
	case AlongPattern:
		if len(c.Pattern) != len(c.W) {
			return nil, fmt.Errorf("classifier %q has no pattern direction (saved before patterns were recorded, or its training codes do not vary along w): retrain it, or move along %q",
				c.Attribute, AlongWeight)
		}
		return unit(c.Pattern), nil
	}
	return nil, fmt.Errorf("classifier %q: unknown direction %q", c.Attribute, a)
}

func unit(v []float32) []float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	out := make([]float32, len(v))
	if s == 0 {
		return out
	}
	inv := 1 / math.Sqrt(s)
	for j, x := range v {
		out[j] = float32(float64(x) * inv)
	}
	return out
}

// slope is the growth of the logit per unit of s in Shift along u: √d·(w·u).
func (c *Classifier) slope(u []float32) float64 {
	var s float64
	for j, v := range c.W {
		s += float64(v) * float64(u[j])
	}
	return s * math.Sqrt(float64(c.Dim()))
}

// Shift moves n = len(z)/Dim() codes along the attribute: z' = denorm(norm(z) + s·√d·u), u the unit direction a
// (w/‖w‖ is the reference implementation's manipulation). The √d makes s comparable across code sizes: a
// normalised code has norm ≈ √d, so s = 1 moves it by about its own length. The normalisation is the
// classifier's, which is the model's latent statistics when it was trained with them.
func (c *Classifier) Shift(z []float32, s float64, a Along) ([]float32, error) {
	u, err := c.Direction(a)
	if err != nil {
		return nil, err
	}
	return c.shiftEach(z, u, func(int) float64 { return s }), nil
}

func (c *Classifier) shiftEach(z, u []float32, scale func(i int) float64) []float32 {
	d := c.Dim()
	if len(z)%d != 0 {
		panic(fmt.Sprintf("classifier %q: %d values are not whole codes of %d", c.Attribute, len(z), d))
	}
	rd := math.Sqrt(float64(d))
	out := make([]float32, len(z))
	for i := range len(z) / d {
		k := scale(i) * rd
		for j := range d {
			// norm, shift, denorm folded: z + k·u·std.
			out[i*d+j] = z[i*d+j] + float32(k*float64(u[j])*float64(c.Std[j]))
		}
	}
	return out
}

// ScaleForLogit is the s of Shift along a that brings the code z to the given logit (paper Eq. 11, solved in
// closed form: the logit is linear in s with slope √d·(w·u)).
func (c *Classifier) ScaleForLogit(z []float32, target float64, a Along) (float64, error) {
	u, err := c.Direction(a)
	if err != nil {
		return 0, err
	}
	return c.scaleForLogit(z, target, u), nil
}

func (c *Classifier) scaleForLogit(z []float32, target float64, u []float32) float64 {
	k := c.slope(u)
	if k <= 0 {
		return 0 // a zero classifier: no direction raises the logit
	}
	return (target - c.Logit(z)) / k
}

// ShiftToLogit moves each of the n codes along a so that its logit equals target, returning the moved codes and
// the scale used for each.
func (c *Classifier) ShiftToLogit(z []float32, target float64, a Along) (out []float32, scales []float64, err error) {
	u, err := c.Direction(a)
	if err != nil {
		return nil, nil, err
	}
	d := c.Dim()
	scales = make([]float64, len(z)/d)
	for i := range scales {
		scales[i] = c.scaleForLogit(z[i*d:(i+1)*d], target, u)
	}
	return c.shiftEach(z, u, func(i int) float64 { return scales[i] }), scales, nil
}

// MedianLogit is the median of the classifier's logits over codes, e.g. those of real positives: the paper's
// target for Eq. 11, a typical rather than an extreme member of the class.
func (c *Classifier) MedianLogit(z []float32) float64 { return c.QuantileLogits(z, 0.5)[0] }

// QuantileLogits returns, for each q in [0, 1], the q-quantile of the classifier's logits over codes (linear
// interpolation between order statistics; NaN for no codes). A higher quantile of the positives' logits is a
// target deeper inside the class than the median.
func (c *Classifier) QuantileLogits(z []float32, qs ...float64) []float64 {
	l := c.Logits(z)
	slices.Sort(l)
	out := make([]float64, len(qs))
	for i, q := range qs {
		if len(l) == 0 || q < 0 || q > 1 || math.IsNaN(q) {
			out[i] = math.NaN()
			continue
		}
		r := q * float64(len(l)-1)
		lo := int(math.Floor(r))
		hi := min(lo+1, len(l)-1)
		out[i] = l[lo] + (r-float64(lo))*(l[hi]-l[lo])
	}
	return out
}

// Edit says how far Manipulate moves the codes, and along what: by a fixed Scale, or, with ToLogit, to the logit
// TargetLogit; along Along (the zero value: the weight vector, as the reference does).
//
// Rounds > 1 (ToLogit edits only) refines the edit: the decoded edit is encoded again (z_sem and, with
// EncodeSteps DDIM steps, or the decode's when 0, x_T) and moved to the target again, Rounds times in all. Each round starts from an x_T
// that already holds the previous round's change, so the decoder no longer pulls the silhouette back towards the
// input's; 0 and 1 mean a single round, the paper's manipulation.
type Edit struct {
	Scale       float64
	ToLogit     bool
	TargetLogit float64
	Along       Along
	Rounds      int
	EncodeSteps int
}

// MaxEditRounds bounds Edit.Rounds: every round costs an encode and a decode.
const MaxEditRounds = 8

// Check says what is wrong with e, if anything.
func (e Edit) Check() error {
	switch {
	case e.Rounds < 0 || e.Rounds > MaxEditRounds:
		return fmt.Errorf("edit rounds %d: want 0..%d (0 and 1: one edit)", e.Rounds, MaxEditRounds)
	case e.EncodeSteps < 0:
		return fmt.Errorf("edit encode steps %d: want ≥ 0 (0: as the decode's)", e.EncodeSteps)
	case e.Rounds > 1 && !e.ToLogit:
		return fmt.Errorf("edit rounds %d: only an edit to a target logit can be repeated (a scale would be applied again on top)", e.Rounds)
	case math.IsNaN(e.Scale) || math.IsInf(e.Scale, 0) || math.IsNaN(e.TargetLogit) || math.IsInf(e.TargetLogit, 0):
		return errors.New("edit: scale and target logit must be finite")
	}
	return nil
}

// Apply moves n codes as e says, returning the moved codes and the scale applied to each.
func (e Edit) Apply(c *Classifier, z []float32) (z2 []float32, scales []float64, err error) {
	if e.ToLogit {
		return c.ShiftToLogit(z, e.TargetLogit, e.Along)
	}
	if z2, err = c.Shift(z, e.Scale, e.Along); err != nil {
		return nil, nil, err
	}
	scales = make([]float64, len(z)/c.Dim())
	for i := range scales {
		scales[i] = e.Scale
	}
	return z2, scales, nil
}

// Manipulate edits n codes with c (keeping x_T, which carries the stochastic details) and decodes them. It
// returns the images in [-1,1], the edited codes and the scale applied to each.
func (m *Model) Manipulate(ctx context.Context, c *Classifier, z, xT []float32, n int, e Edit, o DecodeOptions) (x, z2 []float32, scales []float64, err error) {
	if err := c.CheckModel(m); err != nil {
		return nil, nil, nil, err
	}
	if len(z) != n*c.Dim() {
		return nil, nil, nil, fmt.Errorf("manipulate: z_sem has %d values for %d codes of %d", len(z), n, c.Dim())
	}
	if err := e.Check(); err != nil {
		return nil, nil, nil, fmt.Errorf("manipulate: %w", err)
	}
	if z2, scales, err = e.Apply(c, z); err != nil {
		return nil, nil, nil, fmt.Errorf("manipulate: %w", err)
	}
	if x, err = m.Decode(ctx, z2, xT, n, o); err != nil {
		return nil, nil, nil, fmt.Errorf("manipulate: %w", err)
	}
	for r := 1; r < e.Rounds; r++ {
		var s []float64
		if x, z2, s, err = m.RefineEdit(ctx, c, x, n, e, o); err != nil {
			return nil, nil, nil, fmt.Errorf("manipulate: round %d: %w", r+1, err)
		}
		for i := range scales {
			scales[i] += s[i]
		}
	}
	return x, z2, scales, nil
}

// RefineEdit is one further round of a ToLogit edit (Edit.Rounds): it encodes the n edited images x (z_sem and
// x_T, with e.EncodeSteps DDIM steps, or o.Steps when 0), moves the codes to the target again and decodes them.
func (m *Model) RefineEdit(ctx context.Context, c *Classifier, x []float32, n int, e Edit, o DecodeOptions) (x2, z2 []float32, scales []float64, err error) {
	if !e.ToLogit {
		return nil, nil, nil, errors.New("refine: only an edit to a target logit can be repeated")
	}
	decSteps := o.Steps
	if decSteps <= 0 {
		decSteps = DefaultSteps
	}
	steps := e.EncodeSteps
	if steps <= 0 {
		steps = decSteps
	}
	// One progress over both halves: the encode's network evaluations, then the decode's.
	eo, do := EncodeOptions{Steps: steps, Batch: o.Batch}, o
	if o.Progress != nil {
		encTotal, decTotal := n*steps, n*decSteps
		eo.Progress = func(done, _ int) { o.Progress(done, encTotal+decTotal) }
		do.Progress = func(done, _ int) { o.Progress(encTotal+done, encTotal+decTotal) }
	}
	z, xT, err := m.Encode(ctx, x, n, eo)
	if err != nil {
		return nil, nil, nil, err
	}
	if z2, scales, err = e.Apply(c, z); err != nil {
		return nil, nil, nil, err
	}
	if x2, err = m.Decode(ctx, z2, xT, n, do); err != nil {
		return nil, nil, nil, err
	}
	return x2, z2, scales, nil
}

// InterpolationAlphas are the K mixing weights 0, 1/(K−1), …, 1 of a K-frame interpolation.
func InterpolationAlphas(frames int) []float64 {
	a := make([]float64, frames)
	for i := range a {
		if frames > 1 {
			a[i] = float64(i) / float64(frames-1)
		}
	}
	return a
}

// Interpolate decodes frames codes between (zA, xTA) and (zB, xTB): lerp of z_sem, slerp of x_T (SPEC A6). For the
// DDIM baseline (no encoder) zA and zB are ignored and only x_T is slerped, the paper's comparison. The result
// holds frames images in order.
func (m *Model) Interpolate(ctx context.Context, zA, xTA, zB, xTB []float32, frames int, o DecodeOptions) ([]float32, error) {
	if frames < 2 {
		return nil, fmt.Errorf("interpolate: %d frames, want at least 2", frames)
	}
	per, e := m.ImageSize(), m.Cfg.ZDim()
	if len(xTA) != per || len(xTB) != per {
		return nil, fmt.Errorf("interpolate: x_T of %d and %d values, want %d", len(xTA), len(xTB), per)
	}
	var z []float32
	if m.Enc != nil {
		if len(zA) != e || len(zB) != e {
			return nil, fmt.Errorf("interpolate: z_sem of %d and %d values, want %d", len(zA), len(zB), e)
		}
		z = make([]float32, 0, frames*e)
	}
	xT := make([]float32, 0, frames*per)
	for _, a := range InterpolationAlphas(frames) {
		if z != nil {
			za, err := Lerp(zA, zB, a)
			if err != nil {
				return nil, err
			}
			z = append(z, za...)
		}
		xa, err := Slerp(xTA, xTB, a)
		if err != nil {
			return nil, err
		}
		xT = append(xT, xa...)
	}
	return m.Decode(ctx, z, xT, frames, o)
}

// FrameDiffs is the mean squared difference between consecutive images of a sequence of frames images of per
// values each: the interpolation smoothness measure of SPEC A8 (lower and more even is smoother).
func FrameDiffs(x []float32, frames, per int) []float64 {
	if len(x) != frames*per {
		panic(fmt.Sprintf("FrameDiffs: %d values for %d frames of %d", len(x), frames, per))
	}
	out := make([]float64, max(frames-1, 0))
	for i := range out {
		a, b := x[i*per:(i+1)*per], x[(i+1)*per:(i+2)*per]
		var s float64
		for j := range a {
			d := float64(a[j]) - float64(b[j])
			s += d * d
		}
		out[i] = s / float64(per)
	}
	return out
}

// MeanVar returns the mean and the population variance of v.
func MeanVar(v []float64) (mean, variance float64) {
	if len(v) == 0 {
		return math.NaN(), math.NaN()
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		variance += (x - mean) * (x - mean)
	}
	return mean, variance / float64(len(v))
}

// SampleOptions control Sample and SampleConditional.
type SampleOptions struct {
	LatentSteps int    // DDIM steps of the latent DDIM (default DefaultSteps)
	Steps       int    // DDIM steps of the decoder (default DefaultSteps)
	Batch       int    // images per decoder pass (default 16)
	Seed        uint64 // seeds the latent noise, x_T and the acceptance draws
	// MaxDraws bounds the latent samples SampleConditional draws before giving up (default 1000 per wanted
	// sample), so a classifier that never fires cannot loop forever.
	MaxDraws int
	// MinProb is the least probability of the class a code needs to be accepted by SampleConditional
	// (default DefaultMinProb, the paper's 0.5); above it a code is still accepted with probability p. Raising
	// it trades acceptance rate for samples further inside the class.
	MinProb  float64
	Progress Progress
}

// DefaultMinProb is the paper's acceptance threshold for few-shot conditional sampling (§5.6).
const DefaultMinProb = 0.5

// ErrRejectionExhausted is returned (wrapped) when rejection sampling used up its draws: with the same seed a
// retry draws the same codes, so only a laxer threshold, another classifier or more draws can help.
var ErrRejectionExhausted = errors.New("rejection sampling ran out of draws")

func (o *SampleOptions) fill() {
	if o.LatentSteps <= 0 {
		o.LatentSteps = DefaultSteps
	}
	if o.Steps <= 0 {
		o.Steps = DefaultSteps
	}
	if o.Batch <= 0 {
		o.Batch = 16
	}
}

func (o *SampleOptions) rng() *rand.Rand { return rand.New(rand.NewPCG(o.Seed, 0x5a4d_91e5)) }

func normals(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// SampleLatent draws n codes z_sem from the latent DDIM (noise → T steps, no clamp → denormalise).
func (m *Model) SampleLatent(n, steps int, rng *rand.Rand) ([]float32, error) {
	if m.Stats == nil {
		return nil, errors.New("sample: this model has no latent statistics (train the latent DDIM first)")
	}
	zn, err := m.SampleLatentNormalized(normals(rng, n*m.Cfg.ZDim()), n, steps)
	if err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	if err := m.Denormalize(zn); err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	return zn, nil
}

// Sample draws n images unconditionally: z_sem from the latent DDIM, x_T ~ N(0, I), then the decoder. It returns
// the codes, the noise and the images in [-1,1].
func (m *Model) Sample(ctx context.Context, n int, o SampleOptions) (z, xT, x []float32, err error) {
	o.fill()
	rng := o.rng()
	if z, err = m.SampleLatent(n, o.LatentSteps, rng); err != nil {
		return nil, nil, nil, err
	}
	xT = normals(rng, n*m.ImageSize())
	x, err = m.Decode(ctx, z, xT, n, DecodeOptions{Steps: o.Steps, Batch: o.Batch, Progress: o.Progress})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("sample: %w", err)
	}
	return z, xT, x, nil
}

// Accept is the acceptance rule of few-shot conditional sampling (paper §5.6, where minProb is 0.5): reject a
// code whose probability of the class p is below minProb, otherwise accept it with probability p; u is a uniform
// draw in [0, 1).
func Accept(p, u, minProb float64) bool { return p >= minProb && u < p }

// RejectionSample draws codes of size d in batches from draw until n pass Accept (threshold minProb) under prob,
// and returns them with the number of codes examined. It fails after maxDraws draws with what it has so far.
func RejectionSample(ctx context.Context, n, d int, draw func(k int) ([]float32, error), prob func(z []float32) float64,
	rng *rand.Rand, batch, maxDraws int, minProb float64) (z []float32, drawn int, err error) {
	z = make([]float32, 0, n*d)
	for len(z) < n*d {
		if err := ctx.Err(); err != nil {
			return z, drawn, err
		}
		if drawn >= maxDraws {
			return z, drawn, fmt.Errorf("%w: %d of %d accepted after %d draws", ErrRejectionExhausted, len(z)/d, n, drawn)
		}
		k := min(batch, maxDraws-drawn)
		cand, err := draw(k)
		if err != nil {
			return z, drawn, err
		}
		if len(cand) != k*d {
			return z, drawn, fmt.Errorf("rejection sampling: draw returned %d values for %d codes of %d", len(cand), k, d)
		}
		// Count only the candidates examined up to the n-th acceptance, so that n/drawn estimates the
		// acceptance rate whatever the batch size.
		for i := 0; i < k && len(z) < n*d; i++ {
			drawn++
			c := cand[i*d : (i+1)*d]
			if Accept(prob(c), rng.Float64(), minProb) {
				z = append(z, c...)
			}
		}
	}
	return z, drawn, nil
}

// SampleConditional draws n images whose codes the classifier c accepts under the §5.6 rule (c is typically a PU
// classifier trained from a few positives). It returns the codes, the noise, the images and how many latent
// samples were drawn (n/drawn is the acceptance rate).
func (m *Model) SampleConditional(ctx context.Context, c *Classifier, n int, o SampleOptions) (z, xT, x []float32, drawn int, err error) {
	if err := c.CheckModel(m); err != nil {
		return nil, nil, nil, 0, err
	}
	o.fill()
	if o.MaxDraws <= 0 {
		o.MaxDraws = 1000 * n
	}
	if o.MinProb == 0 {
		o.MinProb = DefaultMinProb
	}
	if !(o.MinProb > 0 && o.MinProb < 1) {
		return nil, nil, nil, 0, fmt.Errorf("sample %q: acceptance threshold %g: want a probability in (0, 1)", c.Attribute, o.MinProb)
	}
	rng := o.rng()
	draw := func(k int) ([]float32, error) { return m.SampleLatent(k, o.LatentSteps, rng) }
	z, drawn, err = RejectionSample(ctx, n, m.Cfg.ZDim(), draw, c.Prob, rng, max(o.Batch, 64), o.MaxDraws, o.MinProb)
	if err != nil {
		return nil, nil, nil, drawn, fmt.Errorf("sample %q: %w", c.Attribute, err)
	}
	xT = normals(rng, n*m.ImageSize())
	x, err = m.Decode(ctx, z, xT, n, DecodeOptions{Steps: o.Steps, Batch: o.Batch, Progress: o.Progress})
	if err != nil {
		return nil, nil, nil, drawn, fmt.Errorf("sample %q: %w", c.Attribute, err)
	}
	return z, xT, x, drawn, nil
}
