// Package synth writes synthetic training checkpoints shaped like real ones,
// for benchmarks and tests at scales the fixtures cannot reach: a DCP
// directory laid out byte for byte as torch 2.11's FileSystemWriter lays it
// out (the .metadata pickle as Python 3.12 frames and memoizes it, one
// torch.save zip archive per chunk, llama-recipes' {"model": state_dict}
// group, FSDP1 or FSDP2 sharding over any world size), and the matching base
// Hugging Face directory. Tensor contents are deterministic pseudo-random
// values computed from the tensor's name and the element's index, so a
// reader's output can be checked without keeping the data.
package synth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ckptgate/ckptgate/internal/mllama"
)

// Config11B returns the text and vision sizes of Llama-3.2-11B-Vision (the
// Hub's config.json), which make the 906 tensors and 10,670,220,835
// parameters of checkpoint-formats.md §8.2.
func Config11B() *mllama.Config {
	c := &mllama.Config{ModelType: "mllama", ImageTokenIndex: 128256}
	c.Text = mllama.TextConfig{
		VocabSize: 128256, HiddenSize: 4096, NumHiddenLayers: 40, NumAttentionHeads: 32, NumKeyValueHeads: 8,
		IntermediateSize: 14336, CrossAttentionLayers: []int{3, 8, 13, 18, 23, 28, 33, 38},
	}
	c.Vision = mllama.VisionConfig{
		HiddenSize: 1280, NumHiddenLayers: 32, NumGlobalLayers: 8, AttentionHeads: 16, IntermediateSize: 5120,
		VisionOutputDim: 7680, ImageSize: 560, PatchSize: 14, NumChannels: 3, MaxNumTiles: 4,
		IntermediateLayersIndices: []int{3, 7, 15, 23, 30},
		SupportedAspectRatios:     [][2]int{{1, 1}, {1, 2}, {1, 3}, {1, 4}, {2, 1}, {2, 2}, {3, 1}, {4, 1}},
	}
	return c
}

// Scaled returns a copy of cfg with its layer counts multiplied by f (at
// least one layer of each kind), every width unchanged, so that each tensor
// keeps its real shape and only their number shrinks. Cross-attention
// layers keep the 11B pattern (every fifth layer from layer 3); a stack too
// short for it gets its last layer as the cross-attention layer. Vision
// intermediate layer indices are scaled into the shorter tower, keeping
// their count (and so vision_output_dim and the projector's shape).
func Scaled(cfg *mllama.Config, f float64) *mllama.Config {
	c := *cfg
	c.Raw = nil
	t, v := &c.Text, &c.Vision
	scale := func(n int) int { return max(1, int(float64(n)*f+0.5)) }
	oldText, oldVision := t.NumHiddenLayers, v.NumHiddenLayers
	t.NumHiddenLayers = scale(oldText)
	v.NumHiddenLayers = scale(oldVision)
	v.NumGlobalLayers = scale(v.NumGlobalLayers)
	t.CrossAttentionLayers = nil
	for i := 3; i < t.NumHiddenLayers; i += 5 {
		t.CrossAttentionLayers = append(t.CrossAttentionLayers, i)
	}
	if len(t.CrossAttentionLayers) == 0 && t.NumHiddenLayers > 1 {
		t.CrossAttentionLayers = []int{t.NumHiddenLayers - 1}
	}
	v.IntermediateLayersIndices = slices.Clone(v.IntermediateLayersIndices)
	for i, idx := range v.IntermediateLayersIndices {
		v.IntermediateLayersIndices[i] = min(v.NumHiddenLayers-1, idx*v.NumHiddenLayers/max(1, oldVision))
	}
	v.SupportedAspectRatios = slices.Clone(v.SupportedAspectRatios)
	return &c
}

// ForSize returns the largest scaling of cfg (see Scaled) whose tensors
// take at most target bytes of elemSize-byte elements, or the smallest
// scaling (one layer of each kind) when even that is larger: the
// embeddings of an 11B-shaped model alone take 2.3 GB in bf16.
func ForSize(cfg *mllama.Config, target int64, elemSize int) (*mllama.Config, error) {
	best := Scaled(cfg, 0)
	for f := 1.0; f > 0; f -= 1.0 / 256 {
		c := Scaled(cfg, f)
		n, err := ModelBytes(c, elemSize)
		if err != nil {
			return nil, err
		}
		if n <= target {
			return c, nil
		}
	}
	return best, nil
}

// ModelBytes is the size of all of cfg's tensors in elemSize-byte elements.
func ModelBytes(cfg *mllama.Config, elemSize int) (int64, error) {
	ts, err := Tensors(cfg)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, t := range ts {
		n += t.NumElements() * int64(elemSize)
	}
	return n, nil
}

// Tensor is one weight of the synthetic model.
type Tensor struct {
	// Name is the key in the state dict of transformers ≥ 4.52
	// (model.language_model.…, lm_head.weight), the names a current
	// training run saves.
	Name string
	// Legacy is the Hub (on-disk) name, as a base directory has it.
	Legacy string
	Shape  []int64
}

// NumElements is the product of the shape.
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Tensors lists cfg's weights in the order MllamaForConditionalGeneration's
// state_dict yields them (module registration order, as the fixtures'
// .metadata lists them), with shapes from mllama.ExpectedShapes.
func Tensors(cfg *mllama.Config) ([]Tensor, error) {
	shapes, err := mllama.ExpectedShapes(cfg)
	if err != nil {
		return nil, err
	}
	var names []string
	add := func(prefix string, parts ...string) {
		for _, p := range parts {
			names = append(names, prefix+p)
		}
	}
	const vm = "vision_model."
	add(vm, "class_embedding", "patch_embedding.weight",
		"gated_positional_embedding.gate", "gated_positional_embedding.embedding", "gated_positional_embedding.tile_embedding.weight",
		"pre_tile_positional_embedding.gate", "pre_tile_positional_embedding.embedding.weight",
		"post_tile_positional_embedding.gate", "post_tile_positional_embedding.embedding.weight",
		"layernorm_pre.weight", "layernorm_pre.bias", "layernorm_post.weight", "layernorm_post.bias")
	encoderLayer := []string{"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
		"mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
		"input_layernorm.weight", "input_layernorm.bias", "post_attention_layernorm.weight", "post_attention_layernorm.bias"}
	for i := 0; i < cfg.Vision.NumHiddenLayers; i++ {
		add(fmt.Sprintf("%stransformer.layers.%d.", vm, i), encoderLayer...)
	}
	for i := 0; i < cfg.Vision.NumGlobalLayers; i++ {
		p := fmt.Sprintf("%sglobal_transformer.layers.%d.", vm, i)
		add(p, "gate_attn", "gate_ffn")
		add(p, encoderLayer...)
	}
	const lm = "language_model.model."
	add(lm, "embed_tokens.weight")
	for i := 0; i < cfg.Text.NumHiddenLayers; i++ {
		p := fmt.Sprintf("%slayers.%d.", lm, i)
		if cfg.Text.IsCross(i) {
			add(p, "cross_attn_attn_gate", "cross_attn_mlp_gate",
				"cross_attn.q_proj.weight", "cross_attn.k_proj.weight", "cross_attn.v_proj.weight", "cross_attn.o_proj.weight",
				"cross_attn.q_norm.weight", "cross_attn.k_norm.weight", "input_layernorm.weight",
				"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "post_attention_layernorm.weight")
			continue
		}
		add(p, "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
			"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
			"input_layernorm.weight", "post_attention_layernorm.weight")
	}
	add(lm, "norm.weight")
	add("multi_modal_projector.", "weight", "bias")
	names = append(names, "language_model.lm_head.weight")
	if len(names) != len(shapes) {
		return nil, fmt.Errorf("synth: %d tensors listed, mllama.ExpectedShapes has %d", len(names), len(shapes))
	}
	out := make([]Tensor, len(names))
	for i, leg := range names {
		s, ok := shapes[leg]
		if !ok {
			return nil, fmt.Errorf("synth: tensor %s is not in mllama.ExpectedShapes", leg)
		}
		out[i] = Tensor{Name: newName(leg), Legacy: leg, Shape: s}
	}
	return out, nil
}

// newName maps a legacy name to the 4.52+/5.x module tree.
func newName(legacy string) string {
	if legacy == "language_model.lm_head.weight" {
		return "lm_head.weight"
	}
	if rest, ok := strings.CutPrefix(legacy, "language_model.model."); ok {
		return "model.language_model." + rest
	}
	return "model." + legacy
}
