package cron

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	every := Duration(time.Minute)
	tests := []struct {
		name string
		job  Job
		want string // substring of the error; "" for valid
	}{
		{"every", Job{Name: "train", Kind: KindTrain, Every: every}, ""},
		{"cron", Job{Name: "score", Kind: KindScore, Cron: "*/5 * * * *"}, ""},
		{"cron with seconds", Job{Name: "r", Kind: KindRegenerate, Cron: "0 */5 * * * *", Definition: "d1"}, ""},
		{"bad name", Job{Name: "Train!", Kind: KindTrain, Every: every}, "name"},
		{"unknown kind", Job{Name: "x", Kind: "backup", Every: every}, "kind"},
		{"no schedule", Job{Name: "x", Kind: KindTrain}, "exactly one"},
		{"two schedules", Job{Name: "x", Kind: KindTrain, Every: every, Cron: "* * * * *"}, "exactly one"},
		{"too often", Job{Name: "x", Kind: KindTrain, Every: Duration(time.Millisecond)}, "at least 1s"},
		{"cron fields", Job{Name: "x", Kind: KindTrain, Cron: "* * *"}, "5 fields"},
		{"definition on train", Job{Name: "x", Kind: KindTrain, Every: every, Definition: "d"}, "definition"},
		{"model on regenerate", Job{Name: "x", Kind: KindRegenerate, Every: every, Model: "m"}, "model"},
		{"bad model", Job{Name: "x", Kind: KindScore, Every: every, Model: "../m"}, "model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Jobs = []Job{tc.job}
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want an error about %q", err, tc.want)
			}
		})
	}
	c := DefaultConfig()
	c.Jobs = append(c.Jobs, c.Jobs[0])
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate job names: %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write("ok.json", `{"jobs":[{"name":"t","kind":"train","every":"90s"}],"train":{"holdout":0.3}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jobs) != 1 || time.Duration(c.Jobs[0].Every) != 90*time.Second || c.Train.HoldOut != 0.3 ||
		c.Train.MinSteps != DefaultConfig().Train.MinSteps {
		t.Errorf("loaded %+v", c)
	}
	c, err = LoadConfig(write("empty.json", `{}`))
	if err != nil || len(c.Jobs) != len(DefaultConfig().Jobs) {
		t.Errorf("empty file: %+v, %v; want the default jobs", c.Jobs, err)
	}
	for name, body := range map[string]string{
		"unknown.json":  `{"jobs":[],"backup":true}`,
		"duration.json": `{"jobs":[{"name":"t","kind":"train","every":"often"}]}`,
		"holdout.json":  `{"train":{"holdout":1.5}}`,
	} {
		if _, err := LoadConfig(write(name, body)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

func TestTickAgreesAcrossReplicas(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 5, 1, 12, 10, 0, 0, time.UTC)
	tests := []struct {
		job  Job
		a, b time.Time // two replicas' firing times for one scheduled instant
		next time.Time // a firing for the next instant
	}{
		{Job{Every: Duration(10 * time.Minute)}, base.Add(3 * time.Millisecond), base.Add(-2 * time.Millisecond), base.Add(10*time.Minute + time.Millisecond)},
		{Job{Cron: "*/5 * * * *"}, base.Add(40 * time.Millisecond), base, base.Add(5 * time.Minute)},
		{Job{Cron: "*/2 * * * * *"}, base.Add(40 * time.Millisecond), base.Add(-5 * time.Millisecond), base.Add(2 * time.Second)},
	}
	for _, tc := range tests {
		ta, tb := tc.job.Tick(tc.a), tc.job.Tick(tc.b)
		if !ta.Equal(tb) || !ta.Equal(base) {
			t.Errorf("%+v: ticks %v and %v, want both %v", tc.job, ta, tb, base)
		}
		if tn := tc.job.Tick(tc.next); tn.Equal(ta) {
			t.Errorf("%+v: next firing has the same tick %v", tc.job, tn)
		}
	}
}

func TestHeldOutShare(t *testing.T) {
	t.Parallel()
	for _, share := range []float64{0.1, 0.2, 0.5} {
		n := 0
		for id := int64(1); id <= 100000; id++ {
			if heldOut(id, share) {
				n++
			}
		}
		if got := float64(n) / 100000; math.Abs(got-share) > 0.01 {
			t.Errorf("share %.2f: held out %.4f", share, got)
		}
	}
}

// Sketch bits differ with probability angle/π: identical vectors agree, opposite ones differ everywhere, and the
// Hamming distance grows with the angle.
func TestSketchTracksAngle(t *testing.T) {
	t.Parallel()
	const d = 64
	h := Hyperplanes(d)
	rng := rand.New(rand.NewPCG(1, 2))
	z := make([]float32, d)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	hamming := func(a, b []byte) int {
		n := 0
		for i := range a {
			n += bits.OnesCount8(a[i] ^ b[i])
		}
		return n
	}
	sz, norm := Sketch(z, h)
	neg := make([]float32, d)
	for i := range z {
		neg[i] = -z[i] * 3
	}
	sn, _ := Sketch(neg, h)
	var want float64
	for _, v := range z {
		want += float64(v) * float64(v)
	}
	if math.Abs(float64(norm)-math.Sqrt(want)) > 1e-4 {
		t.Errorf("norm %v, want %v", norm, math.Sqrt(want))
	}
	if got := hamming(sz, sn); got < 250 { // exact zeros of z·h could agree; none are expected
		t.Errorf("opposite vectors: Hamming %d, want 256", got)
	}
	prev := -1
	for _, mix := range []float32{0, 0.3, 0.8, 1.5} {
		y := make([]float32, d)
		for i := range y {
			y[i] = z[i] + mix*float32(rng.NormFloat64())
		}
		sy, _ := Sketch(y, h)
		dist := hamming(sz, sy)
		if dist < prev {
			t.Errorf("noise %.1f: Hamming %d below the previous %d", mix, dist, prev)
		}
		prev = dist
	}
	if prev == 0 {
		t.Error("sketches never changed")
	}
}
