package mllama

import (
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
		cfg, err := LoadConfig(filepath.Join("../../goldens/mllama-tiny-dev", c.dir, "config.json"))
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
