//go:build ollama

package ollamacheck

// The check IDs. Departure IDs name the numbering of
// shared/docs/ollama-as-a-library.md §6 in their Doc.
const (
	IDConvert         = "ollama.convert"
	IDTensors         = "ollama.tensors"
	IDTokenizer       = "ollama.tokenizer"
	IDTextLogits      = "ollama.logits.text"
	IDImageLogits     = "ollama.logits.image"
	IDPreprocess      = "ollama.preprocess"
	IDAspectRatioIDs  = "ollama.departure.aspect_ratio_ids"
	IDExactFit        = "ollama.departure.exact_fit"
	IDCrossMask       = "ollama.departure.cross_attention_mask"
	IDCrossNorms      = "ollama.departure.cross_attention_norms"
	IDVisionFeatures  = "ollama.departure.vision_features"
	IDVisionEncoder   = "ollama.departure.vision_encoder"
	IDGateState       = "ollama.departure.gate_state"
	IDBOS             = "ollama.departure.bos"
	IDVisionPositions = "ollama.departure.vision_positions"
	IDLastLayer       = "ollama.departure.last_layer_outputs"
)

// Bounds on the relative RMS distance of Ollama's last-position text logits
// from the reference.
const (
	// F32Bound applies to the F32 GGUF run with an F32 KV cache: the same
	// float32 arithmetic in another summation order, a few hundred float32
	// roundings (eps 1.2e-7) deep. Measured on the dev fixture: 3.0e-7.
	F32Bound = 1e-5
	// DefaultBound applies to the converter's own GGUF run as `ollama serve`
	// runs it (F16 weights from F32 sources, F16 KV cache, F16-rounded matmul
	// inputs): ten times F16's unit roundoff 2⁻¹¹. Measured: 5.9e-4.
	DefaultBound = 5e-3
)

// CheckInfo documents one check: the first line of Doc is its summary, the
// rest what passes, warns and fails.
type CheckInfo struct {
	ID  string
	Doc string
}

// Checks lists every check this package reports, in report order.
var Checks = []CheckInfo{
	{IDConvert, `The directory converts to GGUF with Ollama's own converter (v0.17.4), as it is on disk and through the legacy view.
Subject "as-is": the directory as ollama create would see it. Fails when the converter errors, when the
GGUF lacks mllama.rope.freq_base or rope_freqs.weight (a transformers 5 rope_parameters config: all logits
NaN), or when the converted model does not run; the message names each problem and the rewrite that fixes it.
Subject "legacy view": the directory presented with the Hub tensor names, rope_theta/rope_scaling and the
chat template in tokenizer_config.json (ollama-as-a-library.md §8); fails when even that does not convert.`},
	{IDTensors, `Every GGUF tensor binds to Ollama's mllama model and every tensor the model needs is there, with the shape the config implies.
The GGUF is decoded with fs/ggml and loaded with model.New; fails on tensors no field binds (4.52+/5.x names
become model.layers.N.* and are never read), on required fields left nil (the first forward dereferences
them and panics), on shapes that differ from the config's, and on gates the converter did not transform
(vision gates must be stored as tanh(g), the positional gate as 1-tanh(g)).`},
	{IDTokenizer, `The tokenizer and chat template are carried into the GGUF and tokenize the smoke prompts as transformers did.
Fails when the vocabulary, merges or special token ids differ from tokenizer.json, generation_config.json
and tokenizer_config.json, or when Ollama's tokenizer turns a rendered smoke prompt into other ids. Warns
when the chat template is missing from the GGUF (transformers 4.52+ keeps it in chat_template.jinja, which the
converter never reads), when Ollama matches no Go template to it (the model then runs with {{ .Prompt }}), and
for each goldens tokenizer case Ollama tokenizes differently (runs of one repeated character).`},
	{IDTextLogits, `Ollama's last-position logits for the text smoke prompts are within bounds of the reference.
Compared twice: the F32 GGUF with an F32 KV cache (bound: rel RMS 1e-5, same argmax) and the converter's GGUF
with an F16 KV cache as ollama serve runs it (bound: rel RMS 5e-3, same argmax). Fails beyond a bound, on
NaN or infinite logits, and when the forward pass fails. Details hold the logits comparison.`},
	{IDImageLogits, `Ollama's last-position logits for the image smoke prompts, measured against the reference.
Run on a freshly loaded model (see gate_state) with transformers' exact pixels and aspect-ratio id, at F32 and
at default precision, and with Ollama's own preprocessing of the image file. Warns when beyond the text
bounds, naming the departures that apply; fails on NaN or infinite logits or a failed forward pass.`},
	{IDPreprocess, `Ollama's image preprocessing against transformers' preprocessing goldens, image by image.
For every image and image-processor config of the goldens: the tile grid, the aspect-ratio id, and where
the grids agree the pixel distance at transformers' sampled pixels. Warns on each difference.`},
	{IDAspectRatioIDs, `D1: Ollama numbers non-square tile grids transposed, so wide and tall images get the other layout's tile embeddings.
Warns for every image of the goldens whose grid Ollama and transformers agree on but whose id differs, with
the effect on the image prompt's logits measured by feeding Ollama's engine both ids.`},
	{IDExactFit, `D2: images that fit a canvas at scale exactly 1 get more (upscaled) tiles in Ollama than in transformers.
Warns for every image of the goldens where transformers' canvas fits at scale 1 and Ollama chose another grid.`},
	{IDCrossMask, `D4: Ollama passes no cross-attention mask, so tokens before <|image|> and padding tiles take part in cross-attention.
Warns for every image prompt with tokens before the image (transformers zeroes their cross-attention
outputs) or with fewer real tiles than the maximum (Ollama attends to the padding tiles); with a reference
engine, measures how far dropping the mask moves transformers' own logits.`},
	{IDVisionFeatures, `D10: Ollama takes the vision intermediate features from each listed layer's input, transformers 5.17 from its output.
Ollama agrees with Meta's reference and transformers 4.45 here; transformers 5.17, which made the goldens,
is the one that moved (NOTES-ON-ISSUES item 5). Warns with, when a reference engine is given, the distance
between transformers' logits with layer outputs and with layer inputs.`},
	{IDCrossNorms, `D6: the converter interleaves cross-attention q/k rows for RoPE but not q_norm/k_norm, which changes attention scores.
Computes, per cross-attention layer of the Hugging Face weights, how far q_norm⊙k_norm is from invariant under
the interleave; passes when it is invariant. Otherwise warns with the effect on the image logits measured
by running the F32 GGUF with the norms interleaved too.`},
	{IDVisionEncoder, `D5, D7: Ollama's vision encoder masks no padding positions and uses tanh-approximated GELU.
Warns with the image-logit distance that remains between Ollama (F32, freshly loaded, q_norm/k_norm
interleaved: D6 and D11 removed) and the reference engine with D4 and D10 applied; without an engine,
with the distance to the reference that D4, D5, D7 and D10 leave together.`},
	{IDGateState, `D11: every forward pass that runs cross-attention applies tanh to the gate weights in place, so outputs drift as the model is used.
Ollama's Tensor.Tanh is ggml_tanh_inplace, and the text cross-attention layers call it on their gate
tensors. Reads the gates from the backend before and after repeated image forwards and warns, with the
values (tanh applied k times) and the logit drift; passes if the gates do not change.`},
	{IDBOS, `D14: the GGUF says add_bos_token=false when tokenizer_config.json lacks the key, and Ollama's llama3 template emits no <|begin_of_text|>.
Warns when the GGUF's add_bos_token is false while transformers' rendered prompts start with BOS, with the
effect of the missing BOS on the text logits measured.`},
	{IDVisionPositions, `D15: Ollama's EncodeMultimodal hard-codes 1601 vision positions, the count for image_size 560 and patch_size 14.
Fails when the model's (image_size/patch_size)²+1 differs: Ollama then aborts on the first image (a
GGML_ASSERT on mismatched shapes). The image checks drive the vision model with the model's own count.`},
	{IDLastLayer, `Ollama prunes to the requested logits inside the last decoder layer only when it is a self-attention layer.
Fails when the last decoder layer is a cross-attention layer: Ollama's forward pass then returns the
logits of every position, and its runner, which divides their count by the outputs it asked for, samples
from the wrong vector. No Llama 3.2 Vision release has a cross-attention last layer.`},
}
