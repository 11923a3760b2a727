package verify

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/reports"
)

// runPreprocessCheck runs one check and returns its findings.
func runPreprocessCheck(t *testing.T, c *Check, in *Inputs) []reports.Check {
	t.Helper()
	p := &Pass{Check: c, Inputs: in}
	if err := c.Run(p); err != nil {
		t.Fatalf("%s: %v", c.ID, err)
	}
	fs := p.Findings()
	for _, f := range fs {
		if f.ID != c.ID {
			t.Errorf("finding of %s has ID %q", c.ID, f.ID)
		}
		t.Logf("%s %s [%s] %s", f.ID, f.Status, f.Subject, f.Message)
	}
	return fs
}

// statuses counts findings by status.
func statuses(fs []reports.Check) map[reports.Status]int {
	m := map[reports.Status]int{}
	for _, f := range fs {
		m[f.Status]++
	}
	return m
}

// modelDir makes a model directory with the fixtures' base config.json and
// the given image-processor files.
func modelDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(fixtures, "base", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	files["config.json"] = string(cfg)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readFixture(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPreprocessConfig(t *testing.T) {
	hub := readFixture(t, "base-hub/preprocessor_config.json")
	nested := readFixture(t, "base/processor_config.json")
	for _, tc := range []struct {
		name     string
		model    string // a fixture directory, or "" for files
		files    map[string]string
		want     map[reports.Status]int
		contains string
	}{
		{name: "5.x form", model: filepath.Join(fixtures, "base"),
			want: map[reports.Status]int{reports.StatusPass: 1}, contains: "processor_config.json (transformers 5.x form"},
		{name: "4.x form", model: filepath.Join(fixtures, "base-hub"),
			want: map[reports.Status]int{reports.StatusPass: 1}, contains: "preprocessor_config.json (transformers 4.x form"},
		{name: "missing", files: map[string]string{},
			want: map[reports.Status]int{reports.StatusFail: 1}, contains: "silently preprocess with MllamaImageProcessor's class defaults"},
		{name: "tile does not fit the vision tower",
			files:    map[string]string{"preprocessor_config.json": strings.ReplaceAll(hub, `: 56`, `: 112`)},
			want:     map[reports.Status]int{reports.StatusFail: 1},
			contains: "tile size 112 but vision_config.image_size is 56"},
		{name: "fewer tiles than the vision tower",
			files:    map[string]string{"preprocessor_config.json": strings.Replace(hub, `"max_image_tiles": 4`, `"max_image_tiles": 2`, 1)},
			want:     map[reports.Status]int{reports.StatusFail: 1},
			contains: "supported_aspect_ratios"},
		{name: "invalid",
			files:    map[string]string{"preprocessor_config.json": strings.Replace(hub, `0.26862954`, `0`, 1)},
			want:     map[reports.Status]int{reports.StatusFail: 1},
			contains: "preprocessor_config.json: image_std[0] is 0"},
		{name: "forms disagree",
			files: map[string]string{
				"processor_config.json":    nested,
				"preprocessor_config.json": strings.Replace(hub, `0.48145466`, `0.5`, 1),
			},
			want:     map[reports.Status]int{reports.StatusWarn: 1, reports.StatusPass: 1},
			contains: "image_mean: processor_config.json [0.48145466,0.4578275,0.40821073], preprocessor_config.json [0.5,0.4578275,0.40821073]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.model
			if dir == "" {
				dir = modelDir(t, tc.files)
			}
			fs := runPreprocessCheck(t, PreprocessConfig, &Inputs{Model: dir})
			if got := statuses(fs); !maps.Equal(got, tc.want) {
				t.Errorf("statuses %v, want %v", got, tc.want)
			}
			found := false
			for _, f := range fs {
				found = found || strings.Contains(f.Message, tc.contains)
			}
			if !found {
				t.Errorf("no finding mentions %q", tc.contains)
			}
		})
	}
}

func TestPreprocessBase(t *testing.T) {
	base := filepath.Join(fixtures, "base")
	hub := readFixture(t, "base-hub/preprocessor_config.json")

	t.Run("same values, other form", func(t *testing.T) {
		fs := runPreprocessCheck(t, PreprocessBase, &Inputs{Model: filepath.Join(fixtures, "base-hub"), Base: base})
		if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusPass: 2}) {
			t.Fatalf("statuses %v", got)
		}
		if !strings.Contains(fs[0].Message, "the model stores the transformers 4.x form, the base the transformers 5.x form") {
			t.Errorf("form not reported: %s", fs[0].Message)
		}
	})
	t.Run("different mean", func(t *testing.T) {
		model := modelDir(t, map[string]string{"preprocessor_config.json": strings.Replace(hub, `0.4578275`, `0.5`, 1)})
		fs := runPreprocessCheck(t, PreprocessBase, &Inputs{Model: model, Base: base, Golden: fixtures})
		if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusFail: 2}) {
			t.Fatalf("statuses %v", got)
		}
		if !strings.Contains(fs[0].Message, "image_mean: model [0.48145466,0.5,0.40821073], base [0.48145466,0.4578275,0.40821073]") {
			t.Errorf("field not named: %s", fs[0].Message)
		}
		if fs[1].Subject != "images/landscape_800x600.png" || !strings.Contains(fs[1].Message, "pixel_values differ") {
			t.Errorf("probe finding: [%s] %s", fs[1].Subject, fs[1].Message)
		}
	})
	t.Run("different tile count", func(t *testing.T) {
		model := modelDir(t, map[string]string{"preprocessor_config.json": strings.Replace(hub, `"max_image_tiles": 4`, `"max_image_tiles": 2`, 1)})
		fs := runPreprocessCheck(t, PreprocessBase, &Inputs{Model: model, Base: base})
		if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusFail: 2}) {
			t.Fatalf("statuses %v", got)
		}
		if fs[1].Subject != "built-in 1500x1000 pattern" || !strings.Contains(fs[1].Message, "aspect_ratio_id") {
			t.Errorf("probe finding: [%s] %s", fs[1].Subject, fs[1].Message)
		}
	})
	t.Run("model has none", func(t *testing.T) {
		fs := runPreprocessCheck(t, PreprocessBase, &Inputs{Model: modelDir(t, map[string]string{}), Base: base})
		if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusSkip: 1}) {
			t.Fatalf("statuses %v", got)
		}
	})
}

// TestPreprocessGolden runs the check on both recorded configs: the tiny
// base's (tile 56) and the real 11B one (tile 560), every image each.
func TestPreprocessGolden(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		model        func(t *testing.T) string
	}{
		{"mllama-tiny", "mllama-tiny", func(*testing.T) string { return filepath.Join(fixtures, "base") }},
		{"llama-3.2-11b-vision", "llama-3.2-11b-vision", func(t *testing.T) string {
			return modelDir(t, map[string]string{"preprocessor_config.json": readFixture(t, "llama-3.2-11b-vision.preprocessor_config.json")})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := runPreprocessCheck(t, PreprocessGolden, &Inputs{Model: tc.model(t), Golden: fixtures})
			if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusPass: 9}) {
				t.Fatalf("statuses %v, want 9 passes", got)
			}
			for _, f := range fs {
				if !strings.HasSuffix(f.Subject, "("+tc.config+")") {
					t.Errorf("compared with %s", f.Subject)
				}
			}
		})
	}
}

// TestPreprocessGoldenFails tampers with one recorded pixel and one mask to
// show the check fails on them, and warns when no golden config matches.
func TestPreprocessGoldenFails(t *testing.T) {
	golden := t.TempDir()
	g := readFixture(t, "preprocess-goldens.json")
	// The first sample of the first golden (landscape, 11B config) and the
	// mask of the tiny config's portrait.
	g = strings.Replace(g, "[\n     3,\n     0,\n     527,\n     45,\n     -1.792263\n    ]", "[3, 0, 527, 45, -1.5]", 1)
	g = strings.Replace(g, `"aspect_ratio_id": 8,`, `"aspect_ratio_id": 4,`, 1)
	if err := os.WriteFile(filepath.Join(golden, "preprocess-goldens.json"), []byte(g), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join(fixtures, "images"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(golden, "images")); err != nil {
		t.Fatal(err)
	}

	m11 := modelDir(t, map[string]string{"preprocessor_config.json": readFixture(t, "llama-3.2-11b-vision.preprocessor_config.json")})
	fs := runPreprocessCheck(t, PreprocessGolden, &Inputs{Model: m11, Golden: golden})
	if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusPass: 8, reports.StatusFail: 1}) {
		t.Fatalf("11B: statuses %v", got)
	}
	fs = runPreprocessCheck(t, PreprocessGolden, &Inputs{Model: filepath.Join(fixtures, "base"), Golden: golden})
	if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusPass: 8, reports.StatusFail: 1}) {
		t.Fatalf("tiny: statuses %v", got)
	}
	for _, f := range fs {
		if f.Status == reports.StatusFail && !strings.Contains(f.Message, "aspect_ratio_id 8, HF 4") {
			t.Errorf("failure does not name the id: %s", f.Message)
		}
	}

	other := modelDir(t, map[string]string{"preprocessor_config.json": strings.Replace(readFixture(t, "base-hub/preprocessor_config.json"), `0.4578275`, `0.5`, 1)})
	fs = runPreprocessCheck(t, PreprocessGolden, &Inputs{Model: other, Golden: fixtures})
	if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusWarn: 1}) {
		t.Fatalf("unmatched config: statuses %v", got)
	}
	fs = runPreprocessCheck(t, PreprocessGolden, &Inputs{Model: other, Golden: t.TempDir()})
	if got := statuses(fs); !maps.Equal(got, map[reports.Status]int{reports.StatusSkip: 1}) {
		t.Fatalf("no goldens: statuses %v", got)
	}
}
