package mllama

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// base/ holds the transformers 5.17 form (dtype, rope_parameters) and
// base-hub/ the 4.45 form (torch_dtype, rope_scaling + rope_theta); both
// describe the same model.
func TestLoadConfigBothForms(t *testing.T) {
	for _, c := range []struct{ dir, dtypeKey, rope string }{
		{"base", "dtype", "rope_parameters"},
		{"base-hub", "torch_dtype", "rope_scaling"},
	} {
		cfg, err := LoadConfig(filepath.Join(fixtures, c.dir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.DTypeKey != c.dtypeKey || cfg.DType != dtype.BF16 {
			t.Errorf("%s: dtype %v under %q", c.dir, cfg.DType, cfg.DTypeKey)
		}
		if cfg.Text.RopeForm != c.rope || cfg.Text.RopeScaling.Factor != 8 || cfg.Text.RopeTheta != 500000 {
			t.Errorf("%s: rope %q %+v theta %v", c.dir, cfg.Text.RopeForm, cfg.Text.RopeScaling, cfg.Text.RopeTheta)
		}
		if cfg.Text.HiddenSize != 8 || cfg.Text.HeadDim() != 4 || !cfg.Text.IsCross(3) || cfg.Text.IsCross(2) {
			t.Errorf("%s: text %+v", c.dir, cfg.Text)
		}
		if cfg.Vision.NumPatches() != 17 || cfg.Vision.MaxAspectRatioID() != 8 || cfg.ImageTokenIndex != 128256 {
			t.Errorf("%s: vision %+v", c.dir, cfg.Vision)
		}
	}
}

// The shapes derived from config.json must be exactly the tensors
// transformers saved for the base (names and shapes).
func TestExpectedShapesMatchBase(t *testing.T) {
	cfg, err := LoadConfig(fixtures + "base/config.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := ExpectedShapes(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]int64{}
	for n, e := range manifestEntries(t) {
		got[n] = e
	}
	if len(got) != len(want) {
		t.Errorf("%d expected tensors, base has %d", len(want), len(got))
	}
	for n, s := range got {
		w, ok := want[n]
		if !ok {
			t.Errorf("base tensor %s not derived", n)
			continue
		}
		if fmt.Sprint(w) != fmt.Sprint(s) {
			t.Errorf("%s: derived %v, base %v", n, w, s)
		}
	}
}

func manifestEntries(t *testing.T) map[string][]int64 {
	b, err := os.ReadFile(fixtures + "ref-manifests.json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Manifests map[string]map[string]struct {
			Shape []int64 `json:"shape"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string][]int64{}
	for n, e := range m.Manifests["base"] {
		out[n] = e.Shape
	}
	return out
}
