package diffae

import (
	"errors"
	"testing"

	"dae/schema"
)

// Respacing gives exactly the step counts schema.StepsValid accepts (so jobs are checked where they are parsed),
// and refuses the others with ErrSteps (which workers take for a permanent failure).
func TestRespaceStepCounts(t *testing.T) {
	s := LinearSchedule()
	for n := -1; n <= 1001; n++ {
		r, err := s.Respace(n)
		if schema.StepsValid(n) {
			if err != nil || r.Len() != n {
				t.Fatalf("Respace(%d): %v, len %v", n, err, r)
			}
			continue
		}
		if !errors.Is(err, ErrSteps) {
			t.Fatalf("Respace(%d): %v, want ErrSteps", n, err)
		}
	}
}
