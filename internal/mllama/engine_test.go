package mllama

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// baseModel loads base/ (bf16 on disk, upcast), the in-repo model the input
// and loader tests run on.
func baseModel(tb testing.TB) *Model {
	tb.Helper()
	m, err := OpenDir(fixtures+"base", 0)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// TestLogitStatsMatchTorch checks TopK and Entropy against what torch.topk
// and the float64 softmax entropy gave for the goldens' last_logits.
func TestLogitStatsMatchTorch(t *testing.T) {
	gold := loadForwardGoldens(t)
	for _, name := range []string{"text_user", "image_user"} {
		_, logits := readGolden(t, name)
		g := gold[name]
		if got := TopK(logits, len(g.TopIDs)); !slices.Equal(got, g.TopIDs) {
			t.Errorf("%s: TopK = %v, torch.topk gave %v", name, got, g.TopIDs)
		}
		for i, id := range g.TopIDs {
			if d := math.Abs(float64(logits[id]) - g.TopLogits[i]); d > 5e-7 {
				t.Errorf("%s: logit of %d is %v, goldens.json rounds it to %v", name, id, logits[id], g.TopLogits[i])
			}
		}
		if got := Entropy(logits); math.Abs(got-g.Entropy) > 1e-9 {
			t.Errorf("%s: Entropy = %.12f, torch gave %.12f", name, got, g.Entropy)
		}
		if Argmax(logits) != g.TopIDs[0] {
			t.Errorf("%s: Argmax = %d, want %d", name, Argmax(logits), g.TopIDs[0])
		}
	}
}

// renamed presents a directory's tensors under other names, to load the same
// bytes through another key layout.
type renamed struct {
	d      *safetensors.Dir
	rename func(string) string
	back   map[string]string
}

func newRenamed(d *safetensors.Dir, rename func(string) string) *renamed {
	r := &renamed{d: d, rename: rename, back: map[string]string{}}
	for _, n := range d.Names() {
		r.back[rename(n)] = n
	}
	return r
}

func (r *renamed) Names() []string {
	var out []string
	for n := range r.back {
		out = append(out, n)
	}
	return out
}

func (r *renamed) ReadFloat32(name string) ([]float32, []int64, error) {
	return r.d.ReadFloat32(r.back[name])
}

// TestLayoutsLoadAlike loads the same base weights from base/ (one file,
// legacy names), base-hub/ (two shards and an index, as the Hub serves
// 11B-Vision) and base/ renamed to the 4.52+/5.x in-memory layout with FSDP
// wrapper infixes, and checks all give the same logits.
func TestLayoutsLoadAlike(t *testing.T) {
	p := goldenPrompt(t, "image_user")
	run := func(m *Model) []float32 {
		g, err := m.Generate(p, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return g.Logits
	}
	want := run(baseModel(t))
	hub, err := OpenDir(fixtures+"base-hub", 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := safetensors.OpenDir(fixtures + "base")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cfg, err := LoadConfig(fixtures + "base/config.json")
	if err != nil {
		t.Fatal(err)
	}
	newLayout, err := New(cfg, newRenamed(d, func(n string) string {
		n = ToLayout(n, LayoutNew)
		return strings.Replace(n, "layers.", "layers._fsdp_wrapped_module.", 1)
	}), 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*Model{"base-hub": hub, "5.x layout": newLayout} {
		if rel, mx := RelRMS(run(m), want); rel != 0 {
			t.Errorf("%s: logits differ from base/: rel RMS %g, max %g", name, rel, mx)
		}
	}
}

// filtered hides or reshapes tensors of a real directory.
type filtered struct {
	*safetensors.Dir
	drop    string
	reshape string
}

func (f filtered) Names() []string {
	var out []string
	for _, n := range f.Dir.Names() {
		if n != f.drop {
			out = append(out, n)
		}
	}
	return out
}

func (f filtered) ReadFloat32(name string) ([]float32, []int64, error) {
	x, shape, err := f.Dir.ReadFloat32(name)
	if name == f.reshape && err == nil {
		shape = append([]int64{1}, shape...)
	}
	return x, shape, err
}

func TestWeightErrors(t *testing.T) {
	d, err := safetensors.OpenDir(fixtures + "base")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cfg, err := LoadConfig(fixtures + "base/config.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		src  TensorSource
		want string
	}{
		{"missing", filtered{Dir: d, drop: "language_model.model.layers.3.cross_attn.k_norm.weight"}, "language_model.model.layers.3.cross_attn.k_norm.weight"},
		{"misshapen", filtered{Dir: d, reshape: "vision_model.gated_positional_embedding.tile_embedding.weight"}, "[1 9 2176], the config implies [9 2176]"},
		{"foreign", newRenamed(d, func(n string) string { return "decoder." + n }), "not Mllama tensors"},
	} {
		_, err := New(cfg, tc.src, 0)
		if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want ErrWeights naming %q", tc.name, err, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"text_config.hidden_size", func(c *Config) { c.Text.HiddenSize = 0 }},
		{"text_config.num_key_value_heads", func(c *Config) { c.Text.NumKeyValueHeads = 3 }},
		{"text_config.cross_attention_layers", func(c *Config) { c.Text.CrossAttentionLayers = []int{4} }},
		{"text_config.hidden_act", func(c *Config) { c.Text.HiddenAct = "gelu" }},
		{"vision_config.image_size", func(c *Config) { c.Vision.ImageSize = 50 }},
		{"vision_config.intermediate_layers_indices", func(c *Config) { c.Vision.IntermediateLayersIndices = []int{2} }},
		{"vision_config.vision_output_dim", func(c *Config) { c.Vision.VisionOutputDim = 64 }},
		{"vision_config.max_num_tiles", func(c *Config) { c.Vision.MaxNumTiles = 1 << 30 }},
		{"vision tile embedding", func(c *Config) { c.Vision.MaxNumTiles, c.Vision.HiddenSize = 1<<23, 1<<22 }},
		{"rope_type", func(c *Config) { c.Text.RopeScaling.RopeType = "yarn" }},
		{"rope_theta", func(c *Config) { c.Text.RopeTheta = math.NaN() }},
	} {
		cfg, err := LoadConfig(fixtures + "base/config.json")
		if err != nil {
			t.Fatal(err)
		}
		tc.mutate(cfg)
		_, err = New(cfg, nil, 0)
		if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v, want ErrWeights naming the field", tc.field, err)
		}
	}
}

func TestInputErrors(t *testing.T) {
	m := baseModel(t)
	good := goldenPrompt(t, "image_user")
	img := good.Images[0]
	mask := good.CrossAttentionMask
	short := img
	short.PixelValues = img.PixelValues[1:]
	badID := img
	badID.AspectRatioID = 9
	badMask := img
	badMask.AspectRatioMask = []int{1, 1, 2, 1}
	for _, tc := range []struct {
		name string
		p    Prompt
		want string
	}{
		{"no tokens", Prompt{}, "no tokens"},
		{"negative id", Prompt{IDs: []int{-1}}, "id -1"},
		{"id past embedding", Prompt{IDs: []int{128264}}, "id 128264"},
		{"mask without image", Prompt{IDs: good.IDs, CrossAttentionMask: mask}, "without images"},
		{"short pixels", Prompt{IDs: good.IDs, Images: []Image{short}, CrossAttentionMask: mask}, "pixel_values has 37631 values"},
		{"aspect id", Prompt{IDs: good.IDs, Images: []Image{badID}, CrossAttentionMask: mask}, "aspect_ratio_id 9"},
		{"aspect mask", Prompt{IDs: good.IDs, Images: []Image{badMask}, CrossAttentionMask: mask}, "aspect_ratio_mask[2] is 2"},
		{"mask rows", Prompt{IDs: good.IDs, Images: good.Images, CrossAttentionMask: mask[1:]}, "16 rows for 17 tokens"},
		{"mask images", Prompt{IDs: good.IDs[:1], Images: good.Images, CrossAttentionMask: [][][]int{{}}}, "0 images, want 1"},
		{"mask tiles", Prompt{IDs: good.IDs[:1], Images: good.Images, CrossAttentionMask: [][][]int{{{1}}}}, "1 tiles, want max_num_tiles 4"},
		{"mask value", Prompt{IDs: good.IDs[:1], Images: good.Images, CrossAttentionMask: [][][]int{{{1, 1, 1, 7}}}}, "tile 3 is 7"},
		{"too long", Prompt{IDs: make([]int, 131073)}, "max_position_embeddings 131072"},
	} {
		_, err := m.Generate(tc.p, 1, nil)
		if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want ErrInput with %q", tc.name, err, tc.want)
		}
	}
}

// TestGenerateStops checks that generation ends right after the first stop
// id it emits, keeping it, as transformers' generate does with eos ids.
func TestGenerateStops(t *testing.T) {
	gold := loadForwardGoldens(t)["text_user"]
	m := baseModel(t)
	g, err := m.Generate(Prompt{IDs: gold.InputIDs}, 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := g.Tokens[len(g.Tokens)/2]
	first := 0
	for g.Tokens[first] != stop {
		first++
	}
	s, err := m.Generate(Prompt{IDs: gold.InputIDs}, 12, []int{stop})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Tokens, g.Tokens[:first+1]) {
		t.Errorf("stopping on %d gave %v, want %v", stop, s.Tokens, g.Tokens[:first+1])
	}
}

// FuzzForward feeds arbitrary token ids and cross-attention masks to the
// base model with the golden image: errors are allowed, panics are not.
func FuzzForward(f *testing.F) {
	gold := loadForwardGoldens(f)
	for _, name := range []string{"text_user", "image_user"} {
		var b []byte
		for _, id := range gold[name].InputIDs {
			b = append(b, byte(id), byte(id>>8), byte(id>>16))
		}
		f.Add(b, name == "image_user", uint8(3))
	}
	m := baseModel(f)
	img := goldenPrompt(f, "image_user").Images
	f.Fuzz(func(t *testing.T, raw []byte, withImage bool, maskBits uint8) {
		if len(raw) > 3*256 {
			raw = raw[:3*256]
		}
		var p Prompt
		for i := 0; i+3 <= len(raw); i += 3 {
			p.IDs = append(p.IDs, int(raw[i])|int(raw[i+1])<<8|int(int8(raw[i+2]))<<16)
		}
		if withImage {
			p.Images = img
			for range p.IDs {
				p.CrossAttentionMask = append(p.CrossAttentionMask, [][]int{{int(maskBits & 1), int(maskBits >> 1 & 1), int(maskBits >> 2 & 1), int(maskBits >> 3 & 3)}})
			}
		}
		g, err := m.Generate(p, 2, nil)
		if err != nil {
			if !errors.Is(err, ErrInput) {
				t.Fatalf("error %v does not wrap ErrInput", err)
			}
			return
		}
		if len(g.Logits) != m.Config.Text.VocabSize || len(g.Tokens) != 2 {
			t.Fatalf("got %d logits and %d tokens", len(g.Logits), len(g.Tokens))
		}
	})
}

// TestStopIDs reads eos_token_id as transformers' generate does: from
// generation_config.json (base/ has the Llama 3.2 list), else from
// config.json's text_config.
func TestStopIDs(t *testing.T) {
	cfg, err := LoadConfig(fixtures + "base/config.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := StopIDs(fixtures+"base", cfg)
	if err != nil || !slices.Equal(got, []int{128001, 128008, 128009}) {
		t.Errorf("base/: %v, %v; want [128001 128008 128009]", got, err)
	}
	got, err = StopIDs(t.TempDir(), cfg)
	if err != nil || !slices.Equal(got, []int{128001}) {
		t.Errorf("without generation_config.json: %v, %v; want [128001]", got, err)
	}
}

// TestEngineNeedsExpectedShapes checks that the engine asks for exactly the
// tensors, and shapes, that ExpectedShapes (the converter's and verifier's
// model of Mllama) derives from the same config: base/'s, and 11B's.
func TestEngineNeedsExpectedShapes(t *testing.T) {
	base, err := LoadConfig(fixtures + "base/config.json")
	if err != nil {
		t.Fatal(err)
	}
	b11 := config11B(40, []int{3, 8, 13, 18, 23, 28, 33, 38}, b11Vocab)
	b11.Vision.NumHiddenLayers, b11.Vision.NumGlobalLayers = 32, 8
	b11.Vision.IntermediateLayersIndices, b11.Vision.VisionOutputDim = []int{3, 7, 15, 23, 30}, 7680
	for name, cfg := range map[string]*Config{"base": base, "11B": b11} {
		want, err := ExpectedShapes(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, l, err := plan(cfg, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]int64{}
		for _, w := range l.wants {
			got[w.name] = w.shape
		}
		if len(got) != len(want) {
			t.Errorf("%s: the engine reads %d tensors, ExpectedShapes lists %d", name, len(got), len(want))
		}
		for n, s := range want {
			if !slices.Equal(got[n], s) {
				t.Errorf("%s: %s: engine wants %v, ExpectedShapes says %v", name, n, got[n], s)
			}
		}
	}
}
