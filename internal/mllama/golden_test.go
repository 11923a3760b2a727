package mllama

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

const fixtures = "../../goldens/mllama-tiny-dev/"

// forwardGolden is one goldens.json "forward" entry, made by transformers
// 5.17 on ref/fsdp1-fp32 in fp32 on CPU with eager attention.
type forwardGolden struct {
	InputIDs  []int     `json:"input_ids"`
	TopIDs    []int     `json:"top_ids"`
	TopLogits []float64 `json:"top_logits"`
	Entropy   float64   `json:"entropy_nats"`
	Generated []int     `json:"generated"`
}

func loadForwardGoldens(tb testing.TB) map[string]forwardGolden {
	tb.Helper()
	b, err := os.ReadFile(fixtures + "goldens.json")
	if err != nil {
		tb.Fatal(err)
	}
	var g struct {
		Forward map[string]forwardGolden `json:"forward"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		tb.Fatal(err)
	}
	return g.Forward
}

// goldenFile is a golden-<name>.safetensors: the exact inputs HF built and
// the last-position logits it computed.
type goldenFile struct{ f *safetensors.File }

func openGolden(tb testing.TB, name string) goldenFile {
	tb.Helper()
	f, err := safetensors.Open(fixtures + "golden-" + name + ".safetensors")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return goldenFile{f}
}

func (g goldenFile) has(name string) bool { _, ok := g.f.Tensor(name); return ok }

func (g goldenFile) bytes(tb testing.TB, name string) ([]byte, safetensors.TensorInfo) {
	tb.Helper()
	ti, ok := g.f.Tensor(name)
	if !ok {
		tb.Fatalf("%s: no tensor %q", g.f.Path, name)
	}
	sr, err := g.f.Section(name)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := io.ReadAll(sr)
	if err != nil {
		tb.Fatal(err)
	}
	return b, ti
}

func (g goldenFile) ints(tb testing.TB, name string) []int {
	tb.Helper()
	b, ti := g.bytes(tb, name)
	if ti.DType != dtype.I64 {
		tb.Fatalf("%s: %s is %v, want I64", g.f.Path, name, ti.DType)
	}
	out := make([]int, len(b)/8)
	for i := range out {
		out[i] = int(int64(binary.LittleEndian.Uint64(b[8*i:])))
	}
	return out
}

func (g goldenFile) floats(tb testing.TB, name string) []float32 {
	tb.Helper()
	b, ti := g.bytes(tb, name)
	out := make([]float32, ti.NumElements())
	if err := dtype.ToFloat32(out, b, ti.DType); err != nil {
		tb.Fatal(err)
	}
	return out
}

// prompt rebuilds the model inputs HF used from the golden file.
func (g goldenFile) prompt(tb testing.TB) Prompt {
	tb.Helper()
	p := Prompt{IDs: g.ints(tb, "input_ids")}
	if !g.has("pixel_values") {
		return p
	}
	_, ti := g.bytes(tb, "cross_attention_mask") // [1, tokens, images, tiles]
	if len(ti.Shape) != 4 || int(ti.Shape[1]) != len(p.IDs) {
		tb.Fatalf("cross_attention_mask has shape %v for %d tokens", ti.Shape, len(p.IDs))
	}
	images, tiles := int(ti.Shape[2]), int(ti.Shape[3])
	pix := g.floats(tb, "pixel_values") // [1, images, tiles, 3, H, W]
	ids := g.ints(tb, "aspect_ratio_ids")
	mask := g.ints(tb, "aspect_ratio_mask")
	per := len(pix) / images
	for i := 0; i < images; i++ {
		p.Images = append(p.Images, Image{
			PixelValues:     pix[i*per : (i+1)*per],
			AspectRatioID:   ids[i],
			AspectRatioMask: mask[i*tiles : (i+1)*tiles],
		})
	}
	cm := g.ints(tb, "cross_attention_mask")
	for i := range p.IDs {
		var row [][]int
		for j := 0; j < images; j++ {
			off := (i*images + j) * tiles
			row = append(row, cm[off:off+tiles])
		}
		p.CrossAttentionMask = append(p.CrossAttentionMask, row)
	}
	return p
}

func goldenPrompt(tb testing.TB, name string) Prompt {
	return openGolden(tb, name).prompt(tb)
}

func intsEqual(a, b []int) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}
