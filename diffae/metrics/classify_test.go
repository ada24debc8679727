package metrics

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAUROC(t *testing.T) {
	t.Parallel()
	labels := []bool{false, true, false, true, true, false}
	tests := []struct {
		name   string
		scores []float64
		labels []bool
		want   float64
	}{
		{"perfect", []float64{0.1, 0.9, 0.2, 0.8, 0.7, 0.3}, labels, 1},
		{"inverted", []float64{0.9, 0.1, 0.8, 0.2, 0.3, 0.7}, labels, 0},
		{"all tied", []float64{5, 5, 5, 5, 5, 5}, labels, 0.5},
		// Positives 0.5, 0.8, 0.5 against negatives 0.5, 0.2, 0.9: of the
		// nine pairs, wins (0.8>0.5, 0.8>0.2, 0.5>0.2 twice) 4, ties
		// (0.5=0.5 twice) 2, so (4 + 2/2) / 9.
		{"hand", []float64{0.5, 0.5, 0.2, 0.8, 0.5, 0.9}, labels, 5.0 / 9},
		{"one class", []float64{1, 2}, []bool{true, true}, math.NaN()},
		{"empty", nil, nil, math.NaN()},
	}
	for _, tt := range tests {
		got := AUROC(tt.scores, tt.labels)
		if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && !near(got, tt.want, 1e-12)) {
			t.Errorf("%s: AUROC = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestAUROCRandomScorerAndPairCount(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 8))
	n := 20000
	scores, labels := make([]float64, n), make([]bool, n)
	for i := range scores {
		scores[i] = float64(r.IntN(50)) // many ties
		labels[i] = r.IntN(3) == 0
	}
	if got := AUROC(scores, labels); !near(got, 0.5, 0.02) {
		t.Errorf("random scorer: AUROC %v, want about 0.5", got)
	}
	// Against the definition, counted pair by pair, on a smaller sample.
	scores, labels = scores[:300], labels[:300]
	var wins float64
	var pairs int
	for i := range scores {
		for j := range scores {
			if labels[i] && !labels[j] {
				pairs++
				switch {
				case scores[i] > scores[j]:
					wins++
				case scores[i] == scores[j]:
					wins += 0.5
				}
			}
		}
	}
	if got, want := AUROC(scores, labels), wins/float64(pairs); !near(got, want, 1e-12) {
		t.Errorf("AUROC %v, pair count %v", got, want)
	}
}

func TestAccuracy(t *testing.T) {
	t.Parallel()
	if got := Accuracy([]int{1, 2, 3, 4}, []int{1, 0, 3, 0}); got != 0.5 {
		t.Errorf("Accuracy = %v, want 0.5", got)
	}
	if got := Accuracy([]bool{true, false, true}, []bool{true, false, true}); got != 1 {
		t.Errorf("Accuracy = %v, want 1", got)
	}
	if got := Accuracy[int](nil, nil); !math.IsNaN(got) {
		t.Errorf("Accuracy of nothing = %v, want NaN", got)
	}
}
