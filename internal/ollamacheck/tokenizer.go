//go:build ollama

package ollamacheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ollama/ollama/fs/ggml"
	ollamamllama "github.com/ollama/ollama/model/models/mllama"
	"github.com/ollama/ollama/template"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/reports"
)

// hfTokenizer is what tokenizer.json, tokenizer_config.json and
// generation_config.json say the GGUF must carry.
type hfTokenizer struct {
	vocab   map[string]int
	added   []addedToken
	merges  int
	bos     string
	eos     string
	genEOS  []int32
	maxID   int
	tmpl    string
	tmplSrc string
}

type addedToken struct {
	ID      int    `json:"id"`
	Content string `json:"content"`
	Special bool   `json:"special"`
}

func readHFTokenizer(dir string) (*hfTokenizer, error) {
	p := filepath.Join(dir, "tokenizer.json")
	b, err := boundedio.ReadFile(p, maxSideFile)
	if err != nil {
		return nil, err
	}
	var tj struct {
		Model struct {
			Vocab  map[string]int    `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
		AddedTokens []addedToken `json:"added_tokens"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	t := &hfTokenizer{vocab: tj.Model.Vocab, added: tj.AddedTokens, merges: len(tj.Model.Merges)}
	for _, id := range t.vocab {
		t.maxID = max(t.maxID, id)
	}
	for _, a := range t.added {
		t.maxID = max(t.maxID, a.ID)
	}
	p = filepath.Join(dir, "tokenizer_config.json")
	b, err = boundedio.ReadFile(p, maxSideFile)
	if err != nil {
		return nil, err
	}
	var tc map[string]json.RawMessage
	if err := json.Unmarshal(b, &tc); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	t.bos, t.eos = specialContent(tc["bos_token"]), specialContent(tc["eos_token"])
	var ct string
	if json.Unmarshal(tc["chat_template"], &ct) == nil && ct != "" {
		t.tmpl, t.tmplSrc = ct, "tokenizer_config.json"
	} else if t.tmpl, t.tmplSrc, err = readTemplate(dir); err != nil {
		return nil, err
	}
	p = filepath.Join(dir, "generation_config.json")
	b, err = boundedio.ReadFile(p, maxSideFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err == nil {
		var gc struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if err := json.Unmarshal(b, &gc); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		var one int32
		if json.Unmarshal(gc.EOS, &t.genEOS) != nil && json.Unmarshal(gc.EOS, &one) == nil {
			t.genEOS = []int32{one}
		}
	}
	return t, nil
}

// specialContent reads a special token given as a string or as
// {"content": …}.
func specialContent(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil {
		return o.Content
	}
	return ""
}

func (t *hfTokenizer) id(content string) int {
	for _, a := range t.added {
		if a.Content == content {
			return a.ID
		}
	}
	if id, ok := t.vocab[content]; ok {
		return id
	}
	return -1
}

// encoder is the part of Ollama's tokenizer the checks use.
type encoder interface {
	Encode(s string, addSpecial bool) ([]int32, error)
}

// ollamaTokenizer builds the tokenizer Ollama's mllama model builds from
// the GGUF's key-values (pure Go; no weights are loaded).
func ollamaTokenizer(kv ggml.KV) (enc encoder, err error) {
	defer recoverInto(&err, "building ollama's tokenizer")
	m, err := ollamamllama.New(kv)
	if err != nil {
		return nil, err
	}
	enc, ok := m.(encoder)
	if !ok {
		return nil, fmt.Errorf("ollama's mllama model %T has no Encode", m)
	}
	return enc, nil
}

// tokenizer reports IDTokenizer and IDBOS.
func (r *run) tokenizer() {
	hf, err := readHFTokenizer(r.o.Model)
	if err != nil {
		r.add(IDTokenizer, reports.StatusFail, "", err.Error(), nil)
		return
	}
	kv := r.res.Legacy.GGUF.KV
	r.vocabulary(hf, kv)
	r.chatTemplate(hf)
	enc, err := ollamaTokenizer(kv)
	if err != nil {
		r.add(IDTokenizer, reports.StatusFail, "tokenization", err.Error(), nil)
		return
	}
	for _, p := range r.o.Goldens.Prompts {
		got, err := enc.Encode(p.Rendered, false)
		if err != nil {
			r.add(IDTokenizer, reports.StatusFail, p.Name, "Ollama's tokenizer failed: "+err.Error(), nil)
			continue
		}
		if i := firstDiff(got, p.IDs); i >= 0 {
			r.add(IDTokenizer, reports.StatusFail, p.Name, fmt.Sprintf("Ollama tokenizes the rendered prompt differently from transformers from position %d: %v vs %v", i, window(got, i), window(p.IDs, i)), nil)
			continue
		}
		r.add(IDTokenizer, reports.StatusPass, p.Name, fmt.Sprintf("Ollama's tokenizer gives transformers' %d ids for the rendered prompt", len(p.IDs)), nil)
	}
	var differ []string
	for _, c := range r.o.Goldens.Tokenizer {
		got, err := enc.Encode(c.Text, false)
		if err != nil || !slices.Equal(got, c.IDs) {
			differ = append(differ, fmt.Sprintf("%q: Ollama %v, transformers %v", c.Text, got, c.IDs))
		}
	}
	switch {
	case len(r.o.Goldens.Tokenizer) == 0:
	case len(differ) == 0:
		r.add(IDTokenizer, reports.StatusPass, "tokenizer cases", fmt.Sprintf("all %d tokenizer cases of the goldens tokenize as in transformers", len(r.o.Goldens.Tokenizer)), nil)
	default:
		r.add(IDTokenizer, reports.StatusWarn, "tokenizer cases", fmt.Sprintf("%d of %d tokenizer cases tokenize differently in Ollama (its BPE breaks merge-rank ties by heap order, transformers leftmost first): %s",
			len(differ), len(r.o.Goldens.Tokenizer), strings.Join(differ, "; ")), nil)
	}
	r.bos(hf, kv)
}

// vocabulary compares the GGUF's vocabulary and special ids with the files.
func (r *run) vocabulary(hf *hfTokenizer, kv ggml.KV) {
	tokens := kv.Strings("tokenizer.ggml.tokens")
	types := kv.Ints("tokenizer.ggml.token_type")
	var bad []string
	if len(tokens) != hf.maxID+1 {
		bad = append(bad, fmt.Sprintf("%d tokens, tokenizer.json has ids 0 to %d", len(tokens), hf.maxID))
	}
	wrong := 0
	for s, id := range hf.vocab {
		if id < 0 || id >= len(tokens) || tokens[id] != s {
			wrong++
		}
	}
	for _, a := range hf.added {
		if a.ID < 0 || a.ID >= len(tokens) || tokens[a.ID] != a.Content || (a.Special && (a.ID >= len(types) || types[a.ID] != 3)) {
			wrong++
		}
	}
	if wrong > 0 {
		bad = append(bad, fmt.Sprintf("%d tokens differ from tokenizer.json (string or control type)", wrong))
	}
	if n := len(kv.Strings("tokenizer.ggml.merges")); n != hf.merges {
		bad = append(bad, fmt.Sprintf("%d merges, tokenizer.json has %d", n, hf.merges))
	}
	if want := hf.id(hf.bos); want >= 0 && int(kv.Uint("tokenizer.ggml.bos_token_id", 1<<31)) != want {
		bad = append(bad, fmt.Sprintf("bos_token_id %d, tokenizer_config.json's %q is %d", kv.Uint("tokenizer.ggml.bos_token_id"), hf.bos, want))
	}
	if want := hf.id(hf.eos); want >= 0 && int(kv.Uint("tokenizer.ggml.eos_token_id", 1<<31)) != want {
		bad = append(bad, fmt.Sprintf("eos_token_id %d, tokenizer_config.json's %q is %d", kv.Uint("tokenizer.ggml.eos_token_id"), hf.eos, want))
	}
	if len(hf.genEOS) > 1 {
		got := kv.Ints("tokenizer.ggml.eos_token_ids")
		if !sameSet(got, hf.genEOS) {
			bad = append(bad, fmt.Sprintf("eos_token_ids %v, generation_config.json has %v", got, hf.genEOS))
		}
	}
	if len(bad) > 0 {
		r.add(IDTokenizer, reports.StatusFail, "vocabulary", strings.Join(bad, "; "), nil)
		return
	}
	r.add(IDTokenizer, reports.StatusPass, "vocabulary", fmt.Sprintf("%d tokens, %d merges, bos %d, eos %d and eos_token_ids %v as the tokenizer files say",
		len(tokens), hf.merges, kv.Uint("tokenizer.ggml.bos_token_id"), kv.Uint("tokenizer.ggml.eos_token_id"), kv.Ints("tokenizer.ggml.eos_token_ids")), nil)
}

func sameSet(a, b []int32) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// chatTemplate checks the template in both GGUFs and Ollama's template
// detection.
func (r *run) chatTemplate(hf *hfTokenizer) {
	if hf.tmpl == "" {
		r.add(IDTokenizer, reports.StatusWarn, "chat template", "the directory has no chat template (tokenizer_config.json, chat_template.jinja or chat_template.json)", nil)
		return
	}
	for _, c := range []*Conversion{r.res.AsIs, r.res.Legacy} {
		if c.GGUF == nil {
			continue
		}
		got := c.GGUF.KV.ChatTemplate()
		switch {
		case got == hf.tmpl:
			r.add(IDTokenizer, reports.StatusPass, "chat template, "+c.View, "tokenizer.chat_template equals "+hf.tmplSrc, nil)
		case got == "":
			r.add(IDTokenizer, reports.StatusWarn, "chat template, "+c.View, fmt.Sprintf("the GGUF has no tokenizer.chat_template: the template is in %s, and the converter reads only tokenizer_config.json's chat_template", hf.tmplSrc), nil)
		default:
			r.add(IDTokenizer, reports.StatusFail, "chat template, "+c.View, "tokenizer.chat_template differs from "+hf.tmplSrc, nil)
		}
	}
	if _, err := template.Named(hf.tmpl); err != nil {
		r.add(IDTokenizer, reports.StatusWarn, "Go template", "Ollama matches no Go template to this chat template ("+err.Error()+"): `ollama create` writes none and the model runs with {{ .Prompt }}; give the Modelfile a TEMPLATE (template/llama3-instruct.gotmpl is the closest) and its stop parameters", nil)
	} else {
		r.add(IDTokenizer, reports.StatusPass, "Go template", "Ollama maps this chat template to one of its Go templates", nil)
	}
}

// bos reports D14, measuring the missing BOS on the first text prompt.
func (r *run) bos(hf *hfTokenizer, kv ggml.KV) {
	addBOS := kv.Bool("tokenizer.ggml.add_bos_token", true)
	bosID := int32(kv.Uint("tokenizer.ggml.bos_token_id"))
	if addBOS {
		r.add(IDBOS, reports.StatusPass, "", "the GGUF has add_bos_token=true: Ollama prepends <|begin_of_text|> as transformers' template does", nil)
		return
	}
	p := r.textPrompt()
	msg := "the GGUF has tokenizer.ggml.add_bos_token=false (tokenizer_config.json has no add_bos_token; transformers 5 drops it when saving), and Ollama's llama3-instruct template emits no <|begin_of_text|>, while transformers' chat template starts with it: through `ollama run`, prompts reach the model without BOS unless the Modelfile TEMPLATE adds it"
	if p == nil || len(p.IDs) < 2 || p.IDs[0] != bosID || r.f32Path == "" {
		r.add(IDBOS, reports.StatusWarn, "", msg, nil)
		return
	}
	var with, without []float32
	err := r.withEngine(r.f32Path, CacheF32, func(e *Engine) error {
		var err error
		if with, _, err = e.LastLogits(p.IDs, nil, 0); err != nil {
			return err
		}
		without, _, err = e.LastLogits(p.IDs[1:], nil, 0)
		return err
	})
	if err != nil {
		r.add(IDBOS, reports.StatusWarn, p.Name, msg+"; the effect could not be measured: "+err.Error(), nil)
		return
	}
	d, det, _ := compareLogits(with, without, p.Name, "ollama F32 with BOS", "ollama F32 without BOS")
	r.add(IDBOS, reports.StatusWarn, p.Name, msg+fmt.Sprintf(". Without the BOS, %s's last logits move by rel RMS %.3g (max |Δ| %.3g, argmax %d → %d)", p.Name, d.RelRMS, d.MaxAbs, d.ArgmaxA, d.ArgmaxB), det)
}

// firstDiff returns the first index where a and b differ, -1 if equal.
func firstDiff(a, b []int32) int {
	if slices.Equal(a, b) {
		return -1
	}
	return samePrefix(a, b)
}

func window(x []int32, i int) []int32 {
	return x[min(i, len(x)):min(i+6, len(x))]
}
