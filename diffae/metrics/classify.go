package metrics

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// AUROC returns the area under the ROC curve of scores (higher meaning more
// likely positive) against labels: the probability that a random positive
// scores above a random negative, ties counting one half. It is computed
// from average ranks (the Mann–Whitney U statistic), so tied scores get the
// mean of their ranks. It returns NaN when labels hold only one class, and
// panics when the lengths differ or a score is NaN.
func AUROC(scores []float64, labels []bool) float64 {
	if len(scores) != len(labels) {
		panic(fmt.Sprintf("metrics.AUROC: %d scores for %d labels", len(scores), len(labels)))
	}
	order := make([]int, len(scores))
	for i := range order {
		if math.IsNaN(scores[i]) {
			panic(fmt.Sprintf("metrics.AUROC: score %d is NaN", i))
		}
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(scores[a], scores[b]) })
	var pos, neg int
	var rankSum float64 // sum of the 1-based ranks of the positives
	for lo := 0; lo < len(order); {
		hi := lo + 1
		for hi < len(order) && scores[order[hi]] == scores[order[lo]] {
			hi++
		}
		rank := float64(lo+1+hi) / 2 // mean of ranks lo+1 .. hi
		for _, i := range order[lo:hi] {
			if labels[i] {
				pos++
				rankSum += rank
			} else {
				neg++
			}
		}
		lo = hi
	}
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	p := float64(pos)
	return (rankSum - p*(p+1)/2) / (p * float64(neg))
}

// Accuracy returns the share of positions where pred equals truth, or NaN
// when both are empty. It panics when the lengths differ.
func Accuracy[T comparable](pred, truth []T) float64 {
	if len(pred) != len(truth) {
		panic(fmt.Sprintf("metrics.Accuracy: %d predictions for %d truths", len(pred), len(truth)))
	}
	if len(pred) == 0 {
		return math.NaN()
	}
	var ok int
	for i := range pred {
		if pred[i] == truth[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(pred))
}
