//go:build ollama

package ollamacheck

import (
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ollama/ollama/fs/ggml"

	"github.com/ckptgate/ckptgate/internal/mllama"
)

// TestWriteF32 proves the F32 GGUF is the converter's at F32: every F16
// tensor of Ollama's GGUF is rebuilt from the checkpoint with the
// converter's name mapping and head interleave, and rounds to the
// converter's bytes exactly.
func TestWriteF32(t *testing.T) {
	r := mustRun(t)
	conv, err := ReadGGUF(filepath.Join(r.work, "legacy-view.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	types := r.res.Legacy.Types
	exp, err := ExpectedTensors(mustConfig(t, r.dir))
	if err != nil {
		t.Fatal(err)
	}
	res, err := WriteF32(conv, src, exp, filepath.Join(t.TempDir(), "f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Rebuilt != types["F16"] || res.Copied != types["F32"] || len(res.Mismatched) != 0 {
		t.Errorf("rebuilt %d (GGUF has %d F16), copied %d (%d F32), mismatched %v", res.Rebuilt, types["F16"], res.Copied, types["F32"], res.Mismatched)
	}
}

// TestCrossNormsFix checks the D6 measurement inside Ollama's own engine:
// interleaving q_norm/k_norm like the q/k rows (what the check runs) must
// give the same image logits as undoing the converter's interleave of the
// cross-attention q/k rows (transformers' layout; cross-attention has no
// RoPE, so row order matters only through the norms).
func TestCrossNormsFix(t *testing.T) {
	r := mustRun(t)
	f32, err := ReadGGUF(filepath.Join(r.work, "legacy-view-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustConfig(t, r.dir)
	edits := map[string][]float32{}
	for _, l := range cfg.Text.CrossAttentionLayers {
		for _, w := range []struct {
			name  string
			heads int
		}{{"q_proj", cfg.Text.NumAttentionHeads}, {"k_proj", cfg.Text.NumKeyValueHeads}} {
			name := "blk." + strconv.Itoa(l) + ".cross_attn_" + w.name + ".weight"
			x, err := f32.ReadFloat32(name)
			if err != nil {
				t.Fatal(err)
			}
			edits[name] = deinterleave(x, w.heads*cfg.Text.HeadDim(), cfg.Text.HiddenSize, w.heads)
		}
	}
	hfOrder := filepath.Join(t.TempDir(), "hf-order.gguf")
	if err := rewriteF32(f32, hfOrder, edits); err != nil {
		t.Fatal(err)
	}
	var p *Prompt
	for i := range r.goldens.Prompts {
		if r.goldens.Prompts[i].Image != nil {
			p = &r.goldens.Prompts[i]
		}
	}
	logits := func(path string) []float32 {
		e, err := OpenEngine(path, CacheF32, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		st, err := e.EncodeImage(p.Image.Pixels, p.Image.AspectRatioID)
		if err != nil {
			t.Fatal(err)
		}
		l, _, err := e.LastLogits(p.IDs, st, p.ImagePos(imageToken))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := logits(hfOrder)
	b := logits(filepath.Join(r.work, "legacy-view-f32-norms-interleaved.gguf"))
	d, _, err := compareLogits(a, b, p.Name, "q/k rows in transformers' order", "norms interleaved")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", d)
	if d.RelRMS > 1e-6 || !d.SameArgmax() {
		t.Errorf("the two fixes of D6 disagree: %v", d)
	}
	unfixed := r.res.Image[p.Name+"/transformers' pixels, f32"]
	fixed := r.res.Image[p.Name+"/norms interleaved, f32"]
	if unfixed.RelRMS == fixed.RelRMS {
		t.Errorf("interleaving the norms changed nothing (%v); D6 is not exercised by this fixture", fixed)
	}
}

func mustConfig(t *testing.T, dir string) *mllama.Config {
	t.Helper()
	c, err := mllama.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deinterleave undoes InterleaveHeads on a row-major [rows, cols] matrix.
func deinterleave(x []float32, rows, cols, heads int) []float32 {
	hd := rows / heads
	out := make([]float32, len(x))
	for h := range heads {
		for j := range hd / 2 {
			for s := range 2 {
				from, to := h*hd+2*j+s, h*hd+s*hd/2+j
				copy(out[to*cols:(to+1)*cols], x[from*cols:(from+1)*cols])
			}
		}
	}
	return out
}

// TestInterleaveHeads pins the permutation on a small case: per head, new
// row 2j+s comes from old row s·d/2+j.
func TestInterleaveHeads(t *testing.T) {
	// Two heads of four rows, one column: rows are their own indices.
	src := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	got, err := interleaveHeads(src, 8, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 2, 1, 3, 4, 6, 5, 7}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if back := deinterleave(got, 8, 1, 2); back[1] != 1 || back[2] != 2 || back[5] != 5 {
		t.Errorf("deinterleave(%v) = %v", got, back)
	}
	for _, bad := range []struct{ rows, cols int64 }{{6, 1}, {8, 2}} {
		if _, err := interleaveHeads(src, bad.rows, bad.cols, 4); err == nil {
			t.Errorf("%d×%d into 4 heads: no error", bad.rows, bad.cols)
		}
	}
}

// TestCompareLogits pins the distance measures on small vectors.
func TestCompareLogits(t *testing.T) {
	a := []float32{3, 4, 0, 0}
	for _, tc := range []struct {
		name   string
		b      []float32
		relRMS float64
		kl     float64
		argmax int
		nan    int
	}{
		{"equal", []float32{3, 4, 0, 0}, 0, 0, 1, 0},
		{"shifted", []float32{4, 5, 1, 1}, 2.0 / 5, 0, 1, 0},
		{"swapped", []float32{4, 3, 0, 0}, math.Sqrt(2) / 5, 0.45006, 0, 0},
		{"nan", []float32{3, float32(math.NaN()), 0, 0}, math.NaN(), math.NaN(), 0, 1},
	} {
		d, det, err := compareLogits(a, tc.b, tc.name, "a", "b")
		if err != nil {
			t.Fatal(err)
		}
		if d.NonFinite != tc.nan || d.ArgmaxB != tc.argmax || d.ArgmaxA != 1 {
			t.Errorf("%s: %+v", tc.name, d)
		}
		if tc.nan == 0 && (math.Abs(d.RelRMS-tc.relRMS) > 1e-6 || math.Abs(d.KL-tc.kl) > 1e-4) {
			t.Errorf("%s: rel RMS %g KL %g, want %g %g", tc.name, d.RelRMS, d.KL, tc.relRMS, tc.kl)
		}
		if tc.nan > 0 && (det.RelRMS != -1 || !math.IsNaN(d.RelRMS)) {
			t.Errorf("%s: details %+v", tc.name, det)
		}
	}
	if _, _, err := compareLogits(a, a[:3], "short", "a", "b"); err == nil {
		t.Error("different lengths: no error")
	}
}

// TestTensorTypes pins the GGUF type constants to ggml's names.
func TestTensorTypes(t *testing.T) {
	for kind, want := range map[uint32]string{kindF32: "F32", kindF16: "F16", kindBF16: "BF16"} {
		if got := ggml.TensorType(kind).String(); got != want {
			t.Errorf("type %d is %s, want %s", kind, got, want)
		}
	}
}

// TestExpectedTensorsRejects: configs that describe no whole heads or an
// absurd vocabulary are refused before Ollama's converter divides by them.
func TestExpectedTensorsRejects(t *testing.T) {
	good := mustConfig(t, base)
	if _, err := ExpectedTensors(good); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for name, edit := range map[string]func(c *mllama.Config){
		"no text heads":        func(c *mllama.Config) { c.Text.NumAttentionHeads = 0 },
		"no kv heads":          func(c *mllama.Config) { c.Text.NumKeyValueHeads = 0 },
		"uneven text heads":    func(c *mllama.Config) { c.Text.HiddenSize = 9 },
		"no vision heads":      func(c *mllama.Config) { c.Vision.AttentionHeads = 0 },
		"patch not dividing":   func(c *mllama.Config) { c.Vision.PatchSize = 15 },
		"no vocabulary":        func(c *mllama.Config) { c.Text.VocabSize = 0 },
		"huge vocabulary":      func(c *mllama.Config) { c.Text.VocabSize = 1 << 30 },
		"negative layer count": func(c *mllama.Config) { c.Text.NumHiddenLayers = -1 },
	} {
		c := *good
		edit(&c)
		if _, err := ExpectedTensors(&c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
