package chat

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/ardanlabs/jinja"
	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// Goldens are the chat parts of a goldens.json in the dev-fixture format:
// what transformers rendered and how its tokenizer tokenized.
type Goldens struct {
	DateString string `json:"date_string"`
	// Templates maps a case name to one apply_chat_template call.
	Templates map[string]TemplateCase `json:"templates"`
	// Tokenizer holds tokenizer cases.
	Tokenizer []TokenizerCase `json:"tokenizer"`
	// TokenizerFingerprint is the Fingerprint of the tokenizer the goldens
	// were made with, when the recorder wrote one.
	TokenizerFingerprint string `json:"tokenizer_fingerprint,omitempty"`
}

// TemplateCase is one rendered conversation.
type TemplateCase struct {
	// Messages and Kwargs are kept raw so that they decode in document
	// order (DecodeJSON).
	Messages json.RawMessage `json:"messages"`
	Kwargs   json.RawMessage `json:"kwargs"`
	// Rendered is the text, when rendering succeeded.
	Rendered *string `json:"rendered"`
	// InputIDs are the ids of Rendered with add_special_tokens=False.
	InputIDs []int `json:"input_ids"`
	// Error and ErrorType are str(e) and type(e).__name__ when it raised.
	Error     string `json:"error"`
	ErrorType string `json:"error_type"`
	// ProcessorRenderedDiffers is the processor's text when it differed.
	ProcessorRenderedDiffers *string `json:"processor_rendered_differs"`
}

// TokenizerCase is one string tokenized by HF.
type TokenizerCase struct {
	Text       string   `json:"text"`
	IDs        []int    `json:"ids"`
	IDsWithBOS []int    `json:"ids_with_bos"`
	Decoded    string   `json:"decoded"`
	Tokens     []string `json:"tokens"`
}

// ParseGoldens reads the chat parts of goldens.json bytes.
func ParseGoldens(b []byte) (*Goldens, error) {
	var g Goldens
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// LoadGoldens reads the chat parts of a goldens.json file.
func LoadGoldens(path string) (*Goldens, error) {
	b, err := boundedio.ReadFile(path, MaxSideFileSize)
	if err != nil {
		return nil, err
	}
	g, err := ParseGoldens(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

// TemplateNames lists the template cases, sorted.
func (g *Goldens) TemplateNames() []string {
	return slices.Sorted(maps.Keys(g.Templates))
}

// Request builds the render request of a case; special holds the named
// special tokens of the tokenizer that renders it.
func (c TemplateCase) Request(special map[string]string) (Request, error) {
	msgs, err := DecodeJSON(c.Messages)
	if err != nil {
		return Request{}, fmt.Errorf("messages: %w", err)
	}
	kw := jinja.NewDict()
	if len(c.Kwargs) > 0 {
		if kw, err = DecodeJSON(c.Kwargs); err != nil {
			return Request{}, fmt.Errorf("kwargs: %w", err)
		}
	}
	return NewRequest(msgs, kw, special)
}

// NewRequest builds a Request from the keyword arguments of an
// apply_chat_template call, given as a mapping: add_generation_prompt and
// tools are taken out, the others (date_string, tools_in_user_message, …)
// become template variables.
func NewRequest(messages, kwargs jinja.Value, special map[string]string) (Request, error) {
	req := Request{Messages: messages, Tools: jinja.Undefined(), SpecialTokens: special, Vars: map[string]jinja.Value{}}
	if kwargs.IsUndefined() || kwargs.IsNone() {
		return req, nil
	}
	if !kwargs.IsDict() {
		return req, fmt.Errorf("%w: keyword arguments must be an object", ErrBadRequest)
	}
	d := kwargs.AsDict()
	for _, k := range d.Keys {
		v := d.Data[k]
		switch k {
		case "add_generation_prompt":
			if !v.IsBool() {
				return req, fmt.Errorf("%w: add_generation_prompt must be a boolean", ErrBadRequest)
			}
			req.AddGenerationPrompt = v.AsBool()
		case "tools":
			if !v.IsNone() {
				req.Tools = v
			}
		default:
			req.Vars[k] = v
		}
	}
	return req, nil
}
