package mllama

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
)

func manifestNames(t *testing.T) []string {
	b, err := os.ReadFile(fixtures + "ref-manifests.json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Manifests map[string]map[string]any `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m.Manifests["base"]))
}

// The reference manifests are in the legacy layout save_pretrained writes;
// renaming them to the 5.x in-memory layout and back must be the identity,
// and both forms must be recognised.
func TestLayoutsRoundTrip(t *testing.T) {
	names := manifestNames(t)
	if len(names) != 100 {
		t.Fatalf("%d names", len(names))
	}
	var newNames []string
	for _, n := range names {
		lay, leg := ClassifyName(n)
		if lay != LayoutLegacy || leg != n {
			t.Fatalf("%s classified %v %s", n, lay, leg)
		}
		nn := ToLayout(n, LayoutNew)
		if nn == n {
			t.Fatalf("%s unchanged in new layout", n)
		}
		newNames = append(newNames, nn)
	}
	m, err := MapNames(newNames)
	if err != nil {
		t.Fatal(err)
	}
	if m.Layout != LayoutNew {
		t.Errorf("layout %v", m.Layout)
	}
	for i, nn := range newNames {
		if m.Legacy[nn] != names[i] {
			t.Errorf("%s -> %s, want %s", nn, m.Legacy[nn], names[i])
		}
	}
	if !strings.HasPrefix(ToLayout("language_model.lm_head.weight", LayoutNew), "lm_head") {
		t.Error("lm_head")
	}
}

func TestMapNamesRefusals(t *testing.T) {
	cases := []struct {
		name  string
		in    []string
		want  string
		mixed bool
	}{
		{"mixed", []string{"language_model.model.norm.weight", "model.vision_model.class_embedding"}, "mix", true},
		{"unknown", []string{"lm_head.weight", "foo.bar"}, "foo.bar", false},
		{"duplicate", []string{"model.language_model.norm.weight", "model.language_model._orig_mod.norm.weight"}, "same tensor", false},
		{"lora", []string{"model.language_model.layers.0.self_attn.q_proj.lora_A.weight"}, "PEFT", false},
		{"flat", []string{"_fsdp_wrapped_module._flat_param"}, "LOCAL_STATE_DICT", false},
		{"torchtune", []string{"decoder.layers.0.attn.q_proj.weight"}, "torchtune", false},
	}
	for _, c := range cases {
		_, err := MapNames(c.in)
		var ne *NameError
		if !errors.As(err, &ne) || !strings.Contains(err.Error(), c.want) || ne.Mixed != c.mixed {
			t.Errorf("%s: err = %v", c.name, err)
		}
	}
	m, err := MapNames([]string{"module.lm_head.weight", "module.model.language_model._checkpoint_wrapped_module.norm.weight", "module.model.language_model.rotary_emb.inv_freq"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Legacy["module.lm_head.weight"] != "language_model.lm_head.weight" || len(m.Dropped) != 1 {
		t.Errorf("%+v", m)
	}
}
