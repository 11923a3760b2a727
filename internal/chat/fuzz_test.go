package chat

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ckptgate/ckptgate/internal/boundedio"
)

var (
	fuzzTplOnce sync.Once
	fuzzTpl     *Template
	fuzzTplErr  error
)

// FuzzRender feeds arbitrary messages JSON through the rendering entry point
// with the fixture's template: decoding, validation, rendering and
// tokenizing the text must never panic, and an engine panic must not hide
// behind the recovered error either. Seeds are the conversations of
// goldens.json and of testdata/python-refs.json.
func FuzzRender(f *testing.F) {
	tok, _, g := fixtures(f)
	for _, name := range g.TemplateNames() {
		f.Add([]byte(g.Templates[name].Messages), []byte(g.Templates[name].Kwargs))
	}
	for _, c := range loadPythonRefs(&testing.T{}).Renders {
		f.Add([]byte(c.Messages), []byte(c.Kwargs))
	}
	fuzzTplOnce.Do(func() {
		var src []byte
		if src, fuzzTplErr = boundedio.ReadFile(dev+"/base/chat_template.jinja", MaxSideFileSize); fuzzTplErr == nil {
			fuzzTpl, fuzzTplErr = Compile(string(src))
		}
	})
	if fuzzTplErr != nil {
		f.Fatal(fuzzTplErr)
	}
	now := func() time.Time { return time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC) }
	f.Fuzz(func(t *testing.T, messages, kwargs []byte) {
		req, err := TemplateCase{Messages: messages, Kwargs: kwargs}.Request(tok.Named())
		if err != nil {
			return
		}
		req.Now = now
		text, err := fuzzTpl.Render(req)
		var te *TemplateError
		if errors.As(err, &te) && strings.Contains(te.Message, "panicked") {
			t.Fatalf("the jinja engine panicked: %v", te)
		}
		if err != nil {
			return
		}
		ids := tok.Encode(text, false)
		if got := tok.Decode(ids); utf8.ValidString(text) && got != text {
			t.Fatalf("decode(encode(%q)) = %q", text, got)
		}
	})
}

// FuzzEncode checks that any text tokenizes without panicking and that
// valid UTF-8 round-trips through Encode and Decode; ids never fall outside
// the vocabulary. Seeds are the goldens' tokenizer strings.
func FuzzEncode(f *testing.F) {
	tok, _, g := fixtures(f)
	for _, c := range g.Tokenizer {
		f.Add(c.Text)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s, true)
		for _, id := range ids {
			if _, ok := tok.token(id); !ok {
				t.Fatalf("Encode(%q) gave id %d, which has no token", s, id)
			}
		}
		if got := tok.Decode(ids[1:]); utf8.ValidString(s) && got != s {
			t.Fatalf("decode(encode(%q)) = %q", s, got)
		}
	})
}
