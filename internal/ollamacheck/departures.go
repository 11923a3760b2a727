//go:build ollama

package ollamacheck

import (
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ollama/ollama/fs/ggml"

	"github.com/ckptgate/ckptgate/reports"
)

// ollamaPositions is the vision sequence length EncodeMultimodal hard-codes
// (model/models/mllama/model.go: Arange(0, 1601)).
const ollamaPositions = 1601

// normsStatic measures D6 on the Hugging Face weights: for u = q_norm⊙k_norm
// of each cross-attention layer, how far u is from invariant under the
// interleave the converter applies to the q/k rows but not to the norms.
func (r *run) normsStatic() error {
	hd := r.cfg.Text.HeadDim()
	for _, l := range r.cfg.Text.CrossAttentionLayers {
		s := "language_model.model.layers." + strconv.Itoa(l) + ".cross_attn."
		q, _, err := r.src.ReadFloat32(s + "q_norm.weight")
		if err != nil {
			return err
		}
		k, _, err := r.src.ReadFloat32(s + "k_norm.weight")
		if err != nil {
			return err
		}
		if len(q) != hd || len(k) != hd {
			return fmt.Errorf("%s: cross-attention layer %d norms have %d and %d values, want head_dim %d", r.o.Model, l, len(q), len(k), hd)
		}
		u := make([]float32, hd)
		var top float64
		for i := range u {
			u[i] = q[i] * k[i]
			top = math.Max(top, math.Abs(float64(u[i])))
		}
		pu, err := interleaveHeads(u, int64(hd), 1, 1)
		if err != nil {
			return err
		}
		var worst float64
		for i := range u {
			worst = math.Max(worst, math.Abs(float64(pu[i])-float64(u[i])))
		}
		if top > 0 {
			worst /= top
		}
		r.res.Norms = append(r.res.Norms, NormsInvariance{Layer: l, MaxRel: worst})
	}
	return nil
}

// crossNorms reports D6, measuring its effect with an F32 GGUF whose norms
// are interleaved like the q/k rows (which makes Ollama's scores equal to
// transformers').
// It returns Ollama's logits with the norms interleaved (nil when not
// measured).
func (r *run) crossNorms(p Prompt, want, first []float32) []float32 {
	var affected []string
	for _, n := range r.res.Norms {
		if n.MaxRel > 0 {
			affected = append(affected, fmt.Sprintf("layer %d (max rel. difference %.3g)", n.Layer, n.MaxRel))
		}
	}
	if len(affected) == 0 {
		r.add(IDCrossNorms, reports.StatusPass, p.Name, "q_norm⊙k_norm is invariant under the converter's interleave in every cross-attention layer: Ollama's cross-attention scores equal transformers'", r.res.Norms)
		return first
	}
	fixed := filepath.Join(r.work, "legacy-view-f32-norms-interleaved.gguf")
	err := interleaveNorms(r.f32Path, r.cfg.Text.CrossAttentionLayers, fixed)
	var logits []float32
	if err == nil {
		logits, err = r.imageFirst(variant{"f32", fixed, CacheF32, F32Bound}, p, p.Image.Pixels, p.Image.AspectRatioID)
	}
	msg := "the converter interleaves cross_attn_{q,k}_proj rows per head for RoPE but leaves q_norm/k_norm in transformers' order, so Ollama scales the wrong dimensions: " + strings.Join(affected, ", ")
	if err != nil {
		r.add(IDCrossNorms, reports.StatusWarn, p.Name, msg+"; the effect could not be measured: "+err.Error(), r.res.Norms)
		return nil
	}
	dFix, _, _ := compareLogits(first, logits, p.Name, "ollama F32", "ollama F32, norms interleaved")
	dRef, det, _ := compareLogits(want, logits, p.Name, "reference", "ollama F32, norms interleaved")
	r.res.Image[p.Name+"/norms interleaved, f32"] = dRef
	msg += fmt.Sprintf(". Interleaving the norms too moves %s's image logits by rel RMS %.3g (argmax %d → %d); with the fix the distance to the reference is %s (without: rel RMS %.3g)",
		p.Name, dFix.RelRMS, dFix.ArgmaxA, dFix.ArgmaxB, dRef, r.res.Image[p.Name+"/transformers' pixels, f32"].RelRMS)
	r.add(IDCrossNorms, reports.StatusWarn, p.Name, msg, det)
	return logits
}

// interleaveNorms writes to path a copy of the F32 GGUF at f32 whose
// cross-attention q_norm/k_norm are interleaved like the q/k rows.
func interleaveNorms(f32 string, layers []int, path string) error {
	g, err := ReadGGUF(f32)
	if err != nil {
		return err
	}
	edits := map[string][]float32{}
	for _, l := range layers {
		for _, w := range []string{"q_norm", "k_norm"} {
			name := "blk." + strconv.Itoa(l) + ".cross_attn_" + w + ".weight"
			x, err := g.ReadFloat32(name)
			if err != nil {
				return err
			}
			if edits[name], err = interleaveHeads(x, int64(len(x)), 1, 1); err != nil {
				return err
			}
		}
	}
	return rewriteF32(g, path, edits)
}

// rewriteF32 copies an all-F32 GGUF, replacing the tensors in edits.
func rewriteF32(g *GGUF, path string, edits map[string][]float32) error {
	var ts []*ggml.Tensor
	for _, t := range g.Tensors {
		if t.Kind != kindF32 {
			return fmt.Errorf("%s: tensor %q is not F32", g.Path, t.Name)
		}
		data, ok := edits[t.Name]
		if !ok {
			var err error
			if data, err = g.ReadFloat32(t.Name); err != nil {
				return err
			}
		}
		ts = append(ts, &ggml.Tensor{Name: t.Name, Kind: kindF32, Shape: slices.Clone(t.Shape), WriterTo: f32Data(data)})
	}
	return writeGGUF(path, maps.Clone(g.KV), ts)
}

// gateState runs repeated image forward passes on one loaded model and
// watches the cross-attention gates (D11).
func (r *run) gateState(p Prompt, want, first []float32) {
	const repeats = 3
	pos := p.ImagePos(imageToken)
	var logits [][]float32
	var traces []GateTrace
	err := r.withEngine(r.f32Path, CacheF32, func(e *Engine) error {
		st, err := e.EncodeImage(p.Image.Pixels, p.Image.AspectRatioID)
		if err != nil {
			return err
		}
		read := func() error {
			gs, err := e.CrossGates()
			if err != nil {
				return err
			}
			if traces == nil {
				for _, g := range gs {
					traces = append(traces, GateTrace{Layer: g.Layer})
				}
			}
			for i, g := range gs {
				traces[i].Attn = append(traces[i].Attn, g.Attn)
				traces[i].MLP = append(traces[i].MLP, g.MLP)
			}
			return nil
		}
		if err := read(); err != nil {
			return err
		}
		for range repeats {
			l, _, err := e.LastLogits(p.IDs, st, pos)
			if err != nil {
				return err
			}
			logits = append(logits, l)
			if err := read(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.add(IDGateState, reports.StatusFail, p.Name, "repeated image forward passes failed: "+err.Error(), nil)
		return
	}
	r.res.Gates = traces
	changed := false
	for _, t := range traces {
		for k := 1; k < len(t.Attn); k++ {
			changed = changed || t.Attn[k] != t.Attn[0] || t.MLP[k] != t.MLP[0]
		}
	}
	dRepeat, _, _ := compareLogits(logits[0], logits[repeats-1], p.Name, "first image forward", fmt.Sprintf("forward %d", repeats))
	dLast, det, _ := compareLogits(want, logits[repeats-1], p.Name, "reference", fmt.Sprintf("ollama F32, image forward %d on one loaded model", repeats))
	r.res.Image[p.Name+"/"+fmt.Sprintf("forward %d, f32", repeats)] = dLast
	if !changed && dRepeat.MaxAbs == 0 {
		r.add(IDGateState, reports.StatusPass, p.Name, fmt.Sprintf("%d image forward passes on one loaded model left the gates unchanged and gave identical logits", repeats), traces)
		return
	}
	var vals []string
	for _, t := range traces {
		vals = append(vals, fmt.Sprintf("layer %d attn %s, mlp %s", t.Layer, floats(t.Attn), floats(t.MLP)))
	}
	fresh := "a freshly loaded model reproduces forward 1 bit for bit, so the drift is state, not noise"
	if d, _, _ := compareLogits(first, logits[0], p.Name, "fresh", "forward 1"); d.MaxAbs != 0 {
		fresh = fmt.Sprintf("forward 1 differs from another freshly loaded model's by max |Δ| %.3g", d.MaxAbs)
	}
	msg := fmt.Sprintf("Ollama applies tanh to the cross-attention gate weights in place on every forward pass that runs cross-attention (ml/backend/ggml Tensor.Tanh is ggml_tanh_inplace), so the gates decay as the loaded model is used: after loading and each of %d image forward passes %s. Forward %d's logits differ from forward 1's by rel RMS %.3g (max |Δ| %.3g; %s); distance to the reference grows from rel RMS %.3g to %.3g",
		repeats, strings.Join(vals, "; "), repeats, dRepeat.RelRMS, dRepeat.MaxAbs, fresh, r.res.Image[p.Name+"/transformers' pixels, f32"].RelRMS, dLast.RelRMS)
	if len(p.Generated) > 0 {
		var gen []int32
		var after []CrossGate
		gerr := r.withEngine(r.res.Legacy.Path, CacheF16, func(e *Engine) error {
			st, err := e.EncodeImage(p.Image.Pixels, p.Image.AspectRatioID)
			if err != nil {
				return err
			}
			if gen, err = e.Greedy(p.IDs, st, p.ImagePos(imageToken), len(p.Generated)); err != nil {
				return err
			}
			after, err = e.CrossGates()
			return err
		})
		if gerr == nil {
			r.res.Generated[p.Name+"/default"] = gen
			msg += fmt.Sprintf(". Decode steps after an image run cross-attention too: greedy generation of %d tokens (default precision) leaves", len(gen))
			for _, g := range after {
				msg += fmt.Sprintf(" layer %d attn %.6g, mlp %.6g;", g.Layer, g.Attn, g.MLP)
			}
			msg += fmt.Sprintf(" it generated %v, transformers %v (%d leading tokens equal). The mutation outlives the request: every later prompt on the loaded model sees the decayed gates",
				gen, p.Generated, samePrefix(gen, p.Generated))
		}
	}
	r.add(IDGateState, reports.StatusWarn, p.Name, msg, gateDetails{Gates: traces, Drift: det})
}

// gateDetails are the Details of a gate_state warning: the gate values and
// the last repeated forward pass's logits against the reference.
type gateDetails struct {
	Gates []GateTrace           `json:"gates"`
	Drift reports.LogitsDetails `json:"drift"`
}

func floats(xs []float32) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(float64(x), 'g', 6, 32)
	}
	return strings.Join(parts, " → ")
}

// preprocessing compares Ollama's preprocessing with transformers' goldens
// and reports D1 and D2.
func (r *run) preprocessing() {
	gs := r.o.Goldens.Preprocess
	conv := r.res.Legacy
	if conv.GGUF == nil {
		conv = r.res.AsIs
	}
	if len(gs) == 0 || conv.GGUF == nil {
		for _, id := range []string{IDPreprocess, IDAspectRatioIDs, IDExactFit} {
			r.add(id, reports.StatusSkip, "", "no preprocessing goldens or no GGUF to take Ollama's image processor from", nil)
		}
		return
	}
	v := r.cfg.Vision
	cs, err := comparePreprocess(conv.GGUF.KV, v.NumChannels, v.MaxNumTiles, gs, r.o.Goldens.Dir, aspectRatios(r.cfg))
	if err != nil {
		r.add(IDPreprocess, reports.StatusFail, "", err.Error(), nil)
		return
	}
	r.res.Preprocess = cs
	// transformers' own two image-processor backends (PIL, torchvision)
	// differ by up to one 8-bit level (chat-template-and-preprocessing.md
	// §6.1 step 5); the 1.001 absorbs float32 rounding of the level itself.
	level := oneLevel() * 1.001
	for i := range cs {
		c := &cs[i]
		subj := fmt.Sprintf("%s at tile %d", c.Image, c.TileSize)
		var issues []string
		switch {
		case !c.SameGrid():
			issues = append(issues, fmt.Sprintf("tiles differ: transformers %v (id %d), Ollama %v (id %d)", c.HFGrid, c.HFID, c.OllamaGrid, c.OllamaID))
		case c.HFID != c.OllamaID:
			issues = append(issues, fmt.Sprintf("same tiles (%v) but aspect-ratio id %d in transformers and %d in Ollama (D1)", c.HFGrid, c.HFID, c.OllamaID))
		}
		if c.SameGrid() && c.SampleMaxAbs > level {
			issues = append(issues, fmt.Sprintf("pixels differ by more than one 8-bit level (%.3g): max |Δ| %.3g, mean %.3g, per-tile channel means %.3g%s",
				oneLevel(), c.SampleMaxAbs, c.SampleMeanAbs, c.MeansMaxAbs, pixelCause(c)))
		}
		if len(issues) > 0 {
			r.add(IDPreprocess, reports.StatusWarn, subj, strings.Join(issues, "; "), c)
			continue
		}
		r.add(IDPreprocess, reports.StatusPass, subj, fmt.Sprintf("same tiles (%v) and id %d; pixels within one 8-bit level, as transformers' own backends: max |Δ| %.3g, mean %.3g", c.HFGrid, c.HFID, c.SampleMaxAbs, c.SampleMeanAbs), c)
	}
	r.aspectRatioIDs(cs)
	r.exactFit(cs)
}

// oneLevel is one 8-bit level in normalised units for the smallest CLIP std.
func oneLevel() float64 { return 1 / 255.0 / 0.26130258 }

func pixelCause(c *PreprocessComparison) string {
	switch {
	case c.Mode == "RGBA":
		return " (D3: Ollama draws transparent pixels over black, transformers composites them over white)"
	case strings.HasSuffix(strings.ToLower(c.Image), ".jpg") || strings.HasSuffix(strings.ToLower(c.Image), ".jpeg"):
		return " (JPEG decoding: Go's image/jpeg upsamples chroma plainly, PIL's libjpeg-turbo smoothly)"
	}
	return " (D3: resampling differs)"
}

// aspectRatioIDs reports D1, measuring its effect where the goldens hold an
// image at the model's own tile size.
func (r *run) aspectRatioIDs(cs []PreprocessComparison) {
	var p *Prompt
	for i := range r.o.Goldens.Prompts {
		if r.o.Goldens.Prompts[i].Image != nil {
			p = &r.o.Goldens.Prompts[i]
			break
		}
	}
	n := 0
	for i := range cs {
		c := &cs[i]
		if !c.SameGrid() || c.HFGrid.Rows == c.HFGrid.Cols {
			continue
		}
		n++
		subj := fmt.Sprintf("%s at tile %d", c.Image, c.TileSize)
		if c.HFID == c.OllamaID {
			r.add(IDAspectRatioIDs, reports.StatusPass, subj, fmt.Sprintf("%v: both use id %d", c.HFGrid, c.HFID), nil)
			continue
		}
		msg := fmt.Sprintf("%v: transformers feeds id %d, Ollama id %d, which indexes the pre-tile, post-tile and tile-position embeddings trained for %v",
			c.HFGrid, c.HFID, c.OllamaID, Grid{c.HFGrid.Cols, c.HFGrid.Rows})
		var det any
		if p != nil && c.TileSize == r.cfg.Vision.ImageSize && r.f32Path != "" && r.res.Legacy.Runnable() {
			v := variant{"f32", r.f32Path, CacheF32, F32Bound}
			a, errA := r.imageFirst(v, *p, c.Ollama.Pixels, c.OllamaID)
			b, errB := r.imageFirst(v, *p, c.Ollama.Pixels, c.HFID)
			if errA == nil && errB == nil {
				d, ld, _ := compareLogits(b, a, p.Name+" with "+c.Image, "Ollama's pixels, transformers' id", "Ollama's pixels, Ollama's id")
				msg += fmt.Sprintf(". With this image in %s, Ollama's id moves the last logits by rel RMS %.3g (max |Δ| %.3g, argmax %d → %d) from what the right id gives",
					p.Name, d.RelRMS, d.MaxAbs, d.ArgmaxA, d.ArgmaxB)
				det = ld
			}
		}
		r.add(IDAspectRatioIDs, reports.StatusWarn, subj, msg, det)
	}
	if n == 0 {
		r.add(IDAspectRatioIDs, reports.StatusSkip, "", "the preprocessing goldens hold no non-square tile grid both sides agree on", nil)
	}
}

// exactFit reports D2.
func (r *run) exactFit(cs []PreprocessComparison) {
	n := 0
	for i := range cs {
		c := &cs[i]
		if !c.ExactFit {
			continue
		}
		n++
		subj := fmt.Sprintf("%s at tile %d", c.Image, c.TileSize)
		if c.SameGrid() {
			r.add(IDExactFit, reports.StatusPass, subj, fmt.Sprintf("fits %v at scale 1 and both choose it", c.HFGrid), nil)
			continue
		}
		r.add(IDExactFit, reports.StatusWarn, subj, fmt.Sprintf("transformers fits it at scale 1 into %v (id %d); Ollama counts scale 1 as no upscale and takes %v (id %d): %d tiles instead of %d, upscaled",
			c.HFGrid, c.HFID, c.OllamaGrid, c.OllamaID, c.OllamaGrid.Rows*c.OllamaGrid.Cols, c.HFGrid.Rows*c.HFGrid.Cols), c)
	}
	if n == 0 {
		r.add(IDExactFit, reports.StatusSkip, "", "no image of the preprocessing goldens fits a canvas at scale exactly 1", nil)
	}
}

// structural reports the departures that follow from the config and the
// prompts alone: D4, D15, the vision encoder's, and the last layer.
func (r *run) structural() {
	v := r.cfg.Vision
	positions := v.NumPatches()
	if positions != ollamaPositions {
		r.add(IDVisionPositions, reports.StatusFail, "", fmt.Sprintf("the vision encoder has (%d/%d)²+1 = %d positions per tile; Ollama's EncodeMultimodal builds %d position ids and aborts on the first image (GGML_ASSERT in ggml: shapes [%d, %d] and [%d, %d] cannot be added)",
			v.ImageSize, v.PatchSize, positions, ollamaPositions, v.HiddenSize, positions, v.HiddenSize, ollamaPositions), nil)
	} else {
		r.add(IDVisionPositions, reports.StatusPass, "", fmt.Sprintf("the vision encoder has %d positions per tile, the count Ollama hard-codes", positions), nil)
	}

	for _, p := range r.o.Goldens.Prompts {
		if p.Image != nil {
			r.crossMask(p)
			r.visionFeatures(p)
			r.visionEncoder(p)
		}
	}

	if len(r.found[IDLastLayer]) == 0 {
		last := r.cfg.Text.NumHiddenLayers - 1
		if r.cfg.Text.IsCross(last) {
			r.add(IDLastLayer, reports.StatusFail, "", fmt.Sprintf("the last decoder layer (%d) is a cross-attention layer: Ollama prunes outputs only in a self-attention last layer, returns every position's logits, and its runner samples from the wrong vector", last), nil)
		} else {
			r.add(IDLastLayer, reports.StatusPass, "", fmt.Sprintf("the last decoder layer (%d) is a self-attention layer, where Ollama prunes to the requested logits", last), nil)
		}
	}
}

// engineDistance compares two of an image prompt's engine variants; ok is
// false without them.
func (ir *imageRun) engineDistance(a, b string) (Distance, reports.LogitsDetails, bool) {
	if ir == nil || ir.engine == nil || ir.engine[a] == nil || ir.engine[b] == nil {
		return Distance{}, reports.LogitsDetails{}, false
	}
	d, det, err := compareLogits(ir.engine[a], ir.engine[b], "", "reference engine ("+a+")", "reference engine ("+b+")")
	return d, det, err == nil
}

// crossMask reports D4 for one image prompt.
func (r *run) crossMask(p Prompt) {
	pos := p.ImagePos(imageToken)
	maxTiles := r.cfg.Vision.MaxNumTiles
	var parts []string
	if pos > 0 {
		parts = append(parts, fmt.Sprintf("the %d tokens before <|image|> get cross-attention outputs that transformers zeroes (full_text_row_masked_out_mask), and later tokens see them through self-attention", pos))
	}
	if p.Image.Tiles < maxTiles {
		parts = append(parts, fmt.Sprintf("the image has %d of %d tiles and every text token also attends to the %d padding tiles", p.Image.Tiles, maxTiles, maxTiles-p.Image.Tiles))
	}
	if len(parts) == 0 {
		r.add(IDCrossMask, reports.StatusPass, p.Name, "the image comes first and fills every tile: no cross-attention mask is needed", nil)
		return
	}
	msg := "Ollama passes no cross-attention mask: " + strings.Join(parts, "; ")
	var det any
	if d, ld, ok := r.images[p.Name].engineDistance("engine", "engine, D4"); ok {
		ld.Prompt = p.Name
		r.res.Image[p.Name+"/D4 in the engine"] = d
		msg += fmt.Sprintf(". Dropping the mask in the reference engine moves %s's logits by rel RMS %.3g (max |Δ| %.3g, argmax %d → %d)", p.Name, d.RelRMS, d.MaxAbs, d.ArgmaxA, d.ArgmaxB)
		det = ld
	}
	r.add(IDCrossMask, reports.StatusWarn, p.Name, msg, det)
}

// visionFeatures reports D10 for one image prompt.
func (r *run) visionFeatures(p Prompt) {
	v := r.cfg.Vision
	if len(v.IntermediateLayersIndices) == 0 {
		r.add(IDVisionFeatures, reports.StatusPass, p.Name, "the vision config lists no intermediate layers", nil)
		return
	}
	msg := fmt.Sprintf("Ollama concatenates the inputs of vision layers %v (as Meta's reference and transformers 4.45 do); transformers 5.17, which made the reference, concatenates their outputs", v.IntermediateLayersIndices)
	ir := r.images[p.Name]
	d, ld, ok := ir.engineDistance("engine", "engine, D10")
	if !ok {
		r.add(IDVisionFeatures, reports.StatusWarn, p.Name, msg+"; not measured (no reference engine)", nil)
		return
	}
	ld.Prompt = p.Name
	self, _, _ := compareLogits(ir.want, ir.engine["engine"], p.Name, "reference", "engine")
	r.res.Image[p.Name+"/engine"] = self
	r.res.Image[p.Name+"/D10 in the engine"] = d
	msg += fmt.Sprintf(". Taking layer inputs in the reference engine (which reproduces the reference to rel RMS %.3g) moves %s's logits by rel RMS %.3g (max |Δ| %.3g, argmax %d → %d). Which of the two the trained weights expect depends on the transformers version that trained them (NOTES-ON-ISSUES item 5)",
		self.RelRMS, p.Name, d.RelRMS, d.MaxAbs, d.ArgmaxA, d.ArgmaxB)
	r.add(IDVisionFeatures, reports.StatusWarn, p.Name, msg, ld)
}

// visionEncoder reports D5 and D7 for one image prompt: what remains
// between Ollama and the reference once every other departure is applied to
// one side or removed from the other.
func (r *run) visionEncoder(p Prompt) {
	v := r.cfg.Vision
	positions := v.NumPatches()
	padded := (positions + 7) / 8 * 8
	msg := fmt.Sprintf("D5: Ollama's vision encoder attends without a mask (%d positions per tile padded to %d; transformers keeps the %d padding positions and the padding tiles from attending to each other), D7: its MLP uses tanh-approximated GELU where transformers uses erf",
		positions, padded, padded-positions)
	if padded-positions > 0 && positions < 64 {
		msg += fmt.Sprintf(" (on a %d-position tile the padding is %.0f%% of the sequence; on Llama 3.2's 1601 it is 0.4%%)", positions, 100*float64(padded-positions)/float64(padded))
	}
	ir := r.images[p.Name]
	switch {
	case ir == nil:
		msg += "; not measured (the image prompt did not run)"
	case ir.fixed != nil && ir.engine != nil:
		d, det, _ := compareLogits(ir.engine["engine, D4 and D10"], ir.fixed, p.Name, "reference engine with D4 and D10", "ollama F32, fresh, q_norm/k_norm interleaved")
		r.res.Image[p.Name+"/D5 and D7"] = d
		msg += fmt.Sprintf(". Ollama (F32, freshly loaded, D6 fixed) against the reference engine with D4 and D10 applied: %s; that is what D5 and D7 leave", d)
		r.add(IDVisionEncoder, reports.StatusWarn, p.Name, msg, det)
		return
	case ir.fixed != nil:
		d, _, _ := compareLogits(ir.want, ir.fixed, p.Name, "reference", "ollama F32, fresh, D6 fixed")
		msg += fmt.Sprintf(". Without a reference engine only the sum is measured: Ollama (F32, freshly loaded, D6 fixed) against the reference: %s, which D4, D5, D7 and D10 leave together", d)
	}
	r.add(IDVisionEncoder, reports.StatusWarn, p.Name, msg, nil)
}
