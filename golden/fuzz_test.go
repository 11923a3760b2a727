package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// Recordings are input: whatever golden.json holds, Parse and Compare must
// not panic. The seeds are the committed recording and pieces of it.
func FuzzParseCompare(f *testing.F) {
	b, err := os.ReadFile(filepath.Join(recordedFsdp1, FileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"schema": "ckptgate.golden/v1"}`))
	f.Add([]byte(`{"schema": "ckptgate.golden/v1", "forward": {"p": {"input_ids": [1], "top_ids": [99999999, -1], "top_logits": ["NaN", "Inf"], "stats": {"logsumexp": "-Inf"}}}}`))
	f.Add([]byte(`{"schema": "ckptgate.golden/v1", "preprocess": {"a.png": {"sample": [1, 2], "tile_channel_means": [[1], [2, 3]]}}, "inputs": {"images": [{"name": "a.png", "path": "/nonexistent"}]}}`))
	f.Add([]byte(`{"schema": "ckptgate.golden/v1", "weights": {"tensors": {"a": {"dtype": "BF16", "shape": [2], "stats": {"sample": [1, "NaN"]}}}}, "source": {"dcp": {}, "tensors": {}}}`))
	ref, err := Parse(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data)
		if err != nil {
			return
		}
		Compare(g, g, DefaultTolerances)
		Compare(g, ref, DefaultTolerances)
		Compare(ref, g, DefaultTolerances)
		Compare(g, &Golden{}, DefaultTolerances)
		Compare(&Golden{}, g, DefaultTolerances)
	})
}
