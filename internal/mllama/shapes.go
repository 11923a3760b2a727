package mllama

import "fmt"

// ExpectedShapes returns every tensor a MllamaForConditionalGeneration built
// from cfg saves, by legacy name, with its shape (the formulas of
// checkpoint-formats.md §8.2, valid for 11B, 90B and the tiny fixtures).
func ExpectedShapes(cfg *Config) (map[string][]int64, error) {
	t, v := &cfg.Text, &cfg.Vision
	if t.HiddenSize <= 0 || t.NumAttentionHeads <= 0 || t.NumKeyValueHeads <= 0 || t.VocabSize <= 0 ||
		v.HiddenSize <= 0 || v.PatchSize <= 0 || v.ImageSize <= 0 || v.MaxNumTiles <= 0 {
		return nil, fmt.Errorf("config lacks sizes needed to derive tensor shapes")
	}
	h := int64(t.HiddenSize)
	hd := int64(t.HeadDim())
	kv := int64(t.NumKeyValueHeads) * hd
	ff := int64(t.IntermediateSize)
	s := map[string][]int64{
		"language_model.model.embed_tokens.weight": {int64(t.VocabSize) + 8, h},
		"language_model.lm_head.weight":            {int64(t.VocabSize), h},
		"language_model.model.norm.weight":         {h},
	}
	for i := 0; i < t.NumHiddenLayers; i++ {
		p := fmt.Sprintf("language_model.model.layers.%d.", i)
		s[p+"input_layernorm.weight"] = []int64{h}
		s[p+"post_attention_layernorm.weight"] = []int64{h}
		s[p+"mlp.gate_proj.weight"] = []int64{ff, h}
		s[p+"mlp.up_proj.weight"] = []int64{ff, h}
		s[p+"mlp.down_proj.weight"] = []int64{h, ff}
		a := "self_attn."
		if t.IsCross(i) {
			a = "cross_attn."
			s[p+"cross_attn.q_norm.weight"] = []int64{hd}
			s[p+"cross_attn.k_norm.weight"] = []int64{hd}
			s[p+"cross_attn_attn_gate"] = []int64{1}
			s[p+"cross_attn_mlp_gate"] = []int64{1}
		}
		s[p+a+"q_proj.weight"] = []int64{int64(t.NumAttentionHeads) * hd, h}
		s[p+a+"k_proj.weight"] = []int64{kv, h}
		s[p+a+"v_proj.weight"] = []int64{kv, h}
		s[p+a+"o_proj.weight"] = []int64{h, int64(t.NumAttentionHeads) * hd}
	}
	vh := int64(v.HiddenSize)
	vf := int64(v.IntermediateSize)
	np := int64(v.NumPatches())
	tiles := int64(v.MaxNumTiles)
	ids := int64(v.MaxAspectRatioID()) + 1
	ch := int64(v.NumChannels)
	ps := int64(v.PatchSize)
	s["vision_model.patch_embedding.weight"] = []int64{vh, ch, ps, ps}
	s["vision_model.class_embedding"] = []int64{vh}
	s["vision_model.gated_positional_embedding.embedding"] = []int64{np, vh}
	s["vision_model.gated_positional_embedding.gate"] = []int64{1}
	s["vision_model.gated_positional_embedding.tile_embedding.weight"] = []int64{ids, tiles * np * vh}
	for _, pre := range []string{"pre", "post"} {
		s["vision_model."+pre+"_tile_positional_embedding.embedding.weight"] = []int64{ids, tiles * vh}
		s["vision_model."+pre+"_tile_positional_embedding.gate"] = []int64{1}
	}
	for _, ln := range []string{"layernorm_pre", "layernorm_post"} {
		s["vision_model."+ln+".weight"] = []int64{vh}
		s["vision_model."+ln+".bias"] = []int64{vh}
	}
	layer := func(p string) {
		for _, proj := range []string{"q", "k", "v", "o"} {
			s[p+"self_attn."+proj+"_proj.weight"] = []int64{vh, vh}
		}
		s[p+"mlp.fc1.weight"] = []int64{vf, vh}
		s[p+"mlp.fc1.bias"] = []int64{vf}
		s[p+"mlp.fc2.weight"] = []int64{vh, vf}
		s[p+"mlp.fc2.bias"] = []int64{vh}
		for _, ln := range []string{"input_layernorm", "post_attention_layernorm"} {
			s[p+ln+".weight"] = []int64{vh}
			s[p+ln+".bias"] = []int64{vh}
		}
	}
	for i := 0; i < v.NumHiddenLayers; i++ {
		layer(fmt.Sprintf("vision_model.transformer.layers.%d.", i))
	}
	for i := 0; i < v.NumGlobalLayers; i++ {
		p := fmt.Sprintf("vision_model.global_transformer.layers.%d.", i)
		layer(p)
		s[p+"gate_attn"] = []int64{1}
		s[p+"gate_ffn"] = []int64{1}
	}
	s["multi_modal_projector.weight"] = []int64{h, int64(v.VisionOutputDim)}
	s["multi_modal_projector.bias"] = []int64{h}
	return s, nil
}
