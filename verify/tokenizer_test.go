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

// withoutAddedToken rewrites dir/tokenizer.json without one added token,
// leaving everything else as transformers wrote it.
func withoutAddedToken(t *testing.T, dir, content string) {
	t.Helper()
	path := filepath.Join(dir, "tokenizer.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	var added []map[string]any
	if err := json.Unmarshal(top["added_tokens"], &added); err != nil {
		t.Fatal(err)
	}
	kept := added[:0]
	for _, a := range added {
		if a["content"] != content {
			kept = append(kept, a)
		}
	}
	if len(kept) != len(added)-1 {
		t.Fatalf("tokenizer.json has no added token %q", content)
	}
	if top["added_tokens"], err = json.Marshal(kept); err != nil {
		t.Fatal(err)
	}
	if b, err = json.Marshal(top); err != nil {
		t.Fatal(err)
	}
	chatWrite(t, dir, "tokenizer.json", b)
}

// TestSpecialTokenMissing: a tokenizer that lost <|eot_id|> fails
// template.special_tokens, tokenizer.vocab, tokenizer.fingerprint and
// tokenizer.golden, each naming what is wrong.
func TestSpecialTokenMissing(t *testing.T) {
	model := chatModelFrom(t, filepath.Join(fx, "base"))
	withoutAddedToken(t, model, "<|eot_id|>")
	in := &verify.Inputs{Model: model, Base: filepath.Join(fx, "base-hub"), Golden: fx}
	fs := runChatChecks(t, []*verify.Check{verify.TemplateSpecialTokens, verify.TokenizerVocab, verify.TokenizerFingerprint, verify.TokenizerGolden}, in)
	for _, want := range []struct {
		id    string
		parts []string
	}{
		{"template.special_tokens", []string{"<|eot_id|>", "is not a single token"}},
		{"tokenizer.vocab", []string{`added token 128009 "<|eot_id|>": missing`}},
		{"tokenizer.fingerprint", []string{"the base's sha256:"}},
		{"tokenizer.golden", []string{`"<|begin_of_text|><|start_header_id|>user`, "first difference at position 6"}},
	} {
		if !failedWith(fs, want.id, want.parts...) {
			t.Errorf("%s did not fail with %q:\n%s", want.id, want.parts, strings.Join(byStatus(fs, reports.StatusFail), "\n"))
		}
	}
	// The other protocol tokens are still single ids.
	if failedWith(fs, "template.special_tokens", "<|image|>") {
		t.Errorf("template.special_tokens failed on <|image|>")
	}
}

// TestTokenizerBOSChanged: a tokenizer config naming another bos_token is a
// warning of tokenizer.vocab (the vocabulary is unchanged) and changes the
// renders, which template.render catches.
func TestTokenizerBOSChanged(t *testing.T) {
	model := chatModelFrom(t, filepath.Join(fx, "base"))
	b, err := os.ReadFile(filepath.Join(model, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	chatWrite(t, model, "tokenizer_config.json", []byte(strings.Replace(string(b), `"bos_token": "<|begin_of_text|>"`, `"bos_token": "<|end_of_text|>"`, 1)))
	in := &verify.Inputs{Model: model, Base: filepath.Join(fx, "base")}
	fs := runChatChecks(t, []*verify.Check{verify.TokenizerVocab, verify.TemplateRender}, in)
	warned := false
	for _, w := range byStatus(fs, reports.StatusWarn) {
		warned = warned || strings.Contains(w, `bos_token is "<|end_of_text|>", the base's "<|begin_of_text|>"`)
	}
	if !warned {
		t.Errorf("tokenizer.vocab did not warn about bos_token: %v", fs)
	}
	if !failedWith(fs, "template.render", "tokenizer/text", "first difference at byte 2") {
		t.Errorf("template.render did not fail:\n%s", strings.Join(byStatus(fs, reports.StatusFail), "\n"))
	}
}
