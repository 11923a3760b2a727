package verify_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/reports"
	"github.com/ckptgate/ckptgate/verify"
)

// chatSideFiles are the files the template and tokenizer checks read.
var chatSideFiles = []string{"chat_template.jinja", "chat_template.json", "tokenizer.json", "tokenizer_config.json",
	"special_tokens_map.json", "config.json", "processor_config.json", "preprocessor_config.json"}

// chatModelFrom copies the side files of a fixture directory into a fresh
// directory, standing in for a converted model.
func chatModelFrom(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range chatSideFiles {
		b, err := os.ReadFile(filepath.Join(src, f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		chatWrite(t, dst, f, b)
	}
	return dst
}

func chatWrite(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runChatChecks runs checks as the runner does and returns their findings.
func runChatChecks(t *testing.T, checks []*verify.Check, in *verify.Inputs) []reports.Check {
	t.Helper()
	var out []reports.Check
	for _, c := range checks {
		p := &verify.Pass{Check: c, Inputs: in}
		if err := c.Run(p); err != nil {
			t.Fatalf("%s: %v", c.ID, err)
		}
		if len(p.Findings()) == 0 {
			t.Fatalf("%s reported nothing", c.ID)
		}
		out = append(out, p.Findings()...)
	}
	return out
}

// byStatus returns the findings of one status as "id subject: message".
func byStatus(fs []reports.Check, s reports.Status) []string {
	var out []string
	for _, f := range fs {
		if f.Status == s {
			out = append(out, f.ID+" "+f.Subject+": "+f.Message)
		}
	}
	return out
}

// failedWith reports whether check id failed with a message containing
// every part.
func failedWith(fs []reports.Check, id string, parts ...string) bool {
	for _, f := range fs {
		if f.ID != id || f.Status != reports.StatusFail {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(f.Subject+" "+f.Message, p)
		}
		if all {
			return true
		}
	}
	return false
}

func allChatChecks() []*verify.Check {
	return append(append([]*verify.Check(nil), verify.TemplateChecks...), verify.TokenizerChecks...)
}

// TestChatChecksPassOnFixtures: the 5.x base checked against the 4.45 base
// (same tokenizer and template in other storage forms) and the goldens.
func TestChatChecksPassOnFixtures(t *testing.T) {
	for _, tc := range []struct{ model, base string }{{"base", "base-hub"}, {"base-hub", "base"}} {
		t.Run(tc.model, func(t *testing.T) {
			fs := runChatChecks(t, allChatChecks(), &verify.Inputs{
				Model:  filepath.Join(fx, tc.model),
				Base:   filepath.Join(fx, tc.base),
				Golden: fx,
			})
			if bad := append(byStatus(fs, reports.StatusFail), byStatus(fs, reports.StatusWarn)...); len(bad) > 0 {
				t.Fatalf("findings:\n%s", strings.Join(bad, "\n"))
			}
			if skipped := byStatus(fs, reports.StatusSkip); len(skipped) > 0 {
				t.Fatalf("skipped:\n%s", strings.Join(skipped, "\n"))
			}
			want := map[string]bool{}
			for _, c := range allChatChecks() {
				want[c.ID] = true
			}
			for _, f := range fs {
				delete(want, f.ID)
			}
			if len(want) > 0 {
				t.Fatalf("checks without a passing finding: %v", want)
			}
		})
	}
}

// TestTemplateDiffersFromBase: a model whose template changed one date
// renders differently from the base and from the goldens.
func TestTemplateDiffersFromBase(t *testing.T) {
	model := chatModelFrom(t, filepath.Join(fx, "base"))
	b, err := os.ReadFile(filepath.Join(model, "chat_template.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	chatWrite(t, model, "chat_template.jinja", []byte(strings.Replace(string(b), "December 2023", "December 2024", 1)))
	fs := runChatChecks(t, verify.TemplateChecks, &verify.Inputs{Model: model, Base: filepath.Join(fx, "base"), Golden: fx})
	if !failedWith(fs, "template.render", "tokenizer/text", "renders differently from the base", `December 2024\nToday Date`) {
		t.Errorf("template.render did not fail on the changed template:\n%s", strings.Join(byStatus(fs, reports.StatusFail), "\n"))
	}
	if !failedWith(fs, "template.golden", "text_user", "differs from transformers") {
		t.Errorf("template.golden did not fail:\n%s", strings.Join(byStatus(fs, reports.StatusFail), "\n"))
	}
	// The image conversations print no date: they still agree.
	if failedWith(fs, "template.render", "tokenizer/image ") || failedWith(fs, "template.golden", "image_user") {
		t.Errorf("image conversations, which print no date, failed:\n%s", strings.Join(byStatus(fs, reports.StatusFail), "\n"))
	}
}

// TestTemplateFormsDisagree is NOTES-ON-ISSUES 9: chat_template.jinja and
// a different chat_template.json. template.present warns, naming the
// loader that reads each; template.render fails for the processor only.
func TestTemplateFormsDisagree(t *testing.T) {
	model := chatModelFrom(t, filepath.Join(fx, "base"))
	b, err := os.ReadFile(filepath.Join(model, "chat_template.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(map[string]string{"chat_template": strings.Replace(string(b), "Today Date: ", "Date: ", 1)})
	if err != nil {
		t.Fatal(err)
	}
	chatWrite(t, model, "chat_template.json", js)
	fs := runChatChecks(t, verify.TemplateChecks, &verify.Inputs{Model: model, Base: filepath.Join(fx, "base")})
	warned := false
	for _, w := range byStatus(fs, reports.StatusWarn) {
		if strings.HasPrefix(w, "template.present") && strings.Contains(w, "tokenizer uses chat_template.jinja") && strings.Contains(w, "processor uses chat_template.json") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("template.present did not warn about the disagreeing forms:\n%s", strings.Join(byStatus(fs, reports.StatusWarn), "\n"))
	}
	if !failedWith(fs, "template.render", "processor/text") {
		t.Errorf("template.render did not fail for the processor:\n%s", strings.Join(byStatus(fs, reports.StatusFail), "\n"))
	}
	if failedWith(fs, "template.render", "tokenizer/") {
		t.Errorf("template.render failed for the tokenizer, which still reads chat_template.jinja")
	}
}

// TestTemplateMissing: a model without any template, beside a base with
// one, fails template.present and template.render.
func TestTemplateMissing(t *testing.T) {
	model := chatModelFrom(t, filepath.Join(fx, "base"))
	if err := os.Remove(filepath.Join(model, "chat_template.jinja")); err != nil {
		t.Fatal(err)
	}
	fs := runChatChecks(t, []*verify.Check{verify.TemplatePresent, verify.TemplateRender}, &verify.Inputs{Model: model, Base: filepath.Join(fx, "base-hub")})
	if !failedWith(fs, "template.present", "stores no chat template", "tokenizer_config.json + chat_template.json") {
		t.Errorf("template.present:\n%s", strings.Join(byStatus(fs, reports.StatusFail), "\n"))
	}
	if !failedWith(fs, "template.render", "the model's loads none") {
		t.Errorf("template.render:\n%s", strings.Join(byStatus(fs, reports.StatusFail), "\n"))
	}
}

// TestImageTokenMismatch: config.json pointing image_token_index at another
// id fails template.image_token.
func TestImageTokenMismatch(t *testing.T) {
	model := chatModelFrom(t, filepath.Join(fx, "base"))
	b, err := os.ReadFile(filepath.Join(model, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	chatWrite(t, model, "config.json", []byte(strings.Replace(string(b), `"image_token_index": 128256`, `"image_token_index": 128011`, 1)))
	fs := runChatChecks(t, []*verify.Check{verify.TemplateImageToken}, &verify.Inputs{Model: model})
	if !failedWith(fs, "template.image_token", "<|image|>", "has id 128256, but image_token_index is 128011") {
		t.Errorf("findings: %v", fs)
	}
}
