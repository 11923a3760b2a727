package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/reports"
)

// TemplateChecks is the template.* family: the chat template's storage
// forms, its renders against the base and the goldens, and the special
// tokens it relies on.
var TemplateChecks = []*Check{TemplatePresent, TemplateRender, TemplateGolden, TemplateSpecialTokens, TemplateImageToken}

// templateSuiteDate is the date_string of the built-in suite, the goldens' date,
// so that renders never depend on the wall clock.
const templateSuiteDate = "27 Nov 2026"

// templateSuiteClock is strftime_now's clock in the built-in suite.
func templateSuiteClock() time.Time { return time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC) }

// templateLoaders are the transformers objects whose template choice is checked.
var templateLoaders = []chat.Loader{chat.LoaderTokenizer, chat.LoaderProcessor}

// templateLoaderInfo describes what one loader would use, for report details.
type templateLoaderInfo struct {
	From    []chat.Form `json:"from"`
	Names   []string    `json:"names"`
	Version string      `json:"version,omitempty"`
	SHA256  string      `json:"sha256,omitempty"`
}

func describeLoaded(ld *chat.Loaded) *templateLoaderInfo {
	if ld == nil {
		return nil
	}
	info := &templateLoaderInfo{From: ld.From, Names: ld.Names()}
	if src, ok := ld.Templates[chat.DefaultName]; ok {
		sum := sha256.Sum256([]byte(src))
		info.Version, info.SHA256 = chat.Version(src), hex.EncodeToString(sum[:])
	}
	return info
}

func joinForms(fs []chat.Form) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, " + ")
}

// TemplatePresent reports the storage forms and which one each loader uses.
var TemplatePresent = &Check{
	ID: "template.present",
	Doc: `The model stores a chat template, and every copy of it agrees.
Reports the forms present (chat_template.jinja, additional_chat_templates/, chat_template.json,
tokenizer_config.json "chat_template", processor_config.json "chat_template"), which one a transformers 5.17
tokenizer and processor would each load, and the template's version (v0, v1 or custom, by sha256).
Warns when two forms hold different templates, naming the loader that sees each (a 5.17 tokenizer takes
chat_template.jinja, the processor prefers chat_template.json), and when neither the model nor the base has a
template (base models ship none). Fails when the model has none but the base has one, when a form is
malformed, or when chat_template.json sits beside additional_chat_templates/ (5.17 processors refuse that).`,
	Run: func(p *Pass) error {
		ts, err := chat.FindTemplates(p.Model)
		if err != nil {
			p.Failf("chat template", "%v", err)
			return nil
		}
		if len(ts.Stored) == 0 {
			var base *chat.Templates
			if p.Base != "" {
				base, _ = chat.FindTemplates(p.Base)
			}
			switch {
			case base != nil && len(base.Stored) > 0:
				p.Failf("chat template", "the model stores no chat template; the base stores one in %s", joinForms(base.Forms()))
			case base != nil:
				p.Warnf("chat template", "neither the model nor the base stores a chat template (base models ship none)")
			default:
				p.Failf("chat template", "no chat template in any form (chat_template.jinja, chat_template.json, tokenizer_config.json, processor_config.json)")
			}
			return nil
		}
		details := map[string]any{"forms": ts.Forms()}
		var parts []string
		for _, l := range templateLoaders {
			ld, err := ts.For(l)
			if err != nil {
				p.Failf(string(l), "%v", err)
				continue
			}
			details[string(l)] = describeLoaded(ld)
			if ld == nil {
				parts = append(parts, fmt.Sprintf("a transformers 5.17 %s loads no template", l))
				continue
			}
			info := describeLoaded(ld)
			parts = append(parts, fmt.Sprintf("the %s loads %s (%s)", l, joinForms(ld.From), info.Version))
		}
		p.Report(reports.StatusPass, "chat template", fmt.Sprintf("stored in %s; %s", joinForms(ts.Forms()), strings.Join(parts, "; ")), details)
		reportTemplateDisagreements(p, ts)
		return nil
	},
}

// reportTemplateDisagreements warns about forms whose templates differ.
func reportTemplateDisagreements(p *Pass, ts *chat.Templates) {
	for i := 0; i < len(ts.Stored); i++ {
		for j := i + 1; j < len(ts.Stored); j++ {
			a, b := ts.Stored[i], ts.Stored[j]
			for _, name := range sharedTemplateNames(a.Templates, b.Templates) {
				if a.Templates[name] == b.Templates[name] {
					continue
				}
				p.Warnf(string(a.Form)+" vs "+string(b.Form), "template %q differs between %s and %s (%s); %s",
					name, a.Form, b.Form, chat.DiffText(a.Templates[name], b.Templates[name], string(a.Form)), templateReaders(ts, a.Form, b.Form))
			}
		}
	}
}

func sharedTemplateNames(a, b map[string]string) []string {
	var names []string
	for k := range a {
		if _, ok := b[k]; ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names
}

// templateReaders says which loader reads which of two forms.
func templateReaders(ts *chat.Templates, a, b chat.Form) string {
	var says []string
	for _, l := range templateLoaders {
		ld, err := ts.For(l)
		if err != nil || ld == nil {
			continue
		}
		for _, f := range ld.From {
			if f == a || f == b {
				says = append(says, fmt.Sprintf("a transformers 5.17 %s uses %s", l, f))
			}
		}
	}
	if len(says) == 0 {
		return "no transformers 5.17 loader reads either, but other tools may (Ollama reads tokenizer_config.json)"
	}
	return strings.Join(says, ", ") + ": they render differently"
}

// templateSuiteJSON is the built-in conversation suite of template.render: plain
// and list content, images, several turns, a system message, tools, a tool
// call and its result, no generation prompt, and a case the Llama 3.2
// Vision template refuses (system message with an image).
const templateSuiteJSON = `[
 {"name": "text", "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe a sunset over the sea."}]}]},
 {"name": "string_content", "messages": [{"role": "user", "content": "What is 12 times 7?"}]},
 {"name": "system", "messages": [{"role": "system", "content": "  You answer in French.  "}, {"role": "user", "content": "Where is Lyon?"}]},
 {"name": "image", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}]},
 {"name": "two_images", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "text", "text": " these."}]}]},
 {"name": "multi_turn", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}, {"role": "assistant", "content": "A red box."}, {"role": "user", "content": "How big?"}]},
 {"name": "no_generation_prompt", "add_generation_prompt": false, "messages": [{"role": "user", "content": "Done."}, {"role": "assistant", "content": [{"type": "text", "text": "Bye."}]}]},
 {"name": "tools", "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
  "messages": [{"role": "user", "content": "Weather in Paris?"}]},
 {"name": "tool_call_and_result", "messages": [{"role": "user", "content": "Weather in Paris?"},
  {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
  {"role": "tool", "content": {"temperature": 21, "sky": "clear"}}]},
 {"name": "system_with_image", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]},
 {"name": "no_date_string", "no_date": true, "messages": [{"role": "user", "content": "Hello"}]}
]`

// templateSuiteCase is one conversation of the suite.
type templateSuiteCase struct {
	name string
	req  chat.Request
}

// suite builds the suite's requests with a directory's special tokens.
func templateSuite(special map[string]string) ([]templateSuiteCase, error) {
	v, err := chat.DecodeJSON([]byte(templateSuiteJSON))
	if err != nil {
		return nil, err
	}
	var out []templateSuiteCase
	for _, c := range v.AsList().Items {
		d := c.AsDict()
		name, _ := d.Get("name")
		msgs, _ := d.Get("messages")
		kw := jinja.NewDict()
		agp := jinja.NewBool(true)
		if v, ok := d.Get("add_generation_prompt"); ok {
			agp = v
		}
		kw.AsDict().Set("add_generation_prompt", agp)
		if v, ok := d.Get("tools"); ok {
			kw.AsDict().Set("tools", v)
		}
		if _, ok := d.Get("no_date"); !ok {
			kw.AsDict().Set("date_string", jinja.NewString(templateSuiteDate))
		}
		req, err := chat.NewRequest(msgs, kw, special)
		if err != nil {
			return nil, err
		}
		req.Now = templateSuiteClock
		out = append(out, templateSuiteCase{name: name.AsString(), req: req})
	}
	return out, nil
}

// renderOutcome is a render's text or the exception it raised.
type renderOutcome struct {
	text string
	err  *chat.TemplateError
}

func (o renderOutcome) String() string {
	if o.err != nil {
		return fmt.Sprintf("raises %s %q", o.err.Type, o.err.Message)
	}
	return fmt.Sprintf("%d bytes", len(o.text))
}

// render renders one request with a loaded template set.
func renderWith(ld *chat.Loaded, name string, req chat.Request) (renderOutcome, error) {
	_, src, err := ld.Select(name, !req.Tools.IsUndefined())
	if err != nil {
		return renderOutcome{}, err
	}
	tpl, err := chat.Compile(src)
	if err != nil {
		return renderOutcome{}, err
	}
	text, err := tpl.Render(req)
	var te *chat.TemplateError
	switch {
	case errors.As(err, &te):
		return renderOutcome{err: te}, nil
	case err != nil:
		return renderOutcome{}, err
	}
	return renderOutcome{text: text}, nil
}

// compareOutcomes describes how got differs from want (labelled wantName),
// or "" when they agree.
func compareOutcomes(want, got renderOutcome, wantName string) string {
	switch {
	case want.err != nil || got.err != nil:
		if want.err != nil && got.err != nil && *want.err == *got.err {
			return ""
		}
		return fmt.Sprintf("%s (%s: %s)", got, wantName, want)
	case want.text != got.text:
		return chat.DiffText(want.text, got.text, wantName)
	}
	return ""
}

// TemplateRender renders the built-in suite with the model's and the base's
// templates.
var TemplateRender = &Check{
	ID: "template.render",
	Doc: `The model's chat template renders a built-in conversation suite exactly as the base's does.
The suite covers text, string content, a system message, images, several turns, tools, a tool call and its
result, no generation prompt, a conversation the Llama 3.2 Vision template refuses (which must raise the same
message) and one without date_string (rendered with a fixed clock). Each directory renders with its own named
special tokens, for the template a transformers 5.17 tokenizer loads and for the one its processor loads.
Fails per loader and conversation, showing the first difference; skips a loader for which the base has no
template.`,
	Requires: []Input{NeedBase},
	Run: func(p *Pass) error {
		model, err := chat.FindTemplates(p.Model)
		if err != nil {
			p.Failf("chat template", "%v", err)
			return nil
		}
		base, err := chat.FindTemplates(p.Base)
		if err != nil {
			p.Skipf("chat template", "base: %v", err)
			return nil
		}
		modelSpecial, err := chat.LoadSpecialTokens(p.Model)
		if err != nil {
			p.Failf("special tokens", "%v", err)
			return nil
		}
		baseSpecial, err := chat.LoadSpecialTokens(p.Base)
		if err != nil {
			p.Skipf("special tokens", "base: %v", err)
			return nil
		}
		modelSuite, err := templateSuite(modelSpecial)
		if err != nil {
			return err
		}
		baseSuite, err := templateSuite(baseSpecial)
		if err != nil {
			return err
		}
		for _, l := range templateLoaders {
			bl, err := base.For(l)
			if err != nil || bl == nil {
				p.Skipf(string(l), "the base's %s loads no template", l)
				continue
			}
			ml, err := model.For(l)
			if err != nil {
				p.Failf(string(l), "%v", err)
				continue
			}
			if ml == nil {
				p.Failf(string(l), "the base's %s loads a template from %s; the model's loads none", l, joinForms(bl.From))
				continue
			}
			bad := 0
			for i, mc := range modelSuite {
				want, err := renderWith(bl, "", baseSuite[i].req)
				if err != nil {
					p.Skipf(string(l)+"/"+mc.name, "base: %v", err)
					continue
				}
				got, err := renderWith(ml, "", mc.req)
				if err != nil {
					p.Failf(string(l)+"/"+mc.name, "%v", err)
					bad++
					continue
				}
				if d := compareOutcomes(want, got, "base"); d != "" {
					p.Failf(string(l)+"/"+mc.name, "renders differently from the base: %s", d)
					bad++
				}
			}
			if bad == 0 {
				p.Passf(string(l), "%d conversations render as with the base's template (%s)", len(modelSuite), joinForms(ml.From))
			}
		}
		return nil
	},
}

// templateGoldenLoader returns what goldens.json was rendered with: transformers'
// tokenizer template when there is one, else the processor's (the fixture
// generator's rule).
func templateGoldenLoader(ts *chat.Templates) (*chat.Loaded, error) {
	if ld, err := ts.For(chat.LoaderTokenizer); err != nil || ld != nil {
		return ld, err
	}
	return ts.For(chat.LoaderProcessor)
}

// chatGoldens reads the chat parts of --golden's goldens.json for
// template.golden and tokenizer.golden. It skips the check and returns nil
// when the file cannot be read or holds no cases of the kind (cases counts
// them).
func chatGoldens(p *Pass, kind string, cases func(*chat.Goldens) int) *chat.Goldens {
	g, err := chat.LoadGoldens(filepath.Join(p.Golden, "goldens.json"))
	if err != nil {
		p.Skipf("goldens.json", "%v", err)
		return nil
	}
	if cases(g) == 0 {
		p.Skipf("goldens.json", "no %s cases", kind)
		return nil
	}
	return g
}

// TemplateGolden compares renders with goldens.json.
var TemplateGolden = &Check{
	ID: "template.golden",
	Doc: `The model's chat template renders every conversation of the goldens exactly as transformers did.
Each case of goldens.json "templates" is rendered with its messages and keyword arguments, by the template a
transformers 5.17 tokenizer loads (the processor's when the tokenizer has none), and tokenized with
add_special_tokens=False. The text must match byte for byte and the ids exactly; a case where transformers
raised must raise the same exception type and message. Fails per case.`,
	Requires: []Input{NeedGolden},
	Run: func(p *Pass) error {
		g := chatGoldens(p, "template", func(g *chat.Goldens) int { return len(g.Templates) })
		if g == nil {
			return nil
		}
		ts, err := chat.FindTemplates(p.Model)
		if err != nil {
			p.Failf("chat template", "%v", err)
			return nil
		}
		ld, err := templateGoldenLoader(ts)
		if err != nil || ld == nil {
			p.Failf("chat template", "no template to render the goldens with (%v)", err)
			return nil
		}
		tok, err := loadTokenizer(p.Model)
		if err != nil {
			p.Failf("tokenizer.json", "%v", err)
			return nil
		}
		bad := 0
		for _, name := range g.TemplateNames() {
			c := g.Templates[name]
			req, err := c.Request(tok.Named())
			if err != nil {
				p.Skipf(name, "goldens.json: %v", err)
				continue
			}
			got, err := renderWith(ld, "", req)
			if err != nil {
				p.Failf(name, "%v", err)
				bad++
				continue
			}
			want := renderOutcome{}
			if c.Rendered != nil {
				want.text = *c.Rendered
			} else {
				want.err = &chat.TemplateError{Type: c.ErrorType, Message: c.Error}
			}
			if d := compareOutcomes(want, got, "transformers"); d != "" {
				p.Failf(name, "differs from transformers: %s", d)
				bad++
				continue
			}
			if c.Rendered != nil && c.InputIDs != nil {
				if ids := tok.Encode(got.text, false); !slices.Equal(ids, c.InputIDs) {
					p.Failf(name, "renders right but tokenizes differently: %s", chat.DiffIDs(c.InputIDs, ids, "golden"))
					bad++
				}
			}
		}
		if bad == 0 {
			p.Passf("goldens.json", "%d conversations render and tokenize as transformers did (%s)", len(g.Templates), joinForms(ld.From))
		}
		return nil
	},
}

// chatProtocolTokens are the special tokens of the Llama 3.2 chat protocol.
var chatProtocolTokens = []string{"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|image|>", "<|python_tag|>", "<|eom_id|>"}

// TemplateSpecialTokens checks that the protocol's tokens are single ids.
var TemplateSpecialTokens = &Check{
	ID: "template.special_tokens",
	Doc: `Every special token of the chat protocol tokenizes as one special id.
Checks <|begin_of_text|>, <|start_header_id|>, <|end_header_id|>, <|eot_id|>, <|image|>, <|python_tag|>,
<|eom_id|> and the named special tokens of the tokenizer config (bos_token, eos_token, pad_token, …): each
must encode to exactly one id that tokenizer.json marks special. A token that falls apart into pieces would be
read by the model as text. Fails per token.`,
	Run: func(p *Pass) error {
		tok, err := loadTokenizer(p.Model)
		if err != nil {
			p.Failf("tokenizer.json", "%v", err)
			return nil
		}
		var sources []string
		if ts, err := chat.FindTemplates(p.Model); err == nil {
			for _, s := range ts.Stored {
				for _, src := range s.Templates {
					sources = append(sources, src)
				}
			}
		}
		wanted := append([]string(nil), chatProtocolTokens...)
		named := tok.Named()
		for _, k := range chat.NamedSpecialTokens {
			if v, ok := named[k]; ok && !slices.Contains(wanted, v) {
				wanted = append(wanted, v)
			}
		}
		special := tok.Special()
		bad := 0
		for _, w := range wanted {
			ids := tok.Encode(w, false)
			id, isSpecial := special[w]
			switch {
			case len(ids) != 1:
				p.Failf(w, "is not a single token: it encodes to %d ids %v; tokenizer.json has no added token %q", len(ids), ids, w)
				bad++
			case !isSpecial || id != ids[0]:
				p.Failf(w, "encodes to id %d, which tokenizer.json does not mark as a special added token", ids[0])
				bad++
			}
		}
		used := 0
		for _, w := range wanted {
			for _, src := range sources {
				if strings.Contains(src, w) {
					used++
					break
				}
			}
		}
		if bad == 0 {
			p.Passf("special tokens", "%d protocol and named special tokens are single special ids (%d appear literally in the template)", len(wanted), used)
		}
		return nil
	},
}

// defaultImageTokenIndex is MllamaConfig's default image_token_index.
const defaultImageTokenIndex = 128256

// TemplateImageToken checks <|image|> against config.json.
var TemplateImageToken = &Check{
	ID: "template.image_token",
	Doc: `The <|image|> token the template emits is the id config.json's image_token_index names.
The token must encode to one id equal to image_token_index (128256 when absent, transformers 5.17's default);
otherwise the model would look for image positions at the wrong id. Fails on any mismatch.`,
	Run: func(p *Pass) error {
		var cfg *mllama.Config
		if p.Env != nil && p.Env.Config != nil {
			cfg = p.Env.Config
		} else {
			var err error
			if cfg, err = mllama.LoadConfig(filepath.Join(p.Model, "config.json")); err != nil {
				p.Failf("config.json", "%v", err)
				return nil
			}
		}
		want, src := cfg.ImageTokenIndex, "image_token_index"
		if _, ok := cfg.Raw["image_token_index"]; !ok {
			want, src = defaultImageTokenIndex, "transformers' default image_token_index"
		}
		tok, err := loadTokenizer(p.Model)
		if err != nil {
			p.Failf("tokenizer.json", "%v", err)
			return nil
		}
		ids := tok.Encode("<|image|>", false)
		switch {
		case len(ids) != 1:
			p.Failf("<|image|>", "is not a single token (%d ids %v); %s is %d", len(ids), ids, src, want)
		case ids[0] != want:
			p.Failf("<|image|>", "has id %d, but %s is %d", ids[0], src, want)
		default:
			p.Passf("<|image|>", "id %d equals %s", want, src)
		}
		return nil
	},
}
