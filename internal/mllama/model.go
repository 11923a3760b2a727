package mllama

import (
	"fmt"
	"math"
)

// Model is a loaded Mllama: float32 weights (bf16 and fp16 upcast on load)
// and a forward pass faithful to transformers 5.17's modeling_mllama in fp32
// with eager attention.
type Model struct {
	// Config is the config the weights were checked against.
	Config *Config
	// Intermediate says which vision hidden states the
	// intermediate_layers_indices select; see VisionIntermediate.
	Intermediate VisionIntermediate

	jobs    int
	text    textWeights
	vision  visionWeights
	projW   []float32 // [text hidden, vision_output_dim]
	projB   []float32
	invFreq []float32 // RoPE inverse frequencies, head_dim/2
}

// VisionIntermediate selects which hidden state of vision encoder layer i the
// index i in intermediate_layers_indices stands for.
type VisionIntermediate int

const (
	// LayerOutput is what transformers 5.17 collects: the output of layer i.
	// The forward goldens made by 5.17 match this choice only.
	LayerOutput VisionIntermediate = iota
	// LayerInput is what Meta's reference, transformers 4.45 and Ollama
	// collect: the input of layer i (the output of layer i-1).
	LayerInput
)

func (v VisionIntermediate) String() string {
	if v == LayerInput {
		return "layer input (Meta, transformers 4.45, Ollama)"
	}
	return "layer output (transformers 5.17)"
}

type textLayer struct {
	cross             bool
	inNorm, postNorm  []float32
	q, k, v, o        []float32
	qNorm, kNorm      []float32 // cross layers only
	attnGate, mlpGate []float32 // cross layers only, [1]
	gateP, upP, downP []float32
}

type textWeights struct {
	embed  []float32 // [vocab+8, hidden]
	rows   int
	layers []textLayer
	norm   []float32
	lmHead []float32 // [vocab, hidden]
}

type visionLayer struct {
	gated                  bool
	inW, inB, postW, postB []float32
	q, k, v, o             []float32
	fc1W, fc1B             []float32
	fc2W, fc2B             []float32
	gateAttn, gateFFN      []float32 // [1], gated layers only
}

type visionWeights struct {
	patch             []float32 // [hidden, C·P·P]
	class             []float32 // [hidden]
	posEmb            []float32 // [patches, hidden]
	posGate           []float32 // [1]
	tileEmb           []float32 // [ids, tiles·patches·hidden]
	preTile, postTile []float32 // [ids, tiles·hidden]
	preGate, postGate []float32 // [1]
	preW, preB        []float32
	postW, postB      []float32
	local, global     []visionLayer
}

// New checks cfg, reads every weight the config implies from src (names in
// either key layout) and returns a ready model. jobs bounds the goroutines
// the forward pass uses (0: all cores).
func New(cfg *Config, src TensorSource, jobs int) (*Model, error) {
	m, l, err := plan(cfg, jobs)
	if err != nil {
		return nil, err
	}
	if err := l.load(src, jobs); err != nil {
		return nil, err
	}
	m.finish()
	return m, nil
}

// plan checks cfg and lists every tensor the model needs, with its shape and
// destination.
func plan(cfg *Config, jobs int) (*Model, *loader, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, nil, err
	}
	inv, err := ropeInvFreq(&cfg.Text)
	if err != nil {
		return nil, nil, err
	}
	m := &Model{Config: cfg, jobs: jobs, invFreq: inv}
	l := &loader{}
	tc, vc := &cfg.Text, &cfg.Vision
	h, hd := tc.HiddenSize, tc.HeadDim()
	nh, nkv, ff := tc.NumAttentionHeads, tc.NumKeyValueHeads, tc.IntermediateSize

	t := &m.text
	t.rows = tc.VocabSize + 8
	l.add(&t.embed, "language_model.model.embed_tokens.weight", t.rows, h)
	l.add(&t.norm, "language_model.model.norm.weight", h)
	if !tc.TieWordEmbeddings {
		l.add(&t.lmHead, "language_model.lm_head.weight", tc.VocabSize, h)
	}
	t.layers = make([]textLayer, tc.NumHiddenLayers)
	for i := range t.layers {
		L := &t.layers[i]
		p := "language_model.model.layers." + itoa(i) + "."
		L.cross = tc.IsCross(i)
		attn := p + "self_attn."
		if L.cross {
			attn = p + "cross_attn."
			l.add(&L.qNorm, attn+"q_norm.weight", hd)
			l.add(&L.kNorm, attn+"k_norm.weight", hd)
			l.add(&L.attnGate, p+"cross_attn_attn_gate", 1)
			l.add(&L.mlpGate, p+"cross_attn_mlp_gate", 1)
		}
		l.add(&L.inNorm, p+"input_layernorm.weight", h)
		l.add(&L.postNorm, p+"post_attention_layernorm.weight", h)
		l.add(&L.q, attn+"q_proj.weight", nh*hd, h)
		l.add(&L.k, attn+"k_proj.weight", nkv*hd, h)
		l.add(&L.v, attn+"v_proj.weight", nkv*hd, h)
		l.add(&L.o, attn+"o_proj.weight", h, nh*hd)
		l.add(&L.gateP, p+"mlp.gate_proj.weight", ff, h)
		l.add(&L.upP, p+"mlp.up_proj.weight", ff, h)
		l.add(&L.downP, p+"mlp.down_proj.weight", h, ff)
	}

	v := &m.vision
	vh, ps, ch := vc.HiddenSize, vc.PatchSize, vc.NumChannels
	np, tiles, ids := vc.NumPatches(), vc.MaxNumTiles, vc.MaxAspectRatioID()+1
	const vp = "vision_model."
	l.add(&v.patch, vp+"patch_embedding.weight", vh, ch, ps, ps)
	l.add(&v.class, vp+"class_embedding", vh)
	l.add(&v.posEmb, vp+"gated_positional_embedding.embedding", np, vh)
	l.add(&v.posGate, vp+"gated_positional_embedding.gate", 1)
	l.add(&v.tileEmb, vp+"gated_positional_embedding.tile_embedding.weight", ids, tiles*np*vh)
	l.add(&v.preTile, vp+"pre_tile_positional_embedding.embedding.weight", ids, tiles*vh)
	l.add(&v.preGate, vp+"pre_tile_positional_embedding.gate", 1)
	l.add(&v.postTile, vp+"post_tile_positional_embedding.embedding.weight", ids, tiles*vh)
	l.add(&v.postGate, vp+"post_tile_positional_embedding.gate", 1)
	l.add(&v.preW, vp+"layernorm_pre.weight", vh)
	l.add(&v.preB, vp+"layernorm_pre.bias", vh)
	l.add(&v.postW, vp+"layernorm_post.weight", vh)
	l.add(&v.postB, vp+"layernorm_post.bias", vh)
	addVision := func(layers []visionLayer, prefix string, gated bool) {
		for i := range layers {
			L := &layers[i]
			L.gated = gated
			p := prefix + itoa(i) + "."
			l.add(&L.inW, p+"input_layernorm.weight", vh)
			l.add(&L.inB, p+"input_layernorm.bias", vh)
			l.add(&L.postW, p+"post_attention_layernorm.weight", vh)
			l.add(&L.postB, p+"post_attention_layernorm.bias", vh)
			for _, x := range []struct {
				dst  *[]float32
				name string
			}{{&L.q, "q_proj"}, {&L.k, "k_proj"}, {&L.v, "v_proj"}, {&L.o, "o_proj"}} {
				l.add(x.dst, p+"self_attn."+x.name+".weight", vh, vh)
			}
			l.add(&L.fc1W, p+"mlp.fc1.weight", vc.IntermediateSize, vh)
			l.add(&L.fc1B, p+"mlp.fc1.bias", vc.IntermediateSize)
			l.add(&L.fc2W, p+"mlp.fc2.weight", vh, vc.IntermediateSize)
			l.add(&L.fc2B, p+"mlp.fc2.bias", vh)
			if gated {
				l.add(&L.gateAttn, p+"gate_attn", 1)
				l.add(&L.gateFFN, p+"gate_ffn", 1)
			}
		}
	}
	v.local = make([]visionLayer, vc.NumHiddenLayers)
	v.global = make([]visionLayer, vc.NumGlobalLayers)
	addVision(v.local, vp+"transformer.layers.", false)
	addVision(v.global, vp+"global_transformer.layers.", true)
	l.add(&m.projW, "multi_modal_projector.weight", h, vc.VisionOutputDim)
	l.add(&m.projB, "multi_modal_projector.bias", h)
	return m, l, nil
}

// finish derives what the loaded weights imply.
func (m *Model) finish() {
	tc := &m.Config.Text
	if tc.TieWordEmbeddings {
		m.text.lmHead = m.text.embed[:tc.VocabSize*tc.HiddenSize]
	}
}

// maxDim bounds every config dimension, and maxElements the tensors and
// activations they imply, so that no size computed from a config overflows
// an int before the weights' real shapes are compared.
const (
	maxDim      = 1 << 24
	maxElements = 1 << 40
)

// productAtMost reports whether the product of positive dims is ≤ limit.
func productAtMost(limit int, dims ...int) bool {
	p := 1
	for _, d := range dims {
		if d <= 0 || p > limit/d {
			return false
		}
		p *= d
	}
	return true
}

// checkConfig refuses configs the engine cannot run, naming the field.
func checkConfig(cfg *Config) error {
	if cfg == nil {
		return fmt.Errorf("%w: no config", ErrWeights)
	}
	tc, vc := &cfg.Text, &cfg.Vision
	bad := func(field string, format string, a ...any) error {
		return fmt.Errorf("%w: config %s: %s", ErrWeights, field, fmt.Sprintf(format, a...))
	}
	for _, d := range []struct {
		name string
		v    int
	}{
		{"text_config.vocab_size", tc.VocabSize}, {"text_config.hidden_size", tc.HiddenSize},
		{"text_config.num_hidden_layers", tc.NumHiddenLayers}, {"text_config.num_attention_heads", tc.NumAttentionHeads},
		{"text_config.num_key_value_heads", tc.NumKeyValueHeads}, {"text_config.intermediate_size", tc.IntermediateSize},
		{"vision_config.hidden_size", vc.HiddenSize}, {"vision_config.num_hidden_layers", vc.NumHiddenLayers},
		{"vision_config.attention_heads", vc.AttentionHeads}, {"vision_config.intermediate_size", vc.IntermediateSize},
		{"vision_config.vision_output_dim", vc.VisionOutputDim}, {"vision_config.image_size", vc.ImageSize},
		{"vision_config.patch_size", vc.PatchSize}, {"vision_config.num_channels", vc.NumChannels},
		{"vision_config.max_num_tiles", vc.MaxNumTiles},
	} {
		if d.v <= 0 || d.v > maxDim {
			return bad(d.name, "is %d, want 1…%d", d.v, maxDim)
		}
	}
	for _, pr := range []struct {
		what string
		dims []int
	}{
		{"vision tile embedding (tiles × patches × hidden)", []int{vc.MaxNumTiles, vc.NumPatches(), vc.HiddenSize}},
		{"patch embedding (hidden × channels × patch²)", []int{vc.HiddenSize, vc.NumChannels, vc.PatchSize, vc.PatchSize}},
		{"pixel values (tiles × channels × image_size²)", []int{vc.MaxNumTiles, vc.NumChannels, vc.ImageSize, vc.ImageSize}},
		{"embedding (vocab × hidden)", []int{tc.VocabSize + 8, tc.HiddenSize}},
		{"MLP (intermediate × hidden)", []int{tc.IntermediateSize, tc.HiddenSize}},
	} {
		if !productAtMost(maxElements, pr.dims...) {
			return fmt.Errorf("%w: config gives a %s of %v, more than %d elements", ErrWeights, pr.what, pr.dims, maxElements)
		}
	}
	if vc.NumGlobalLayers < 0 || vc.NumGlobalLayers > maxDim {
		return bad("vision_config.num_global_layers", "is %d", vc.NumGlobalLayers)
	}
	if tc.HiddenSize%tc.NumAttentionHeads != 0 || tc.HeadDim()%2 != 0 {
		return bad("text_config.hidden_size", "%d does not split into %d heads of an even size", tc.HiddenSize, tc.NumAttentionHeads)
	}
	if tc.NumAttentionHeads%tc.NumKeyValueHeads != 0 {
		return bad("text_config.num_key_value_heads", "%d does not divide num_attention_heads %d", tc.NumKeyValueHeads, tc.NumAttentionHeads)
	}
	for _, c := range tc.CrossAttentionLayers {
		if c < 0 || c >= tc.NumHiddenLayers {
			return bad("text_config.cross_attention_layers", "layer %d is outside 0…%d", c, tc.NumHiddenLayers-1)
		}
	}
	if a := tc.HiddenAct; a != "" && a != "silu" {
		return bad("text_config.hidden_act", "is %q; the engine implements silu", a)
	}
	if !(tc.RMSNormEps > 0) {
		return bad("text_config.rms_norm_eps", "is %v", tc.RMSNormEps)
	}
	if vc.HiddenSize%vc.AttentionHeads != 0 {
		return bad("vision_config.hidden_size", "%d does not split into %d heads", vc.HiddenSize, vc.AttentionHeads)
	}
	if vc.ImageSize%vc.PatchSize != 0 {
		return bad("vision_config.image_size", "%d is not a multiple of patch_size %d", vc.ImageSize, vc.PatchSize)
	}
	if g := vc.ImageSize / vc.PatchSize; g > 4096 {
		return bad("vision_config.image_size", "%d gives a %d×%d patch grid", vc.ImageSize, g, g)
	}
	if vc.NumPatches()%8 == 0 {
		// transformers' padding mask slices [-0:], masking every position.
		return bad("vision_config.image_size", "%d patches per tile need no padding, which transformers mishandles", vc.NumPatches())
	}
	if len(vc.SupportedAspectRatios) == 0 || len(vc.SupportedAspectRatios) > maxDim {
		return bad("vision_config.supported_aspect_ratios", "has %d entries", len(vc.SupportedAspectRatios))
	}
	for _, i := range vc.IntermediateLayersIndices {
		if i < 0 || i >= vc.NumHiddenLayers {
			return bad("vision_config.intermediate_layers_indices", "index %d is outside 0…%d", i, vc.NumHiddenLayers-1)
		}
	}
	if want := vc.HiddenSize * (1 + len(vc.IntermediateLayersIndices)); vc.VisionOutputDim != want {
		return bad("vision_config.vision_output_dim", "is %d, but hidden_size × (1 + %d intermediate layers) is %d",
			vc.VisionOutputDim, len(vc.IntermediateLayersIndices), want)
	}
	if a := vc.HiddenAct; a != "" && a != "gelu" {
		return bad("vision_config.hidden_act", "is %q; the engine implements gelu (erf)", a)
	}
	if !(vc.NormEps > 0) {
		return bad("vision_config.norm_eps", "is %v", vc.NormEps)
	}
	return nil
}

// ropeInvFreq computes the RoPE inverse frequencies as transformers does, in
// float32 step by step (default, or llama3 scaling when configured).
func ropeInvFreq(tc *TextConfig) ([]float32, error) {
	dim := tc.HeadDim()
	base := tc.RopeTheta
	if !(base > 1) || math.IsInf(base, 0) {
		return nil, fmt.Errorf("%w: config text_config rope_theta is %v", ErrWeights, base)
	}
	inv := make([]float32, dim/2)
	for i := range inv {
		e := float32(2*i) / float32(dim)
		inv[i] = 1 / float32(math.Pow(base, float64(e)))
	}
	rs := tc.RopeScaling
	if rs == nil || rs.RopeType == "" || rs.RopeType == "default" {
		return inv, nil
	}
	if rs.RopeType != "llama3" {
		return nil, fmt.Errorf("%w: config rope_type %q is not implemented (default, llama3)", ErrWeights, rs.RopeType)
	}
	if !(rs.Factor > 0) || !(rs.HighFreqFactor > rs.LowFreqFactor) || !(rs.LowFreqFactor > 0) || rs.OriginalMaxPositionEmbeddings <= 0 {
		return nil, fmt.Errorf("%w: config llama3 rope scaling %+v is inconsistent", ErrWeights, *rs)
	}
	factor := float32(rs.Factor)
	lowF, highF := float32(rs.LowFreqFactor), float32(rs.HighFreqFactor)
	old := float32(rs.OriginalMaxPositionEmbeddings)
	lowWavelen := float32(float64(rs.OriginalMaxPositionEmbeddings) / rs.LowFreqFactor)
	highWavelen := float32(float64(rs.OriginalMaxPositionEmbeddings) / rs.HighFreqFactor)
	twoPi := float32(2 * math.Pi)
	// torch evaluates scalar/tensor as reciprocal(tensor)·scalar.
	for i, f := range inv {
		wavelen := (1 / f) * twoPi
		llama := f
		if wavelen > lowWavelen {
			llama = f / factor
		}
		if !(wavelen < highWavelen) && !(wavelen > lowWavelen) {
			smooth := ((1/wavelen)*old - lowF) / (highF - lowF)
			llama = (1-smooth)*llama/factor + smooth*llama
		}
		inv[i] = llama
	}
	return inv, nil
}

// tanh1 is torch's fp32 gate.tanh() of a one-element gate.
func tanh1(g []float32) float32 { return float32(math.Tanh(float64(g[0]))) }
