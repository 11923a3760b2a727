package golden

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/reports"
)

// A golden recorded from the transformers 5.17 save (base/: dtype,
// rope_parameters, processor_config.json, chat_template.jinja) compared with
// the same model in the 4.45 layout (base-hub/: torch_dtype, rope_scaling,
// preprocessor_config.json, chat_template.json, special_tokens_map.json):
// equal content is equivalent, with the forms noted; what really differs is
// reported.
func TestFormsOfEqualContentCompareEqual(t *testing.T) {
	want := baseRecording(t)
	got, err := RecordFor(context.Background(), want, Options{Model: filepath.Join(fixtures, "base-hub")})
	if err != nil {
		t.Fatal(err)
	}
	fs := byKey(Compare(want, got, DefaultTolerances))
	expect := []struct {
		key    string
		status reports.Status
		says   []string
	}{
		{"golden.config config.json", reports.StatusPass, []string{"content equal", "dtype: torch_dtype (golden: none)",
			"text_config.rope: rope_scaling+rope_theta (golden: rope_parameters)", "transformers_version 4.45.0.dev0 (golden: 5.17.0)"}},
		{"golden.generation_config generation_config.json", reports.StatusPass, []string{"content equal", "transformers_version 4.45.0.dev0"}},
		{"golden.image_processor preprocessor_config.json", reports.StatusPass, []string{"content equal", "stored in preprocessor_config.json (golden: processor_config.json)"}},
		{"golden.chat_template tokenizer", reports.StatusPass, []string{"loads the golden's template (v1", "from tokenizer_config.json (golden: chat_template.jinja)"}},
		{"golden.chat_template processor", reports.StatusPass, []string{"loads the golden's template (v1", "from chat_template.json (golden: chat_template.jinja)"}},
		{"golden.tokenizer tokenizer.json", reports.StatusPass, []string{"equal to the golden's", "bytes differ"}},
		// The Hub's 4.x tokenizer_config.json sets two fields 5.17's save
		// does not write: a real difference (left padding changes batched
		// generation), reported as one.
		{"golden.tokenizer_config tokenizer_config.json", reports.StatusFail, []string{`model_input_names: absent vs ["input_ids","attention_mask"]`,
			`padding_side: absent vs "left"`, "tokenizer_class: PreTrainedTokenizerFast (golden: TokenizersBackend)", "added_tokens_decoder: present (golden: none)"}},
		{"golden.tensors tensors", reports.StatusPass, []string{"100 of 100 tensors bit-identical", "model-00001-of-00002.safetensors"}},
		{"golden.renders renders", reports.StatusPass, []string{"11 of 11"}},
		{"golden.encodings encodings", reports.StatusPass, []string{"18 of 18"}},
		{"golden.preprocess images", reports.StatusPass, []string{"9 of 9"}},
		{"golden.forward text_user", reports.StatusPass, []string{"bit-identical"}},
		{"golden.forward image_user", reports.StatusPass, []string{"bit-identical"}},
		{"golden.files side files", reports.StatusPass, []string{"only in the model: chat_template.json"}},
	}
	for _, e := range expect {
		f, ok := fs[e.key]
		if !ok {
			t.Errorf("%s: no finding", e.key)
			continue
		}
		if f.Status != e.status {
			t.Errorf("%s: %s, want %s: %s", e.key, f.Status, e.status, f.Message)
		}
		for _, s := range e.says {
			if !strings.Contains(f.Message, s) {
				t.Errorf("%s: %q lacks %q", e.key, f.Message, s)
			}
		}
	}
	var d struct {
		Differences []string `json:"differences"`
	}
	if err := json.Unmarshal(fs["golden.tokenizer_config tokenizer_config.json"].Details, &d); err != nil || len(d.Differences) != 2 {
		t.Errorf("tokenizer_config differences %v (%v), want exactly model_input_names and padding_side", d.Differences, err)
	}
	fails := 0
	for _, f := range fs {
		if f.Status == reports.StatusFail {
			fails++
		}
	}
	if fails != 1 {
		t.Errorf("%d failures, want only tokenizer_config's", fails)
	}
}

// Content that differs in a 4.x file is reported through the normalisation,
// under the 5.x name, with the values on each side.
func TestFormsOfDifferentContentDiffer(t *testing.T) {
	dir := filepath.Join(tmpRoot, "hub-changed")
	copyDir(t, filepath.Join(fixtures, "base-hub"), dir)
	edit := func(name string, f func(map[string]any)) {
		p := filepath.Join(dir, name)
		doc, err := readObject(p)
		if err != nil {
			t.Fatal(err)
		}
		f(doc)
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("config.json", func(d map[string]any) {
		d["text_config"].(map[string]any)["rope_scaling"].(map[string]any)["factor"] = 16.0
	})
	edit("preprocessor_config.json", func(d map[string]any) {
		d["image_mean"].([]any)[0] = 0.5
	})
	want := baseRecording(t)
	got, err := RecordFor(context.Background(), want, Options{Model: dir})
	if err != nil {
		t.Fatal(err)
	}
	fs := Compare(want, got, DefaultTolerances)
	k := byKey(fs)
	for key, says := range map[string]string{
		"golden.config config.json":                       "text_config.rope_parameters.factor: 8 vs 16",
		"golden.image_processor preprocessor_config.json": "image_mean[0]: 0.48145466 vs 0.5",
		"golden.preprocess " + promptImage:                "beyond tolerance",
	} {
		f := k[key]
		if f.Status != reports.StatusFail || !strings.Contains(f.Message, says) {
			t.Errorf("%s: %s %q, want fail saying %q", key, f.Status, f.Message, says)
		}
	}
	var failed []string
	for _, f := range fs {
		if f.Status == reports.StatusFail {
			failed = append(failed, f.ID)
		}
	}
	slices.Sort(failed)
	failed = slices.Compact(failed)
	if want := []string{"golden.config", "golden.forward", "golden.image_processor", "golden.preprocess", "golden.tokenizer_config"}; !slices.Equal(failed, want) {
		t.Errorf("failed items %v, want %v", failed, want)
	}
}
