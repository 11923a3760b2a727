package mllama

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"sort"

	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// Prompt is a model input as MllamaProcessor builds it for one sequence.
type Prompt struct {
	// IDs are the token ids, <|image|> tokens included.
	IDs []int
	// Images are the prompt's images in order (none for text only).
	Images []Image
	// CrossAttentionMask is [len(IDs)][len(Images)][max_num_tiles] (as
	// transformers' cross_attention_mask[0] and vision.CrossAttentionMask),
	// 1 where a token attends to a tile; nil lets every token see every
	// tile.
	CrossAttentionMask [][][]int
}

// Generation is the result of greedy decoding.
type Generation struct {
	// Logits are the last prompt position's logits ([vocab]).
	Logits []float32
	// Tokens are the generated ids, the stop token included when one ended
	// the generation.
	Tokens []int
}

// Generate decodes greedily (argmax, lowest id on ties, as torch.argmax)
// with a KV cache: at most maxNew tokens, ending early after any id in
// stop. New tokens reuse the last prompt token's cross-attention mask row,
// as transformers' generate does.
func (m *Model) Generate(p Prompt, maxNew int, stop []int) (*Generation, error) {
	if maxNew < 0 {
		return nil, fmt.Errorf("%w: max new tokens %d is negative", ErrInput, maxNew)
	}
	s, err := m.NewSession(p.Images)
	if err != nil {
		return nil, err
	}
	logits, err := s.Forward(p.IDs, p.CrossAttentionMask)
	if err != nil {
		return nil, err
	}
	g := &Generation{Logits: logits}
	stops := map[int]bool{}
	for _, id := range stop {
		stops[id] = true
	}
	cur := logits
	for len(g.Tokens) < maxNew {
		next := Argmax(cur)
		g.Tokens = append(g.Tokens, next)
		if stops[next] || len(g.Tokens) == maxNew {
			break
		}
		if cur, err = s.Forward([]int{next}, nil); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Argmax returns the index of the largest value, the first on ties; NaN
// counts as larger than everything, as torch.argmax treats it. It returns
// -1 for an empty slice.
func Argmax(x []float32) int {
	best := -1
	for i, v := range x {
		if math.IsNaN(float64(v)) {
			return i
		}
		if best < 0 || v > x[best] {
			best = i
		}
	}
	return best
}

// TopK returns the indices of the k largest values, largest first, lower
// index first among equals (NaN values are skipped).
func TopK(x []float32, k int) []int {
	if k <= 0 {
		return []int{}
	}
	if k > 256 {
		return topKSort(x, k)
	}
	// One pass keeping the best k in order: most logits fall below the
	// k-th best at once, so this is a comparison per entry, where sorting
	// a 128k vocabulary took a tenth of a smoke run.
	top := make([]int, 0, k)
	for i, v := range x {
		if math.IsNaN(float64(v)) || (len(top) == k && !(v > x[top[k-1]])) {
			continue
		}
		// After every kept value at least as large: ties keep index order.
		p := sort.Search(len(top), func(j int) bool { return x[top[j]] < v })
		if len(top) < k {
			top = append(top, 0)
		}
		copy(top[p+1:], top[p:len(top)-1])
		top[p] = i
	}
	return top
}

func topKSort(x []float32, k int) []int {
	idx := make([]int, 0, len(x))
	for i, v := range x {
		if !math.IsNaN(float64(v)) {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return x[idx[a]] > x[idx[b]] })
	if k < len(idx) {
		idx = idx[:k]
	}
	return idx
}

// LogSumExp is log Σ exp(x) in float64, shifted by the largest value so
// that it neither overflows nor underflows.
func LogSumExp(x []float32) float64 {
	maxv := math.Inf(-1)
	for _, v := range x {
		maxv = math.Max(maxv, float64(v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - maxv)
	}
	return maxv + math.Log(sum)
}

// LogSoftmax returns log-probabilities in float64.
func LogSoftmax(x []float32) []float64 {
	lse := LogSumExp(x)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - lse
	}
	return out
}

// Entropy is the entropy in nats of softmax(x).
func Entropy(x []float32) float64 {
	var h float64
	for _, lp := range LogSoftmax(x) {
		if p := math.Exp(lp); p > 0 {
			h -= p * lp
		}
	}
	return h
}

// KL is KL(softmax(p) ‖ softmax(q)) in nats; p and q have the same length.
func KL(p, q []float32) float64 {
	lp, lq := LogSoftmax(p), LogSoftmax(q)
	var kl float64
	for i := range lp {
		if pi := math.Exp(lp[i]); pi > 0 {
			kl += pi * (lp[i] - lq[i])
		}
	}
	return kl
}

// RelRMS is ‖a − ref‖₂ / ‖ref‖₂, and MaxAbs the largest |a − ref|.
func RelRMS(a, ref []float32) (relRMS, maxAbs float64) {
	var num, den float64
	for i := range ref {
		d := float64(a[i]) - float64(ref[i])
		num += d * d
		den += float64(ref[i]) * float64(ref[i])
		maxAbs = math.Max(maxAbs, math.Abs(d))
	}
	if den == 0 {
		return math.Inf(1), maxAbs
	}
	return math.Sqrt(num / den), maxAbs
}

// StopIDs returns the ids transformers' generate stops at for a model
// directory: generation_config.json's eos_token_id (one id or a list), else
// the text config's, as GenerationConfig.from_model_config falls back to.
func StopIDs(dir string, cfg *Config) ([]int, error) {
	path := filepath.Join(dir, "generation_config.json")
	b, err := boundedio.ReadFile(path, boundedio.JSONLimit)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		tc, _ := cfg.Raw["text_config"].(map[string]any)
		raw, _ := json.Marshal(tc["eos_token_id"])
		ids, err := parseIDs(raw)
		if err != nil {
			return nil, fmt.Errorf("config.json: text_config.eos_token_id: %w", err)
		}
		return ids, nil
	case err != nil:
		return nil, err
	}
	var gc struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(b, &gc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ids, err := parseIDs(gc.EOS)
	if err != nil {
		return nil, fmt.Errorf("%s: eos_token_id: %w", path, err)
	}
	return ids, nil
}

// parseIDs accepts null, an id or a list of ids.
func parseIDs(raw json.RawMessage) ([]int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("%s is neither a token id nor a list of them", raw)
	}
	return many, nil
}
