package chat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// copyFile copies a fixture file into dir under name.
func copyFile(t *testing.T, src, dir, name string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, name, b)
}

func writeFile(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// baseTemplate is the template transformers 5.17 saved into base/.
func baseTemplate(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dev, "base", "chat_template.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// renderGolden renders the goldens' case with src and compares the text
// with transformers'.
func renderGolden(t *testing.T, src, name string) {
	t.Helper()
	tok, _, g := fixtures(t)
	c, ok := g.Templates[name]
	if !ok || c.Rendered == nil {
		t.Fatalf("goldens.json has no rendered case %q", name)
	}
	req, err := c.Request(tok.Named())
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := Compile(src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.Render(req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(*c.Rendered, got); diff != "" {
		t.Fatalf("%s (-transformers +got):\n%s", name, diff)
	}
}

// TestStorageForms builds directories holding the template in one form
// each, from the fixtures' 5.x (base) and 4.45 (base-hub) files, and checks
// what transformers 5.17's tokenizer and processor would load (§1.3 of the
// spec) and that it renders as transformers did.
func TestStorageForms(t *testing.T) {
	tmpl := baseTemplate(t)
	named, err := json.Marshal(map[string]any{"chat_template": []map[string]string{
		{"name": "default", "template": tmpl},
		{"name": "tool_use", "template": tmpl},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		setup     func(dir string)
		forms     []Form
		tokenizer []Form // nil: no template
		processor []Form
		single    bool
	}{
		{
			name: "jinja only (5.x)",
			setup: func(d string) {
				copyFile(t, filepath.Join(dev, "base", "chat_template.jinja"), d, "chat_template.jinja")
			},
			forms:     []Form{FormJinja},
			tokenizer: []Form{FormJinja}, processor: []Form{FormJinja}, single: true,
		},
		{
			name: "chat_template.json only (4.45 processor)",
			setup: func(d string) {
				copyFile(t, filepath.Join(dev, "base-hub", "chat_template.json"), d, "chat_template.json")
			},
			forms:     []Form{FormJSON},
			processor: []Form{FormJSON}, single: true,
		},
		{
			name: "tokenizer_config only (4.45 tokenizer)",
			setup: func(d string) {
				copyFile(t, filepath.Join(dev, "base-hub", "tokenizer_config.json"), d, "tokenizer_config.json")
			},
			forms:     []Form{FormTokenizerConfig},
			tokenizer: []Form{FormTokenizerConfig}, single: true,
		},
		{
			name:      "named templates list in tokenizer_config",
			setup:     func(d string) { writeFile(t, d, "tokenizer_config.json", named) },
			forms:     []Form{FormTokenizerConfig},
			tokenizer: []Form{FormTokenizerConfig},
		},
		{
			name: "base-hub as shipped (config and json)",
			setup: func(d string) {
				copyFile(t, filepath.Join(dev, "base-hub", "tokenizer_config.json"), d, "tokenizer_config.json")
				copyFile(t, filepath.Join(dev, "base-hub", "chat_template.json"), d, "chat_template.json")
			},
			forms:     []Form{FormTokenizerConfig, FormJSON},
			tokenizer: []Form{FormTokenizerConfig}, processor: []Form{FormJSON}, single: true,
		},
		{
			name: "jinja beside additional templates",
			setup: func(d string) {
				copyFile(t, filepath.Join(dev, "base", "chat_template.jinja"), d, "chat_template.jinja")
				copyFile(t, filepath.Join(dev, "base", "chat_template.jinja"), d, "additional_chat_templates/tool_use.jinja")
			},
			forms:     []Form{FormJinja, FormAdditional},
			tokenizer: []Form{FormJinja, FormAdditional}, processor: []Form{FormJinja, FormAdditional},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			ts, err := FindTemplates(dir)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.forms, ts.Forms()); diff != "" {
				t.Errorf("forms (-want +got):\n%s", diff)
			}
			for _, l := range []struct {
				loader Loader
				want   []Form
			}{{LoaderTokenizer, tc.tokenizer}, {LoaderProcessor, tc.processor}} {
				ld, err := ts.For(l.loader)
				if err != nil {
					t.Fatalf("%s: %v", l.loader, err)
				}
				if l.want == nil {
					if ld != nil {
						t.Errorf("%s loads a template from %v, want none", l.loader, ld.From)
					}
					continue
				}
				if ld == nil {
					t.Fatalf("%s loads no template, want one from %v", l.loader, l.want)
				}
				if diff := cmp.Diff(l.want, ld.From); diff != "" {
					t.Errorf("%s loads from (-want +got):\n%s", l.loader, diff)
				}
				if ld.Single != tc.single {
					t.Errorf("%s: single=%v, want %v", l.loader, ld.Single, tc.single)
				}
				name, src, err := ld.Select("", false)
				if err != nil || name != DefaultName {
					t.Fatalf("%s: select default: %q, %v", l.loader, name, err)
				}
				if src != tmpl {
					t.Errorf("%s: default template differs from base/chat_template.jinja", l.loader)
				}
				renderGolden(t, src, "image_user")
				if !ld.Single {
					if name, _, _ := ld.Select("", true); name != "tool_use" {
						t.Errorf("%s: with tools selects %q, want tool_use", l.loader, name)
					}
				}
			}
		})
	}
}

// TestLoadersDisagree is NOTES-ON-ISSUES 9: with chat_template.jinja and a
// different chat_template.json, a 5.17 tokenizer takes the .jinja and the
// processor the .json.
func TestLoadersDisagree(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(dev, "base", "chat_template.jinja"), dir, "chat_template.jinja")
	other := strings.Replace(baseTemplate(t), "Cutting Knowledge Date: December 2023", "Cutting Knowledge Date: June 2025", 1)
	b, err := json.Marshal(map[string]string{"chat_template": other})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "chat_template.json", b)
	ts, err := FindTemplates(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokL, err := ts.For(LoaderTokenizer)
	if err != nil {
		t.Fatal(err)
	}
	procL, err := ts.For(LoaderProcessor)
	if err != nil {
		t.Fatal(err)
	}
	if tokL.Templates[DefaultName] != baseTemplate(t) || procL.Templates[DefaultName] != other {
		t.Fatalf("tokenizer loads %v, processor %v; want .jinja and .json", tokL.From, procL.From)
	}

	// Beside additional templates, chat_template.json makes 5.17 processors
	// refuse the directory.
	copyFile(t, filepath.Join(dev, "base", "chat_template.jinja"), dir, "additional_chat_templates/tool_use.jinja")
	if ts, err = FindTemplates(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.For(LoaderProcessor); err == nil || !strings.Contains(err.Error(), "conflicting files") {
		t.Errorf("processor with chat_template.json and additional_chat_templates/: %v, want the conflict error", err)
	}
}

// TestMalformedForms checks that broken template files are errors naming the
// file, and that a directory without templates is not.
func TestMalformedForms(t *testing.T) {
	for _, tc := range []struct{ file, content, want string }{
		{"chat_template.json", `{"chat_template": 5}`, "chat_template.json"},
		{"chat_template.json", `{"template": "x"}`, `no "chat_template"`},
		{"chat_template.json", `not json`, "chat_template.json"},
		{"tokenizer_config.json", `{"chat_template": [{"name": "default"}]}`, `lacks "name" or "template"`},
		{"tokenizer_config.json", `{"chat_template": {"default": "x"}}`, "neither a string nor a list"},
	} {
		dir := t.TempDir()
		writeFile(t, dir, tc.file, []byte(tc.content))
		_, err := FindTemplates(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
			t.Errorf("%s %s: error %v, want one naming the file and %q", tc.file, tc.content, err, tc.want)
		}
	}
	ts, err := FindTemplates(t.TempDir())
	if err != nil || len(ts.Stored) != 0 {
		t.Errorf("empty directory: %v, %v", ts, err)
	}
}

// TestVersion identifies the fixture's template as v1, the release template
// whose sha256 the spec verified against the Hub.
func TestVersion(t *testing.T) {
	if v := Version(baseTemplate(t)); v != "v1" {
		t.Errorf("base template is %q, want v1", v)
	}
	if v := Version(baseTemplate(t) + " "); v != "custom" {
		t.Errorf("edited template is %q, want custom", v)
	}
}
