package chat

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ardanlabs/jinja"
)

// TestToJSONLikeTransformers is the spec's tojson probe, run with
// transformers 5.17 (chat-template-and-preprocessing.md §3): insertion
// order, raw non-ASCII, no HTML escaping, Python's separators and floats.
func TestToJSONLikeTransformers(t *testing.T) {
	v, err := DecodeJSON([]byte(`{"b": 1, "a": "é<>&'\"", "n": null, "f": 1.0, "l": [1, 2], "t": true}`))
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := Compile("{{ x|tojson }}")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.Render(Request{Messages: jinja.NewList([]jinja.Value{jinja.NewDict()}), Vars: map[string]jinja.Value{"x": v}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"b": 1, "a": "é<>&'\"", "n": null, "f": 1.0, "l": [1, 2], "t": true}`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestTrailingNewline is the spec's keep_trailing_newline probe: "x\n"
// renders "x" in transformers; \r\n counts as one newline, as in Jinja2's
// lexer.
func TestTrailingNewline(t *testing.T) {
	for src, want := range map[string]string{"x\n": "x", "x\r\n": "x", "x\n\n": "x\n", "a\r\nb": "a\nb"} {
		tpl, err := Compile(src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tpl.Render(Request{Messages: jinja.NewList([]jinja.Value{jinja.NewDict()})})
		if err != nil || got != want {
			t.Errorf("%q renders %q, %v; want %q", src, got, err, want)
		}
	}
}

func TestDecodeJSONRejects(t *testing.T) {
	deep := strings.Repeat("[", MaxJSONDepth+2) + strings.Repeat("]", MaxJSONDepth+2)
	for _, tc := range []struct{ in, want string }{
		{``, "unexpected EOF"},
		{`[1] [2]`, "trailing data"},
		{`{"a": 1,}`, "invalid"},
		{`123456789012345678901234567890`, "does not fit in 64 bits"},
		{`1e999`, "out of range"},
		{deep, "nested deeper"},
	} {
		if _, err := DecodeJSON([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeJSON(%.30q): %v, want an error with %q", tc.in, err, tc.want)
		}
	}
}

// TestBadRequests: what transformers refuses before rendering is
// ErrBadRequest, not a template exception.
func TestBadRequests(t *testing.T) {
	tpl, err := Compile(baseTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, msgs := range []string{`[]`, `{"role": "user"}`, `["hi"]`, `[{"role": "user", "content": "x"}, 5]`} {
		v, err := DecodeJSON([]byte(msgs))
		if err != nil {
			t.Fatal(err)
		}
		_, err = tpl.Render(Request{Messages: v})
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", msgs, err)
		}
	}
	if _, err := LoadJSON(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("LoadJSON of a missing file succeeded")
	}
}
