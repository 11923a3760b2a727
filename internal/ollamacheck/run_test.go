//go:build ollama

package ollamacheck

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/reports"
)

// goldenForward is the "forward" part of goldens.json: what transformers
// computed, independently of Ollama and of this package.
type goldenForward struct {
	TopIDs    []int   `json:"top_ids"`
	Generated []int32 `json:"generated"`
}

func readGoldenForward(t *testing.T) map[string]goldenForward {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Forward map[string]goldenForward `json:"forward"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g.Forward
}

// TestReport prints the report the ollama.* findings make and checks that
// every check reported.
func TestReport(t *testing.T) {
	r := mustRun(t)
	rep := reports.New("ollama-check")
	rep.Inputs["model"] = r.dir
	rep.Inputs["golden"] = fixtures
	rep.Add(r.res.Checks...)
	for _, c := range r.res.Checks {
		t.Logf("%-4s %s %s: %s", c.Status, c.ID, c.Subject, c.Message)
		if strings.HasPrefix(string(c.Details), `"unmarshalable`) {
			t.Errorf("%s %s: details %s", c.ID, c.Subject, c.Details)
		}
	}
	t.Logf("timings: %v", r.res.Timings)
	f, err := os.Create(filepath.Join(t.TempDir(), "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := rep.WriteJSON(f); err != nil {
		t.Fatal(err)
	}
	for _, c := range Checks {
		if len(r.res.Statuses(c.ID)) == 0 {
			t.Errorf("check %s reported nothing", c.ID)
		}
		if !strings.HasPrefix(c.ID, "ollama.") {
			t.Errorf("check ID %q does not start with ollama.", c.ID)
		}
	}
	// The fixture is saved by transformers 5 (rope_parameters) and its last
	// decoder layer is a cross-attention layer: Ollama cannot serve it as is.
	if !rep.Failed() {
		t.Error("the report passes; the as-is conversion of a transformers 5 config must fail")
	}
}

// TestTextLogits compares Ollama's text logits with transformers': within
// the F32 bound for the F32 GGUF, within the default bound for the
// converter's own GGUF, and with transformers' top token and greedy tokens.
func TestTextLogits(t *testing.T) {
	r := mustRun(t)
	fw := readGoldenForward(t)
	for _, tc := range []struct {
		variant string
		bound   float64
	}{{"f32", F32Bound}, {"default", DefaultBound}} {
		d, ok := r.res.Text["text_user/"+tc.variant]
		if !ok {
			t.Fatalf("no text_user/%s measurement; findings: %q", tc.variant, r.findings(IDTextLogits))
		}
		t.Logf("text_user %s: %v", tc.variant, d)
		if d.NonFinite > 0 || d.RelRMS > tc.bound {
			t.Errorf("text_user %s: rel RMS %g, bound %g (%v)", tc.variant, d.RelRMS, tc.bound, d)
		}
		if d.ArgmaxB != fw["text_user"].TopIDs[0] {
			t.Errorf("text_user %s: Ollama's top token %d, transformers' %d", tc.variant, d.ArgmaxB, fw["text_user"].TopIDs[0])
		}
	}
	if got, want := r.res.Generated["text_user/default"], fw["text_user"].Generated; !slices.Equal(got, want) {
		t.Errorf("greedy tokens: Ollama %v, transformers %v", got, want)
	}
	for _, st := range r.res.Statuses(IDTextLogits) {
		if st != reports.StatusPass {
			t.Errorf("%s: %q", IDTextLogits, r.findings(IDTextLogits))
			break
		}
	}
}

// TestAsIsConversion: the directory as transformers 5 saved it has
// rope_parameters only; Ollama's converter writes no RoPE base and no llama3
// factors, and every logit comes out NaN. The legacy view fixes both.
func TestAsIsConversion(t *testing.T) {
	r := mustRun(t)
	cfg, err := mllama.LoadConfig(filepath.Join(r.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Text.RopeForm != "rope_parameters" {
		t.Fatalf("fixture config has %s; this test is about transformers 5's rope_parameters", cfg.Text.RopeForm)
	}
	a := r.res.AsIs
	if a.FreqBase != 0 || a.RopeFreqs || !slices.Equal(a.Missing, []string{"rope_freqs.weight"}) {
		t.Errorf("as-is: freq_base %g, rope_freqs %v, missing %v; want 0, false, [rope_freqs.weight]", a.FreqBase, a.RopeFreqs, a.Missing)
	}
	if a.Text == nil || a.Text.NonFinite != cfg.Text.VocabSize {
		t.Errorf("as-is text logits: %+v (%s); want all %d NaN", a.Text, a.ForwardError, cfg.Text.VocabSize)
	}
	if st := r.res.Statuses(IDConvert); len(st) != 2 || st[0] != reports.StatusFail || st[1] != reports.StatusPass {
		t.Errorf("%s statuses %v, want [fail pass]: %q", IDConvert, st, r.findings(IDConvert))
	}
	l := r.res.Legacy
	if l.FreqBase != cfg.Text.RopeTheta || !l.RopeFreqs || len(l.Missing)+len(l.Unexpected)+len(l.Orphans)+len(l.RequiredUnbound)+len(l.RawGates) != 0 {
		t.Errorf("legacy view: %+v", l)
	}
	if len(l.Rewrites) != 2 || !strings.Contains(l.Rewrites[0], "rope_parameters") || !strings.Contains(l.Rewrites[1], "chat_template.jinja") {
		t.Errorf("legacy view rewrites %q, want the rope config and the chat template", l.Rewrites)
	}
}

// TestGateState: Ollama's Tensor.Tanh is ggml_tanh_inplace, so each image
// forward pass replaces the cross-attention gate weights by their tanh. The
// gates read back from the backend must be the checkpoint's values with tanh
// applied once per pass.
func TestGateState(t *testing.T) {
	r := mustRun(t)
	d, err := safetensors.OpenDir(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(r.res.Gates) == 0 {
		t.Fatalf("no gate traces: %q", r.findings(IDGateState))
	}
	for _, g := range r.res.Gates {
		for _, kind := range []struct {
			name string
			got  []float32
		}{{"attn", g.Attn}, {"mlp", g.MLP}} {
			src, _, err := d.ReadFloat32("language_model.model.layers." + strconv.Itoa(g.Layer) + ".cross_attn_" + kind.name + "_gate")
			if err != nil {
				t.Fatal(err)
			}
			want := float64(src[0])
			for k, got := range kind.got {
				if math.Abs(float64(got)-want) > 1e-6 {
					t.Errorf("layer %d %s gate after %d forward passes: %g, want tanh applied %d times to %g = %g", g.Layer, kind.name, k, got, k, src[0], want)
				}
				want = float64(float32(math.Tanh(float64(got))))
			}
		}
	}
	if st := r.res.Statuses(IDGateState); !slices.Equal(st, []reports.Status{reports.StatusWarn}) {
		t.Errorf("%s: %v", IDGateState, st)
	}
}

// TestImageLogits: the image prompt runs (finite logits) with transformers'
// pixels and with Ollama's preprocessing, and the departures are named.
func TestImageLogits(t *testing.T) {
	r := mustRun(t)
	for _, k := range []string{"image_user/transformers' pixels, f32", "image_user/transformers' pixels, default", "image_user/Ollama's preprocessing, f32"} {
		d, ok := r.res.Image[k]
		if !ok {
			t.Fatalf("no %s measurement: %q", k, r.findings(IDImageLogits))
		}
		t.Logf("%s: %v", k, d)
		if d.NonFinite > 0 {
			t.Errorf("%s: %v", k, d)
		}
	}
	for _, f := range r.findings(IDImageLogits) {
		if strings.HasPrefix(f, "[warn]") && !strings.Contains(f, "D4") {
			t.Errorf("warning names no departure: %s", f)
		}
	}
}

// TestPreprocess holds Ollama's image preprocessing against transformers'
// preprocessing goldens: D1 is exactly a transposition of the grid, D2 hits
// the image that fits at scale 1, and pixels agree to one 8-bit level except
// where transparency (D3) or JPEG decoding differ.
func TestPreprocess(t *testing.T) {
	r := mustRun(t)
	cfg, err := mllama.LoadConfig(filepath.Join(r.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ratios := cfg.Vision.SupportedAspectRatios
	if len(r.res.Preprocess) != len(r.goldens.Preprocess) {
		t.Fatalf("%d comparisons for %d goldens: %q", len(r.res.Preprocess), len(r.goldens.Preprocess), r.findings(IDPreprocess))
	}
	transposed := 0
	for _, c := range r.res.Preprocess {
		name := c.Image + "@" + strconv.Itoa(c.TileSize)
		switch {
		case c.ExactFit && c.HFGrid.Rows*c.HFGrid.Cols < c.OllamaGrid.Rows*c.OllamaGrid.Cols:
			t.Logf("%s: D2, transformers %v, Ollama %v", name, c.HFGrid, c.OllamaGrid)
		case !c.SameGrid():
			t.Errorf("%s: grids differ (transformers %v, Ollama %v) without an exact fit", name, c.HFGrid, c.OllamaGrid)
		case c.HFGrid.Rows == c.HFGrid.Cols && c.OllamaID != c.HFID:
			t.Errorf("%s: square grid, ids %d and %d", name, c.HFID, c.OllamaID)
		case c.HFGrid.Rows != c.HFGrid.Cols:
			want := slices.Index(ratios, [2]int{c.HFGrid.Cols, c.HFGrid.Rows}) + 1
			if c.OllamaID != want {
				t.Errorf("%s: Ollama's id %d, want %d (transformers' id of the transposed grid)", name, c.OllamaID, want)
			}
			transposed++
		}
		if !c.SameGrid() {
			continue
		}
		switch {
		case c.Mode == "RGBA":
			if c.SampleMaxAbs < 1 {
				t.Errorf("%s: transparent pixels within %g; Ollama draws them black, transformers white", name, c.SampleMaxAbs)
			}
		case strings.HasSuffix(c.Image, ".jpg"):
			t.Logf("%s: JPEG decoders differ by up to %g", name, c.SampleMaxAbs)
		case c.SampleMaxAbs > oneLevel()*1.001:
			t.Errorf("%s: pixels differ by %g, more than one 8-bit level %g", name, c.SampleMaxAbs, oneLevel())
		}
	}
	if transposed == 0 {
		t.Error("no non-square grid in the goldens; D1 untested")
	}
	exact := r.findings(IDExactFit)
	if !slices.ContainsFunc(exact, func(s string) bool {
		return strings.HasPrefix(s, "[warn]") && strings.Contains(s, "square_560x560.png at tile 560")
	}) {
		t.Errorf("D2 not reported for square_560x560.png at tile 560: %q", exact)
	}
}

// TestStructuralDepartures: the fixture's config trips D15 (17 vision
// positions, not 1601) and the last-layer pruning; its prompts trip D4 and
// D14.
func TestStructuralDepartures(t *testing.T) {
	r := mustRun(t)
	for _, tc := range []struct {
		id   string
		want reports.Status
		text string
	}{
		{IDVisionPositions, reports.StatusFail, "= 17 positions"},
		{IDLastLayer, reports.StatusFail, "last decoder layer (3) is a cross-attention layer"},
		{IDCrossMask, reports.StatusWarn, "the 5 tokens before <|image|>"},
		{IDBOS, reports.StatusWarn, "add_bos_token=false"},
		{IDVisionEncoder, reports.StatusWarn, "D5"},
		{IDVisionFeatures, reports.StatusWarn, "inputs of vision layers [0 1]"},
	} {
		fs := r.findings(tc.id)
		if len(fs) == 0 || !strings.HasPrefix(fs[0], "["+string(tc.want)+"]") || !strings.Contains(fs[0], tc.text) {
			t.Errorf("%s: %q, want %s mentioning %q", tc.id, fs, tc.want, tc.text)
		}
	}
}

// TestTokenizer: the vocabulary, merges and special ids are carried, the
// rendered smoke prompts tokenize as in transformers, the template is lost
// as-is and carried by the legacy view, and of the goldens' tokenizer cases
// only the run of one repeated character tokenizes differently.
func TestTokenizer(t *testing.T) {
	r := mustRun(t)
	bySubject := map[string]string{}
	for _, c := range r.res.Checks {
		if c.ID == IDTokenizer {
			bySubject[c.Subject] = string(c.Status) + ": " + c.Message
		}
	}
	for subj, want := range map[string]string{
		"vocabulary":                 "pass",
		"text_user":                  "pass",
		"image_user":                 "pass",
		"chat template, as-is":       "warn",
		"chat template, legacy view": "pass",
		"Go template":                "warn",
		"tokenizer cases":            "warn: 1 of 18",
	} {
		if got := bySubject[subj]; !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q…", subj, got, want)
		}
	}
	if !strings.Contains(bySubject["tokenizer cases"], strings.Repeat("a", 40)) {
		t.Errorf("tokenizer cases: %q", bySubject["tokenizer cases"])
	}
}

// TestDepartureBudget accounts for the image prompt's distance: the
// reference engine reproduces transformers' logits; applying D10 and D4 to
// it, and removing D6 (norms interleaved) and D11 (a fresh model) from
// Ollama, leaves only D5 and D7, which are small on this fixture.
func TestDepartureBudget(t *testing.T) {
	r := mustRun(t)
	get := func(k string) Distance {
		d, ok := r.res.Image["image_user/"+k]
		if !ok {
			t.Fatalf("no %s measurement", k)
		}
		return d
	}
	total, self, d10, d4, rest := get("transformers' pixels, f32"), get("engine"), get("D10 in the engine"), get("D4 in the engine"), get("D5 and D7")
	t.Logf("total %.3g; D10 %.3g, D4 %.3g, D5+D7 %.3g (engine against transformers %.3g)", total.RelRMS, d10.RelRMS, d4.RelRMS, rest.RelRMS, self.RelRMS)
	if self.RelRMS > F32Bound {
		t.Errorf("the reference engine is %v from transformers' logits", self)
	}
	if rest.RelRMS > 1e-2 || !rest.SameArgmax() {
		t.Errorf("with D4, D6, D10 and D11 accounted for, Ollama is still %v from the reference engine", rest)
	}
	if d10.RelRMS < total.RelRMS/2 {
		t.Errorf("D10 (%v) does not explain most of the distance (%v)", d10, total)
	}
}
