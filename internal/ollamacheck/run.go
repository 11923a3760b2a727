//go:build ollama

package ollamacheck

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/reports"
)

// Options say what to check.
type Options struct {
	// Model is the Hugging Face directory under test.
	Model string
	// Goldens hold the smoke prompts, transformers' tokenizer cases and
	// preprocessing goldens. Required.
	Goldens *Goldens
	// Reference answers the forward passes; nil answers from Goldens.
	Reference Reference
	// Engine, when set, is a transformers-faithful engine whose Variants
	// measure what D4 and D10 alone do to the image logits, and what D5 and
	// D7 leave once the others are applied on the reference side.
	Engine VariantReference
	// WorkDir receives the GGUFs; empty means a temporary directory that is
	// removed before Run returns.
	WorkDir string
	// Threads for Ollama's CPU backend; 0 means 1 (see OpenEngine).
	Threads int
}

// GateTrace follows one cross-attention layer's gates through repeated
// image forward passes on one loaded model.
type GateTrace struct {
	Layer int `json:"layer"`
	// Attn and MLP hold the values read from the backend: [0] after
	// loading, [k] after k image forward passes.
	Attn []float32 `json:"attn"`
	MLP  []float32 `json:"mlp"`
}

// NormsInvariance is D6's measure for one cross-attention layer.
type NormsInvariance struct {
	Layer int `json:"layer"`
	// MaxRel is max|u∘π − u| / max|u| for u = q_norm⊙k_norm.
	MaxRel float64 `json:"max_rel"`
}

// Result is everything Run found.
type Result struct {
	// Checks are the findings, in Checks order.
	Checks []reports.Check
	AsIs   *Conversion
	Legacy *Conversion
	// Text and Image are logits distances by "<prompt>/<variant>"; for
	// the departures measured with an Engine, "<prompt>/engine" (engine
	// against the reference), "/D10 in the engine", "/D4 in the engine" and
	// "/D5 and D7" (Ollama with D6 fixed against the engine with D4 and D10).
	Text  map[string]Distance
	Image map[string]Distance
	// Generated are Ollama's greedy tokens by "<prompt>/<variant>".
	Generated  map[string][]int32
	Gates      []GateTrace
	Norms      []NormsInvariance
	Preprocess []PreprocessComparison
	// Timings are wall-clock seconds per phase.
	Timings map[string]float64
}

// Statuses returns the statuses reported under a check ID.
func (r *Result) Statuses(id string) []reports.Status {
	var out []reports.Status
	for _, c := range r.Checks {
		if c.ID == id {
			out = append(out, c.Status)
		}
	}
	return out
}

// imageToken is Mllama's <|image|> id; Ollama hard-codes it too
// (model/models/mllama/model.go PostTokenize).
const imageToken = 128256

// run is one Run's state.
type run struct {
	o       Options
	ref     Reference
	work    string
	cfg     *mllama.Config
	exp     []Expected
	src     *Source
	res     *Result
	f32Path string
	// images holds each image prompt's logits for the departure findings.
	images map[string]*imageRun
	// findings by check ID, collected in any order, emitted in Checks order.
	found map[string][]reports.Check
}

// Run converts the model directory with Ollama's converter, loads it in
// Ollama's engine, runs the smoke prompts and reports every ollama.* check.
// It returns an error only when the inputs cannot be read; everything
// Ollama does wrong is a finding.
func Run(o Options) (*Result, error) {
	if o.Goldens == nil {
		return nil, errors.New("ollama checks need goldens (smoke prompts and their reference outputs)")
	}
	r := &run{o: o, ref: o.Reference, found: map[string][]reports.Check{}, images: map[string]*imageRun{},
		res: &Result{Text: map[string]Distance{}, Image: map[string]Distance{}, Generated: map[string][]int32{}, Timings: map[string]float64{}}}
	if r.ref == nil {
		r.ref = o.Goldens
	}
	cfg, err := mllama.LoadConfig(filepath.Join(o.Model, "config.json"))
	if err != nil {
		return nil, err
	}
	r.cfg = cfg
	if r.exp, err = ExpectedTensors(cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(o.Model, "config.json"), err)
	}
	if r.src, err = OpenSource(o.Model); err != nil {
		return nil, err
	}
	defer r.src.Close()
	r.work = o.WorkDir
	if r.work == "" {
		if r.work, err = os.MkdirTemp("", "ckptgate-ollama-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(r.work)
	}

	r.timed("convert as-is", func() { r.res.AsIs, err = r.convert(ViewOptions{}) })
	if err != nil {
		return nil, err
	}
	r.timed("convert legacy view", func() { r.res.Legacy, err = r.convert(LegacyView) })
	if err != nil {
		return nil, err
	}
	r.reportConversions()
	leg := r.res.Legacy
	if leg.Runnable() {
		r.timed("f32 gguf", r.writeF32)
		r.timed("tokenizer", r.tokenizer)
		r.timed("text", r.textLogits)
		if err := r.normsStatic(); err != nil {
			r.add(IDCrossNorms, reports.StatusFail, "", err.Error(), nil)
		}
		if r.f32Path != "" {
			r.timed("image", r.imageLogits)
		}
	} else {
		why := "the legacy-view GGUF cannot run (see " + IDConvert + " and " + IDTensors + ")"
		for _, id := range []string{IDTokenizer, IDTextLogits, IDImageLogits, IDBOS, IDGateState, IDCrossNorms} {
			r.add(id, reports.StatusSkip, "", why, nil)
		}
	}
	r.timed("preprocess", r.preprocessing)
	r.structural()

	if o.WorkDir == "" {
		// The GGUFs are gone with the work directory; so is any use of
		// their decoded key-values (128k tokens, 280k merges).
		for _, c := range []*Conversion{r.res.AsIs, r.res.Legacy} {
			c.GGUF, c.Path = nil, ""
		}
	}
	for _, c := range Checks {
		fs := r.found[c.ID]
		if len(fs) == 0 {
			fs = []reports.Check{{ID: c.ID, Status: reports.StatusSkip, Message: "nothing to check: the goldens exercise no case of this check"}}
		}
		r.res.Checks = append(r.res.Checks, fs...)
	}
	return r.res, nil
}

func (r *run) timed(phase string, f func()) {
	t := time.Now()
	f()
	r.res.Timings[phase] += time.Since(t).Seconds()
}

func (r *run) add(id string, st reports.Status, subject, msg string, details any) {
	c := reports.Check{ID: id, Status: st, Subject: subject, Message: msg}
	if details != nil {
		c.Details = reports.MustDetails(details)
	}
	r.found[id] = append(r.found[id], c)
}

// textPrompt returns the first prompt without an image, or nil.
func (r *run) textPrompt() *Prompt {
	for i := range r.o.Goldens.Prompts {
		if r.o.Goldens.Prompts[i].Image == nil {
			return &r.o.Goldens.Prompts[i]
		}
	}
	return nil
}

// convert presents the directory one way, converts and inspects it, and runs
// the first text prompt when that is safe. An error means the directory
// itself cannot be read.
func (r *run) convert(o ViewOptions) (*Conversion, error) {
	c, err := ConvertView(r.o.Model, o, filepath.Join(r.work, strings.ReplaceAll(viewName(o), " ", "-")+".gguf"), r.o.Threads)
	if err != nil {
		return nil, err
	}
	p := r.textPrompt()
	switch {
	case c.Error != "":
		return c, nil
	case !c.Runnable():
		c.ForwardError = "not run: Ollama would dereference nil tensors or abort on the shapes"
		return c, nil
	case p == nil:
		c.ForwardError = "not run: the goldens have no text prompt"
		return c, nil
	}
	var logits []float32
	err = r.withEngine(c.Path, CacheF16, func(e *Engine) error {
		var err error
		logits, _, err = e.LastLogits(p.IDs, nil, 0)
		return err
	})
	if err != nil {
		c.ForwardError = err.Error()
		return c, nil
	}
	want, err := r.ref.LastLogits(p.IDs, nil)
	if err != nil {
		c.ForwardError = "no reference: " + err.Error()
		return c, nil
	}
	d, _, err := compareLogits(want, logits, p.Name, "reference", "ollama "+c.View)
	if err != nil {
		c.ForwardError = err.Error()
		return c, nil
	}
	c.Text = &d
	return c, nil
}

// list shows at most n items of a list.
func list(xs []string, n int) string {
	if len(xs) <= n {
		return strings.Join(xs, ", ")
	}
	return strings.Join(xs[:n], ", ") + fmt.Sprintf(", … (%d more)", len(xs)-n)
}

// problem is one thing wrong with a conversion; tensor problems are also
// reported under IDTensors.
type problem struct {
	tensor bool
	text   string
}

// problems lists what is wrong with a conversion.
func (r *run) problems(c *Conversion) []problem {
	var ps []problem
	add := func(tensor bool, format string, a ...any) {
		ps = append(ps, problem{tensor, fmt.Sprintf(format, a...)})
	}
	if c.FreqBase <= 0 {
		why := "the converter reads only text_config.rope_theta"
		if r.cfg.Text.RopeForm == "rope_parameters" {
			why += "; this config has transformers 5's rope_parameters"
		}
		add(false, "no mllama.rope.freq_base in the GGUF (%s), so Ollama rotates with base 0", why)
	}
	if len(c.Missing) > 0 {
		add(true, "%d expected tensors missing: %s", len(c.Missing), list(c.Missing, 6))
	}
	if len(c.Unexpected) > 0 {
		add(true, "%d tensors under names Ollama's model never reads: %s", len(c.Unexpected), list(c.Unexpected, 6))
	}
	if len(c.BadShapes) > 0 {
		add(true, "%d tensors with wrong shapes: %s", len(c.BadShapes), list(c.BadShapes, 4))
	}
	if len(c.RawGates) > 0 {
		add(true, "%d gates stored without the tanh Ollama's vision model expects: %s", len(c.RawGates), list(c.RawGates, 6))
	}
	if len(c.Orphans) > 0 && len(c.Unexpected) == 0 {
		add(true, "%d tensors no field of Ollama's model binds: %s", len(c.Orphans), list(c.Orphans, 6))
	}
	if len(c.RequiredUnbound) > 0 {
		add(true, "%d tensor fields of Ollama's model left nil (the first forward pass dereferences them and panics): %s", len(c.RequiredUnbound), list(c.RequiredUnbound, 6))
	}
	if c.Text != nil && c.Text.NonFinite > 0 {
		add(false, "the text prompt's logits are not finite (%d of them NaN or infinite)", c.Text.NonFinite)
	}
	return ps
}

func (r *run) reportConversions() {
	for _, c := range []*Conversion{r.res.AsIs, r.res.Legacy} {
		subj := c.View
		if c.Error != "" {
			r.add(IDConvert, reports.StatusFail, subj, c.Error, c)
			r.add(IDTensors, reports.StatusSkip, subj, "no GGUF to inspect", nil)
			continue
		}
		summary := fmt.Sprintf("%d tensors (%s), freq_base %g", c.Tensors, typesString(c.Types), c.FreqBase)
		if c.Text != nil {
			summary += "; text prompt " + c.Text.String()
		} else if c.ForwardError != "" {
			summary += "; forward pass " + c.ForwardError
		}
		if len(c.Rewrites) > 0 {
			summary += "; rewrites: " + strings.Join(c.Rewrites, "; ")
		}
		if len(c.Hidden) > 0 {
			summary += "; not served to the converter: " + strings.Join(c.Hidden, ", ")
		}
		var all, tensors []string
		for _, p := range r.problems(c) {
			all = append(all, p.text)
			if p.tensor {
				tensors = append(tensors, p.text)
			}
		}
		if len(all) > 0 {
			msg := "the GGUF does not run correctly in Ollama: " + strings.Join(all, "; ")
			if c.View == "as-is" {
				msg += ". The legacy view (subject \"legacy view\") shows the rewrites that fix this"
			}
			r.add(IDConvert, reports.StatusFail, subj, msg+". "+summary, c)
		} else {
			r.add(IDConvert, reports.StatusPass, subj, "converts and runs: "+summary, c)
		}
		if len(tensors) > 0 {
			r.add(IDTensors, reports.StatusFail, subj, strings.Join(tensors, "; "), c)
		} else {
			r.add(IDTensors, reports.StatusPass, subj, fmt.Sprintf("all %d tensors are where Ollama's mllama model binds them, with the shapes the config implies; gates transformed as expected", c.Tensors), nil)
		}
	}
}

func typesString(m map[string]int) string {
	var parts []string
	for _, k := range []string{"F32", "F16", "BF16"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
	}
	for k, n := range m {
		if !slices.Contains([]string{"F32", "F16", "BF16"}, k) {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	return strings.Join(parts, ", ")
}

// writeF32 makes the F32 GGUF of the legacy view.
func (r *run) writeF32() {
	r.f32Path = filepath.Join(r.work, "legacy-view-f32.gguf")
	res, err := WriteF32(r.res.Legacy.GGUF, r.src, r.exp, r.f32Path)
	if err != nil {
		r.f32Path = ""
		r.add(IDTextLogits, reports.StatusFail, "F32", "cannot build the F32 GGUF for the parity run: "+err.Error(), res)
	}
}

// withEngine loads a GGUF freshly, runs f and frees it.
func (r *run) withEngine(path string, cache CacheType, f func(*Engine) error) error {
	e, err := OpenEngine(path, cache, r.o.Threads)
	if err != nil {
		return err
	}
	defer e.Close()
	return f(e)
}

// variants are the two precisions the logits are compared at.
type variant struct {
	name  string
	path  string
	cache CacheType
	bound float64
}

func (r *run) variants() []variant {
	vs := []variant{}
	if r.f32Path != "" {
		vs = append(vs, variant{"f32", r.f32Path, CacheF32, F32Bound})
	}
	return append(vs, variant{"default", r.res.Legacy.Path, CacheF16, DefaultBound})
}

func (v variant) label() string {
	if v.name == "f32" {
		return "ollama, F32 GGUF, F32 KV cache"
	}
	return "ollama, converter's GGUF (F16 weights), F16 KV cache"
}

// textLogits compares the text prompts at both precisions.
func (r *run) textLogits() {
	for _, v := range r.variants() {
		err := r.withEngine(v.path, v.cache, func(e *Engine) error {
			for _, p := range r.o.Goldens.Prompts {
				if p.Image != nil {
					continue
				}
				r.compareText(e, v, p)
			}
			return nil
		})
		if err != nil {
			r.add(IDTextLogits, reports.StatusFail, v.name, err.Error(), nil)
		}
	}
}

func (r *run) compareText(e *Engine, v variant, p Prompt) {
	subj := p.Name + " (" + v.name + ")"
	logits, allRows, err := e.LastLogits(p.IDs, nil, 0)
	if err != nil {
		r.add(IDTextLogits, reports.StatusFail, subj, "forward pass failed: "+err.Error(), nil)
		return
	}
	r.noteAllRows(allRows, p.Name)
	want, err := r.ref.LastLogits(p.IDs, nil)
	if err != nil {
		r.add(IDTextLogits, reports.StatusSkip, subj, "no reference logits: "+err.Error(), nil)
		return
	}
	d, det, err := compareLogits(want, logits, p.Name, "reference", v.label())
	if err != nil {
		r.add(IDTextLogits, reports.StatusFail, subj, err.Error(), nil)
		return
	}
	r.res.Text[p.Name+"/"+v.name] = d
	msg := d.String()
	if v.name == "default" && len(p.Generated) > 0 {
		if gen, err := e.Greedy(p.IDs, nil, 0, len(p.Generated)); err == nil {
			r.res.Generated[p.Name+"/default"] = gen
			msg += fmt.Sprintf("; greedy: %d of %d tokens as transformers generated (%v vs %v)", samePrefix(gen, p.Generated), len(p.Generated), gen, p.Generated)
		}
	}
	switch {
	case d.NonFinite > 0 || !d.SameArgmax() || d.RelRMS > v.bound:
		r.add(IDTextLogits, reports.StatusFail, subj, fmt.Sprintf("beyond the bound (rel RMS %g, same argmax): %s", v.bound, msg), det)
	default:
		r.add(IDTextLogits, reports.StatusPass, subj, fmt.Sprintf("within the bound (rel RMS %g, same argmax): %s", v.bound, msg), det)
	}
}

// samePrefix counts the leading tokens a and b share.
func samePrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// noteAllRows reports, once, that a forward pass returned every row.
func (r *run) noteAllRows(allRows bool, prompt string) {
	if allRows && len(r.found[IDLastLayer]) == 0 {
		r.add(IDLastLayer, reports.StatusFail, prompt, fmt.Sprintf(
			"the last decoder layer (%d) is a cross-attention layer (cross_attention_layers %v): Ollama's forward pass returned the logits of every position instead of the last one, and its runner (runner/ollamarunner, vocabSize = len(logits)/outputs) would sample from all of them; this model cannot generate correctly in Ollama",
			r.cfg.Text.NumHiddenLayers-1, r.cfg.Text.CrossAttentionLayers), nil)
	}
}

// imageFirst runs one image prompt's HF pixels through a freshly loaded
// model and returns the logits of the first image forward pass.
func (r *run) imageFirst(v variant, p Prompt, pixels []float32, id int) (logits []float32, err error) {
	err = r.withEngine(v.path, v.cache, func(e *Engine) error {
		st, err := e.EncodeImage(pixels, id)
		if err != nil {
			return err
		}
		logits, _, err = e.LastLogits(p.IDs, st, p.ImagePos(imageToken))
		return err
	})
	return logits, err
}

// imageLogits runs every image prompt.
func (r *run) imageLogits() {
	for _, p := range r.o.Goldens.Prompts {
		if p.Image == nil {
			continue
		}
		if p.ImagePos(imageToken) < 0 {
			r.add(IDImageLogits, reports.StatusFail, p.Name, "the prompt has an image but no <|image|> token", nil)
			continue
		}
		want, err := r.ref.LastLogits(p.IDs, p.Image)
		if err != nil {
			r.add(IDImageLogits, reports.StatusSkip, p.Name, "no reference logits: "+err.Error(), nil)
			continue
		}
		first := map[string][]float32{}
		for _, v := range r.variants() {
			logits, err := r.imageFirst(v, p, p.Image.Pixels, p.Image.AspectRatioID)
			if err != nil {
				r.add(IDImageLogits, reports.StatusFail, p.Name+" (transformers' pixels, "+v.name+")", "forward pass failed: "+err.Error(), nil)
				continue
			}
			first[v.name] = logits
			r.reportImage(p, "transformers' pixels, "+v.name, v, want, logits)
		}
		r.ollamaPixels(p, want)
		if f32 := first["f32"]; f32 != nil {
			ir := &imageRun{want: want, f32: f32}
			r.images[p.Name] = ir
			r.gateState(p, want, f32)
			ir.fixed = r.crossNorms(p, want, f32)
			r.decompose(p, ir)
		}
	}
}

// imageRun is one image prompt's logits: the reference's, Ollama's first
// F32 forward pass, and Ollama's with D6 fixed (nil when not measured).
type imageRun struct {
	want, f32, fixed []float32
	// engine are the engine Variants' logits by name (nil without Engine).
	engine map[string][]float32
}

// decompose asks the engine for transformers' forward pass with Ollama's
// departures applied one at a time.
func (r *run) decompose(p Prompt, ir *imageRun) {
	if r.o.Engine == nil {
		return
	}
	ir.engine = map[string][]float32{}
	for name, v := range map[string]Variant{
		"engine":             {},
		"engine, D10":        {LayerInputFeatures: true},
		"engine, D4":         {NoCrossAttentionMask: true},
		"engine, D4 and D10": {LayerInputFeatures: true, NoCrossAttentionMask: true},
	} {
		l, err := r.o.Engine.LastLogitsVariant(p.IDs, p.Image, v)
		if err != nil {
			r.add(IDVisionFeatures, reports.StatusFail, p.Name, "the reference engine failed ("+name+"): "+err.Error(), nil)
			ir.engine = nil
			return
		}
		ir.engine[name] = l
	}
}

// reportImage compares one image forward pass with the reference and
// reports whether a finding was added.
func (r *run) reportImage(p Prompt, how string, v variant, want, got []float32) bool {
	subj := p.Name + " (" + how + ")"
	d, det, err := compareLogits(want, got, p.Name, "reference", "ollama, "+how)
	if err != nil {
		r.add(IDImageLogits, reports.StatusFail, subj, err.Error(), nil)
		return false
	}
	r.res.Image[p.Name+"/"+how] = d
	switch {
	case d.NonFinite > 0:
		r.add(IDImageLogits, reports.StatusFail, subj, d.String(), det)
	case !d.SameArgmax() || d.RelRMS > v.bound:
		r.add(IDImageLogits, reports.StatusWarn, subj, fmt.Sprintf("beyond the text bound (rel RMS %g, same argmax): %s. Departures that apply: %s",
			v.bound, d, strings.Join(r.imageDepartures(p), ", ")), det)
	default:
		r.add(IDImageLogits, reports.StatusPass, subj, fmt.Sprintf("within the text bound (rel RMS %g): %s", v.bound, d), det)
	}
	return true
}

// imageDepartures names the departures that can move an image prompt's logits.
func (r *run) imageDepartures(p Prompt) []string {
	ds := []string{}
	if p.ImagePos(imageToken) > 0 || p.Image.Tiles < r.cfg.Vision.MaxNumTiles {
		ds = append(ds, "D4 cross-attention mask ("+IDCrossMask+")")
	}
	ds = append(ds, "D10 vision features ("+IDVisionFeatures+")", "D5/D7 vision encoder ("+IDVisionEncoder+")")
	for _, n := range r.res.Norms {
		if n.MaxRel > 0 {
			ds = append(ds, "D6 q_norm/k_norm ("+IDCrossNorms+")")
			break
		}
	}
	return ds
}

// ollamaPixels runs the image file through Ollama's own preprocessing.
func (r *run) ollamaPixels(p Prompt, want []float32) {
	if p.ImageFile == "" {
		return
	}
	v := r.variants()[0]
	img, err := decodeImage(p.ImageFile)
	if err != nil {
		r.add(IDImageLogits, reports.StatusFail, p.Name+" (Ollama's preprocessing)", err.Error(), nil)
		return
	}
	err = r.withEngine(v.path, v.cache, func(e *Engine) error {
		op, err := e.Preprocess(img)
		if err != nil {
			return err
		}
		st, err := e.EncodeImage(op.Pixels, op.AspectRatioID)
		if err != nil {
			return err
		}
		logits, _, err := e.LastLogits(p.IDs, st, p.ImagePos(imageToken))
		if err != nil {
			return err
		}
		if len(op.Pixels) != len(p.Image.Pixels) {
			return fmt.Errorf("preprocessing by Ollama made %d pixel values, transformers' pixel_values has %d", len(op.Pixels), len(p.Image.Pixels))
		}
		var maxPx float64
		for i := range op.Pixels {
			maxPx = math.Max(maxPx, math.Abs(float64(op.Pixels[i])-float64(p.Image.Pixels[i])))
		}
		if r.reportImage(p, "Ollama's preprocessing, "+v.name, v, want, logits) {
			c := &r.found[IDImageLogits][len(r.found[IDImageLogits])-1]
			c.Message += fmt.Sprintf(". Ollama's pixels: aspect-ratio id %d (transformers %d), %d tiles (transformers %d), max |Δpixel| %.3g against transformers' pixel_values",
				op.AspectRatioID, p.Image.AspectRatioID, op.Tiles, p.Image.Tiles, maxPx)
		}
		return nil
	})
	if err != nil {
		r.add(IDImageLogits, reports.StatusFail, p.Name+" (Ollama's preprocessing)", err.Error(), nil)
	}
}
