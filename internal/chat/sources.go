package chat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// Form is one way a model directory stores chat templates.
type Form string

// The storage forms, in the order transformers versions introduced them
// (chat-template-and-preprocessing.md §1).
const (
	// FormTokenizerConfig is tokenizer_config.json's "chat_template": a
	// string, or a list of {"name", "template"} (transformers ≤ 4.51).
	FormTokenizerConfig Form = "tokenizer_config.json"
	// FormJSON is chat_template.json, {"chat_template": T}, the processor's
	// template since transformers 4.43.
	FormJSON Form = "chat_template.json"
	// FormJinja is chat_template.jinja, the raw template (4.47+, the
	// default since 4.52 and the only form 5.x writes).
	FormJinja Form = "chat_template.jinja"
	// FormAdditional is additional_chat_templates/<name>.jinja, named
	// templates beside chat_template.jinja.
	FormAdditional Form = "additional_chat_templates"
	// FormProcessorConfig is processor_config.json's "chat_template",
	// which a 5.17 processor prefers over every file.
	FormProcessorConfig Form = "processor_config.json"
)

// DefaultName is the name of the template used when none is asked for.
const DefaultName = "default"

// MaxSideFileSize bounds the template and config files read here; real ones
// are well under a megabyte.
const MaxSideFileSize = 64 << 20

// MaxAdditionalTemplates bounds the files read from
// additional_chat_templates/; real models have one or two.
const MaxAdditionalTemplates = 256

// Stored is one storage form found in a directory.
type Stored struct {
	Form Form
	// Templates maps template names to sources. A form that holds a single
	// template holds it under DefaultName.
	Templates map[string]string
	// Named is true when the form holds named templates (a list in
	// tokenizer_config.json, files in additional_chat_templates/).
	Named bool
}

// Templates are the chat templates stored in a model directory.
type Templates struct {
	Dir string
	// Stored lists the forms present, in the order of the Form constants.
	Stored []Stored
}

// Loader names the transformers object whose template choice is modelled.
type Loader string

// The loaders whose choices differ (NOTES-ON-ISSUES item 9).
const (
	LoaderTokenizer Loader = "tokenizer"
	LoaderProcessor Loader = "processor"
)

// Loaded is the template set a transformers 5.17 loader ends up with.
type Loaded struct {
	Loader Loader
	// From names the forms the templates came from.
	From []Form
	// Templates maps names to sources; a single template is DefaultName.
	Templates map[string]string
	// Single is true when transformers holds one template as a string
	// rather than a dict of named templates.
	Single bool
}

// FindTemplates reads every chat-template storage form in dir. A directory
// without templates is not an error (base models ship none); a form that is
// present but malformed is.
func FindTemplates(dir string) (*Templates, error) {
	ts := &Templates{Dir: dir}
	add := func(s *Stored, err error) error {
		if err != nil {
			return err
		}
		if s != nil {
			ts.Stored = append(ts.Stored, *s)
		}
		return nil
	}
	if err := add(readTokenizerConfigTemplates(dir)); err != nil {
		return nil, err
	}
	if err := add(readJSONTemplate(dir)); err != nil {
		return nil, err
	}
	if err := add(readJinjaTemplate(dir)); err != nil {
		return nil, err
	}
	if err := add(readAdditionalTemplates(dir)); err != nil {
		return nil, err
	}
	if err := add(readProcessorConfigTemplate(dir)); err != nil {
		return nil, err
	}
	return ts, nil
}

// Get returns the stored form f, if present.
func (ts *Templates) Get(f Form) (Stored, bool) {
	for _, s := range ts.Stored {
		if s.Form == f {
			return s, true
		}
	}
	return Stored{}, false
}

// Forms lists the forms present.
func (ts *Templates) Forms() []Form {
	fs := make([]Form, len(ts.Stored))
	for i, s := range ts.Stored {
		fs[i] = s.Form
	}
	return fs
}

// For returns what loader l would load from the directory under
// transformers 5.17, or nil when it would load no template
// (chat-template-and-preprocessing.md §1.3). The error is the ValueError a
// 5.17 processor raises on chat_template.json combined with
// additional_chat_templates/.
func (ts *Templates) For(l Loader) (*Loaded, error) {
	switch l {
	case LoaderTokenizer:
		return ts.forTokenizer(), nil
	case LoaderProcessor:
		return ts.forProcessor()
	}
	return nil, fmt.Errorf("unknown loader %q", l)
}

// forTokenizer: chat_template.jinja and additional_chat_templates/ replace
// tokenizer_config.json's template entirely; chat_template.json is never
// read.
func (ts *Templates) forTokenizer() *Loaded {
	jinjaT, hasJinja := ts.Get(FormJinja)
	addl, hasAddl := ts.Get(FormAdditional)
	if hasJinja || hasAddl {
		return jinjaAndAdditional(LoaderTokenizer, jinjaT, hasJinja, addl, hasAddl)
	}
	if cfg, ok := ts.Get(FormTokenizerConfig); ok {
		return &Loaded{Loader: LoaderTokenizer, From: []Form{FormTokenizerConfig}, Templates: cfg.Templates, Single: !cfg.Named}
	}
	return nil
}

// forProcessor: processor_config.json's key wins; then chat_template.json
// (refused beside additional templates); then the .jinja files.
// tokenizer_config.json is never read.
func (ts *Templates) forProcessor() (*Loaded, error) {
	if pc, ok := ts.Get(FormProcessorConfig); ok {
		return &Loaded{Loader: LoaderProcessor, From: []Form{FormProcessorConfig}, Templates: pc.Templates, Single: !pc.Named}, nil
	}
	jinjaT, hasJinja := ts.Get(FormJinja)
	addl, hasAddl := ts.Get(FormAdditional)
	if js, ok := ts.Get(FormJSON); ok {
		if hasAddl {
			return nil, fmt.Errorf("%s: transformers 5.17 processors refuse to load: chat_template.json combined with additional_chat_templates/ (\"Cannot load chat template due to conflicting files\")", ts.Dir)
		}
		return &Loaded{Loader: LoaderProcessor, From: []Form{FormJSON}, Templates: js.Templates, Single: true}, nil
	}
	if hasJinja || hasAddl {
		return jinjaAndAdditional(LoaderProcessor, jinjaT, hasJinja, addl, hasAddl), nil
	}
	return nil, nil
}

func jinjaAndAdditional(l Loader, jinjaT Stored, hasJinja bool, addl Stored, hasAddl bool) *Loaded {
	ld := &Loaded{Loader: l, Templates: map[string]string{}}
	if hasAddl {
		ld.From = append(ld.From, FormAdditional)
		for k, v := range addl.Templates {
			ld.Templates[k] = v
		}
	}
	if hasJinja {
		ld.From = append([]Form{FormJinja}, ld.From...)
		ld.Templates[DefaultName] = jinjaT.Templates[DefaultName]
	}
	// Only chat_template.jinja on its own is held as a string.
	ld.Single = hasJinja && !hasAddl
	return ld
}

// Select picks the template transformers' get_chat_template would use: the
// one named, if given; else "tool_use" when tools are passed and it exists;
// else the default.
func (ld *Loaded) Select(name string, withTools bool) (string, string, error) {
	if name != "" {
		src, ok := ld.Templates[name]
		if !ok {
			return "", "", fmt.Errorf("%w: no chat template named %q (have %s)", ErrBadRequest, name, strings.Join(ld.Names(), ", "))
		}
		return name, src, nil
	}
	if withTools && !ld.Single {
		if src, ok := ld.Templates["tool_use"]; ok {
			return "tool_use", src, nil
		}
	}
	if src, ok := ld.Templates[DefaultName]; ok {
		return DefaultName, src, nil
	}
	return "", "", fmt.Errorf("%w: this model has multiple chat templates with no default specified (have %s)", ErrBadRequest, strings.Join(ld.Names(), ", "))
}

// Names lists the template names, sorted.
func (ld *Loaded) Names() []string {
	names := make([]string, 0, len(ld.Templates))
	for k := range ld.Templates {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Version names a known Llama 3.2 Vision Instruct template by the sha256 of
// its text: "v0" (the 557-byte processor template of 2024-09-25/26), "v1"
// (the release template), or "custom" (chat-template-and-preprocessing.md
// §2.1; v2's bytes were never obtained).
func Version(src string) string {
	sum := sha256.Sum256([]byte(src))
	switch hex.EncodeToString(sum[:]) {
	case "0859dabef7a030ee439d3f61137f2590be364f036b46f8a28fc3176dd2b1f68f":
		return "v0"
	case "e407323269d15bba92fc431b5b7d757e66d920d01b45cae58149a692d7697d3c":
		return "v1"
	}
	return "custom"
}

// readOptional reads a file that may be absent (nil, nil).
func readOptional(path string) ([]byte, error) {
	b, err := boundedio.ReadFile(path, MaxSideFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func readJinjaTemplate(dir string) (*Stored, error) {
	b, err := readOptional(filepath.Join(dir, string(FormJinja)))
	if b == nil || err != nil {
		return nil, err
	}
	return &Stored{Form: FormJinja, Templates: map[string]string{DefaultName: string(b)}}, nil
}

func readAdditionalTemplates(dir string) (*Stored, error) {
	d := filepath.Join(dir, string(FormAdditional))
	entries, err := os.ReadDir(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := &Stored{Form: FormAdditional, Templates: map[string]string{}, Named: true}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".jinja")
		if !ok || e.IsDir() {
			continue
		}
		if len(s.Templates) == MaxAdditionalTemplates {
			return nil, fmt.Errorf("%s: more than %d templates", d, MaxAdditionalTemplates)
		}
		b, err := boundedio.ReadFile(filepath.Join(d, e.Name()), MaxSideFileSize)
		if err != nil {
			return nil, err
		}
		s.Templates[name] = string(b)
	}
	if len(s.Templates) == 0 {
		return nil, nil
	}
	return s, nil
}

func readJSONTemplate(dir string) (*Stored, error) {
	path := filepath.Join(dir, string(FormJSON))
	b, err := readOptional(path)
	if b == nil || err != nil {
		return nil, err
	}
	var doc struct {
		ChatTemplate *string `json:"chat_template"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w (want {\"chat_template\": string})", path, err)
	}
	if doc.ChatTemplate == nil {
		return nil, fmt.Errorf("%s: no \"chat_template\" string", path)
	}
	return &Stored{Form: FormJSON, Templates: map[string]string{DefaultName: *doc.ChatTemplate}}, nil
}

func readTokenizerConfigTemplates(dir string) (*Stored, error) {
	return readConfigTemplate(filepath.Join(dir, string(FormTokenizerConfig)), FormTokenizerConfig)
}

func readProcessorConfigTemplate(dir string) (*Stored, error) {
	return readConfigTemplate(filepath.Join(dir, string(FormProcessorConfig)), FormProcessorConfig)
}

// readConfigTemplate reads the "chat_template" key of a config file: a
// string, a list of {"name", "template"}, or (processor_config.json) a dict
// of name to template.
func readConfigTemplate(path string, form Form) (*Stored, error) {
	b, err := readOptional(path)
	if b == nil || err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	raw, ok := doc["chat_template"]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var single string
	if err := json.Unmarshal(raw, &single); err == nil {
		return &Stored{Form: form, Templates: map[string]string{DefaultName: single}}, nil
	}
	var list []struct {
		Name     *string `json:"name"`
		Template *string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err == nil {
		s := &Stored{Form: form, Templates: map[string]string{}, Named: true}
		for i, e := range list {
			if e.Name == nil || e.Template == nil {
				return nil, fmt.Errorf("%s: chat_template[%d] lacks \"name\" or \"template\"", path, i)
			}
			s.Templates[*e.Name] = *e.Template
		}
		return s, nil
	}
	var dict map[string]string
	if err := json.Unmarshal(raw, &dict); err == nil && form == FormProcessorConfig {
		return &Stored{Form: form, Templates: dict, Named: true}, nil
	}
	return nil, fmt.Errorf("%s: \"chat_template\" is neither a string nor a list of {\"name\", \"template\"}", path)
}
