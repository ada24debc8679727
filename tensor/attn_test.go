package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refAttention computes, in float64 for one image, the forward (h [c][t], w [t][t]) and backward (dqkv [3c][t],
// dS [t][t]) of AttentionCore/AttentionCoreBackward.
func refAttention(qkv, dh []float32, c, t int, scale float64) (h, w, dqkv, ds []float64) {
	q, k, v := qkv[:c*t], qkv[c*t:2*c*t], qkv[2*c*t:]
	w = make([]float64, t*t)
	for i := range t {
		mx := math.Inf(-1)
		for j := range t {
			s := 0.0
			for ch := range c {
				s += float64(q[ch*t+i]) * float64(k[ch*t+j])
			}
			w[i*t+j] = scale * s
			mx = math.Max(mx, w[i*t+j])
		}
		sum := 0.0
		for j := range t {
			w[i*t+j] = math.Exp(w[i*t+j] - mx)
			sum += w[i*t+j]
		}
		for j := range t {
			w[i*t+j] /= sum
		}
	}
	h = make([]float64, c*t)
	for ch := range c {
		for i := range t {
			s := 0.0
			for j := range t {
				s += float64(v[ch*t+j]) * w[i*t+j]
			}
			h[ch*t+i] = s
		}
	}
	dw := make([]float64, t*t)
	for i := range t {
		for j := range t {
			s := 0.0
			for ch := range c {
				s += float64(dh[ch*t+i]) * float64(v[ch*t+j])
			}
			dw[i*t+j] = s
		}
	}
	ds = make([]float64, t*t)
	for i := range t {
		dot := 0.0
		for j := range t {
			dot += dw[i*t+j] * w[i*t+j]
		}
		for j := range t {
			ds[i*t+j] = w[i*t+j] * (dw[i*t+j] - dot)
		}
	}
	dqkv = make([]float64, 3*c*t)
	for ch := range c {
		for i := range t {
			var sq, sk, sv float64
			for j := range t {
				sq += float64(k[ch*t+j]) * ds[i*t+j]
				sk += float64(q[ch*t+j]) * ds[j*t+i]
				sv += float64(dh[ch*t+j]) * w[j*t+i]
			}
			dqkv[ch*t+i], dqkv[c*t+ch*t+i], dqkv[2*c*t+ch*t+i] = scale*sq, scale*sk, sv
		}
	}
	return
}

// AttentionCore and its backward against float64, with attn.c's products and with OpenBLAS's, on shapes the
// kernels take (c and t multiples of 32) and one they decline.
func TestAttentionCore(t *testing.T) {
	d := NewCPU(2)
	defer setAttnKernel(true)
	rng := rand.New(rand.NewPCG(7, 3))
	for _, tc := range []struct{ n, c, t int }{{3, 64, 256}, {2, 96, 64}, {2, 40, 48}} {
		n, c, tt := tc.n, tc.c, tc.t
		scale := 1 / math.Sqrt(float64(c))
		qkv, dh := randn(d, rng, n*3*c*tt), randn(d, rng, n*c*tt)
		for i := range qkv.Data {
			qkv.Data[i] *= 2 // sharper softmax rows than unit-variance inputs give
		}
		want := make([][4][]float64, n)
		for i := range n {
			h, w, dq, ds := refAttention(qkv.Data[i*3*c*tt:(i+1)*3*c*tt], dh.Data[i*c*tt:(i+1)*c*tt], c, tt, scale)
			want[i] = [4][]float64{h, w, dq, ds}
		}
		for _, kernel := range []bool{true, false} {
			setAttnKernel(kernel)
			h, w := d.New(n, c, tt), d.New(n, tt, tt)
			dqkv, dw := d.New(n, 3*c, tt), d.New(n, tt, tt)
			if !d.AttentionCore(h, w, qkv, n, c, tt, float32(scale)) ||
				!d.AttentionCoreBackward(dqkv, dw, dh, qkv, w, n, c, tt, float32(scale)) {
				t.Fatalf("n=%d c=%d t=%d: fused attention declined", n, c, tt)
			}
			for i := range n {
				for k, got := range [][]float32{h.Data[i*c*tt : (i+1)*c*tt], w.Data[i*tt*tt : (i+1)*tt*tt],
					dqkv.Data[i*3*c*tt : (i+1)*3*c*tt], dw.Data[i*tt*tt : (i+1)*tt*tt]} {
					worst, big := 0.0, 0.0
					for j, g := range got {
						worst = math.Max(worst, math.Abs(float64(g)-want[i][k][j]))
						big = math.Max(big, math.Abs(want[i][k][j]))
					}
					if worst /= big; worst > 1e-5 {
						t.Errorf("c=%d t=%d kernel=%v image %d: %s off by %.2g of its largest value", c, tt, kernel, i,
							[]string{"h", "w", "dqkv", "dS"}[k], worst)
					}
				}
			}
		}
	}
}

// BenchmarkAttentionCore times one attention block of the fm32 encoder and decoder at 16×16 (16 images, 64
// channels, 256 positions), forward and backward, with attn.c's products and with OpenBLAS's, alternating in one
// run.
func BenchmarkAttentionCore(b *testing.B) {
	d := NewCPU(0)
	defer setAttnKernel(true)
	rng := rand.New(rand.NewPCG(1, 2))
	n, c, t := 16, 64, 256
	qkv, dh := randn(d, rng, n, 3*c, t), randn(d, rng, n, c, t)
	h, w, dqkv, dw := d.New(n, c, t), d.New(n, t, t), d.New(n, 3*c, t), d.New(n, t, t)
	flops := float64(n) * 2 * float64(c) * float64(t) * float64(t)
	for _, dir := range []string{"forward", "backward"} {
		for _, path := range []string{"kernel", "openblas"} {
			b.Run(dir+"/"+path, func(b *testing.B) {
				setAttnKernel(path == "kernel")
				for i := 0; i < b.N; i++ {
					d.AttentionCore(h, w, qkv, n, c, t, 0.125)
					if dir == "backward" {
						d.AttentionCoreBackward(dqkv, dw, dh, qkv, w, n, c, t, 0.125)
					}
				}
				prods := 2.0
				if dir == "backward" {
					prods = 6
				}
				b.ReportMetric(prods*flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// A 1×1 convolution through attn.c's kernel against float64, with and without bias, with a residual (also one
// that is the output itself), and the same through OpenBLAS.
func TestConv1x1Kernel(t *testing.T) {
	d := NewCPU(2)
	defer setAttnKernel(true)
	rng := rand.New(rand.NewPCG(11, 5))
	for _, tc := range []struct{ n, cin, cout, hw int }{{2, 64, 192, 256}, {3, 40, 16, 64}, {2, 7, 8, 32}} {
		n, cin, cout, hw := tc.n, tc.cin, tc.cout, tc.hw
		if setAttnKernel(true); !c1x1Ok(cout, hw) {
			t.Fatalf("cout=%d hw=%d: declined", cout, hw)
		}
		x, w, bias, res := randn(d, rng, n, cin, hw), randn(d, rng, cout, cin, 1, 1), randn(d, rng, cout),
			randn(d, rng, n, cout, hw)
		for _, mode := range []string{"plain", "bias", "residual", "in place"} {
			want := make([]float64, n*cout*hw)
			for i := range n {
				for o := range cout {
					for p := range hw {
						s := 0.0
						for c := range cin {
							s += float64(w.Data[o*cin+c]) * float64(x.Data[(i*cin+c)*hw+p])
						}
						if mode != "plain" {
							s += float64(bias.Data[o])
						}
						if mode == "residual" || mode == "in place" {
							s += float64(res.Data[(i*cout+o)*hw+p])
						}
						want[(i*cout+o)*hw+p] = s
					}
				}
			}
			for _, kernel := range []bool{true, false} {
				setAttnKernel(kernel)
				y := d.New(n, cout, hw)
				var b, r *Tensor
				if mode != "plain" {
					b = bias
				}
				switch mode {
				case "residual":
					r = res
				case "in place":
					copy(y.Data, res.Data)
					r = y
				}
				d.Conv2dForwardAdd(y, x, w, b, r, n, cin, cout, 1, hw, 1)
				worst := 0.0
				for j, g := range y.Data {
					worst = math.Max(worst, math.Abs(float64(g)-want[j])/(1+math.Abs(want[j])))
				}
				if worst > 1e-5 {
					t.Errorf("n=%d cin=%d cout=%d hw=%d %s kernel=%v: off by %.2g", n, cin, cout, hw, mode, kernel, worst)
				}
			}
		}
	}
}

// BenchmarkConv1x1 times the fm32 attention block's qkv convolution (16 images, 64 → 192 channels, 16×16) with
// attn.c's kernel and with OpenBLAS, alternating in one run.
func BenchmarkConv1x1(b *testing.B) {
	d := NewCPU(0)
	defer setAttnKernel(true)
	rng := rand.New(rand.NewPCG(1, 2))
	n, cin, cout, hw := 16, 64, 192, 256
	x, w, bias, y := randn(d, rng, n, cin, hw), randn(d, rng, cout, cin, 1, 1), randn(d, rng, cout), d.New(n, cout, hw)
	for round := 0; round < 2; round++ {
		for _, path := range []string{"kernel", "openblas"} {
			b.Run(path, func(b *testing.B) {
				setAttnKernel(path == "kernel")
				for i := 0; i < b.N; i++ {
					d.Conv2dForward(y, x, w, bias, n, cin, cout, 16, 16, 1)
				}
				b.ReportMetric(2*float64(n*cin*cout*hw)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
