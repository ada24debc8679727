package schema

import (
	"errors"
	"strings"
	"testing"
)

// An encode job may name its encoder steps; 0 leaves them to the worker, anything else must be 1..MaxSteps.
func TestEncodeSteps(t *testing.T) {
	for _, tc := range []struct {
		steps int
		ok    bool
	}{{0, true}, {1, true}, {20, true}, {MaxSteps, true}, {-1, false}, {MaxSteps + 1, false}} {
		j := &Encode{Header: Header{Model: "fm32", Batch: "b-1"}, ImageHash: hashA, Steps: tc.steps}
		b, err := Marshal(j)
		if tc.ok {
			if err != nil {
				t.Fatalf("steps %d: %v", tc.steps, err)
			}
			got, err := Parse(b)
			if err != nil || got.(*Encode).Steps != tc.steps {
				t.Fatalf("steps %d: round trip gave %+v, %v", tc.steps, got, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"steps"`) {
			t.Fatalf("steps %d: want an error naming the field \"steps\", got %v", tc.steps, err)
		}
	}
}
