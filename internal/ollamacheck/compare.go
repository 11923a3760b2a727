//go:build ollama

package ollamacheck

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/reports"
)

// Distance measures how far logits b are from reference logits a.
type Distance struct {
	// RelRMS is ‖b−a‖₂/‖a‖₂.
	RelRMS float64 `json:"rel_rms"`
	// MaxAbs is max |b−a|.
	MaxAbs float64 `json:"max_abs"`
	// KL is KL(softmax(a) ‖ softmax(b)) in nats.
	KL float64 `json:"kl"`
	// ArgmaxA and ArgmaxB are the top tokens.
	ArgmaxA int `json:"argmax_a"`
	ArgmaxB int `json:"argmax_b"`
	// Top10Overlap counts tokens in both top-10 sets.
	Top10Overlap int `json:"top10_overlap"`
	// NonFinite counts NaN and ±Inf entries of b.
	NonFinite int `json:"non_finite"`
}

// SameArgmax reports whether both pick the same token.
func (d Distance) SameArgmax() bool { return d.ArgmaxA == d.ArgmaxB }

// MarshalJSON writes NaN distances (non-finite logits) as null, which JSON
// can hold.
func (d Distance) MarshalJSON() ([]byte, error) {
	type plain Distance
	finite := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	return json.Marshal(struct {
		plain
		RelRMS *float64 `json:"rel_rms"`
		KL     *float64 `json:"kl"`
	}{plain(d), finite(d.RelRMS), finite(d.KL)})
}

func (d Distance) String() string {
	if d.NonFinite > 0 {
		return fmt.Sprintf("%d of the logits are NaN or infinite", d.NonFinite)
	}
	return fmt.Sprintf("rel RMS %.3g, max |Δ| %.3g, KL %.3g nats, argmax %d vs %d, top-10 overlap %d/10",
		d.RelRMS, d.MaxAbs, d.KL, d.ArgmaxA, d.ArgmaxB, d.Top10Overlap)
}

// compareLogits measures b against the reference a and fills the report's
// plot shape. The two must have the same length.
func compareLogits(a, b []float32, prompt, aLabel, bLabel string) (Distance, reports.LogitsDetails, error) {
	if len(a) != len(b) || len(a) == 0 {
		return Distance{}, reports.LogitsDetails{}, fmt.Errorf("%s: %d reference logits and %d from Ollama", prompt, len(a), len(b))
	}
	var d Distance
	var num, den float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		if math.IsNaN(y) || math.IsInf(y, 0) {
			d.NonFinite++
			continue
		}
		num += (y - x) * (y - x)
		den += x * x
		d.MaxAbs = math.Max(d.MaxAbs, math.Abs(y-x))
	}
	topA, topB := topK(a, 10), topK(b, 10)
	det := reports.LogitsDetails{Prompt: prompt, ALabel: aLabel, BLabel: bLabel, TopIDsA: topA, TopIDsB: topB}
	for _, i := range topA {
		det.TopLogitsA = append(det.TopLogitsA, float64(a[i]))
	}
	for _, i := range topB {
		det.TopLogitsB = append(det.TopLogitsB, float64(b[i]))
	}
	d.ArgmaxA, d.ArgmaxB = topA[0], topB[0]
	inA := map[int]bool{}
	for _, i := range topA {
		inA[i] = true
	}
	for _, i := range topB {
		if inA[i] {
			d.Top10Overlap++
		}
	}
	if d.NonFinite > 0 {
		d.RelRMS, d.KL = math.NaN(), math.NaN()
		det.KL, det.RelRMS = -1, -1 // JSON has no NaN; the message says why
		return d, det, nil
	}
	if den > 0 {
		d.RelRMS = math.Sqrt(num / den)
	}
	d.KL = kl(a, b)
	det.KL, det.RelRMS = d.KL, d.RelRMS
	det.Sample = sample(a, b, topA)
	return d, det, nil
}

// topK returns the indices of the k largest values, largest first (NaN
// counts as smallest; ties keep the lower index first).
func topK(x []float32, k int) []int {
	k = min(k, len(x))
	greater := func(i, j int) bool {
		a, b := x[i], x[j]
		switch {
		case a != a:
			return false
		case b != b:
			return true
		case a != b:
			return a > b
		}
		return i < j
	}
	top := make([]int, 0, k+1)
	for i := range x {
		if len(top) == k && !greater(i, top[k-1]) {
			continue
		}
		at := sort.Search(len(top), func(j int) bool { return greater(i, top[j]) })
		top = slices.Insert(top, at, i)
		if len(top) > k {
			top = top[:k]
		}
	}
	return top
}

// kl is KL(softmax(a) ‖ softmax(b)), computed in float64.
func kl(a, b []float32) float64 {
	la, lb := mllama.LogSumExp(a), mllama.LogSumExp(b)
	var s float64
	for i := range a {
		pa := float64(a[i]) - la
		pb := float64(b[i]) - lb
		s += math.Exp(pa) * (pa - pb)
	}
	return math.Max(s, 0)
}

// sample picks at most ~2000 (a, b) pairs for a scatter plot: the reference's
// top tokens and an even stride through the rest.
func sample(a, b []float32, top []int) [][2]float64 {
	const want = 2000
	stride := max(1, len(a)/want)
	seen := map[int]bool{}
	var out [][2]float64
	for _, i := range top {
		seen[i] = true
		out = append(out, [2]float64{float64(a[i]), float64(b[i])})
	}
	for i := 0; i < len(a); i += stride {
		if !seen[i] {
			out = append(out, [2]float64{float64(a[i]), float64(b[i])})
		}
	}
	return out
}
