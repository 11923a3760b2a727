//go:build ollama

package ollamacheck

import (
	"fmt"
	"strconv"

	"github.com/ckptgate/ckptgate/internal/mllama"
)

// Transform is what Ollama's Mllama converter does to a tensor's values on
// the way from safetensors to GGUF (ollama-as-a-library.md §2.6).
type Transform int

// The transforms.
const (
	// Copy keeps the values (the dtype may still change).
	Copy Transform = iota
	// InterleaveHeads permutes the rows of a q or k projection within each
	// head from Hugging Face's rotate-half order to ggml's interleaved RoPE
	// order: new row 2j+s of a head comes from old row s·d/2+j.
	InterleaveHeads
	// Tanh stores tanh(gate).
	Tanh
	// OneMinusTanh stores 1-tanh(gate).
	OneMinusTanh
	// Derived tensors have no source tensor (rope_freqs.weight).
	Derived
)

func (t Transform) String() string {
	switch t {
	case Copy:
		return "copy"
	case InterleaveHeads:
		return "interleave-heads"
	case Tanh:
		return "tanh"
	case OneMinusTanh:
		return "1-tanh"
	case Derived:
		return "derived"
	}
	return "transform(" + strconv.Itoa(int(t)) + ")"
}

// Expected is one tensor a correct Mllama GGUF holds.
type Expected struct {
	// GGUF is the tensor's name in the GGUF.
	GGUF string
	// Source is the legacy (Hub-layout) Hugging Face name it is made from,
	// empty for derived tensors.
	Source string
	// Transform and, for InterleaveHeads, Heads say how its values are made.
	Transform Transform
	Heads     int
	// Shape is the Hugging Face (row-major) shape the config implies; the
	// GGUF stores it reversed.
	Shape []int64
}

// ExpectedTensors lists every tensor a correct conversion of a model with
// config cfg holds, in the names Ollama's mllama model looks up. It is the
// Hub-layout → GGUF table of ollama-as-a-library.md §2.5 made concrete for one
// config, with the shapes that config implies.
func ExpectedTensors(cfg *mllama.Config) ([]Expected, error) {
	t, v := &cfg.Text, &cfg.Vision
	if t.NumAttentionHeads <= 0 || t.NumKeyValueHeads <= 0 || t.HiddenSize <= 0 || t.HiddenSize%t.NumAttentionHeads != 0 {
		return nil, fmt.Errorf("text_config: hidden_size %d, num_attention_heads %d, num_key_value_heads %d do not describe whole heads",
			t.HiddenSize, t.NumAttentionHeads, t.NumKeyValueHeads)
	}
	if v.AttentionHeads <= 0 || v.HiddenSize <= 0 || v.HiddenSize%v.AttentionHeads != 0 || v.PatchSize <= 0 || v.ImageSize%v.PatchSize != 0 {
		return nil, fmt.Errorf("vision_config: hidden_size %d, attention_heads %d, image_size %d, patch_size %d do not describe whole heads and patches",
			v.HiddenSize, v.AttentionHeads, v.ImageSize, v.PatchSize)
	}
	// Real models stay below 2^18 per dimension; these bounds keep the
	// products below far from overflow, and the vocabulary bound keeps the
	// converter from padding the token list to an absurd length.
	const maxDim, maxVocab = 1 << 24, 1 << 21
	if t.VocabSize <= 0 || t.VocabSize > maxVocab {
		return nil, fmt.Errorf("text_config.vocab_size %d is outside 1 to %d", t.VocabSize, maxVocab)
	}
	for _, d := range []int{t.HiddenSize, t.IntermediateSize, t.NumHiddenLayers, v.HiddenSize, v.IntermediateSize,
		v.NumHiddenLayers, v.NumGlobalLayers, v.ImageSize, v.MaxNumTiles, v.VisionOutputDim, v.NumChannels} {
		if d < 0 || d > maxDim {
			return nil, fmt.Errorf("config dimension %d is out of range [0, %d]", d, maxDim)
		}
	}
	hd := int64(t.HeadDim())
	D, I := int64(t.HiddenSize), int64(t.IntermediateSize)
	H, KV := int64(t.NumAttentionHeads), int64(t.NumKeyValueHeads)
	var out []Expected
	add := func(gguf, src string, tr Transform, heads int, shape ...int64) {
		out = append(out, Expected{GGUF: gguf, Source: src, Transform: tr, Heads: heads, Shape: shape})
	}

	// The embedding table has 8 rows more than the vocabulary in every
	// Llama 3.2 Vision release (the image token and padding); lm_head does not.
	add("token_embd.weight", "language_model.model.embed_tokens.weight", Copy, 0, int64(t.VocabSize)+8, D)
	add("output_norm.weight", "language_model.model.norm.weight", Copy, 0, D)
	add("output.weight", "language_model.lm_head.weight", Copy, 0, int64(t.VocabSize), D)
	if rs := t.RopeScaling; rs != nil && rs.RopeType == "llama3" {
		add("rope_freqs.weight", "", Derived, 0, hd/2)
	}
	for i := 0; i < t.NumHiddenLayers; i++ {
		b := "blk." + strconv.Itoa(i) + "."
		s := "language_model.model.layers." + strconv.Itoa(i) + "."
		add(b+"attn_norm.weight", s+"input_layernorm.weight", Copy, 0, D)
		add(b+"ffn_norm.weight", s+"post_attention_layernorm.weight", Copy, 0, D)
		add(b+"ffn_gate.weight", s+"mlp.gate_proj.weight", Copy, 0, I, D)
		add(b+"ffn_up.weight", s+"mlp.up_proj.weight", Copy, 0, I, D)
		add(b+"ffn_down.weight", s+"mlp.down_proj.weight", Copy, 0, D, I)
		if t.IsCross(i) {
			add(b+"cross_attn_q_proj.weight", s+"cross_attn.q_proj.weight", InterleaveHeads, int(H), H*hd, D)
			add(b+"cross_attn_k_proj.weight", s+"cross_attn.k_proj.weight", InterleaveHeads, int(KV), KV*hd, D)
			add(b+"cross_attn_v_proj.weight", s+"cross_attn.v_proj.weight", Copy, 0, KV*hd, D)
			add(b+"cross_attn_o_proj.weight", s+"cross_attn.o_proj.weight", Copy, 0, D, H*hd)
			add(b+"cross_attn_q_norm.weight", s+"cross_attn.q_norm.weight", Copy, 0, hd)
			add(b+"cross_attn_k_norm.weight", s+"cross_attn.k_norm.weight", Copy, 0, hd)
			add(b+"cross_attn_attn_gate", s+"cross_attn_attn_gate", Copy, 0, 1)
			add(b+"cross_attn_mlp_gate", s+"cross_attn_mlp_gate", Copy, 0, 1)
			continue
		}
		add(b+"attn_q.weight", s+"self_attn.q_proj.weight", InterleaveHeads, int(H), H*hd, D)
		add(b+"attn_k.weight", s+"self_attn.k_proj.weight", InterleaveHeads, int(KV), KV*hd, D)
		add(b+"attn_v.weight", s+"self_attn.v_proj.weight", Copy, 0, KV*hd, D)
		add(b+"attn_output.weight", s+"self_attn.o_proj.weight", Copy, 0, D, H*hd)
	}

	Dv, Iv := int64(v.HiddenSize), int64(v.IntermediateSize)
	P := int64(v.NumPatches())
	T := int64(v.MaxNumTiles)
	ratios := int64(v.MaxAspectRatioID()) + 1
	p := int64(v.PatchSize)
	add("v.patch_embd.weight", "vision_model.patch_embedding.weight", Copy, 0, Dv, int64(v.NumChannels), p, p)
	add("v.class_embd", "vision_model.class_embedding", Copy, 0, Dv)
	add("v.position_embd.weight", "vision_model.gated_positional_embedding.embedding", Copy, 0, P, Dv)
	add("v.position_embd.gate", "vision_model.gated_positional_embedding.gate", OneMinusTanh, 0, 1)
	add("v.tile_position_embd.gate", "vision_model.gated_positional_embedding.gate", Tanh, 0, 1)
	add("v.tile_position_embd.weight", "vision_model.gated_positional_embedding.tile_embedding.weight", Copy, 0, ratios, T*P*Dv)
	for _, pt := range []string{"pre", "post"} {
		add("v."+pt+"_tile_position_embd.weight", "vision_model."+pt+"_tile_positional_embedding.embedding.weight", Copy, 0, ratios, T*Dv)
		add("v."+pt+"_tile_position_embd.gate", "vision_model."+pt+"_tile_positional_embedding.gate", Tanh, 0, 1)
		add("v."+pt+"_ln.weight", "vision_model.layernorm_"+pt+".weight", Copy, 0, Dv)
		add("v."+pt+"_ln.bias", "vision_model.layernorm_"+pt+".bias", Copy, 0, Dv)
	}
	visionLayer := func(b, s string, global bool) {
		add(b+"attn_q.weight", s+"self_attn.q_proj.weight", InterleaveHeads, v.AttentionHeads, Dv, Dv)
		add(b+"attn_k.weight", s+"self_attn.k_proj.weight", InterleaveHeads, v.AttentionHeads, Dv, Dv)
		add(b+"attn_v.weight", s+"self_attn.v_proj.weight", Copy, 0, Dv, Dv)
		add(b+"attn_output.weight", s+"self_attn.o_proj.weight", Copy, 0, Dv, Dv)
		add(b+"attn_norm.weight", s+"input_layernorm.weight", Copy, 0, Dv)
		add(b+"attn_norm.bias", s+"input_layernorm.bias", Copy, 0, Dv)
		add(b+"ffn_norm.weight", s+"post_attention_layernorm.weight", Copy, 0, Dv)
		add(b+"ffn_norm.bias", s+"post_attention_layernorm.bias", Copy, 0, Dv)
		add(b+"ffn_up.weight", s+"mlp.fc1.weight", Copy, 0, Iv, Dv)
		add(b+"ffn_up.bias", s+"mlp.fc1.bias", Copy, 0, Iv)
		add(b+"ffn_down.weight", s+"mlp.fc2.weight", Copy, 0, Dv, Iv)
		add(b+"ffn_down.bias", s+"mlp.fc2.bias", Copy, 0, Dv)
		if global {
			add(b+"attn_gate", s+"gate_attn", Tanh, 0, 1)
			add(b+"ffn_gate", s+"gate_ffn", Tanh, 0, 1)
		}
	}
	for i := 0; i < v.NumHiddenLayers; i++ {
		visionLayer("v.blk."+strconv.Itoa(i)+".", "vision_model.transformer.layers."+strconv.Itoa(i)+".", false)
	}
	for i := 0; i < v.NumGlobalLayers; i++ {
		visionLayer("v.global.blk."+strconv.Itoa(i)+".", "vision_model.global_transformer.layers."+strconv.Itoa(i)+".", true)
	}
	nInter := int64(len(v.IntermediateLayersIndices))
	add("mm.0.weight", "multi_modal_projector.weight", Copy, 0, D, Dv*(nInter+1))
	add("mm.0.bias", "multi_modal_projector.bias", Copy, 0, D)
	return out, nil
}

// interleaveHeads applies InterleaveHeads to a row-major [rows, cols] matrix
// whose rows are heads×headDim.
func interleaveHeads(src []float32, rows, cols int64, heads int) ([]float32, error) {
	if heads <= 0 || rows%int64(heads) != 0 || (rows/int64(heads))%2 != 0 || int64(len(src)) != rows*cols {
		return nil, fmt.Errorf("cannot interleave %d×%d into %d heads of an even size", rows, cols, heads)
	}
	hd := rows / int64(heads)
	half := hd / 2
	dst := make([]float32, len(src))
	for h := int64(0); h < int64(heads); h++ {
		for j := int64(0); j < half; j++ {
			for s := int64(0); s < 2; s++ {
				from := h*hd + s*half + j
				to := h*hd + 2*j + s
				copy(dst[to*cols:(to+1)*cols], src[from*cols:(from+1)*cols])
			}
		}
	}
	return dst, nil
}
