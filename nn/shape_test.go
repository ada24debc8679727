package nn

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"dae/tensor"
)

// run calls f the way an API boundary does: a *ShapeError raised by a layer comes back as an error.
func run(f func()) (err error) {
	defer Recover(&err)
	f()
	return nil
}

func TestShapeErrors(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(41, 1))
	ps := NewParams(cpu)
	conv := NewConv2d(ps, "down.0.conv", 4, 8, 3)
	lin := NewLinear(ps, "time_embed.0", 16, 8)
	gn := NewGroupNorm(ps, "out.norm", 8)
	ln := NewLayerNorm(ps, "z.norm", 8)
	attn := NewAttention(ps, "mid.attn", 8)
	ok4 := randT(rng, 2, 8, 4, 4)

	for _, tc := range []struct {
		name, layer string
		f           func()
	}{
		{"conv channels", "down.0.conv", func() { conv.Forward(randT(rng, 2, 3, 4, 4)) }},
		{"conv rank", "down.0.conv", func() { conv.Forward(randT(rng, 2, 4, 16)) }},
		{"conv backward", "down.0.conv backward", func() {
			conv.Forward(randT(rng, 2, 4, 4, 4))
			conv.Backward(randT(rng, 2, 8, 4, 5))
		}},
		{"linear", "time_embed.0", func() { lin.Forward(randT(rng, 2, 15)) }},
		{"linear backward", "time_embed.0 backward", func() {
			lin.Forward(randT(rng, 2, 16))
			lin.Backward(randT(rng, 3, 8))
		}},
		{"groupnorm", "out.norm", func() { gn.Forward(randT(rng, 2, 6, 4, 4), tensor.GNMod{}) }},
		{"groupnorm condition", "out.norm condition", func() {
			gn.Forward(ok4, tensor.GNMod{Scale: randT(rng, 2, 4)})
		}},
		{"layernorm", "z.norm", func() { ln.Forward(randT(rng, 2, 9)) }},
		{"attention", "mid.attn", func() { attn.Forward(randT(rng, 2, 4, 4, 4)) }},
		{"avgpool odd", "enc avgpool", func() { (&AvgPool2{Name: "enc"}).Forward(randT(rng, 1, 2, 3, 4)) }},
		{"upsample rank", "dec upsample", func() { (&Upsample2{Name: "dec"}).Forward(randT(rng, 2, 3)) }},
		{"concat spatial", "skip concat", func() {
			(&Concat{Name: "skip"}).Forward(randT(rng, 2, 3, 4, 4), randT(rng, 2, 3, 2, 2))
		}},
		{"concat batch", "skip concat", func() {
			(&Concat{Name: "skip"}).Forward(randT(rng, 2, 3, 4, 4), randT(rng, 1, 3, 4, 4))
		}},
		{"spatial mean", "global average pool", func() { (&SpatialMean{}).Forward(randT(rng, 2, 3)) }},
		// Gradients of the wrong size are stopped before a kernel reads past their end.
		{"groupnorm backward", "out.norm backward", func() {
			gn.Forward(ok4, tensor.GNMod{})
			gn.Backward(randT(rng, 2, 8, 4, 3))
		}},
		{"layernorm backward", "z.norm backward", func() {
			ln.Forward(randT(rng, 2, 8))
			ln.Backward(randT(rng, 2, 7))
		}},
		{"attention backward", "mid.attn backward", func() {
			attn.Forward(ok4)
			attn.Backward(randT(rng, 1, 8, 4, 4))
		}},
		{"silu backward", "silu backward", func() {
			var s SiLU
			s.Forward(ok4)
			s.Backward(randT(rng, 2, 8, 4))
		}},
		{"avgpool backward", "enc avgpool backward", func() {
			p := &AvgPool2{Name: "enc"}
			p.Forward(ok4)
			p.Backward(ok4)
		}},
		{"upsample backward", "dec upsample backward", func() {
			u := &Upsample2{Name: "dec"}
			u.Forward(ok4)
			u.Backward(ok4)
		}},
		{"concat backward", "skip concat backward", func() {
			c := &Concat{Name: "skip"}
			c.Forward(ok4, ok4)
			c.Backward(ok4)
		}},
		{"spatial mean backward", "global average pool backward", func() {
			var m SpatialMean
			m.Forward(ok4)
			m.Backward(randT(rng, 2, 4, 1, 1))
		}},
		{"dropout backward", "dropout backward", func() {
			d := &Dropout{P: 0.5, Training: true, Rng: rng}
			d.Forward(ok4)
			d.Backward(randT(rng, 2, 8))
		}},
		{"mse target", "mse loss target", func() { MSELoss(nil, ok4, randT(rng, 2, 8)) }},
		{"l1 gradient", "l1 loss gradient", func() { L1Loss(randT(rng, 3), ok4, ok4) }},
	} {
		err := run(tc.f)
		var se *ShapeError
		if !errors.As(err, &se) {
			t.Errorf("%s: error %v, want a *ShapeError", tc.name, err)
			continue
		}
		if se.Layer != tc.layer || !strings.Contains(err.Error(), tc.layer) {
			t.Errorf("%s: error %q should name layer %q (Layer = %q)", tc.name, err, tc.layer, se.Layer)
		}
		if len(se.Got) == 0 || se.Want == "" {
			t.Errorf("%s: error %q should give the shape received and the shape wanted", tc.name, err)
		}
	}

	// A good call after a failed one still works, and Recover passes other panics on.
	if err := run(func() { conv.Forward(randT(rng, 1, 4, 3, 3)) }); err != nil {
		t.Errorf("valid input after a failed call: %v", err)
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("Recover swallowed or changed a foreign panic: %v", r)
		}
	}()
	_ = run(func() { panic("boom") })
}
