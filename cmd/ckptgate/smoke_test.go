package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// smokeFsdp1 converts runs/fsdp1 to float32: the model the forward goldens
// were computed on.
func smokeFsdp1(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fsdp1")
	if _, err := convert.Run(context.Background(), filepath.Join(fixtures, "runs", "fsdp1"),
		filepath.Join(fixtures, "base"), dir, convert.Options{DType: dtype.F32, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	return dir
}

type smokeGolden struct {
	Rendered  string    `json:"rendered"`
	InputIDs  []int     `json:"input_ids"`
	TopIDs    []int     `json:"top_ids"`
	TopLogits []float64 `json:"top_logits"`
	Generated []int     `json:"generated"`
}

func smokeGoldens(t testing.TB) (map[string]smokeGolden, map[string]json.RawMessage) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Forward   map[string]smokeGolden `json:"forward"`
		Templates map[string]struct {
			Messages json.RawMessage `json:"messages"`
		} `json:"templates"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	msgs := map[string]json.RawMessage{}
	for k, v := range g.Templates {
		msgs[k] = v.Messages
	}
	return g.Forward, msgs
}

// readF32 reads an F32 tensor of a safetensors file.
func readF32(t *testing.T, path, name string) []float32 {
	t.Helper()
	b, info := readTensor(t, path, name)
	if info.DType != dtype.F32 {
		t.Fatalf("%s: %s is %v, want F32", path, name, info.DType)
	}
	out := make([]float32, info.NumElements())
	if err := dtype.ToFloat32(out, b, info.DType); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSmokeGoldens runs the command on the fp32 conversion of runs/fsdp1
// with the two forward-golden conversations (once as --prompt, once as
// --messages) and compares what it prints and writes with transformers'.
func TestSmokeGoldens(t *testing.T) {
	model := smokeFsdp1(t)
	gold, msgs := smokeGoldens(t)
	msgFile := filepath.Join(t.TempDir(), "image_user.json")
	if err := os.WriteFile(msgFile, msgs["image_user"], 0o644); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(fixtures, "images", "landscape_800x600.png")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"text_user", []string{"--prompt", "Describe a sunset over the sea in one sentence."}},
		{"image_user", []string{"--messages", msgFile, "--image", image}},
	} {
		logits := filepath.Join(t.TempDir(), "logits.safetensors")
		args := append([]string{"smoke", "--model", model, "--date-string", "27 Nov 2026", "--json", "--logits-out", logits}, tc.args...)
		stdout, stderr, code := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", tc.name, code, stderr)
		}
		var got struct {
			Text      string    `json:"text"`
			InputIDs  []int     `json:"input_ids"`
			TopIDs    []int     `json:"top_ids"`
			TopLogits []float64 `json:"top_logits"`
			Generated []int     `json:"generated"`
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, stdout)
		}
		g := gold[tc.name]
		if got.Text != g.Rendered {
			t.Errorf("%s: text %q, want %q", tc.name, got.Text, g.Rendered)
		}
		for _, c := range []struct {
			what      string
			got, want []int
		}{{"input_ids", got.InputIDs, g.InputIDs}, {"top_ids", got.TopIDs, g.TopIDs}, {"generated", got.Generated, g.Generated}} {
			if !slices.Equal(c.got, c.want) {
				t.Errorf("%s: %s %v, want %v", tc.name, c.what, c.got, c.want)
			}
		}
		for i := range g.TopLogits {
			if i < len(got.TopLogits) && math.Abs(got.TopLogits[i]-g.TopLogits[i]) > 1e-5 {
				t.Errorf("%s: top_logits[%d] = %v, want %v", tc.name, i, got.TopLogits[i], g.TopLogits[i])
			}
		}
		mine := readF32(t, logits, "last_logits")
		ref := readF32(t, filepath.Join(fixtures, "golden-"+tc.name+".safetensors"), "last_logits")
		if len(mine) != len(ref) {
			t.Fatalf("%s: %d logits, want %d", tc.name, len(mine), len(ref))
		}
		var num, den float64
		for i := range ref {
			d := float64(mine[i]) - float64(ref[i])
			num, den = num+d*d, den+float64(ref[i])*float64(ref[i])
		}
		if rel := math.Sqrt(num / den); rel > 1e-4 {
			t.Errorf("%s: --logits-out is %.3g relative RMS from the golden's", tc.name, rel)
		}
	}
}

// TestSmokeNaNLogits: a model whose lm_head holds NaN exits 1.
func TestSmokeNaNLogits(t *testing.T) {
	dir := dcptest.CopyRun(t, filepath.Join(fixtures, "base"))
	path := filepath.Join(dir, "model.safetensors")
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor("language_model.lm_head.weight")
	off := f.Header.DataStart() + ti.Begin
	f.Close()
	nan := make([]byte, 16) // the first 8 bf16 weights: one output row
	for i := 0; i < len(nan); i += 2 {
		binary.LittleEndian.PutUint16(nan[i:], dtype.BF16NaN)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(nan, off); err != nil {
		t.Fatal(err)
	}
	w.Close()
	stdout, stderr, code := runCLI(t, "smoke", "--model", dir, "--prompt", "Hi", "--max-new-tokens", "1", "--json")
	if code != exit.CheckFailed {
		t.Errorf("exit %d (%s), want %d", code, stderr, exit.CheckFailed)
	}
	if !json.Valid([]byte(stdout)) {
		t.Errorf("--json output is not JSON:\n%s", stdout)
	}
}

func TestSmokeUsage(t *testing.T) {
	base := filepath.Join(fixtures, "base")
	image := filepath.Join(fixtures, "images", "landscape_800x600.png")
	noImage := filepath.Join(t.TempDir(), "text.json")
	if err := os.WriteFile(noImage, []byte(`[{"role": "user", "content": "Hi"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no model", []string{"--prompt", "Hi"}},
		{"no prompt", []string{"--model", base}},
		{"both prompts", []string{"--model", base, "--prompt", "Hi", "--messages", noImage}},
		{"missing model", []string{"--model", filepath.Join(t.TempDir(), "nope"), "--prompt", "Hi"}},
		{"missing image", []string{"--model", base, "--prompt", "Hi", "--image", filepath.Join(t.TempDir(), "nope.png")}},
		{"image without token", []string{"--model", base, "--messages", noImage, "--image", image}},
		{"negative tokens", []string{"--model", base, "--prompt", "Hi", "--max-new-tokens", "-1"}},
	} {
		if _, stderr, code := runCLI(t, append([]string{"smoke"}, tc.args...)...); code != exit.BadInput {
			t.Errorf("%s: exit %d (%s), want %d", tc.name, code, stderr, exit.BadInput)
		}
	}
}
