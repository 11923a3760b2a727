package golden

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// maxSideFile bounds the JSON side files parsed here (tokenizer.json has
// its own bound in internal/chat).
const maxSideFile = 64 << 20

// maxFiles bounds the side files listed.
const maxFiles = 4096

// readObject reads a JSON object file; an absent file is fs.ErrNotExist.
func readObject(path string) (map[string]any, error) {
	b, err := boundedio.ReadFile(path, maxSideFile)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if doc == nil {
		return nil, fmt.Errorf("%s: not a JSON object", path)
	}
	return doc, nil
}

// hashFile returns a file's SHA-256 and size.
func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// recordFiles lists every file of the model directory but the weights, and
// the named templates in additional_chat_templates/.
func recordFiles(dir string) ([]File, error) {
	var out []File
	add := func(rel string) error {
		if len(out) >= maxFiles {
			return fmt.Errorf("%s: more than %d side files", dir, maxFiles)
		}
		sum, size, err := hashFile(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		out = append(out, File{Name: filepath.ToSlash(rel), Size: size, SHA256: sum})
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case e.Type().IsRegular() && !strings.HasSuffix(name, ".safetensors") && !strings.HasPrefix(name, "."):
			if err := add(name); err != nil {
				return nil, err
			}
		case e.IsDir() && name == string(chat.FormAdditional):
			sub, err := os.ReadDir(filepath.Join(dir, name))
			if err != nil {
				return nil, err
			}
			for _, s := range sub {
				if s.Type().IsRegular() {
					if err := add(filepath.Join(name, s.Name())); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// moveKey renames doc[from] to doc[to] unless to is already set; it returns
// whether from was present.
func moveKey(doc map[string]any, from, to string) bool {
	v, ok := doc[from]
	if !ok {
		return false
	}
	if _, has := doc[to]; !has {
		doc[to] = v
		delete(doc, from)
	} else if equalJSON(doc[to], v) {
		delete(doc, from)
	}
	return true
}

// normaliseDType spells torch_dtype as dtype (transformers 5.x renamed it)
// and notes the old spelling.
func normaliseDType(doc map[string]any, prefix string, forms map[string]string) {
	if moveKey(doc, "torch_dtype", "dtype") {
		forms[prefix+"dtype"] = "torch_dtype"
	}
}

// normaliseRope writes the text config's RoPE settings as 5.x's
// rope_parameters: 4.x keeps rope_theta beside rope_scaling (null for plain
// RoPE, which 5.x spells {"rope_type": "default"}).
func normaliseRope(tc map[string]any, forms map[string]string) {
	if rp, ok := tc["rope_parameters"].(map[string]any); ok {
		forms["text_config.rope"] = "rope_parameters"
		if th, ok := tc["rope_theta"]; ok {
			if _, has := rp["rope_theta"]; !has {
				rp["rope_theta"] = th
				delete(tc, "rope_theta")
			} else if equalJSON(rp["rope_theta"], th) {
				delete(tc, "rope_theta")
			}
		}
		return
	}
	rs, hasScaling := tc["rope_scaling"]
	if !hasScaling {
		return
	}
	rp := map[string]any{}
	switch v := rs.(type) {
	case map[string]any:
		for k, x := range v {
			rp[k] = x
		}
	case nil:
		rp["rope_type"] = "default"
	default:
		return // not a form we know: compare as written
	}
	// 4.x also accepts "type" for "rope_type".
	moveKey(rp, "type", "rope_type")
	if th, ok := tc["rope_theta"]; ok {
		rp["rope_theta"] = th
		delete(tc, "rope_theta")
	}
	delete(tc, "rope_scaling")
	tc["rope_parameters"] = rp
	forms["text_config.rope"] = "rope_scaling+rope_theta"
}

// takeVersion removes transformers_version and returns it.
func takeVersion(doc map[string]any) string {
	v, _ := doc["transformers_version"].(string)
	delete(doc, "transformers_version")
	return v
}

// recordConfig normalises config.json.
func recordConfig(dir string) (*SideFile, error) {
	doc, err := readObject(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	sf := &SideFile{File: "config.json", Forms: map[string]string{}, Version: takeVersion(doc), Content: doc}
	// A local path, not a property of the model.
	delete(doc, "_name_or_path")
	normaliseDType(doc, "", sf.Forms)
	for _, sub := range []string{"text_config", "vision_config"} {
		if m, ok := doc[sub].(map[string]any); ok {
			takeVersion(m)
			delete(m, "_name_or_path")
			normaliseDType(m, sub+".", sf.Forms)
		}
	}
	if tc, ok := doc["text_config"].(map[string]any); ok {
		normaliseRope(tc, sf.Forms)
	}
	return sf, nil
}

// recordGenerationConfig reads generation_config.json.
func recordGenerationConfig(dir string) (*SideFile, error) {
	doc, err := readObject(filepath.Join(dir, "generation_config.json"))
	if err != nil {
		return nil, err
	}
	return &SideFile{File: "generation_config.json", Version: takeVersion(doc), Content: doc}, nil
}

// tokenizerConfigForms are tokenizer_config.json keys whose content another
// item covers or that only say how a version stores the same tokenizer:
// added_tokens_decoder (4.x; the tokenizer fingerprint covers the added
// tokens, and loading checks the two agree), chat_template (the
// chat_template item), tokenizer_class and backend (4.x's
// PreTrainedTokenizerFast is 5.x's TokenizersBackend), and the loading
// arguments 5.x saves.
var tokenizerConfigForms = []string{"added_tokens_decoder", "chat_template", "tokenizer_class", "backend", "is_local", "local_files_only"}

// recordTokenizerConfig normalises tokenizer_config.json together with
// special_tokens_map.json: the named special tokens, which 4.x also keeps in
// special_tokens_map.json and may write as AddedToken objects, become the
// strings transformers resolves them to.
func recordTokenizerConfig(dir string) (*SideFile, error) {
	doc, err := readObject(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return nil, err
	}
	sf := &SideFile{File: "tokenizer_config.json", Forms: map[string]string{}, Version: takeVersion(doc), Content: doc}
	delete(doc, "name_or_path")
	delete(doc, "_name_or_path")
	for _, k := range tokenizerConfigForms {
		if v, ok := doc[k]; ok {
			if s, ok := v.(string); ok && (k == "tokenizer_class" || k == "backend") {
				sf.Forms[k] = s
			} else {
				sf.Forms[k] = "present"
			}
			delete(doc, k)
		}
	}
	named, err := chat.LoadSpecialTokens(dir)
	if err != nil {
		return nil, err
	}
	objects := false
	for _, k := range chat.NamedSpecialTokens {
		if _, ok := doc[k].(map[string]any); ok {
			objects = true
		}
		delete(doc, k)
		if v, ok := named[k]; ok {
			doc[k] = v
		}
	}
	if objects {
		sf.Forms["special_tokens"] = "AddedToken objects"
	}
	if _, err := os.Stat(filepath.Join(dir, "special_tokens_map.json")); err == nil {
		sf.Forms["special_tokens_map.json"] = "present"
	}
	return sf, nil
}

// recordImageProcessor reads the image-processor config transformers 5.17
// would load, with the class defaults filled in: a 4.x
// preprocessor_config.json and a 5.x processor_config.json with the same
// values have the same content.
func recordImageProcessor(dir string) (*SideFile, error) {
	c, err := vision.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	for k, raw := range c.Extra {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", c.Path, k, err)
		}
		doc[k] = v
	}
	sf := &SideFile{File: string(c.Form), Forms: map[string]string{}, Version: takeVersion(doc), Content: doc}
	// Informational fields (vision.Diff calls them cosmetic).
	for _, k := range []string{"image_processor_type", "processor_class"} {
		if s, ok := doc[k].(string); ok {
			sf.Forms[k] = s
		}
		delete(doc, k)
	}
	if len(c.Defaulted) > 0 {
		sf.Forms["defaulted"] = strings.Join(c.Defaulted, ", ")
	}
	return sf, nil
}

// recordTemplates records what each transformers loader would load.
func recordTemplates(dir string) (map[string]*Template, map[string]string, error) {
	ts, err := chat.FindTemplates(dir)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]*Template{}
	problems := map[string]string{}
	for _, l := range []chat.Loader{chat.LoaderTokenizer, chat.LoaderProcessor} {
		ld, err := ts.For(l)
		if err != nil {
			problems[string(l)] = err.Error()
			continue
		}
		if ld == nil {
			continue
		}
		t := &Template{Names: ld.Names()}
		for _, f := range ld.From {
			t.From = append(t.From, string(f))
		}
		h := sha256.New()
		for _, n := range t.Names {
			src := ld.Templates[n]
			fmt.Fprintf(h, "%s\x00%d\x00%s", n, len(src), src)
			t.Bytes += len(src)
		}
		t.SHA256 = hex.EncodeToString(h.Sum(nil))
		if src, ok := ld.Templates[chat.DefaultName]; ok {
			t.Version = chat.Version(src)
		}
		out[string(l)] = t
	}
	return out, problems, nil
}

// tokenizerPipeline hashes tokenizer.json's normalizer, pre-tokenizer,
// post-processor and decoder as canonical JSON (sorted keys), so that key
// order and whitespace do not count.
func tokenizerPipeline(dir string) (string, string, error) {
	path := filepath.Join(dir, "tokenizer.json")
	b, err := boundedio.ReadFile(path, chat.MaxTokenizerFileSize)
	if err != nil {
		return "", "", err
	}
	var doc struct {
		Normalizer    any `json:"normalizer"`
		PreTokenizer  any `json:"pre_tokenizer"`
		PostProcessor any `json:"post_processor"`
		Decoder       any `json:"decoder"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	canon, err := json.Marshal([]any{doc.Normalizer, doc.PreTokenizer, doc.PostProcessor, doc.Decoder})
	if err != nil {
		return "", "", err
	}
	p := sha256.Sum256(canon)
	file := sha256.Sum256(b)
	return hex.EncodeToString(p[:]), hex.EncodeToString(file[:]), nil
}

// recordTokenizer summarises a loaded tokenizer.
func recordTokenizer(dir string, tok *chat.Tokenizer) (*Tokenizer, error) {
	pipe, file, err := tokenizerPipeline(dir)
	if err != nil {
		return nil, err
	}
	return &Tokenizer{Fingerprint: tok.Fingerprint(), Pipeline: pipe, VocabSize: tok.VocabSize(), Merges: len(tok.Merges()),
		Added: len(tok.AddedTokens()), Named: tok.Named(), FileSHA256: file}, nil
}

// equalJSON compares decoded JSON values.
func equalJSON(a, b any) bool {
	return len(diffJSON("", a, b, 1)) == 0
}

// diffJSON lists up to limit paths where decoded JSON values differ, as
// "path: a vs b".
func diffJSON(path string, a, b any, limit int) []string {
	var out []string
	var walk func(path string, a, b any)
	walk = func(path string, a, b any) {
		if len(out) >= limit {
			return
		}
		switch x := a.(type) {
		case map[string]any:
			y, ok := b.(map[string]any)
			if !ok {
				break
			}
			for _, k := range unionKeys(x, y) {
				p := k
				if path != "" {
					p = path + "." + k
				}
				va, okA := x[k]
				vb, okB := y[k]
				switch {
				case !okA:
					out = append(out, fmt.Sprintf("%s: absent vs %s", p, short(vb)))
				case !okB:
					out = append(out, fmt.Sprintf("%s: %s vs absent", p, short(va)))
				default:
					walk(p, va, vb)
				}
				if len(out) >= limit {
					return
				}
			}
			return
		case []any:
			y, ok := b.([]any)
			if !ok || len(x) != len(y) {
				break
			}
			for i := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), x[i], y[i])
			}
			return
		default:
			ja, errA := json.Marshal(a)
			jb, errB := json.Marshal(b)
			if errA == nil && errB == nil && string(ja) == string(jb) {
				return
			}
		}
		out = append(out, fmt.Sprintf("%s: %s vs %s", path, short(a), short(b)))
	}
	walk(path, a, b)
	return out
}

// short prints a JSON value, clipped.
func short(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := string(b)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// isNotExist reports a missing file.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
