package chat

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestGoldenTemplates renders every conversation of goldens.json with the
// base's template, as transformers 5.17's tokenizer would load it, and
// compares text, error and token ids with what transformers produced.
func TestGoldenTemplates(t *testing.T) {
	tok, _, g := fixtures(t)
	ts, err := FindTemplates(filepath.Join(dev, "base"))
	if err != nil {
		t.Fatal(err)
	}
	ld, err := ts.For(LoaderTokenizer)
	if err != nil || ld == nil {
		t.Fatalf("tokenizer template: %v, %v", ld, err)
	}
	if len(g.Templates) != 11 {
		t.Fatalf("goldens.json has %d template cases, want 11", len(g.Templates))
	}
	for _, name := range g.TemplateNames() {
		c := g.Templates[name]
		t.Run(name, func(t *testing.T) {
			req, err := c.Request(tok.Named())
			if err != nil {
				t.Fatal(err)
			}
			_, src, err := ld.Select("", !req.Tools.IsUndefined())
			if err != nil {
				t.Fatal(err)
			}
			tpl, err := Compile(src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tpl.Render(req)
			if c.Rendered == nil {
				var te *TemplateError
				if !errors.As(err, &te) {
					t.Fatalf("rendered %q, want %s %q", got, c.ErrorType, c.Error)
				}
				if te.Type != c.ErrorType || te.Message != c.Error {
					t.Fatalf("raised %s %q, want %s %q", te.Type, te.Message, c.ErrorType, c.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(*c.Rendered, got); diff != "" {
				t.Fatalf("rendered text differs from transformers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.InputIDs, tok.Encode(got, false)); diff != "" {
				t.Errorf("token ids differ from transformers (-want +got):\n%s", diff)
			}
		})
	}
}
