package chat

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestGoldenTokenizer checks every tokenizer case of goldens.json — ids,
// ids with BOS, tokens and decoded text — on both the 5.x (base) and the
// 4.45 (base-hub, merges as "a b") forms of the tokenizer.
func TestGoldenTokenizer(t *testing.T) {
	base, hub, g := fixtures(t)
	if len(g.Tokenizer) != 18 {
		t.Fatalf("goldens.json has %d tokenizer cases, want 18", len(g.Tokenizer))
	}
	for name, tok := range map[string]*Tokenizer{"base": base, "base-hub": hub} {
		for _, c := range g.Tokenizer {
			t.Run(name+"/"+c.Text, func(t *testing.T) {
				if diff := cmp.Diff(c.IDs, tok.Encode(c.Text, false)); diff != "" {
					t.Errorf("ids (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(c.IDsWithBOS, tok.Encode(c.Text, true)); diff != "" {
					t.Errorf("ids with BOS (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(c.Tokens, tok.Tokens(c.IDs)); diff != "" {
					t.Errorf("tokens (-want +got):\n%s", diff)
				}
				if got := tok.Decode(c.IDs); got != c.Decoded {
					t.Errorf("decoded %q, want %q", got, c.Decoded)
				}
			})
		}
	}
}

// hfProbes are ids and decodes computed by Hugging Face tokenizers 0.23.2
// on the base tokenizer (testdata/make-hf-probes.js): runs of one character,
// runs of non-ASCII whitespace, added tokens in odd places, control
// characters, 250 random strings, and decodes of arbitrary ids.
type hfProbes struct {
	Encode []struct {
		Text       string `json:"text"`
		IDs        []int  `json:"ids"`
		IDsWithBOS []int  `json:"ids_with_bos"`
		Decoded    string `json:"decoded"`
	} `json:"encode"`
	Decode []struct {
		IDs     []int  `json:"ids"`
		Decoded string `json:"decoded"`
	} `json:"decode"`
}

func TestHFProbes(t *testing.T) {
	tok, _, _ := fixtures(t)
	b, err := os.ReadFile("testdata/hf-probes.json")
	if err != nil {
		t.Fatal(err)
	}
	var p hfProbes
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Encode) < 300 || len(p.Decode) < 50 {
		t.Fatalf("testdata/hf-probes.json has %d encode and %d decode cases", len(p.Encode), len(p.Decode))
	}
	for i, c := range p.Encode {
		if diff := cmp.Diff(c.IDs, tok.Encode(c.Text, false)); diff != "" {
			t.Errorf("encode[%d] %q (-hf +got):\n%s", i, c.Text, diff)
		}
		if diff := cmp.Diff(c.IDsWithBOS, tok.Encode(c.Text, true)); diff != "" {
			t.Errorf("encode[%d] %q with BOS (-hf +got):\n%s", i, c.Text, diff)
		}
		if got := tok.Decode(c.IDs); got != c.Decoded {
			t.Errorf("encode[%d]: decode gives %q, hf %q", i, got, c.Decoded)
		}
	}
	for i, c := range p.Decode {
		if got := tok.Decode(c.IDs); got != c.Decoded {
			t.Errorf("decode[%d] %v: %q, hf %q", i, c.IDs, got, c.Decoded)
		}
	}
}

// TestLayoutIndependence: base/ (tokenizers 0.23 layout, merges as pairs)
// and base-hub/ (merges as "a b" strings) hold one tokenizer: same
// fingerprint, no differences, same named special tokens.
func TestLayoutIndependence(t *testing.T) {
	base, hub, _ := fixtures(t)
	if base.Fingerprint() != hub.Fingerprint() || !strings.HasPrefix(base.Fingerprint(), "sha256:") {
		t.Errorf("fingerprints %s and %s", base.Fingerprint(), hub.Fingerprint())
	}
	if d := DiffTokenizers(hub, base, 5); len(d) > 0 {
		t.Errorf("differences: %v", d)
	}
	want := map[string]string{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>"}
	for name, tok := range map[string]*Tokenizer{"base": base, "base-hub": hub} {
		if diff := cmp.Diff(want, tok.Named()); diff != "" {
			t.Errorf("%s named special tokens (-want +got):\n%s", name, diff)
		}
	}
	if got := len(base.Special()); got != 257 {
		t.Errorf("%d special added tokens, want 257", got)
	}
	if id, ok := base.TokenID("<|image|>"); !ok || id != 128256 {
		t.Errorf("<|image|> is %d, %v", id, ok)
	}
}

// TestTokenizerDiffNamesChanges: one swapped merge and one renamed added
// token are named by DiffTokenizers and change the fingerprint.
func TestTokenizerDiffNamesChanges(t *testing.T) {
	base, _, _ := fixtures(t)
	mod := &Tokenizer{vocab: base.vocab, vocabR: base.vocabR, pipeline: base.pipeline, mergeList: base.Merges(), added: base.AddedTokens()}
	mod.mergeList[5], mod.mergeList[6] = mod.mergeList[6], mod.mergeList[5]
	mod.added[9].Content = "<|eot|>"
	d := DiffTokenizers(mod, base, 10)
	want := []string{
		fmt.Sprintf("merge rank 5: (%q, %q), base has (%q, %q)", base.mergeList[6][0], base.mergeList[6][1], base.mergeList[5][0], base.mergeList[5][1]),
		fmt.Sprintf("merge rank 6: (%q, %q), base has (%q, %q)", base.mergeList[5][0], base.mergeList[5][1], base.mergeList[6][0], base.mergeList[6][1]),
	}
	if len(d) != 3 || d[0] != want[0] || d[1] != want[1] || !strings.Contains(d[2], `added token 128009: {ID:128009 Content:<|eot|>`) {
		t.Errorf("differences:\n%s", strings.Join(d, "\n"))
	}
	if mod.Fingerprint() == base.Fingerprint() {
		t.Error("the fingerprint did not change")
	}
}

// TestAddedTokensDecoderMismatch: a 4.x tokenizer_config.json whose
// added_tokens_decoder disagrees with tokenizer.json is refused, naming
// both files and the id.
func TestAddedTokensDecoderMismatch(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "tokenizer.json", tinyTokenizerJSON(t))
	b, err := os.ReadFile(filepath.Join(dev, "base-hub", "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	// Keep the entries of the tiny tokenizer's three added tokens.
	cfg["added_tokens_decoder"] = json.RawMessage(`{"128000": {"content": "<|begin_of_text|>", "special": true},
		"128001": {"content": "<|end_of_txt|>", "special": true}, "128002": {"content": "<|reserved_special_token_0|>", "special": true}}`)
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "tokenizer_config.json", b)
	_, err = LoadTokenizer(dir)
	if err == nil || !strings.Contains(err.Error(), `tokenizer_config.json: added_tokens_decoder[128001] is "<|end_of_txt|>"`) || !strings.Contains(err.Error(), `tokenizer.json says "<|end_of_text|>"`) {
		t.Errorf("error %v", err)
	}
}

// updateTiny rewrites testdata/tiny-tokenizer.json from the fixture.
var updateTiny = flag.Bool("update-tiny", false, "rewrite testdata/tiny-tokenizer.json from the fixture's tokenizer.json")

// tinyTokenizerJSON is a small tokenizer.json cut from the fixture's
// (testdata/tiny-tokenizer.json, remade with -update-tiny): the ids below
// 1000, the merges among them and three added tokens, with the fixture's
// pipeline. It seeds FuzzParseTokenizer and the malformed-file table.
func tinyTokenizerJSON(t testing.TB) []byte {
	t.Helper()
	path := filepath.Join("testdata", "tiny-tokenizer.json")
	if *updateTiny {
		b, err := makeTinyTokenizerJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func makeTinyTokenizerJSON() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dev, "base", "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	var top map[string]any
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	model := top["model"].(map[string]any)
	vocab := map[string]any{}
	for tok, id := range model["vocab"].(map[string]any) {
		if id.(float64) < 1000 {
			vocab[tok] = id
		}
	}
	var merges []any
	for _, m := range model["merges"].([]any) {
		p := m.([]any)
		a, b := p[0].(string), p[1].(string)
		if vocab[a] != nil && vocab[b] != nil && vocab[a+b] != nil {
			merges = append(merges, m)
		}
	}
	model["vocab"], model["merges"] = vocab, merges
	top["added_tokens"] = top["added_tokens"].([]any)[:3]
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	err = enc.Encode(top)
	return out.Bytes(), err
}

// TestMalformedTokenizer: broken or unsupported tokenizer.json files are
// errors naming the key, never panics.
func TestMalformedTokenizer(t *testing.T) {
	tiny := string(tinyTokenizerJSON(t))
	if _, err := parseTokenizer([]byte(tiny)); err != nil {
		t.Fatalf("the tiny tokenizer does not parse: %v", err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{`"type":"BPE"`, `"type":"Unigram"`, `model.type is "Unigram"`},
		{`"byte_fallback":false`, `"byte_fallback":true`, "byte_fallback"},
		{`"normalizer":null`, `"normalizer":{"type":"NFC"}`, "normalizer"},
		{`"behavior":"Isolated"`, `"behavior":"Removed"`, "unsupported Split"},
		{`"Regex":"(?i:`, `"Regex":"((?i:`, "pre-tokenizer pattern"},
		{`"content":"<|begin_of_text|>","id":128000`, `"content":"<|begin_of_text|>","id":-1`, "outside 0..2^32-1"},
		{`"content":"<|end_of_text|>","id":128001`, `"content":"<|end_of_text|>","id":128000`, "share id 128000"},
		{`"add_prefix_space":true,"trim_offsets":true,"type":"ByteLevel"`, `"add_prefix_space":true,"trim_offsets":true,"type":"Metaspace"`, `unsupported decoder type "Metaspace"`},
		{`"type":"TemplateProcessing"`, `"type":"BertProcessing"`, `unsupported post_processor type "BertProcessing"`},
		{`"merges":[[`, `"merges":[["Ġ","no such token"],[`, "not in the vocabulary"},
		{`"merges":[[`, `"merges":["a b c",[`, "not two tokens"},
		{`"merges":[[`, `"merges":[["a"],[`, "not a pair"},
	} {
		if !strings.Contains(tiny, tc.old) {
			t.Fatalf("the tiny tokenizer has no %s", tc.old)
		}
		_, err := parseTokenizer([]byte(strings.Replace(tiny, tc.old, tc.new, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: %v, want an error with %q", tc.old, tc.new, err, tc.want)
		}
	}
}

// FuzzParseTokenizer: no tokenizer.json, however hostile, panics the parser
// or, once parsed, Encode and Decode.
func FuzzParseTokenizer(f *testing.F) {
	f.Add(tinyTokenizerJSON(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := parseTokenizer(b)
		if err != nil {
			return
		}
		ids := tok.Encode("Hello <|begin_of_text|> wörld  \n\n 123", true)
		tok.Decode(append(ids, -1, 1<<40))
		tok.Fingerprint()
	})
}
