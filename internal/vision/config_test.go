package vision_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ckptgate/ckptgate/internal/vision"
)

var ignoreSource = cmpopts.IgnoreFields(vision.Config{}, "Form", "Path")

// TestConfigForms loads the base model's image-processor config in the form
// transformers 5.17 saved (processor_config.json, nested) and the 4.45 form
// of base-hub (preprocessor_config.json, flat) and requires the same Config;
// and the real 11B file must equal the goldens' "llama-3.2-11b-vision".
func TestConfigForms(t *testing.T) {
	v5, err := vision.LoadConfig(filepath.Join(fixtures, "base"))
	if err != nil {
		t.Fatal(err)
	}
	v4, err := vision.LoadConfig(filepath.Join(fixtures, "base-hub"))
	if err != nil {
		t.Fatal(err)
	}
	if v5.Form != vision.FormProcessor || v4.Form != vision.FormPreprocessor {
		t.Errorf("forms %q and %q", v5.Form, v4.Form)
	}
	if d := cmp.Diff(v4, v5, ignoreSource); d != "" {
		t.Errorf("4.x and 5.x forms differ (-4.x +5.x):\n%s", d)
	}
	if d := vision.Diff(v4, v5); len(d) != 0 {
		t.Errorf("Diff reports %v", d)
	}
	want := &vision.Config{
		DoConvertRGB: true, DoResize: true, DoRescale: true, DoNormalize: true, DoPad: true,
		ImageMean:     []float64{0.48145466, 0.4578275, 0.40821073},
		ImageStd:      []float64{0.26862954, 0.26130258, 0.27577711},
		MaxImageTiles: 4, Resample: 2, RescaleFactor: 0.00392156862745098,
		Size:               vision.Size{Height: 56, Width: 56},
		ImageProcessorType: "MllamaImageProcessor", ProcessorClass: "MllamaProcessor",
		Extra: map[string]json.RawMessage{},
	}
	if d := cmp.Diff(want, v5, ignoreSource, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("base config (-want +got):\n%s", d)
	}

	b, err := os.ReadFile(filepath.Join(fixtures, "llama-3.2-11b-vision.preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	real11B, err := vision.ParseConfig(b, vision.FormPreprocessor)
	if err != nil {
		t.Fatal(err)
	}
	g, err := vision.LoadGoldens(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(g.Configs["llama-3.2-11b-vision"], real11B, ignoreSource); d != "" {
		t.Errorf("11B config differs from the goldens' (-goldens +file):\n%s", d)
	}
	if real11B.TileSize() != 560 {
		t.Errorf("11B tile %d", real11B.TileSize())
	}
}

func TestParseConfigRejects(t *testing.T) {
	const good = `"do_convert_rgb": true, "do_normalize": true, "do_pad": true, "do_rescale": true, "do_resize": true,
		"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
		"max_image_tiles": 4, "resample": 2, "rescale_factor": 0.00392156862745098`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"no size", `{` + good + `}`, "size is missing"},
		{"non-square", `{` + good + `, "size": {"height": 560, "width": 448}}`, "square"},
		{"shortest_edge", `{` + good + `, "size": {"shortest_edge": 560}}`, `size: {"shortest_edge": 560} is not`},
		{"zero tile", `{` + good + `, "size": {"height": 0, "width": 0}}`, "must be positive"},
		{"huge tile", `{` + good + `, "size": {"height": 100000, "width": 100000}}`, "exceeds ckptgate's limit"},
		{"huge canvas", strings.Replace(`{`+good+`, "size": {"height": 4096, "width": 4096}}`, `"max_image_tiles": 4`, `"max_image_tiles": 16`, 1), "pixels"},
		{"no tiles", strings.Replace(`{`+good+`, "size": {"height": 560, "width": 560}}`, `"max_image_tiles": 4`, `"max_image_tiles": 0`, 1), "max_image_tiles is 0"},
		{"two means", strings.Replace(`{`+good+`, "size": {"height": 560, "width": 560}}`, `0.48145466, `, ``, 1), "image_mean has 2 values"},
		{"zero std", strings.Replace(`{`+good+`, "size": {"height": 560, "width": 560}}`, `0.26862954`, `0`, 1), "image_std[0] is 0"},
		{"resample", strings.Replace(`{`+good+`, "size": {"height": 560, "width": 560}}`, `"resample": 2`, `"resample": 9`, 1), "resample 9"},
		{"no pad", strings.Replace(`{`+good+`, "size": {"height": 560, "width": 560}}`, `"do_pad": true`, `"do_pad": false`, 1), "do_pad is false"},
		{"string tiles", strings.Replace(`{`+good+`, "size": {"height": 560, "width": 560}}`, `"max_image_tiles": 4`, `"max_image_tiles": "4"`, 1), "is not an integer"},
		{"other processor", `{` + good + `, "size": {"height": 560, "width": 560}, "image_processor_type": "CLIPImageProcessor"}`, "not an Mllama image processor"},
		{"array", `[1, 2]`, "cannot unmarshal"},
		{"null", `null`, "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vision.ParseConfig([]byte(tc.json), vision.FormPreprocessor)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

// TestParseConfigDefaults: fields whose class default is Mllama's value may
// be absent and are listed in Defaulted; unknown fields are kept.
func TestParseConfigDefaults(t *testing.T) {
	c, err := vision.ParseConfig([]byte(`{"size": {"height": 560, "width": 560}, "image_mean": [0.5, 0.5, 0.5],
		"image_std": [0.5, 0.5, 0.5], "crop_pct": 0.9}`), vision.FormPreprocessor)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"do_convert_rgb", "do_resize", "do_rescale", "do_normalize", "do_pad", "max_image_tiles", "resample", "rescale_factor"}
	if d := cmp.Diff(want, c.Defaulted); d != "" {
		t.Errorf("Defaulted (-want +got):\n%s", d)
	}
	if !c.DoResize || c.MaxImageTiles != 4 || c.Resample != 2 || c.RescaleFactor != 1.0/255 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if string(c.Extra["crop_pct"]) != "0.9" {
		t.Errorf("Extra %v", c.Extra)
	}
}

func TestLoadConfigs(t *testing.T) {
	hub, err := os.ReadFile(filepath.Join(fixtures, "base-hub", "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	nested, err := os.ReadFile(filepath.Join(fixtures, "base", "processor_config.json"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		// A processor_config.json without image_processor is not a config.
		write(t, dir, "processor_config.json", `{"processor_class": "MllamaProcessor"}`)
		_, err := vision.LoadConfig(dir)
		if !errors.Is(err, vision.ErrNoConfig) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("error %v; want ErrNoConfig naming %s", err, dir)
		}
	})
	t.Run("both, 5.x first", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "preprocessor_config.json", strings.Replace(string(hub), `"max_image_tiles": 4`, `"max_image_tiles": 2`, 1))
		write(t, dir, "processor_config.json", string(nested))
		cs, err := vision.LoadConfigs(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 2 || cs[0].Form != vision.FormProcessor || cs[1].Form != vision.FormPreprocessor {
			t.Fatalf("got %d configs", len(cs))
		}
		d := vision.Diff(cs[0], cs[1])
		if len(d) != 1 || d[0].Field != "max_image_tiles" || d[0].A != "4" || d[0].B != "2" {
			t.Errorf("Diff = %+v", d)
		}
	})
	t.Run("invalid names file", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "preprocessor_config.json", strings.Replace(string(hub), `"height": 56`, `"height": 57`, 1))
		_, err := vision.LoadConfig(dir)
		want := filepath.Join(dir, "preprocessor_config.json") + ": size height=57 width=56: MllamaImageProcessor needs square tiles"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v; want %q", err, want)
		}
	})
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
