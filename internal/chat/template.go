// Package chat renders chat templates the way transformers 5.17 does and
// tokenizes text the way Hugging Face tokenizers does, so that ckptgate can
// prove a converted model prompts exactly like its base.
//
// Templates run on github.com/ardanlabs/jinja with transformers' environment:
// trim_blocks and lstrip_blocks (built into the engine), keep_trailing_newline
// off, the raise_exception and strftime_now globals, tools passed as none
// when absent, and insertion-ordered values so that tojson prints keys as
// Python does. Where the engine is more lenient than Python's Jinja, Render
// raises the TypeError Python would (see Render).
package chat

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// ErrBadRequest is wrapped by errors about the request itself (messages that
// are not a list of objects, an empty conversation): transformers refuses
// those before it renders anything.
var ErrBadRequest = errors.New("invalid chat request")

// TemplateError is an exception raised while rendering: the template's own
// raise_exception, a TypeError that Python's Jinja raises where the Go
// engine would not, or any other rendering failure.
type TemplateError struct {
	// Type is the Python exception class transformers reports:
	// "TemplateError" for raise_exception, "TypeError", or "Error" for a
	// failure of the Go engine that has no Python counterpart we know.
	Type string
	// Message is the exception's text, as str(e) gives it in Python.
	Message string
}

func (e *TemplateError) Error() string { return e.Message }

// Template is a compiled chat template.
type Template struct {
	// Source is the template text as stored.
	Source string
	tpl    *jinja.Template
}

// Compile compiles a chat template. As Python's Jinja lexer does, it turns
// \r\n and \r into \n and drops a single trailing newline
// (keep_trailing_newline=False), which ardanlabs/jinja would otherwise keep.
func Compile(source string) (*Template, error) {
	src := strings.ReplaceAll(source, "\r\n", "\n")
	src = strings.ReplaceAll(src, "\r", "\n")
	src = strings.TrimSuffix(src, "\n")
	t, err := compileSafely(src)
	if err != nil {
		return nil, err
	}
	return &Template{Source: source, tpl: t}, nil
}

// compileSafely turns a panic inside the third-party engine into an error:
// templates come from model directories, which are untrusted input.
func compileSafely(src string) (t *jinja.Template, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("jinja engine panicked compiling the template: %v", r)
		}
	}()
	return jinja.Compile(src)
}

// Request is one apply_chat_template call.
type Request struct {
	// Messages is the conversation: a list of mappings, usually from
	// DecodeJSON so that keys keep their order.
	Messages jinja.Value
	// Tools is the list of tool schemas; when undefined the template sees
	// none, as transformers always passes tools=None.
	Tools jinja.Value
	// AddGenerationPrompt appends the assistant header.
	AddGenerationPrompt bool
	// SpecialTokens are the tokenizer's named special tokens (bos_token,
	// eos_token, …), which transformers passes to every template.
	SpecialTokens map[string]string
	// Vars are the other keyword arguments: date_string,
	// tools_in_user_message, custom_tools, …. They override SpecialTokens,
	// as kwargs do in transformers.
	Vars map[string]jinja.Value
	// Now is the clock behind strftime_now; nil means time.Now (local
	// time, as Python's datetime.now()).
	Now func() time.Time
}

// Render renders the template as transformers' render_jinja_template does.
//
// ardanlabs/jinja iterates a number or none as an empty sequence and takes
// the length of none as 0, where Python raises TypeError. Every Llama 3.x
// template iterates each message's content and takes the length of
// tool_calls, so Render raises those TypeErrors itself, with Python's text,
// before rendering (chat-template-and-preprocessing.md §4.1). A leading
// system message with such content is rejected too, although the Llama 3.2
// template would print it through |trim.
func (t *Template) Render(req Request) (string, error) {
	if err := checkMessages(req.Messages); err != nil {
		return "", err
	}
	vars := make(map[string]jinja.Value, len(req.SpecialTokens)+len(req.Vars)+8)
	for k, v := range req.SpecialTokens {
		vars[k] = jinja.NewString(v)
	}
	for k, v := range req.Vars {
		vars[k] = v
	}
	vars["messages"] = req.Messages
	vars["tools"] = jinja.None()
	if !req.Tools.IsUndefined() {
		vars["tools"] = req.Tools
	}
	vars["documents"] = jinja.None()
	vars["add_generation_prompt"] = jinja.NewBool(req.AddGenerationPrompt)
	now := req.Now
	if now == nil {
		now = time.Now
	}
	// Values in the render data shadow the engine's globals, so these two
	// replace its raise_exception (whose error we could not tell from an
	// engine failure) and strftime_now (whose clock we could not set).
	vars["raise_exception"] = jinja.NewCallable("raise_exception", raiseException)
	vars["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) != 1 || !args[0].IsString() {
			return jinja.Undefined(), &TemplateError{Type: "TypeError", Message: "strftime_now() takes one format string"}
		}
		return jinja.NewString(Strftime(now(), args[0].AsString())), nil
	})
	return t.renderSafely(vars)
}

func (t *Template) renderSafely(vars map[string]jinja.Value) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", &TemplateError{Type: "Error", Message: fmt.Sprintf("jinja engine panicked: %v", r)}
		}
	}()
	out, err = t.tpl.RenderValues(vars)
	if err != nil {
		var te *TemplateError
		if errors.As(err, &te) {
			return "", te
		}
		return "", &TemplateError{Type: "Error", Message: err.Error()}
	}
	return out, nil
}

func raiseException(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), &TemplateError{Type: "TypeError", Message: "raise_exception() missing 1 required positional argument: 'message'"}
	}
	msg := args[0].String()
	if args[0].IsString() {
		msg = args[0].AsString()
	}
	return jinja.Undefined(), &TemplateError{Type: "TemplateError", Message: msg}
}

// checkMessages validates the conversation and raises the TypeErrors that
// Python's Jinja would raise on it (see Render).
func checkMessages(v jinja.Value) error {
	if !v.IsList() {
		return fmt.Errorf("%w: messages must be a list of message objects, got %s", ErrBadRequest, pyType(v))
	}
	items := v.AsList().Items
	if len(items) == 0 {
		return fmt.Errorf("%w: cannot apply chat template to an empty conversation", ErrBadRequest)
	}
	for i, m := range items {
		if !m.IsDict() {
			return fmt.Errorf("%w: message %d is a %s, not an object", ErrBadRequest, i, pyType(m))
		}
	}
	// The image scan iterates every content before any turn renders the
	// tool calls, so content errors come first, as in Python.
	for _, m := range items {
		if c, ok := m.AsDict().Get("content"); ok && !iterable(c) {
			return &TemplateError{Type: "TypeError", Message: fmt.Sprintf("'%s' object is not iterable", pyType(c))}
		}
	}
	for _, m := range items {
		if c, ok := m.AsDict().Get("tool_calls"); ok && !iterable(c) {
			return &TemplateError{Type: "TypeError", Message: fmt.Sprintf("object of type '%s' has no len()", pyType(c))}
		}
	}
	return nil
}

func iterable(v jinja.Value) bool { return v.IsString() || v.IsList() || v.IsDict() }

// pyType is the Python type name of a JSON-like value.
func pyType(v jinja.Value) string {
	switch {
	case v.IsNone():
		return "NoneType"
	case v.IsBool():
		return "bool"
	case v.IsInt():
		return "int"
	case v.IsFloat():
		return "float"
	case v.IsString():
		return "str"
	case v.IsList():
		return "list"
	case v.IsDict():
		return "dict"
	case v.IsUndefined():
		return "Undefined"
	}
	return "object"
}
