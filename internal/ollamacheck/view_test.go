//go:build ollama

package ollamacheck

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// newLayoutDir writes a copy of the base model whose safetensors header uses
// the transformers 4.52+/5.x names (model.language_model.*, lm_head.weight,
// model.vision_model.*, model.multi_modal_projector.*), as a directory saved
// from a 4.52+ module tree without the Hub conversion mapping would have.
func newLayoutDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"} {
		b, err := os.ReadFile(filepath.Join(base, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.ReadFile(filepath.Join(base, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(src)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(src[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	renamed := map[string]json.RawMessage{}
	for k, v := range hdr {
		if k != "__metadata__" {
			k = mllama.ToLayout(k, mllama.LayoutNew)
		}
		renamed[k] = v
	}
	h, err := json.Marshal(renamed)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(append(out, h...), src[8+n:]...)
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestNewLayoutNames: Ollama's converter maps only Hub names. With 4.52+/5.x
// names it succeeds, yet writes tensors Ollama's model never binds, leaves
// the fields it needs nil and skips the vision gates' tanh; the legacy view
// converts the same weights cleanly.
func TestNewLayoutNames(t *testing.T) {
	if testing.Short() {
		t.Skip("converts the base model twice with Ollama's converter")
	}
	dir := newLayoutDir(t)
	work := t.TempDir()
	asIs, err := ConvertView(dir, ViewOptions{}, filepath.Join(work, "as-is.gguf"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if asIs.Error != "" {
		t.Fatalf("as-is: %s", asIs.Error)
	}
	t.Logf("as-is: %d unexpected (%s), %d orphans, %d required fields nil (%s), raw gates %v",
		len(asIs.Unexpected), list(asIs.Unexpected, 4), len(asIs.Orphans), len(asIs.RequiredUnbound), list(asIs.RequiredUnbound, 4), asIs.RawGates)
	for _, want := range []string{"model.layers.0.attn_q.weight", "model.v.patch_embd.weight", "model.mm.0.weight"} {
		if !slices.Contains(asIs.Orphans, want) {
			t.Errorf("as-is: %s is not reported as a tensor no field binds", want)
		}
	}
	if len(asIs.RequiredUnbound) == 0 || asIs.Runnable() {
		t.Error("as-is: every required field bound; Ollama's forward would not panic")
	}
	if !slices.Contains(asIs.RawGates, "model.v.global.blk.0.attn_gate") || !slices.Contains(asIs.RawGates, "model.v.position_embd.gate") {
		t.Errorf("as-is: raw gates %v, want the vision gates the converter did not recognise", asIs.RawGates)
	}

	leg, err := ConvertView(dir, LegacyView, filepath.Join(work, "legacy.gguf"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if leg.Error != "" || !leg.Runnable() || len(leg.Orphans)+len(leg.Missing)+len(leg.Unexpected)+len(leg.RawGates) != 0 {
		t.Errorf("legacy view: %+v", leg)
	}
	if !slices.ContainsFunc(leg.Rewrites, func(s string) bool { return strings.Contains(s, "100 tensor names mapped") }) {
		t.Errorf("legacy view rewrites %q", leg.Rewrites)
	}
	// BF16 weights: text stays BF16, vision and projector become F16.
	if leg.Types["BF16"] == 0 || leg.Types["F16"] == 0 {
		t.Errorf("legacy view types %v", leg.Types)
	}
}

// TestViewFS runs io/fs's conformance test on both presentations and checks
// that a renamed safetensors file keeps every tensor's bytes.
func TestViewFS(t *testing.T) {
	dir := newLayoutDir(t)
	for _, o := range []ViewOptions{{}, LegacyView} {
		v, err := OpenView(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if err := fstest.TestFS(v, v.Names()...); err != nil {
			t.Errorf("%s: %v", viewName(o), err)
		}
	}

	v, err := OpenView(dir, LegacyView)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	f, err := v.Open("model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	served, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	h, err := safetensors.ReadHeader(bytes.NewReader(served), int64(len(served)), "served model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := safetensors.Open(filepath.Join(base, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if len(h.Tensors) != len(orig.Header.Tensors) {
		t.Fatalf("%d tensors served, %d in the base", len(h.Tensors), len(orig.Header.Tensors))
	}
	for _, ti := range h.Tensors {
		ot, ok := orig.Tensor(ti.Name)
		if !ok {
			t.Errorf("served name %q is not the base's Hub name", ti.Name)
			continue
		}
		sr, err := orig.Section(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, ot.NumBytes())
		if _, err := sr.ReadAt(want, 0); err != nil {
			t.Fatal(err)
		}
		got := served[h.DataStart()+ti.Begin : h.DataStart()+ti.End]
		if !bytes.Equal(got, want) || !slices.Equal(ti.Shape, ot.Shape) || ti.DType != ot.DType {
			t.Errorf("%s: served tensor differs from the base's", ti.Name)
		}
	}
}

// TestLegacyRope rewrites each fixture config: transformers 5's
// rope_parameters become rope_theta and rope_scaling, 4.x configs are left
// alone.
func TestLegacyRope(t *testing.T) {
	for _, tc := range []struct {
		config  string
		rewrite bool
	}{
		{base + "/config.json", true},
		{fixtures + "/ref/fsdp1-fp32/config.json", true},
		{fixtures + "/base-hub/config.json", false},
	} {
		b, err := os.ReadFile(tc.config)
		if err != nil {
			t.Fatal(err)
		}
		v := &View{Dir: filepath.Dir(tc.config)}
		out, err := v.legacyRope(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.config, err)
		}
		if got := len(v.Rewrites) > 0; got != tc.rewrite {
			t.Errorf("%s: rewritten %v, want %v", tc.config, got, tc.rewrite)
		}
		in, err := mllama.ParseConfig(b)
		if err != nil {
			t.Fatal(err)
		}
		var text struct {
			RopeTheta   float64         `json:"rope_theta"`
			RopeScaling json.RawMessage `json:"rope_scaling"`
		}
		var root struct {
			Text json.RawMessage `json:"text_config"`
		}
		if err := json.Unmarshal(out, &root); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(root.Text, &text); err != nil {
			t.Fatal(err)
		}
		var scaling mllama.RopeScaling
		if err := json.Unmarshal(text.RopeScaling, &scaling); err != nil {
			t.Fatal(err)
		}
		want := in.Text.RopeScaling
		if text.RopeTheta != in.Text.RopeTheta || scaling.RopeType != want.RopeType || scaling.Factor != want.Factor ||
			scaling.LowFreqFactor != want.LowFreqFactor || scaling.HighFreqFactor != want.HighFreqFactor ||
			scaling.OriginalMaxPositionEmbeddings != want.OriginalMaxPositionEmbeddings {
			t.Errorf("%s: rewritten to rope_theta %g, rope_scaling %s; config says %g, %+v", tc.config, text.RopeTheta, text.RopeScaling, in.Text.RopeTheta, *want)
		}
	}
}

// FuzzLegacyRope: no config.json makes the rewrite panic, and a rewrite is
// valid JSON.
func FuzzLegacyRope(f *testing.F) {
	for _, p := range []string{base + "/config.json", fixtures + "/base-hub/config.json", fixtures + "/ref/fsdp1-fp32/config.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v := &View{Dir: "fuzz"}
		out, err := v.legacyRope(b)
		if err == nil && !json.Valid(out) && len(v.Rewrites) > 0 {
			t.Errorf("rewrite is not JSON: %q", out)
		}
	})
}
