//go:build ollama

package ollamacheck

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"os"
	"reflect"
	"runtime/debug"

	"github.com/ollama/ollama/fs/ggml"
	"github.com/ollama/ollama/ml"
	"github.com/ollama/ollama/model"
	"github.com/ollama/ollama/model/input"
	ollamamllama "github.com/ollama/ollama/model/models/mllama"
)

// CacheType is the element type of the engine's self-attention KV cache.
type CacheType int

// The cache types: F16 is what `ollama serve` uses by default
// (OLLAMA_KV_CACHE_TYPE unset), F32 keeps parity runs free of cache rounding.
const (
	CacheF16 CacheType = iota
	CacheF32
)

func (c CacheType) dtype() ml.DType {
	if c == CacheF32 {
		return ml.DTypeF32
	}
	return ml.DTypeF16
}

func (c CacheType) String() string {
	if c == CacheF32 {
		return "F32"
	}
	return "F16"
}

// maxContext bounds the prompts the engine runs; the smoke prompts are well
// under 100 tokens.
const maxContext = 512

// Engine is a GGUF loaded in Ollama's Mllama model on the CPU backend.
type Engine struct {
	Path  string
	Cache CacheType
	m     model.Model
	mm    *ollamamllama.Model
	kv    ggml.KV

	vocab, embedRows                     int
	imageSize, channels, tiles, maxRatio int
	positions                            int
}

// OpenEngine loads the GGUF at path. Loading is safe for any GGUF the
// converter wrote; forward passes are safe only for one whose Conversion is
// Runnable: ggml aborts the process on shape errors, which no recover can
// catch.
//
// threads is the CPU backend's thread count (at least 1). ggml's threadpool
// spins while it waits; on a machine whose cores are busy (a CI runner, a
// parallel go test) more threads than idle cores make a tiny model's forward
// pass tens of times slower, so the checks default to one.
func OpenEngine(path string, cache CacheType, threads int) (e *Engine, err error) {
	defer recoverInto(&err, "loading "+path)
	// Without this, the ggml loader also scans <executable>/../lib/ollama
	// for backend libraries; ckptgate uses only the CPU backend compiled in.
	if _, set := os.LookupEnv("OLLAMA_LIBRARY_PATH"); !set {
		os.Setenv("OLLAMA_LIBRARY_PATH", "")
	}
	m, err := model.New(path, ml.BackendParams{AllocMemory: true, NumThreads: max(1, threads)})
	if err != nil {
		return nil, fmt.Errorf("%s: ollama could not create the model: %w", path, err)
	}
	mm, ok := m.(*ollamamllama.Model)
	if !ok {
		m.Backend().Close()
		return nil, fmt.Errorf("%s: ollama made a %T, not an mllama model", path, m)
	}
	e = &Engine{Path: path, Cache: cache, m: m, mm: mm}
	if err := m.Backend().Load(context.Background(), func(float32) {}); err != nil {
		m.Backend().Close()
		return nil, fmt.Errorf("%s: ollama could not load the weights: %w", path, err)
	}
	m.Config().Cache.Init(m.Backend(), cache.dtype(), 1, maxContext, maxContext)
	kv, ok := m.Backend().Config().(ggml.KV)
	if !ok {
		e.Close()
		return nil, fmt.Errorf("%s: unexpected config type %T", path, m.Backend().Config())
	}
	e.kv = kv
	e.imageSize = int(kv.Uint("vision.image_size"))
	e.channels = int(kv.Uint("vision.num_channels"))
	e.tiles = int(kv.Uint("vision.max_num_tiles"))
	if p := int(kv.Uint("vision.patch_size")); p > 0 {
		n := e.imageSize / p
		e.positions = n*n + 1
	}
	if t := mm.TextModel.TokenEmbedding; t != nil && t.Weight != nil {
		e.embedRows = t.Weight.Dim(1)
	}
	if o := mm.TextModel.Output; o != nil && o.Weight != nil {
		e.vocab = o.Weight.Dim(1)
	}
	if mm.VisionModel != nil && mm.PreTilePositionEmbedding != nil && mm.PreTilePositionEmbedding.Embedding != nil {
		e.maxRatio = mm.PreTilePositionEmbedding.Embedding.Weight.Dim(1) - 1
	}
	return e, nil
}

// Close frees the cache and the backend.
func (e *Engine) Close() {
	if e == nil || e.m == nil {
		return
	}
	e.m.Config().Cache.Close()
	e.m.Backend().Close()
	e.m = nil
}

// Reset forgets every cached token and image, as Ollama's runner does before
// it reuses a sequence slot for a new prompt.
func (e *Engine) Reset() error {
	return e.m.Config().Cache.Remove(0, 0, math.MaxInt32)
}

// VisionPositions is the number of positions per tile of the model's vision
// encoder: (image_size/patch_size)² + 1.
func (e *Engine) VisionPositions() int { return e.positions }

// ImageStates are projected vision features, ready for cross-attention,
// in ggml's shape order [text hidden, positions, tiles].
type ImageStates struct {
	Data  []float32
	Shape []int
}

// EncodeImage runs Ollama's vision model and projector on pixel values laid
// out as transformers lays out one image's pixel_values ([tiles, channels,
// height, width], row-major, unused tiles zero) with the given aspect-ratio id.
//
// It builds the graph EncodeMultimodal builds, with one change:
// EncodeMultimodal hard-codes 1601 vision positions (560/14 squared plus the
// class token, D15), which fits only image_size 560; here the count comes
// from the GGUF. With 1601 positions the graphs are the same.
func (e *Engine) EncodeImage(pixels []float32, aspectRatioID int) (st *ImageStates, err error) {
	defer recoverInto(&err, "encoding an image")
	if e.mm.VisionModel == nil || e.mm.Projector == nil || e.positions == 0 {
		return nil, errors.New("the model has no vision tower bound")
	}
	if want := e.imageSize * e.imageSize * e.channels * e.tiles; len(pixels) != want {
		return nil, fmt.Errorf("pixel values: %d floats, want %d (%d tiles × %d channels × %d×%d)", len(pixels), want, e.tiles, e.channels, e.imageSize, e.imageSize)
	}
	if aspectRatioID < 0 || aspectRatioID > e.maxRatio {
		return nil, fmt.Errorf("aspect-ratio id %d is outside the model's tables [0, %d]", aspectRatioID, e.maxRatio)
	}
	ctx := e.m.Backend().NewContext()
	defer ctx.Close()
	pv := ctx.Input().FromFloats(pixels, e.imageSize, e.imageSize, e.channels, e.tiles)
	ar := ctx.Input().FromInts([]int32{int32(aspectRatioID)}, 1)
	pos := ctx.Arange(0, float32(e.positions), 1, ml.DTypeI32)
	out := e.mm.Projector.Forward(ctx, e.mm.VisionModel.Forward(ctx, pv, pos, ar))
	ctx.Forward(out).Compute(out)
	return &ImageStates{Data: out.Floats(), Shape: out.Shape()}, nil
}

// OllamaPixels is an image as Ollama's own preprocessing makes it.
type OllamaPixels struct {
	// Pixels are laid out as EncodeImage wants them, padded to every tile.
	Pixels []float32
	// Tiles is the number of real tiles; Cols and Rows the tile grid.
	Tiles, Cols, Rows int
	// AspectRatioID is the id Ollama feeds its vision model.
	AspectRatioID int
}

// Preprocess runs Ollama's mllama image processor (ProcessImage) on img,
// with the image size, channels and tile count of the GGUF.
func (e *Engine) Preprocess(img image.Image) (*OllamaPixels, error) {
	return preprocess(e.mm.ImageProcessor, img, e.imageSize*e.imageSize*e.channels*e.tiles)
}

// preprocess runs one ImageProcessor; full is the padded pixel count.
func preprocess(p ollamamllama.ImageProcessor, img image.Image, full int) (op *OllamaPixels, err error) {
	defer recoverInto(&err, "ollama's image preprocessing")
	px, ratio, err := p.ProcessImage(img)
	if err != nil {
		return nil, err
	}
	grid := ratio.Point()
	// ProcessImage returns the id in an unexported field of an unexported
	// type (v0.17.4 has no accessor); reflect reads it without copying
	// Ollama's lookup, which is exactly what D1 is about.
	f := reflect.ValueOf(ratio).FieldByName("rank")
	if !f.IsValid() || !f.CanInt() {
		return nil, fmt.Errorf("ollama's aspect ratio %T has no integer field rank; this check knows v0.17.4", ratio)
	}
	if len(px) > full {
		return nil, fmt.Errorf("ollama's preprocessing made %d pixel values, more than the %d of a full set of tiles", len(px), full)
	}
	padded := make([]float32, full)
	copy(padded, px)
	return &OllamaPixels{Pixels: padded, Tiles: grid.X * grid.Y, Cols: grid.X, Rows: grid.Y, AspectRatioID: int(f.Int())}, nil
}

// LastLogits runs one prompt from position 0 and returns the logits of its
// last position. With img, the image's states are attached at input index
// imagePos (the <|image|> token), as the runner attaches them.
//
// Ollama's Forward prunes to the requested outputs inside the last decoder
// layer, and only when that layer is a self-attention layer; otherwise it
// returns every position's logits. LastLogits takes the last row either way
// and reports which happened in allRows.
func (e *Engine) LastLogits(ids []int32, img *ImageStates, imagePos int) (logits []float32, allRows bool, err error) {
	if err := e.Reset(); err != nil {
		return nil, false, err
	}
	return e.forward(ids, 0, img, imagePos)
}

// Greedy runs the prompt and then decodes steps tokens one at a time through
// Ollama's caches, taking the argmax each step, as a greedy `ollama run`
// would. It returns the tokens.
func (e *Engine) Greedy(ids []int32, img *ImageStates, imagePos, steps int) ([]int32, error) {
	if len(ids)+steps > maxContext {
		return nil, fmt.Errorf("%d prompt tokens and %d steps exceed the engine's %d positions", len(ids), steps, maxContext)
	}
	logits, _, err := e.LastLogits(ids, img, imagePos)
	if err != nil {
		return nil, err
	}
	var out []int32
	for k := 0; k < steps; k++ {
		tok := int32(argmax(logits))
		out = append(out, tok)
		if k == steps-1 {
			break
		}
		if logits, _, err = e.forward([]int32{tok}, len(ids)+k, nil, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// forward runs ids at positions start… on top of what the caches hold.
func (e *Engine) forward(ids []int32, start int, img *ImageStates, imagePos int) (logits []float32, allRows bool, err error) {
	defer recoverInto(&err, "the forward pass")
	n := len(ids)
	if n == 0 || start < 0 || start+n > maxContext {
		return nil, false, fmt.Errorf("%d tokens at position %d; the engine runs positions 0 to %d", n, start, maxContext-1)
	}
	for i, id := range ids {
		if id < 0 || int(id) >= e.embedRows {
			return nil, false, fmt.Errorf("token %d at position %d is outside the embedding table's %d rows", id, start+i, e.embedRows)
		}
	}
	if img != nil && (imagePos < 0 || imagePos >= n) {
		return nil, false, fmt.Errorf("image position %d outside the %d-token prompt", imagePos, n)
	}
	ctx := e.m.Backend().NewContext()
	defer ctx.Close()
	positions := make([]int32, n)
	for i := range positions {
		positions[i] = int32(start + i)
	}
	batch := input.Batch{
		Inputs:    ctx.Input().FromInts(ids, n),
		Outputs:   ctx.Input().FromInts([]int32{int32(n - 1)}, 1),
		Positions: positions,
		Sequences: make([]int, n),
	}
	if img != nil {
		t := ctx.Input().FromFloats(img.Data, img.Shape...)
		batch.Multimodal = []input.MultimodalIndex{{Index: imagePos, Multimodal: []input.Multimodal{{Tensor: t}}}}
	}
	out, err := model.Forward(ctx, e.m, batch)
	if err != nil {
		return nil, false, err
	}
	ctx.Compute(out)
	all := out.Floats()
	v := e.vocab
	switch {
	case v == 0:
		return nil, false, errors.New("the model has no output projection bound")
	case len(all) == v:
		return all, false, nil
	case len(all) == v*n:
		return all[(n-1)*v:], true, nil
	}
	return nil, false, fmt.Errorf("the forward pass returned %d logits, neither %d (one row) nor %d (%d rows)", len(all), v, v*n, n)
}

// argmax returns the index of the largest value (the first of equals).
func argmax(x []float32) int {
	j := 0
	for i, v := range x {
		if v > x[j] {
			j = i
		}
	}
	return j
}

// recoverInto turns a panic in Ollama's Go code (a nil tensor dereferenced
// while the graph is built, say) into an error.
func recoverInto(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("ollama panicked during %s: %v\n%s", what, r, debug.Stack())
	}
}

// Binding compares the tensors the loaded model bound with the GGUF's.
func (e *Engine) Binding(g *GGUF) *Binding { return BindingOf(e.m, g) }

// CrossGate is one cross-attention layer's gates as the loaded model holds
// them now.
type CrossGate struct {
	Layer     int
	Attn, MLP float32
}

// CrossGates reads the current values of every cross-attention layer's
// gate tensors from the backend. Ollama applies tanh to these tensors in
// place on every forward pass that runs the cross-attention layers (D11), so
// the values change as the model is used.
func (e *Engine) CrossGates() (gates []CrossGate, err error) {
	defer recoverInto(&err, "reading the cross-attention gates")
	ctx := e.m.Backend().NewContext()
	defer ctx.Close()
	type pending struct {
		layer     int
		attn, mlp ml.Tensor
	}
	var ps []pending
	var outs []ml.Tensor
	for i, l := range e.mm.TextModel.Transformer.Layers {
		c, ok := l.(*ollamamllama.TextCrossAttentionDecoderLayer)
		if !ok {
			continue
		}
		if c.AttentionGate == nil || c.MLPGate == nil {
			return nil, fmt.Errorf("cross-attention layer %d has no gate tensors bound", i)
		}
		p := pending{layer: i, attn: c.AttentionGate.Duplicate(ctx), mlp: c.MLPGate.Duplicate(ctx)}
		ps = append(ps, p)
		outs = append(outs, p.attn, p.mlp)
	}
	if len(outs) == 0 {
		return nil, nil
	}
	ctx.Forward(outs...).Compute(outs...)
	for _, p := range ps {
		a, m := p.attn.Floats(), p.mlp.Floats()
		if len(a) != 1 || len(m) != 1 {
			return nil, fmt.Errorf("cross-attention layer %d: gates hold %d and %d values, want 1 each", p.layer, len(a), len(m))
		}
		gates = append(gates, CrossGate{Layer: p.layer, Attn: a[0], MLP: m[0]})
	}
	return gates, nil
}
