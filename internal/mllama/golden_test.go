package mllama

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

const fixtures = "../../goldens/mllama-tiny-dev/"

// forwardGolden is one goldens.json "forward" entry, made by transformers
// 5.17 on ref/fsdp1-fp32 in fp32 on CPU with eager attention.
type forwardGolden struct {
	Rendered  string    `json:"rendered"`
	InputIDs  []int     `json:"input_ids"`
	TopIDs    []int     `json:"top_ids"`
	TopLogits []float64 `json:"top_logits"`
	Entropy   float64   `json:"entropy_nats"`
	Generated []int     `json:"generated"`
}

// goldens are the parts of goldens.json these tests use: the chat
// conversations (messages as raw JSON, key order kept) and the forward
// goldens.
type goldens struct {
	Templates map[string]struct {
		Messages json.RawMessage `json:"messages"`
	} `json:"templates"`
	Forward map[string]forwardGolden `json:"forward"`
}

func loadGoldens(tb testing.TB) *goldens {
	tb.Helper()
	b, err := os.ReadFile(fixtures + "goldens.json")
	if err != nil {
		tb.Fatal(err)
	}
	var g goldens
	if err := json.Unmarshal(b, &g); err != nil {
		tb.Fatal(err)
	}
	return &g
}

func loadForwardGoldens(tb testing.TB) map[string]forwardGolden {
	tb.Helper()
	return loadGoldens(tb).Forward
}

// readGolden reads golden-<name>.safetensors with base/'s config: the exact
// inputs HF built and the last-position logits it computed.
func readGolden(tb testing.TB, name string) (Prompt, []float32) {
	tb.Helper()
	cfg, err := LoadConfig(fixtures + "base/config.json")
	if err != nil {
		tb.Fatal(err)
	}
	p, logits, err := ReadGoldenInputs(fixtures+"golden-"+name+".safetensors", cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return p, logits
}

func goldenPrompt(tb testing.TB, name string) Prompt {
	tb.Helper()
	p, _ := readGolden(tb, name)
	return p
}

// ReadGoldenInputs checks a golden file against the config before reading
// it: with a vocabulary or a tile count other than the one transformers ran
// with, it refuses the file, naming it and the tensor.
func TestReadGoldenInputsChecksShapes(t *testing.T) {
	base, err := LoadConfig(fixtures + "base/config.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what, golden, tensor string
		edit                 func(*Config)
	}{
		{"vocabulary", "text_user", "last_logits", func(c *Config) { c.Text.VocabSize++ }},
		{"tiles", "image_user", "pixel_values", func(c *Config) { c.Vision.MaxNumTiles = 2 }},
	} {
		cfg := *base
		tc.edit(&cfg)
		path := fixtures + "golden-" + tc.golden + ".safetensors"
		if _, _, err := ReadGoldenInputs(path, &cfg); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.tensor) {
			t.Errorf("%s: error %v, want one naming %s and %s", tc.what, err, path, tc.tensor)
		}
	}
}
