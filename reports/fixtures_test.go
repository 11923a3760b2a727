package reports

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
)

// The reports the tests render are built from the mllama-tiny-dev fixtures
// (torch 2.11 FSDP, transformers 5.17): tensor names from
// ref-manifests.json, versions from the base's config.json, and the plotted
// Details from testdata/details.json, which make_details.py derives from
// the fixtures and checks against the manifests' sha256.

const fixtures = "../goldens/mllama-tiny-dev/"

type derived struct {
	Drift           DriftDetails  `json:"drift"`
	DriftSwapped    DriftDetails  `json:"drift_swapped"`
	Source          SourceDetails `json:"source"`
	SourceTruncated SourceDetails `json:"source_truncated"`
	LogitsBF16      LogitsDetails `json:"logits_bf16"`
	LogitsWrong     LogitsDetails `json:"logits_wrong"`
}

type manifestFile struct {
	Manifests map[string]map[string]struct {
		DType string `json:"dtype"`
		Shape []int  `json:"shape"`
	} `json:"manifests"`
}

type goldensFile struct {
	Forward map[string]struct {
		TopIDs    []int     `json:"top_ids"`
		TopLogits []float64 `json:"top_logits"`
	} `json:"forward"`
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func loadDerived(t testing.TB) derived {
	var d derived
	readJSON(t, "testdata/details.json", &d)
	return d
}

func baseTransformers(t testing.TB) string {
	var cfg struct {
		V string `json:"transformers_version"`
	}
	readJSON(t, fixtures+"base/config.json", &cfg)
	return cfg.V
}

func newFixtureReport(t testing.TB) *Report {
	r := New("gate")
	r.Inputs["model"] = "out/mllama-tiny-fsdp2-bf16"
	r.Inputs["base"] = "goldens/mllama-tiny-dev/base"
	r.Inputs["source"] = "goldens/mllama-tiny-dev/runs/fsdp2"
	r.Inputs["golden"] = "goldens/mllama-tiny-dev"
	r.Inputs["policy"] = "full-finetune"
	r.Toolchain = Toolchain{Ckptgate: "v0.1.0", Go: "go1.27.3", Transformers: baseTransformers(t)}
	r.Timings["convert"] = 1.25
	r.Timings["verify"] = 0.5
	r.Timings["smoke"] = 2.125
	return r
}

func sourceSummary(d SourceDetails) (tensors int, differing, maxULP int64) {
	for _, t := range d.Tensors {
		if t.Differing > 0 {
			tensors++
		}
		differing += t.Differing
		maxULP = max(maxULP, t.MaxULP)
	}
	return
}

// passingReport is what a good conversion of runs/fsdp2 to bf16 reports.
func passingReport(t testing.TB) *Report {
	var m manifestFile
	readJSON(t, fixtures+"ref-manifests.json", &m)
	d := loadDerived(t)
	r := newFixtureReport(t)
	n := len(m.Manifests["base"])
	r.Add(
		Check{ID: "tensors.names", Status: StatusPass, Message: fmt.Sprintf("%d tensors, names and shapes equal to the base", n)},
		Check{ID: "tensors.dtypes", Status: StatusPass, Message: fmt.Sprintf("%d tensors in BF16 as requested", n)},
		Check{ID: "tensors.source_exact", Status: StatusPass, Message: fmt.Sprintf("%d tensors equal torch's F32->BF16 cast of the source, bit for bit", len(d.Source.Tensors)),
			Details: MustDetails(d.Source)},
		Check{ID: "tensors.drift", Status: StatusPass, Message: fmt.Sprintf("%d tensors drifted like a fine-tune; none is nearer another base tensor than its own", len(d.Drift.Tensors)),
			Details: MustDetails(d.Drift)},
		Check{ID: "tensors.frozen", Status: StatusPass, Message: "policy full-finetune freezes nothing"},
		Check{ID: "sidefiles.present", Status: StatusPass, Message: "config.json, generation_config.json, tokenizer.json, tokenizer_config.json, processor_config.json, chat_template.jinja as in the base"},
		Check{ID: "sidefiles.chat_template", Status: StatusWarn, Subject: "chat_template.jinja",
			Message: "chat_template.jinja and chat_template.json both exist and differ: transformers 5.17's tokenizer uses the .jinja, its processor the .json"},
		Check{ID: "config.invariants", Status: StatusPass, Message: "vocab 128256, cross-attention layers [1 3], rope llama3 (theta 500000, factor 8)"},
		Check{ID: "forward.source", Status: StatusPass, Subject: "text_user",
			Message: fmt.Sprintf("KL %.3g ≤ 1e-3 between source and converted weights", d.LogitsBF16.KL), Details: MustDetails(d.LogitsBF16)},
		Check{ID: "deploy.ollama", Status: StatusSkip, Message: "built without the ollama tag"},
	)
	return r
}

// failingReport is what a broken conversion reports: q_proj and o_proj of
// layer 0 swapped, the cast truncating instead of rounding, and logits that
// belong to another prompt.
func failingReport(t testing.TB) *Report {
	d := loadDerived(t)
	r := newFixtureReport(t)
	r.Add(Check{ID: "tensors.names", Status: StatusPass, Message: "100 tensors, names and shapes equal to the base"})
	for _, td := range d.DriftSwapped.Tensors {
		if td.NearestOther != "" {
			r.Add(Check{ID: "tensors.drift", Status: StatusFail, Subject: td.Name,
				Message: fmt.Sprintf("nearer the base's %s than its own base tensor (relative L2 %.3g): swapped?", td.NearestOther, td.RelL2)})
		}
	}
	r.Add(Check{ID: "tensors.drift", Status: StatusFail, Message: "2 tensors look swapped", Details: MustDetails(d.DriftSwapped)})
	nt, diff, ulp := sourceSummary(d.SourceTruncated)
	r.Add(
		Check{ID: "tensors.source_exact", Status: StatusFail,
			Message: fmt.Sprintf("%d elements in %d tensors differ from torch's F32->BF16 cast (round to nearest even) by up to %d ULP: truncated?", diff, nt, ulp),
			Details: MustDetails(d.SourceTruncated)},
		Check{ID: "forward.golden", Status: StatusFail, Subject: "text_user",
			Message: fmt.Sprintf("relative RMS %.3g > 1e-4 from the HF golden; top-1 %d, golden %d", d.LogitsWrong.RelRMS, d.LogitsWrong.TopIDsB[0], d.LogitsWrong.TopIDsA[0]),
			Details: MustDetails(d.LogitsWrong)},
		Check{ID: "sidefiles.present", Status: StatusFail, Subject: "preprocessor_config.json|processor_config.json",
			Message: "missing: the base has processor_config.json\n(transformers 5.x form; 4.x wrote preprocessor_config.json)"},
		Check{ID: "sidefiles.chat_template", Status: StatusWarn, Subject: "chat_template.jinja",
			Message: "chat_template.jinja and chat_template.json both exist and differ: transformers 5.17's tokenizer uses the .jinja, its processor the .json"},
		Check{ID: "deploy.ollama", Status: StatusSkip, Message: "built without the ollama tag"},
	)
	return r
}

// TestDerivedDetailsMatchFixtures checks testdata/details.json against the
// fixtures themselves, so that a stale or hand-edited file cannot pass.
func TestDerivedDetailsMatchFixtures(t *testing.T) {
	d := loadDerived(t)
	var m manifestFile
	readJSON(t, fixtures+"ref-manifests.json", &m)
	var g goldensFile
	readJSON(t, fixtures+"goldens.json", &g)

	base := m.Manifests["base"]
	for _, set := range []struct {
		name  string
		names []string
	}{
		{"drift", names(d.Drift.Tensors, func(t TensorDrift) string { return t.Name })},
		{"drift_swapped", names(d.DriftSwapped.Tensors, func(t TensorDrift) string { return t.Name })},
		{"source", names(d.Source.Tensors, func(t TensorError) string { return t.Name })},
		{"source_truncated", names(d.SourceTruncated.Tensors, func(t TensorError) string { return t.Name })},
	} {
		if len(set.names) != len(base) {
			t.Errorf("%s: %d tensors, ref-manifests base has %d", set.name, len(set.names), len(base))
		}
		for _, n := range set.names {
			if _, ok := base[n]; !ok {
				t.Errorf("%s: tensor %q is not in ref-manifests base", set.name, n)
			}
		}
	}
	if got, want := d.LogitsBF16.TopIDsA, g.Forward["text_user"].TopIDs; !slices.Equal(got, want) {
		t.Errorf("logits_bf16 top ids %v, goldens.json text_user %v", got, want)
	}
	if got, want := d.LogitsWrong.TopIDsB, g.Forward["image_user"].TopIDs; !slices.Equal(got, want) {
		t.Errorf("logits_wrong top ids (b) %v, goldens.json image_user %v", got, want)
	}
	if _, diff, _ := sourceSummary(d.Source); diff != 0 {
		t.Errorf("source: %d differing elements, want 0 (the RNE cast is torch's)", diff)
	}
	if _, diff, ulp := sourceSummary(d.SourceTruncated); diff == 0 || ulp != 1 {
		t.Errorf("source_truncated: %d differing, max ULP %d; want some, 1", diff, ulp)
	}
}

func names[T any](xs []T, name func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = name(x)
	}
	return out
}
