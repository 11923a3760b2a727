package verify

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/exit"
)

// Policy says which tensors must be untouched by the fine-tune and which
// thresholds turn drift into failures. Patterns are regular expressions over
// tensor names in the legacy (Hub) layout — language_model.model.…,
// language_model.lm_head.weight, vision_model.…, multi_modal_projector.… —
// whatever layout the files use. "{cross_attention_layers}" in a pattern
// expands to the config's cross-attention layer indices joined by "|".
type Policy struct {
	Name string `yaml:"name"`
	// Frozen tensors must be bit-identical to the base.
	Frozen []string `yaml:"frozen"`
	// Trained patterns carve exceptions out of Frozen.
	Trained    []string   `yaml:"trained"`
	Thresholds Thresholds `yaml:"thresholds"`
}

// Thresholds bound drift and forward-pass distances. Zero values mean "no
// threshold" except where a default is documented.
type Thresholds struct {
	// MaxRelL2 fails a tensor whose relative L2 distance from the base
	// exceeds it (0: none; legitimate fine-tunes span a wide range).
	MaxRelL2 float64 `yaml:"max_rel_l2"`
	// MaxNormRatio fails a tensor whose L2 norm changed by more than this
	// factor either way (default 100: orders of magnitude).
	MaxNormRatio float64 `yaml:"max_norm_ratio"`
	// SwapMargin: a tensor whose distance to another same-shaped base tensor
	// is below SwapMargin × its distance to its own base tensor is reported
	// as swapped (default 0.5).
	SwapMargin float64 `yaml:"swap_margin"`
	// MaxSourceKL bounds the KL divergence between the source's and the
	// converted model's last-position distributions (default 1e-3).
	MaxSourceKL float64 `yaml:"max_source_kl"`
	// MaxGoldenRelRMS bounds the relative RMS distance of last-position
	// logits from the HF goldens (default 1e-4).
	MaxGoldenRelRMS float64 `yaml:"max_golden_rel_rms"`
}

func (t *Thresholds) setDefaults() {
	if t.MaxNormRatio == 0 {
		t.MaxNormRatio = 100
	}
	if t.SwapMargin == 0 {
		t.SwapMargin = 0.5
	}
	if t.MaxSourceKL == 0 {
		t.MaxSourceKL = 1e-3
	}
	if t.MaxGoldenRelRMS == 0 {
		t.MaxGoldenRelRMS = 1e-4
	}
}

// Presets are the built-in policies.
var Presets = map[string]Policy{
	"full-finetune": {Name: "full-finetune"},
	// llama-recipes freeze_LLM_only: the language model is frozen except its
	// cross-attention layers (whole layers); embeddings, the final norm and
	// lm_head stay frozen.
	"freeze-llm": {
		Name:    "freeze-llm",
		Frozen:  []string{`^language_model\.`},
		Trained: []string{`^language_model\.model\.layers\.({cross_attention_layers})\.`},
	},
}

// LoadPolicy returns a preset by name or parses a YAML policy file.
func LoadPolicy(nameOrFile string) (*Policy, error) {
	if nameOrFile == "" {
		nameOrFile = "full-finetune"
	}
	if p, ok := Presets[nameOrFile]; ok {
		p.Thresholds.setDefaults()
		return &p, nil
	}
	b, err := boundedio.ReadFile(nameOrFile, boundedio.JSONLimit)
	if err != nil {
		return nil, exit.BadInputError(fmt.Errorf("policy %q is neither a preset (full-finetune, freeze-llm) nor a readable file: %w", nameOrFile, err))
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, exit.BadInputError(fmt.Errorf("policy %s: %w", nameOrFile, err))
	}
	if p.Name == "" {
		p.Name = nameOrFile
	}
	for _, pat := range append(append([]string(nil), p.Frozen...), p.Trained...) {
		if _, err := regexp.Compile(strings.ReplaceAll(pat, "{cross_attention_layers}", "0")); err != nil {
			return nil, exit.BadInputError(fmt.Errorf("policy %s: pattern %q: %w", nameOrFile, pat, err))
		}
	}
	p.Thresholds.setDefaults()
	return &p, nil
}

// Matcher decides frozen-ness for one model.
type Matcher struct {
	frozen, trained []*regexp.Regexp
}

// Matcher compiles the policy's patterns for a model whose cross-attention
// layers are crossLayers.
func (p *Policy) Matcher(crossLayers []int) (*Matcher, error) {
	parts := make([]string, len(crossLayers))
	for i, l := range crossLayers {
		parts[i] = strconv.Itoa(l)
	}
	alt := strings.Join(parts, "|")
	if alt == "" {
		alt = "$^" // matches nothing
	}
	m := &Matcher{}
	for _, set := range []struct {
		pats []string
		dst  *[]*regexp.Regexp
	}{{p.Frozen, &m.frozen}, {p.Trained, &m.trained}} {
		for _, pat := range set.pats {
			re, err := regexp.Compile(strings.ReplaceAll(pat, "{cross_attention_layers}", alt))
			if err != nil {
				return nil, fmt.Errorf("policy %s: pattern %q: %w", p.Name, pat, err)
			}
			*set.dst = append(*set.dst, re)
		}
	}
	return m, nil
}

// Frozen reports whether the tensor (legacy name) must equal the base.
func (m *Matcher) Frozen(legacyName string) bool {
	hit := false
	for _, re := range m.frozen {
		if re.MatchString(legacyName) {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	for _, re := range m.trained {
		if re.MatchString(legacyName) {
			return false
		}
	}
	return true
}
