package schema

import (
	"strings"
	"testing"
)

// StepsValid agrees with respacing by brute force over every stride, and jobs with a step count that no stride
// gives are refused at parse time (the worker would otherwise fail them as if the fault were transient).
func TestStepsValid(t *testing.T) {
	valid := map[int]bool{}
	for s := 1; s <= MaxSteps; s++ {
		valid[(MaxSteps+s-1)/s] = true
	}
	for n := -1; n <= MaxSteps+1; n++ {
		if got := StepsValid(n); got != valid[n] {
			t.Fatalf("StepsValid(%d) = %v, want %v", n, got, valid[n])
		}
	}
	for _, n := range []int{1, 10, 20, 50, 100, 250, 1000} {
		if !StepsValid(n) {
			t.Errorf("StepsValid(%d) = false: the paper's step counts must be valid", n)
		}
	}
	j := &Decode{Header: Header{Model: "fm32", Batch: "b-1"}, ImageHash: hashA, Steps: 37, Noise: "encoded"}
	if _, err := Marshal(j); err == nil || !strings.Contains(err.Error(), `"steps"`) {
		t.Errorf("a decode job of 37 steps: %v, want an error naming steps", err)
	}
	smp := &Sample{Header: Header{Model: "fm32", Batch: "b-1"}, Count: 1, Steps: 20, LatentSteps: 999}
	if _, err := Marshal(smp); err == nil || !strings.Contains(err.Error(), `"latent_steps"`) {
		t.Errorf("a sample job of 999 latent steps: %v, want an error naming latent_steps", err)
	}
}

// A decode of the stored x_T takes no seed: it would only change the job's key, and so repeat the same work.
func TestDecodeSeedOnlyWithRandomXT(t *testing.T) {
	for _, tc := range []struct {
		noise string
		seed  int64
		ok    bool
	}{{"encoded", 0, true}, {"encoded", 7, false}, {"random", 7, true}, {"random", 0, true}} {
		j := &Decode{Header: Header{Model: "fm32", Batch: "b-1"}, ImageHash: hashA, Steps: 20, Noise: tc.noise, Seed: tc.seed}
		_, err := Marshal(j)
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), `"seed"`)) {
			t.Errorf("x_t %s, seed %d: %v, want ok=%v (an error naming seed)", tc.noise, tc.seed, err, tc.ok)
		}
	}
}
