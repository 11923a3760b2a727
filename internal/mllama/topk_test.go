package mllama

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestTopKMatchesStableSort: the one-pass selection orders as a stable sort
// of the whole vector does, with many ties, NaNs, infinities and signed
// zeros, for k below, at and above the number of values.
func TestTopKMatchesStableSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	special := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 0, float32(math.Copysign(0, -1))}
	for trial := range 200 {
		x := make([]float32, 1+r.IntN(300))
		for i := range x {
			switch r.IntN(4) {
			case 0:
				x[i] = special[r.IntN(len(special))]
			case 1:
				x[i] = float32(r.IntN(5)) // ties
			default:
				x[i] = float32(r.NormFloat64())
			}
		}
		for _, k := range []int{0, 1, 5, 10, len(x) - 1, len(x), len(x) + 3} {
			if got, want := TopK(x, k), topKSort(x, max(k, 0)); !slices.Equal(got, want) {
				t.Fatalf("trial %d, k=%d: got %v, want %v (x=%v)", trial, k, got, want, x)
			}
		}
	}
	if got := TopK([]float32{1, 2}, -1); len(got) != 0 {
		t.Errorf("k=-1: got %v", got)
	}
}
