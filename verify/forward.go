package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/mem"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/reports"
)

// ForwardChecks is the forward.* family: the reference forward pass
// (internal/mllama, transformers 5.17's modeling_mllama in fp32) run on the
// model, and on the source, the base and the goldens when given.
var ForwardChecks = []*Check{ForwardSanity, ForwardGolden, ForwardSource, ForwardBase}

// The forward checks hold whole models in float32. With --forward auto
// they run only when the model's float32 weights stay under
// forwardAutoLimit and a third of the available memory, so that verify of
// an 11B model on an ordinary runner stays bounded by the streaming scan.
const forwardAutoLimit = 4 << 30

// forwardBudget returns why the forward checks do not run, or "".
func forwardBudget(p *Pass) string {
	switch p.Forward {
	case "off":
		return "the forward checks are off (--forward off)"
	case "on":
		return ""
	}
	var need int64
	for _, n := range p.Weights.Names() {
		t, _, _ := p.Weights.Info(n)
		need += t.NumElements() * 4
	}
	limit := int64(forwardAutoLimit)
	if avail := mem.Available(); avail > 0 {
		limit = min(limit, avail/3)
	}
	if need > limit {
		return fmt.Sprintf("the reference engine needs %.1f GB for the model's float32 weights (and as much again for the source or base); --forward auto runs it up to %.1f GB — pass --forward on to run it anyway",
			float64(need)/1e9, float64(limit)/1e9)
	}
	return ""
}

// release drops a model and returns its memory before the next one loads,
// so the checks hold one model at a time.
func release() {
	runtime.GC()
	debug.FreeOSMemory()
}

// builtinTokens is how many tokens the checks generate greedily per built-in
// prompt.
const builtinTokens = 8

// builtinDate is the date_string the built-in prompts render with, so that
// their token ids do not change with the calendar.
const builtinDate = "27 Nov 2026"

// builtinPrompts are the conversations the checks run: one text-only (the
// cross-attention layers are skipped) and one with an image.
var builtinPrompts = []struct {
	name, messages string
	image          bool
}{
	{"text", `[{"role": "user", "content": [{"type": "text", "text": "Describe a sunset over the sea in one sentence."}]}]`, false},
	{"image", `[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}]`, true},
}

// builtinImage is a fixed 640×480 picture (a sky-to-sea gradient with a red
// box and a yellow disc): not a multiple of the tile size, so the resize and
// the padding both run, and 2×2 tiles for 560-pixel tiles.
func builtinImage() image.Image {
	img := image.NewRGBA(image.Rect(0, 0, 640, 480))
	for y := 0; y < 480; y++ {
		for x := 0; x < 640; x++ {
			c := color.RGBA{uint8(40 + y/4), uint8(90 + x/8), uint8(200 - y/3), 255}
			if x > 80 && x < 260 && y > 260 && y < 420 {
				c = color.RGBA{200, 30, 30, 255}
			}
			if dx, dy := x-460, y-150; dx*dx+dy*dy < 70*70 {
				c = color.RGBA{240, 220, 40, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// prompted is a built-in prompt prepared for the model, or why it could not
// be.
type prompted struct {
	name   string
	prompt mllama.Prompt
	err    error
}

// forwardState is what the forward checks of one run share, computed once:
// the model in the engine, the built-in prompts, and the model's outputs.
type forwardState struct {
	model   *mllama.Model
	err     error // the model cannot be run at all
	skip    string
	proc    *mllama.Processor // nil when the side files cannot build prompts
	prompts []prompted
	outs    map[string]*mllama.Generation
	outErrs map[string]error
}

// forwardOf returns the run's shared forward state, loading the model and
// running the prompts once for all forward.* checks.
func forwardOf(p *Pass) *forwardState {
	if p.Env == nil {
		st := &forwardState{}
		st.load(p)
		return st
	}
	return p.Env.Shared("forward", func() any {
		st := &forwardState{}
		st.load(p)
		return st
	}).(*forwardState)
}

func (st *forwardState) load(p *Pass) {
	if p.Env == nil || p.Weights == nil || p.Config == nil {
		st.skip = "the model's weights or config.json could not be read (see the files and format checks)"
		return
	}
	if why := forwardBudget(p); why != "" {
		st.skip = why
		return
	}
	st.model, st.err = mllama.New(p.Config, p.Weights, p.Jobs)
	if st.err != nil {
		return
	}
	proc, err := mllama.LoadProcessor(p.Model, p.Config)
	st.proc = proc
	for _, bp := range builtinPrompts {
		pr := prompted{name: bp.name, err: err}
		if err == nil {
			var imgs []image.Image
			if bp.image {
				imgs = append(imgs, builtinImage())
			}
			var prep *mllama.Prepared
			msgs, err := chat.DecodeJSON([]byte(bp.messages))
			if err == nil {
				prep, err = proc.Prepare(msgs, imgs, builtinDate)
			}
			if pr.err = err; err == nil {
				pr.prompt = prep.Prompt
			}
		}
		st.prompts = append(st.prompts, pr)
	}
	st.outs, st.outErrs = generateAll(st.model, st.prompts)
}

// engine returns the model, loading it again if release dropped it.
func (st *forwardState) engine(p *Pass) (*mllama.Model, error) {
	if st.model == nil {
		st.model, st.err = mllama.New(p.Config, p.Weights, p.Jobs)
	}
	return st.model, st.err
}

// drop releases the model's weights; the outputs of the built-in prompts
// stay.
func (st *forwardState) drop() {
	st.model = nil
	release()
}

// generateAll runs every prepared prompt through m.
func generateAll(m *mllama.Model, prompts []prompted) (map[string]*mllama.Generation, map[string]error) {
	outs, errs := map[string]*mllama.Generation{}, map[string]error{}
	for _, pr := range prompts {
		if pr.err != nil {
			continue
		}
		g, err := m.Generate(pr.prompt, builtinTokens, nil)
		if err != nil {
			errs[pr.name] = err
			continue
		}
		outs[pr.name] = g
	}
	return outs, errs
}

// ready reports the state's problems and returns whether the model ran.
func (st *forwardState) ready(p *Pass) bool {
	switch {
	case st.skip != "":
		p.Skipf("", "%s", st.skip)
		return false
	case st.err != nil:
		p.Failf("", "the reference engine cannot run the model: %v", st.err)
		return false
	}
	return true
}

// each calls fn for every built-in prompt the model ran on, and reports the
// others.
func (st *forwardState) each(p *Pass, fn func(name string, prompt mllama.Prompt, out *mllama.Generation)) {
	for _, pr := range st.prompts {
		switch {
		case pr.err != nil:
			p.Skipf(pr.name, "cannot build the %s prompt from the model's template, tokenizer and processor config: %v", pr.name, pr.err)
		case st.outErrs[pr.name] != nil:
			p.Failf(pr.name, "the reference engine failed on the %s prompt: %v", pr.name, st.outErrs[pr.name])
		default:
			fn(pr.name, pr.prompt, st.outs[pr.name])
		}
	}
}

// degenerate says what is wrong with a logit vector that no trained model
// produces: non-finite values, all-equal values, or a uniform distribution.
func degenerate(logits []float32) string {
	bad := 0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range logits {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			bad++
			continue
		}
		lo, hi = math.Min(lo, f), math.Max(hi, f)
	}
	switch {
	case bad > 0:
		return fmt.Sprintf("%d of %d logits are NaN or infinite", bad, len(logits))
	case hi-lo < 1e-6:
		return fmt.Sprintf("all %d logits are equal (%g)", len(logits), lo)
	case mllama.Entropy(logits) > math.Log(float64(len(logits)))-1e-3:
		return fmt.Sprintf("the distribution is uniform (entropy %.4f nats of at most %.4f)", mllama.Entropy(logits), math.Log(float64(len(logits))))
	}
	return ""
}

// ForwardSanity runs the built-in prompts on the model.
var ForwardSanity = &Check{
	ID: "forward.sanity",
	Doc: `The model runs in the reference engine and its logits are sane on the built-in prompts.
The built-in prompts are a text-only and an image conversation, rendered with the model's chat template
(date_string "27 Nov 2026"), tokenized with its tokenizer and, for the image, preprocessed with its image
processor config; the engine prefills each and decodes 8 tokens greedily. Fails when the engine cannot load
the weights with the model's config, or when the last prompt position's logits are NaN or infinite, all equal,
or uniform. Passes with the entropy, the top-5 ids and the greedy tokens. A prompt the model's side files
cannot build is skipped with the reason.`,
	Run: func(p *Pass) error {
		st := forwardOf(p)
		if !st.ready(p) {
			return nil
		}
		st.each(p, func(name string, _ mllama.Prompt, out *mllama.Generation) {
			top := mllama.TopK(out.Logits, 5)
			det := reports.LogitsDetails{Prompt: name, ALabel: "model", TopIDsA: top, TopLogitsA: logitsAt(out.Logits, top)}
			if why := degenerate(out.Logits); why != "" {
				p.Report(reports.StatusFail, name, fmt.Sprintf("%s prompt: %s", name, why), det)
				return
			}
			p.Report(reports.StatusPass, name, fmt.Sprintf("%s prompt: entropy %.3f nats (uniform: %.3f), top-5 ids %v, greedy %v",
				name, mllama.Entropy(out.Logits), math.Log(float64(len(out.Logits))), top, out.Tokens), det)
		})
		return nil
	},
}

// ForwardSource compares the model with the source checkpoint through the
// same engine.
var ForwardSource = &Check{
	ID: "forward.source",
	Doc: `The model computes what the training checkpoint computes.
The source checkpoint's tensors (read by the converter's readers, upcast to float32) and the model's weights
run the built-in prompts in the same engine with the model's config. Fails when KL(source ‖ model) of the
last prompt position's distribution exceeds the policy's max_source_kl (default 1e-3 nats): a bf16 or fp16
cast of the weights moves it far less. Warns when the top-5 ids or the greedy tokens differ within that
bound (a near-tie that rounding may flip); the message gives the margin. Passes otherwise, with the KL,
the relative RMS distance of the logits and the top-5 and greedy agreement.`,
	Requires: []Input{NeedSource},
	Run: func(p *Pass) error {
		st := forwardOf(p)
		if !st.ready(p) {
			return nil
		}
		st.drop()
		src, err := mllama.FromCheckpoint(p.Config, p.Source, p.Jobs)
		if err != nil {
			p.Failf("", "the reference engine cannot run the source with the model's config: %v", err)
			return nil
		}
		outs, errs := generateAll(src, st.prompts)
		src = nil
		release()
		bound := thresholds(p).MaxSourceKL
		st.each(p, func(name string, _ mllama.Prompt, out *mllama.Generation) {
			s, ok := outs[name]
			if !ok {
				p.Failf(name, "the reference engine failed on the source for the %s prompt: %v", name, errs[name])
				return
			}
			cmp := compareLogits(name, "source", "model", s, out)
			msg := fmt.Sprintf("%s prompt: KL(source ‖ model) %.3g nats (bound %.3g), %s", name, cmp.KL, bound, cmp.summary())
			switch {
			case cmp.identical:
				p.Report(reports.StatusPass, name, fmt.Sprintf("%s prompt: identical logits and greedy tokens", name), cmp.LogitsDetails)
			case cmp.KL > bound || math.IsNaN(cmp.KL):
				p.Report(reports.StatusFail, name, msg, cmp.LogitsDetails)
			case !cmp.topEqual || !cmp.greedyEqual:
				p.Report(reports.StatusWarn, name, msg+"; "+cmp.divergence(), cmp.LogitsDetails)
			default:
				p.Report(reports.StatusPass, name, msg, cmp.LogitsDetails)
			}
		})
		return nil
	},
}

// ForwardBase compares the model with its base through the same engine.
var ForwardBase = &Check{
	ID: "forward.base",
	Doc: `The fine-tune moved the model's outputs away from the base's, and not to garbage.
The base's and the model's weights run the built-in prompts in the same engine. Fails when the model's logits
are degenerate (NaN or infinite, all equal, uniform) where the base's are not. Warns when the model's outputs
equal the base's on every prompt (nothing was fine-tuned, or the base was converted instead of the run); a
single unchanged prompt passes (a text-only prompt does not reach trained cross-attention layers). Passes
with KL(base ‖ model), the relative RMS distance and the top-5 and greedy agreement.`,
	Requires: []Input{NeedBase},
	Run: func(p *Pass) error {
		st := forwardOf(p)
		if !st.ready(p) {
			return nil
		}
		if p.BaseWeights == nil || p.BaseConfig == nil {
			p.Skipf("", "the base's weights or config.json could not be read: %v", p.BaseWeightsErr)
			return nil
		}
		st.drop()
		base, err := mllama.New(p.BaseConfig, p.BaseWeights, p.Jobs)
		if err != nil {
			p.Failf("", "the reference engine cannot run the base: %v", err)
			return nil
		}
		outs, errs := generateAll(base, st.prompts)
		base = nil
		release()
		ran, unchanged := 0, 0
		st.each(p, func(name string, _ mllama.Prompt, out *mllama.Generation) {
			b, ok := outs[name]
			if !ok {
				p.Failf(name, "the reference engine failed on the base for the %s prompt: %v", name, errs[name])
				return
			}
			ran++
			cmp := compareLogits(name, "base", "model", b, out)
			why, baseWhy := degenerate(out.Logits), degenerate(b.Logits)
			switch {
			case why != "" && baseWhy == "":
				p.Report(reports.StatusFail, name, fmt.Sprintf("%s prompt: the fine-tune made the outputs garbage: %s", name, why), cmp.LogitsDetails)
			case why != "":
				p.Report(reports.StatusWarn, name, fmt.Sprintf("%s prompt: the base's outputs are degenerate too: %s", name, baseWhy), cmp.LogitsDetails)
			case cmp.identical:
				unchanged++
				p.Report(reports.StatusPass, name, fmt.Sprintf("%s prompt: the model's logits equal the base's", name), cmp.LogitsDetails)
			default:
				p.Report(reports.StatusPass, name, fmt.Sprintf("%s prompt: KL(base ‖ model) %.3g nats, %s", name, cmp.KL, cmp.summary()), cmp.LogitsDetails)
			}
		})
		if ran > 0 && unchanged == ran {
			p.Warnf("", "the model's outputs equal the base's on every built-in prompt: was anything fine-tuned?")
		}
		return nil
	},
}

// comparison is two generations of one prompt side by side.
type comparison struct {
	reports.LogitsDetails
	identical, topEqual, greedyEqual bool
	maxAbs                           float64
	a, b                             *mllama.Generation
}

func compareLogits(prompt, aLabel, bLabel string, a, b *mllama.Generation) *comparison {
	c := &comparison{a: a, b: b}
	c.Prompt, c.ALabel, c.BLabel = prompt, aLabel, bLabel
	c.TopIDsA, c.TopIDsB = mllama.TopK(a.Logits, 5), mllama.TopK(b.Logits, 5)
	c.TopLogitsA, c.TopLogitsB = logitsAt(a.Logits, c.TopIDsA), logitsAt(b.Logits, c.TopIDsB)
	c.KL = mllama.KL(a.Logits, b.Logits)
	c.RelRMS, c.maxAbs = mllama.RelRMS(b.Logits, a.Logits)
	c.topEqual = slices.Equal(c.TopIDsA, c.TopIDsB)
	c.greedyEqual = slices.Equal(a.Tokens, b.Tokens)
	c.identical = c.maxAbs == 0 && c.greedyEqual
	c.Sample = sampleLogits(a.Logits, b.Logits, 2000)
	return c
}

func (c *comparison) summary() string {
	agree := func(ok bool) string {
		if ok {
			return "equal"
		}
		return "differ"
	}
	return fmt.Sprintf("logits relative RMS %.3g (max |Δ| %.3g), top-5 ids %s, %d greedy tokens %s",
		c.RelRMS, c.maxAbs, agree(c.topEqual), len(c.b.Tokens), agree(c.greedyEqual))
}

// divergence describes where two greedy runs part and how close the call
// was on the first position.
func (c *comparison) divergence() string {
	var parts []string
	if !c.topEqual {
		parts = append(parts, fmt.Sprintf("top-5 %s %v vs %s %v", c.ALabel, c.TopIDsA, c.BLabel, c.TopIDsB))
	}
	if !c.greedyEqual {
		i := 0
		for i < len(c.a.Tokens) && i < len(c.b.Tokens) && c.a.Tokens[i] == c.b.Tokens[i] {
			i++
		}
		parts = append(parts, fmt.Sprintf("greedy tokens part at step %d (%s %v, %s %v)", i, c.ALabel, c.a.Tokens, c.BLabel, c.b.Tokens))
	}
	if len(c.TopLogitsA) > 1 {
		parts = append(parts, fmt.Sprintf("%s's top-2 margin is %.3g", c.ALabel, c.TopLogitsA[0]-c.TopLogitsA[1]))
	}
	return strings.Join(parts, "; ")
}

func logitsAt(x []float32, ids []int) []float64 {
	out := make([]float64, len(ids))
	for i, id := range ids {
		out[i] = float64(x[id])
	}
	return out
}

// sampleLogits pairs a's and b's logits for a scatter plot: a's top 100 and
// an even stride through the rest, at most n points.
func sampleLogits(a, b []float32, n int) [][2]float64 {
	if len(a) != len(b) || len(a) == 0 {
		return nil
	}
	seen := map[int]bool{}
	var out [][2]float64
	add := func(i int) {
		if !seen[i] && !math.IsNaN(float64(a[i])) && !math.IsNaN(float64(b[i])) &&
			!math.IsInf(float64(a[i]), 0) && !math.IsInf(float64(b[i]), 0) {
			seen[i] = true
			out = append(out, [2]float64{float64(a[i]), float64(b[i])})
		}
	}
	for _, i := range mllama.TopK(a, 100) {
		add(i)
	}
	step := max(1, len(a)/max(1, n-len(out)))
	for i := 0; i < len(a) && len(out) < n; i += step {
		add(i)
	}
	return out
}

func thresholds(p *Pass) Thresholds {
	if p.Policy != nil {
		return p.Policy.Thresholds
	}
	d, _ := LoadPolicy("")
	return d.Thresholds
}

// ForwardGolden compares the model with recorded Hugging Face goldens.
var ForwardGolden = &Check{
	ID: "forward.golden",
	Doc: `The model reproduces the forward goldens transformers recorded.
For every entry of goldens.json's "forward" with its golden-<name>.safetensors (the exact input_ids,
pixel_values, aspect_ratio_ids, aspect_ratio_mask and cross_attention_mask transformers built, and the last
position's logits it computed), the engine runs those inputs and generates as many tokens greedily as the
golden did. Fails when the file's input_ids differ from goldens.json's, when the model's tokenizer does not
turn the golden's rendered prompt into those ids, when the top-5 ids or the greedy tokens differ, or when the
logits are further than the policy's max_golden_rel_rms (default 1e-4) relative RMS from the golden's. A
golden made on other weights (another run, another dtype) fails by design. Skips without forward goldens.`,
	Requires: []Input{NeedGolden},
	Run: func(p *Pass) error {
		st := forwardOf(p)
		if !st.ready(p) {
			return nil
		}
		path := filepath.Join(p.Golden, "goldens.json")
		entries, err := readForwardGoldens(path)
		if errors.Is(err, fs.ErrNotExist) {
			// A golden recorded by `ckptgate golden record` keeps its forward
			// outputs in golden.json; golden.forward compares those.
			p.Skipf("", "%s has no goldens.json with forward goldens", p.Golden)
			return nil
		}
		if err != nil {
			p.Failf("", "%v", err)
			return nil
		}
		if len(entries) == 0 {
			p.Skipf("", "%s has no forward goldens", path)
			return nil
		}
		var tok *chat.Tokenizer
		var tokErr error
		if st.proc != nil {
			tok = st.proc.Tokenizer
		} else {
			tok, tokErr = chat.LoadTokenizer(p.Model)
		}
		bound := thresholds(p).MaxGoldenRelRMS
		names := slices.Sorted(maps.Keys(entries))
		m, err := st.engine(p)
		if err != nil {
			p.Failf("", "the reference engine cannot run the model: %v", err)
			return nil
		}
		for _, name := range names {
			checkGolden(p, m, name, entries[name], tok, tokErr, bound)
		}
		return nil
	},
}

// forwardGolden is one goldens.json "forward" entry.
type forwardGolden struct {
	Rendered  string `json:"rendered"`
	InputIDs  []int  `json:"input_ids"`
	Generated []int  `json:"generated"`
}

// maxGoldenFile bounds goldens.json; the dev fixtures' is under 200 kB.
const maxGoldenFile = 64 << 20

func readForwardGoldens(path string) (map[string]forwardGolden, error) {
	b, err := boundedio.ReadFile(path, maxGoldenFile)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Forward map[string]forwardGolden `json:"forward"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc.Forward, nil
}

func checkGolden(p *Pass, m *mllama.Model, name string, g forwardGolden, tok *chat.Tokenizer, tokErr error, bound float64) {
	file := filepath.Join(p.Golden, "golden-"+name+".safetensors")
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		p.Skipf(name, "goldens.json has a forward golden %q but %s does not exist", name, file)
		return
	}
	in, ref, err := mllama.ReadGoldenInputs(file, m.Config)
	if err != nil {
		p.Failf(name, "%v", err)
		return
	}
	var problems []string
	if !slices.Equal(in.IDs, g.InputIDs) {
		problems = append(problems, fmt.Sprintf("%s's input_ids %v differ from goldens.json's %v", filepath.Base(file), in.IDs, g.InputIDs))
	}
	tokNote := "the model has no tokenizer to check the ids with"
	if tokErr == nil {
		tokNote = "the model's tokenizer gives the golden's ids"
		if ids := tok.Encode(g.Rendered, false); !slices.Equal(ids, g.InputIDs) {
			problems = append(problems, fmt.Sprintf("the model's tokenizer turns the golden's rendered prompt into %v, not %v", ids, g.InputIDs))
		}
	} else if !errors.Is(tokErr, os.ErrNotExist) {
		problems = append(problems, fmt.Sprintf("the model's tokenizer cannot be loaded: %v", tokErr))
	}
	out, err := m.Generate(in, len(g.Generated), nil)
	if err != nil {
		p.Failf(name, "the reference engine failed on the golden's inputs: %v", err)
		return
	}
	gold := &mllama.Generation{Logits: ref, Tokens: g.Generated}
	cmp := compareLogits(name, "golden", "model", gold, out)
	if !cmp.topEqual {
		problems = append(problems, fmt.Sprintf("top-5 ids %v, the golden's %v", cmp.TopIDsB, cmp.TopIDsA))
	}
	if !cmp.greedyEqual {
		problems = append(problems, fmt.Sprintf("greedy tokens %v, the golden's %v", out.Tokens, g.Generated))
	}
	if !(cmp.RelRMS <= bound) {
		problems = append(problems, fmt.Sprintf("last logits %.3g relative RMS from the golden's (bound %.3g, max |Δ| %.3g)", cmp.RelRMS, bound, cmp.maxAbs))
	}
	if len(problems) > 0 {
		p.Report(reports.StatusFail, name, strings.Join(problems, "; "), cmp.LogitsDetails)
		return
	}
	p.Report(reports.StatusPass, name, fmt.Sprintf("%d input ids equal (%s); last logits %.3g relative RMS from the golden's (bound %.3g, max |Δ| %.3g); top-5 ids and %d greedy tokens equal",
		len(in.IDs), tokNote, cmp.RelRMS, bound, cmp.maxAbs, len(out.Tokens)), cmp.LogitsDetails)
}
