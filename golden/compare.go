package golden

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/vision"
	"github.com/ckptgate/ckptgate/reports"
)

// Tolerances separate changes within tolerance (warn) from changes beyond it
// (fail). Equal bytes are exact (pass) whatever the tolerances.
type Tolerances struct {
	// TensorRel bounds, for a tensor whose bytes changed, both the relative
	// RMS distance of its sampled values and the relative change of its L2
	// norm. The default, 2^-8, is the relative rounding error of a bf16
	// cast: a change that a re-rounding can explain, and no more.
	TensorRel float64
	// LogitsRelRMS bounds the relative RMS distance of the last-position
	// logits on the golden's top ids; the top-5 ids and the greedy tokens
	// must also be equal. The default, 1e-4, is forward.golden's bound:
	// float32 summation order moves these logits by about 1e-6.
	LogitsRelRMS float64
	// PixelAbs and MeanAbs bound preprocessed pixels and per-tile channel
	// means (vision.PixelTolerance and vision.MeanTolerance: one 8-bit
	// level after normalisation).
	PixelAbs, MeanAbs float64
}

// DefaultTolerances are the documented bounds.
var DefaultTolerances = Tolerances{TensorRel: 1.0 / 256, LogitsRelRMS: 1e-4, PixelAbs: vision.PixelTolerance, MeanAbs: vision.MeanTolerance}

// maxListed bounds the names listed in one message.
const maxListed = 10

// Compare judges got, a recording of the model under test made with want's
// inputs (RecordFor), against want. It returns findings with IDs
// "golden.<item>": pass for exact agreement (equivalent content stored in
// another form included, with a note), warn for a change within tolerance
// with the measured distance, fail for a change beyond it, and skip where
// there is nothing to compare.
func Compare(want, got *Golden, tol Tolerances) []reports.Check {
	c := &comparer{want: want, got: got, tol: tol}
	c.files()
	c.sideFile(ItemConfig, want.Config, got.Config)
	c.sideFile(ItemGenerationConfig, want.GenerationConfig, got.GenerationConfig)
	c.sideFile(ItemTokenizerConfig, want.TokenizerConfig, got.TokenizerConfig)
	c.sideFile(ItemImageProcessor, want.ImageProcessor, got.ImageProcessor)
	c.templates()
	c.tokenizer()
	c.tensors()
	c.source()
	c.renders()
	c.encodings()
	c.preprocess()
	c.forward()
	return c.out
}

type comparer struct {
	want, got *Golden
	tol       Tolerances
	out       []reports.Check
}

func (c *comparer) add(item string, st reports.Status, subject, msg string, details any) {
	f := reports.Check{ID: ID(item), Status: st, Subject: subject, Message: msg}
	if details != nil {
		f.Details = reports.MustDetails(details)
	}
	c.out = append(c.out, f)
}

// both handles an item that one side could not record or does not have;
// it returns true when both have it and the comparison goes on.
func (c *comparer) both(item, what string, wantHas, gotHas bool) bool {
	wantWhy, gotWhy := c.want.Missing[item], c.got.Missing[item]
	switch {
	case wantHas && gotHas:
		return true
	case wantHas:
		if gotWhy != "" {
			c.add(item, reports.StatusFail, what, fmt.Sprintf("the golden has %s; the model's could not be read: %s", what, gotWhy), nil)
		} else {
			c.add(item, reports.StatusFail, what, fmt.Sprintf("the golden has %s; the model has none", what), nil)
		}
	case gotHas:
		if wantWhy != "" {
			c.add(item, reports.StatusFail, what, fmt.Sprintf("the model has %s; the golden's could not be recorded (%s), so it cannot be compared", what, wantWhy), nil)
		} else {
			c.add(item, reports.StatusFail, what, fmt.Sprintf("the model has %s; the golden has none", what), nil)
		}
	default:
		switch {
		case wantWhy != "" && gotWhy != "":
			c.add(item, reports.StatusSkip, what, fmt.Sprintf("neither side has %s (golden: %s; model: %s)", what, wantWhy, gotWhy), nil)
		default:
			c.add(item, reports.StatusPass, what, fmt.Sprintf("neither the golden nor the model has %s", what), nil)
		}
	}
	return false
}

// files notes side files whose bytes changed; their content is judged by the
// other items.
func (c *comparer) files() {
	w := map[string]File{}
	for _, f := range c.want.Files {
		w[f.Name] = f
	}
	var same int
	var changed, added, removed []string
	for _, f := range c.got.Files {
		o, ok := w[f.Name]
		switch {
		case !ok:
			added = append(added, f.Name)
		case o.SHA256 == f.SHA256:
			same++
		default:
			changed = append(changed, f.Name)
		}
		delete(w, f.Name)
	}
	for n := range w {
		removed = append(removed, n)
	}
	sort.Strings(removed)
	if len(changed)+len(added)+len(removed) == 0 {
		c.add(ItemFiles, reports.StatusPass, "side files", fmt.Sprintf("%d side files byte-identical to the golden's", same), nil)
		return
	}
	var notes []string
	if len(changed) > 0 {
		notes = append(notes, "bytes differ: "+strings.Join(changed, ", "))
	}
	if len(added) > 0 {
		notes = append(notes, "only in the model: "+strings.Join(added, ", "))
	}
	if len(removed) > 0 {
		notes = append(notes, "only in the golden: "+strings.Join(removed, ", "))
	}
	c.add(ItemFiles, reports.StatusPass, "side files", fmt.Sprintf("%d side files byte-identical; note: %s (what they hold is judged by golden.config, golden.tokenizer_config, golden.chat_template and the other items)",
		same, strings.Join(notes, "; ")), map[string]any{"identical": same, "changed": changed, "added": added, "removed": removed})
}

// formNotes lists the differences between two recordings' storage forms.
func formNotes(want, got *SideFile) []string {
	var notes []string
	if want.File != got.File {
		notes = append(notes, fmt.Sprintf("stored in %s (golden: %s)", got.File, want.File))
	}
	for _, k := range unionKeys(want.Forms, got.Forms) {
		a, b := want.Forms[k], got.Forms[k]
		if a != b {
			notes = append(notes, fmt.Sprintf("%s: %s (golden: %s)", k, orNone(b), orNone(a)))
		}
	}
	if want.Version != got.Version {
		notes = append(notes, fmt.Sprintf("transformers_version %s (golden: %s)", orNone(got.Version), orNone(want.Version)))
	}
	return notes
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// sideFile compares a normalised side file.
func (c *comparer) sideFile(item string, want, got *SideFile) {
	if !c.both(item, item, want != nil, got != nil) {
		return
	}
	subject := got.File
	notes := formNotes(want, got)
	diffs := diffJSON("", map[string]any(want.Content), map[string]any(got.Content), 20)
	details := map[string]any{"notes": notes}
	if len(diffs) > 0 {
		details["differences"] = diffs
		c.add(item, reports.StatusFail, subject, fmt.Sprintf("content differs from the golden's (golden vs model): %s%s", strings.Join(diffs, "; "), noteSuffix(notes)), details)
		return
	}
	c.add(item, reports.StatusPass, subject, "content equal to the golden's"+noteSuffix(notes), details)
}

func noteSuffix(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return "; noted, not counted: " + strings.Join(notes, "; ")
}

// templates compares, per loader, the chat template transformers would use.
func (c *comparer) templates() {
	for _, l := range []string{"tokenizer", "processor"} {
		w, g := c.want.ChatTemplate[l], c.got.ChatTemplate[l]
		subject := l
		if why := c.got.Missing[ItemChatTemplate+"/"+l]; why != "" && w != nil {
			c.add(ItemChatTemplate, reports.StatusFail, subject, fmt.Sprintf("the golden's %s loads a template; the model's cannot: %s", l, why), nil)
			continue
		}
		switch {
		case w == nil && g == nil:
			if why := c.want.Missing[ItemChatTemplate]; why != "" {
				c.add(ItemChatTemplate, reports.StatusSkip, subject, "the golden's templates could not be read: "+why, nil)
			} else {
				c.add(ItemChatTemplate, reports.StatusPass, subject, fmt.Sprintf("neither the golden's nor the model's %s loads a chat template", l), nil)
			}
		case g == nil:
			c.add(ItemChatTemplate, reports.StatusFail, subject, fmt.Sprintf("the golden's %s loads a template from %s; the model's loads none", l, strings.Join(w.From, " + ")), nil)
		case w == nil:
			c.add(ItemChatTemplate, reports.StatusFail, subject, fmt.Sprintf("the model's %s loads a template from %s; the golden's loaded none", l, strings.Join(g.From, " + ")), nil)
		case w.SHA256 != g.SHA256:
			c.add(ItemChatTemplate, reports.StatusFail, subject, fmt.Sprintf("the %s's template differs from the golden's: %s %s, %d bytes (golden: %s %s, %d bytes); golden.renders shows what changes",
				l, g.Version, g.SHA256[:min(12, len(g.SHA256))], g.Bytes, w.Version, w.SHA256[:min(12, len(w.SHA256))], w.Bytes), map[string]any{"golden": w, "model": g})
		default:
			msg := fmt.Sprintf("the %s loads the golden's template (%s, %d bytes)", l, g.Version, g.Bytes)
			if !slices.Equal(w.From, g.From) {
				msg += fmt.Sprintf("; noted, not counted: from %s (golden: %s)", strings.Join(g.From, " + "), strings.Join(w.From, " + "))
			}
			c.add(ItemChatTemplate, reports.StatusPass, subject, msg, map[string]any{"golden": w, "model": g})
		}
	}
}

// tokenizer compares the tokenizer's fingerprint, pipeline and named tokens.
func (c *comparer) tokenizer() {
	w, g := c.want.Tokenizer, c.got.Tokenizer
	if !c.both(ItemTokenizer, "tokenizer.json", w != nil, g != nil) {
		return
	}
	var diffs, notes []string
	if w.Fingerprint != g.Fingerprint {
		diffs = append(diffs, fmt.Sprintf("vocabulary, merges or added tokens differ (fingerprint %s, golden %s; %d/%d/%d entries, golden %d/%d/%d)",
			g.Fingerprint, w.Fingerprint, g.VocabSize, g.Merges, g.Added, w.VocabSize, w.Merges, w.Added))
	}
	if w.Pipeline != g.Pipeline {
		diffs = append(diffs, "the normalizer, pre-tokenizer, post-processor or decoder differ")
	}
	for _, k := range unionKeys(w.Named, g.Named) {
		if w.Named[k] != g.Named[k] {
			diffs = append(diffs, fmt.Sprintf("%s is %q (golden: %q)", k, g.Named[k], w.Named[k]))
		}
	}
	if w.FileSHA256 != g.FileSHA256 {
		notes = append(notes, "tokenizer.json's bytes differ (serialisation)")
	}
	details := map[string]any{"golden": w, "model": g}
	if len(diffs) > 0 {
		c.add(ItemTokenizer, reports.StatusFail, "tokenizer.json", "differs from the golden's: "+strings.Join(diffs, "; ")+noteSuffix(notes), details)
		return
	}
	c.add(ItemTokenizer, reports.StatusPass, "tokenizer.json", fmt.Sprintf("vocabulary, merges, added tokens, pipeline and named special tokens equal to the golden's (%s)%s", g.Fingerprint, noteSuffix(notes)), details)
}

// unionKeys lists the keys of a and b, sorted.
func unionKeys[V any](a, b map[string]V) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// tensorChange classifies a tensor whose bytes differ by its statistics:
// within tolerance when the sampled values and the L2 norm moved by at most
// tol (relative), beyond otherwise. It returns the distances and why it is
// beyond when it cannot be measured.
func tensorChange(w, g *Stats, tol float64) (sampleRel, normRel float64, within bool, why string) {
	switch {
	case w == nil || g == nil:
		return 0, 0, false, "not a floating-point tensor: any change is beyond tolerance"
	case len(w.Sample) != len(g.Sample):
		return 0, 0, false, fmt.Sprintf("%d sampled values, the golden %d", len(g.Sample), len(w.Sample))
	case w.NaN != g.NaN || w.Inf != g.Inf:
		return 0, 0, false, fmt.Sprintf("%d NaN and %d infinite values (golden: %d and %d)", g.NaN, g.Inf, w.NaN, w.Inf)
	}
	sampleRel = relDistance(w.Sample, g.Sample)
	normRel = relChange(float64(w.L2), float64(g.L2))
	return sampleRel, normRel, sampleRel <= tol && normRel <= tol, ""
}

// relDistance is ‖g − w‖ / ‖w‖ over paired values (+Inf where a value is
// not finite on one side only, or ‖w‖ = 0 and g ≠ w).
func relDistance(w, g []Num) float64 {
	var d2, w2 float64
	for i := range w {
		a, b := float64(w[i]), float64(g[i])
		fa, fb := finite(a), finite(b)
		switch {
		case !fa || !fb:
			if a != b && !(math.IsNaN(a) && math.IsNaN(b)) {
				return math.Inf(1)
			}
		default:
			d2 += (b - a) * (b - a)
			w2 += a * a
		}
	}
	switch {
	case d2 == 0:
		return 0
	case w2 == 0:
		return math.Inf(1)
	}
	return math.Sqrt(d2 / w2)
}

func relChange(w, g float64) float64 {
	switch {
	case w == g:
		return 0
	case w == 0 || !finite(w) || !finite(g):
		return math.Inf(1)
	}
	return math.Abs(g-w) / math.Abs(w)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// jsonFloat keeps a distance JSON-safe in details (+Inf is written as -1).
func jsonFloat(x float64) float64 {
	if !finite(x) {
		return -1
	}
	return x
}

// tensorSet compares two sets of tensor records; what names the set in
// messages ("tensor", "source tensor").
func (c *comparer) tensorSet(item, what string, want, got map[string]*Tensor, notes []string) {
	var missing, extra []string
	for n := range want {
		if _, ok := got[n]; !ok {
			missing = append(missing, n)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			extra = append(extra, n)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		c.add(item, reports.StatusFail, what+" names", fmt.Sprintf("%d %ss of the golden are missing (%s); %d are not in the golden (%s)",
			len(missing), what, listSome(missing), len(extra), listSome(extra)), map[string]any{"missing": missing, "extra": extra})
	}
	names := make([]string, 0, len(want))
	for n := range want {
		if _, ok := got[n]; ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	exact, unhashed, chunkMoves := 0, 0, 0
	for _, n := range names {
		w, g := want[n], got[n]
		switch {
		case w.DType != g.DType || !slices.Equal(w.Shape, g.Shape):
			c.add(item, reports.StatusFail, n, fmt.Sprintf("%s %v (golden: %s %v)", g.DType, g.Shape, w.DType, w.Shape), nil)
			continue
		case w.SHA256 == "" || g.SHA256 == "":
			unhashed++
			continue
		}
		if w.Chunks != g.Chunks {
			chunkMoves++
		}
		if w.SHA256 == g.SHA256 {
			exact++
			continue
		}
		sampleRel, normRel, within, why := tensorChange(w.Stats, g.Stats, c.tol.TensorRel)
		details := map[string]any{"golden_sha256": w.SHA256, "model_sha256": g.SHA256, "sample_rel_rms": jsonFloat(sampleRel),
			"l2_rel_change": jsonFloat(normRel), "tolerance": c.tol.TensorRel}
		switch {
		case why != "":
			c.add(item, reports.StatusFail, n, fmt.Sprintf("beyond tolerance: bytes differ from the golden's and %s", why), details)
		case within:
			c.add(item, reports.StatusWarn, n, fmt.Sprintf("within tolerance: bytes differ from the golden's, but the %d sampled values moved by %.3g relative RMS and the L2 norm by %.3g relative (bound %.3g each): a re-rounding, or a change confined to elements outside the sample",
				len(g.Stats.Sample), sampleRel, normRel, c.tol.TensorRel), details)
		default:
			c.add(item, reports.StatusFail, n, fmt.Sprintf("beyond tolerance: sampled values %.3g relative RMS, L2 norm %.3g relative from the golden's (bound %.3g each)",
				sampleRel, normRel, c.tol.TensorRel), details)
		}
	}
	if chunkMoves > 0 {
		notes = append(notes, fmt.Sprintf("%d tensors are saved in a different number of chunks (world size or sharding changed)", chunkMoves))
	}
	if unhashed > 0 {
		notes = append(notes, fmt.Sprintf("%d tensors have no checksum on one side (saved out of element order and too large to assemble)", unhashed))
	}
	msg := fmt.Sprintf("%d of %d %ss bit-identical to the golden's (SHA-256 of the raw bytes)", exact, len(want), what)
	c.add(item, reports.StatusPass, what+"s", msg+noteSuffix(notes), map[string]any{"identical": exact, "compared": len(names), "notes": notes})
}

func listSome(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	if len(names) > maxListed {
		return strings.Join(names[:maxListed], ", ") + fmt.Sprintf(", … %d more", len(names)-maxListed)
	}
	return strings.Join(names, ", ")
}

// tensors compares the model's weights.
func (c *comparer) tensors() {
	w, g := c.want.Weights, c.got.Weights
	if !c.both(ItemTensors, "weights", w != nil, g != nil) {
		return
	}
	var notes []string
	if w.Layout != g.Layout {
		c.add(ItemTensors, reports.StatusFail, "layout", fmt.Sprintf("tensor names are in the %s layout (golden: %s)", g.Layout, w.Layout), nil)
	}
	if !slices.Equal(w.Files, g.Files) {
		notes = append(notes, fmt.Sprintf("weight files %s (golden: %s)", strings.Join(g.Files, ", "), strings.Join(w.Files, ", ")))
	}
	c.tensorSet(ItemTensors, "tensor", w.Tensors, g.Tensors, notes)
}

// source compares the training checkpoints.
func (c *comparer) source() {
	w, g := c.want.Source, c.got.Source
	switch {
	case w == nil && g == nil:
		if why := c.want.Missing[ItemSource]; why != "" {
			c.add(ItemSource, reports.StatusSkip, "source", "the golden's source could not be recorded: "+why, nil)
		} else {
			c.add(ItemSource, reports.StatusSkip, "source", "no source checkpoint recorded", nil)
		}
		return
	case g == nil:
		if why := c.got.Missing[ItemSource]; why != "" {
			c.add(ItemSource, reports.StatusFail, "source", "the source checkpoint could not be read: "+why, nil)
		} else {
			c.add(ItemSource, reports.StatusSkip, "source", "the golden records its source checkpoint; give the model's source (--source) to compare it", nil)
		}
		return
	case w == nil:
		c.add(ItemSource, reports.StatusSkip, "source", "the golden has no source checkpoint to compare with", nil)
		return
	}
	if w.Format != g.Format {
		c.add(ItemSource, reports.StatusFail, "format", fmt.Sprintf("the source is a %s checkpoint (golden: %s)", g.Format, w.Format), nil)
	}
	if w.Layout != g.Layout {
		c.add(ItemSource, reports.StatusFail, "layout", fmt.Sprintf("the source's names are in the %s layout (golden: %s): the training code's module tree changed", g.Layout, w.Layout), nil)
	}
	var notes []string
	if w.DCP != nil && g.DCP != nil {
		m, n := w.DCP, g.DCP
		if m.Version != n.Version {
			notes = append(notes, fmt.Sprintf("DCP metadata version %s (golden: %s)", orNone(n.Version), orNone(m.Version)))
		}
		if m.Entries != n.Entries {
			notes = append(notes, fmt.Sprintf("%d metadata entries (golden: %d)", n.Entries, m.Entries))
		}
		if !slices.Equal(m.BytesKeys, n.BytesKeys) {
			notes = append(notes, fmt.Sprintf("non-tensor items %v (golden: %v)", n.BytesKeys, m.BytesKeys))
		}
		if m.PlannerData != n.PlannerData {
			notes = append(notes, fmt.Sprintf("planner_data present: %v (golden: %v)", n.PlannerData, m.PlannerData))
		}
		switch {
		case m.Content != n.Content:
			notes = append(notes, ".metadata's entries or item placement (files, offsets, lengths) differ")
		case m.SHA256 != n.SHA256:
			notes = append(notes, ".metadata's bytes differ but its entries and item placement are equal (torch pickles the save's path, a random save_id and storage_data in the order its writer threads finish)")
		}
	} else if (w.DCP == nil) != (g.DCP == nil) {
		notes = append(notes, "DCP metadata recorded on one side only")
	}
	if !slices.Equal(w.Notes, g.Notes) {
		notes = append(notes, fmt.Sprintf("reader notes %q (golden: %q)", g.Notes, w.Notes))
	}
	c.tensorSet(ItemSource, "source tensor", w.Tensors, g.Tensors, notes)
}

// renders compares the template renders.
func (c *comparer) renders() {
	w, g := c.want.Renders, c.got.Renders
	if !c.both(ItemRenders, "renders", w != nil, g != nil) {
		return
	}
	names := slices.Sorted(maps.Keys(w))
	same := 0
	for _, n := range names {
		a, b := w[n], g[n]
		switch {
		case b == nil:
			c.add(ItemRenders, reports.StatusSkip, n, "this version of ckptgate does not render this conversation", nil)
		case a.Text == nil || b.Text == nil:
			if a.Text == nil && b.Text == nil && a.ErrorType == b.ErrorType && a.Error == b.Error {
				same++
				continue
			}
			c.add(ItemRenders, reports.StatusFail, n, fmt.Sprintf("renders %s (golden: %s)", outcome(b), outcome(a)), nil)
		case *a.Text != *b.Text:
			c.add(ItemRenders, reports.StatusFail, n, "renders differently from the golden: "+chat.DiffText(*a.Text, *b.Text, "golden"), nil)
		case !slices.Equal(a.IDs, b.IDs):
			c.add(ItemRenders, reports.StatusFail, n, "renders the same text but tokenizes differently: "+chat.DiffIDs(a.IDs, b.IDs, "golden"), nil)
		default:
			same++
		}
	}
	c.add(ItemRenders, reports.StatusPass, "renders", fmt.Sprintf("%d of %d conversations render and tokenize exactly as in the golden", same, len(names)), nil)
}

func outcome(r *Render) string {
	if r.Text != nil {
		return fmt.Sprintf("%d bytes", len(*r.Text))
	}
	return fmt.Sprintf("raises %s %q", r.ErrorType, r.Error)
}

// encodings compares the tokenizer's encodings.
func (c *comparer) encodings() {
	w, g := c.want.Encodings, c.got.Encodings
	if !c.both(ItemEncodings, "encodings", w != nil, g != nil) {
		return
	}
	byText := map[string]*Encoding{}
	for _, e := range g {
		byText[e.Text] = e
	}
	same := 0
	for _, a := range w {
		b := byText[a.Text]
		subject := fmt.Sprintf("%.40q", a.Text)
		switch {
		case b == nil:
			c.add(ItemEncodings, reports.StatusSkip, subject, "this version of ckptgate does not encode this string", nil)
		case !slices.Equal(a.IDs, b.IDs):
			c.add(ItemEncodings, reports.StatusFail, subject, "ids: "+chat.DiffIDs(a.IDs, b.IDs, "golden"), nil)
		case !slices.Equal(a.IDsWithBOS, b.IDsWithBOS):
			c.add(ItemEncodings, reports.StatusFail, subject, "ids with special tokens: "+chat.DiffIDs(a.IDsWithBOS, b.IDsWithBOS, "golden"), nil)
		case a.Decoded != b.Decoded:
			c.add(ItemEncodings, reports.StatusFail, subject, fmt.Sprintf("decodes to %q (golden: %q)", b.Decoded, a.Decoded), nil)
		default:
			same++
		}
	}
	c.add(ItemEncodings, reports.StatusPass, "encodings", fmt.Sprintf("%d of %d strings encode, encode with BOS and decode exactly as in the golden", same, len(w)), nil)
}

// preprocess compares the preprocessed images.
func (c *comparer) preprocess() {
	w, g := c.want.Preprocess, c.got.Preprocess
	if !c.both(ItemPreprocess, "preprocessed images", w != nil, g != nil) {
		return
	}
	same := 0
	for _, im := range c.want.Inputs.Images {
		a := w[im.Name]
		if a == nil {
			continue
		}
		b := g[im.Name]
		switch {
		case b == nil:
			why := c.got.Missing[ItemPreprocess+"/"+im.Name]
			if strings.HasPrefix(why, imageAbsent) {
				c.add(ItemPreprocess, reports.StatusSkip, im.Name, why, nil)
			} else {
				c.add(ItemPreprocess, reports.StatusFail, im.Name, "the golden preprocessed this image; the model's image processor could not: "+orNone(why), nil)
			}
			continue
		case a.SHA256 != b.SHA256:
			c.add(ItemPreprocess, reports.StatusSkip, im.Name, "the image file changed since the golden was recorded (its SHA-256 differs)", nil)
			continue
		case a.AspectRatioID != b.AspectRatioID || a.NumTiles != b.NumTiles || !slices.Equal(a.AspectRatioMask, b.AspectRatioMask) || !slices.Equal(a.Shape, b.Shape):
			c.add(ItemPreprocess, reports.StatusFail, im.Name, fmt.Sprintf("beyond tolerance: %d tiles, aspect_ratio_id %d, mask %v, shape %v (golden: %d tiles, aspect_ratio_id %d, mask %v, shape %v)",
				b.NumTiles, b.AspectRatioID, b.AspectRatioMask, b.Shape, a.NumTiles, a.AspectRatioID, a.AspectRatioMask, a.Shape), nil)
			continue
		case a.PixelSHA256 == b.PixelSHA256:
			same++
			continue
		}
		pix, okPix := maxAbsDiff(a.Sample, b.Sample)
		mean, okMean := maxMeanDiff(a.Means, b.Means)
		details := map[string]any{"max_sampled_pixel_diff": jsonFloat(pix), "max_mean_diff": jsonFloat(mean), "pixel_tolerance": c.tol.PixelAbs, "mean_tolerance": c.tol.MeanAbs}
		if okPix && okMean && pix <= c.tol.PixelAbs && mean <= c.tol.MeanAbs {
			c.add(ItemPreprocess, reports.StatusWarn, im.Name, fmt.Sprintf("within tolerance: pixel_values differ; sampled pixels by up to %.3g (bound %.3g), tile/channel means by up to %.3g (bound %.3g)",
				pix, c.tol.PixelAbs, mean, c.tol.MeanAbs), details)
		} else {
			c.add(ItemPreprocess, reports.StatusFail, im.Name, fmt.Sprintf("beyond tolerance: sampled pixels differ by up to %.3g (bound %.3g), tile/channel means by up to %.3g (bound %.3g)",
				pix, c.tol.PixelAbs, mean, c.tol.MeanAbs), details)
		}
	}
	c.add(ItemPreprocess, reports.StatusPass, "images", fmt.Sprintf("%d of %d images preprocess to bit-identical pixel_values", same, len(w)), nil)
}

// imageAbsent starts the reason recorded for an image file that is gone.
const imageAbsent = "image file not found"

// maxAbsDiff is the largest |a − b| over paired values (false when the
// lengths differ or a value is not finite on one side only).
func maxAbsDiff(a, b []Num) (float64, bool) {
	if len(a) != len(b) {
		return math.Inf(1), false
	}
	m := 0.0
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		if !finite(x) || !finite(y) {
			if x != y && !(math.IsNaN(x) && math.IsNaN(y)) {
				return math.Inf(1), false
			}
			continue
		}
		m = math.Max(m, math.Abs(x-y))
	}
	return m, true
}

func maxMeanDiff(a, b [][]Num) (float64, bool) {
	if len(a) != len(b) {
		return math.Inf(1), false
	}
	m := 0.0
	for i := range a {
		d, ok := maxAbsDiff(a[i], b[i])
		if !ok {
			return math.Inf(1), false
		}
		m = math.Max(m, d)
	}
	return m, true
}

// forward compares the forward outputs.
func (c *comparer) forward() {
	w, g := c.want.Forward, c.got.Forward
	if !c.both(ItemForward, "forward outputs", w != nil, g != nil) {
		return
	}
	names := slices.Sorted(maps.Keys(w))
	for _, n := range names {
		a, b := w[n], g[n]
		if b == nil {
			why := c.got.Missing[ItemForward+"/"+n]
			if img := c.got.Missing[ItemForward+"/image"]; a.Image != "" && img != "" {
				why = img
			}
			if strings.HasPrefix(why, imageAbsent) {
				c.add(ItemForward, reports.StatusSkip, n, why, nil)
			} else {
				c.add(ItemForward, reports.StatusFail, n, "the golden ran this prompt; the model could not: "+orNone(why), nil)
			}
			continue
		}
		c.forwardPrompt(n, a, b)
	}
}

// forwardPrompt judges one prompt's outputs.
func (c *comparer) forwardPrompt(name string, a, b *Forward) {
	if !slices.Equal(a.InputIDs, b.InputIDs) {
		c.add(ItemForward, reports.StatusFail, name, "the prompt tokenizes differently, so the outputs cannot be compared (see golden.renders and golden.tokenizer): "+chat.DiffIDs(a.InputIDs, b.InputIDs, "golden"), nil)
		return
	}
	if a.LogitsSHA256 == b.LogitsSHA256 && slices.Equal(a.Generated, b.Generated) {
		c.add(ItemForward, reports.StatusPass, name, fmt.Sprintf("bit-identical last-position logits and %d greedy tokens %v", len(b.Generated), b.Generated), nil)
		return
	}
	// The model's logits at the golden's top ids: all of them when the
	// model side was just recorded, else those in its own top list.
	var topOf map[int]float64
	if b.logits == nil {
		topOf = make(map[int]float64, len(b.TopIDs))
		for i, x := range b.TopIDs {
			if _, dup := topOf[x]; !dup {
				topOf[x] = float64(b.TopLogits[i])
			}
		}
	}
	at := func(id int) (float64, bool) {
		if b.logits != nil {
			if id >= 0 && id < len(b.logits) {
				return float64(b.logits[id]), true
			}
			return 0, false
		}
		v, ok := topOf[id]
		return v, ok
	}
	var d2, w2, maxAbs float64
	var pairs [][2]float64
	compared := 0
	for i, id := range a.TopIDs {
		y, ok := at(id)
		x := float64(a.TopLogits[i])
		if !ok || !finite(x) || !finite(y) {
			continue
		}
		compared++
		d2 += (y - x) * (y - x)
		w2 += x * x
		maxAbs = math.Max(maxAbs, math.Abs(y-x))
		pairs = append(pairs, [2]float64{x, y})
	}
	rel := math.Inf(1)
	switch {
	case compared < len(a.TopIDs):
	case d2 == 0:
		rel = 0
	case w2 > 0:
		rel = math.Sqrt(d2 / w2)
	}
	top := min(5, len(a.TopIDs), len(b.TopIDs))
	topEqual := slices.Equal(a.TopIDs[:top], b.TopIDs[:top])
	greedyEqual := slices.Equal(a.Generated, b.Generated)
	det := reports.LogitsDetails{Prompt: name, ALabel: "golden", BLabel: "model", TopIDsA: a.TopIDs[:top], TopIDsB: b.TopIDs[:top],
		RelRMS: jsonFloat(rel), KL: jsonFloat(topKL(a, b, at)), Sample: pairs}
	for i := 0; i < top; i++ {
		det.TopLogitsA = append(det.TopLogitsA, jsonFloat(float64(a.TopLogits[i])))
		det.TopLogitsB = append(det.TopLogitsB, jsonFloat(float64(b.TopLogits[i])))
	}
	measured := fmt.Sprintf("logits %.3g relative RMS on the golden's top %d ids (%d compared, max |Δ| %.3g; bound %.3g), top-5 ids %s, greedy tokens %s",
		rel, len(a.TopIDs), compared, maxAbs, c.tol.LogitsRelRMS, agree(topEqual), agree(greedyEqual))
	if !greedyEqual {
		measured += fmt.Sprintf(" (%v, golden %v)", b.Generated, a.Generated)
	}
	if topEqual && greedyEqual && rel <= c.tol.LogitsRelRMS {
		c.add(ItemForward, reports.StatusWarn, name, "within tolerance: "+measured, det)
		return
	}
	c.add(ItemForward, reports.StatusFail, name, "beyond tolerance: "+measured, det)
}

func agree(ok bool) string {
	if ok {
		return "equal"
	}
	return "differ"
}

// topKL is the part of KL(golden ‖ model) that the golden's top ids
// contribute, each side normalised by its own log-sum-exp over the whole
// vocabulary (the rest of the vocabulary is not recorded).
func topKL(a, b *Forward, at func(int) (float64, bool)) float64 {
	la, lb := float64(a.Stats.LogSumExp), float64(b.Stats.LogSumExp)
	if !finite(la) || !finite(lb) {
		return math.Inf(1)
	}
	kl := 0.0
	for i, id := range a.TopIDs {
		y, ok := at(id)
		x := float64(a.TopLogits[i])
		if !ok || !finite(x) || !finite(y) {
			continue
		}
		lp, lq := x-la, y-lb
		kl += math.Exp(lp) * (lp - lq)
	}
	return kl
}
