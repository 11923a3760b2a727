package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// FileChecks is the files.* family.
var FileChecks = []*Check{FilesRequired, FilesSideEqual}

// FilesRequired checks that transformers finds everything it loads.
var FilesRequired = &Check{
	ID: "files.required",
	Doc: `Every file transformers needs to load the model and its processor is present.
Weights (model.safetensors, or model.safetensors.index.json and every shard it names), config.json,
generation_config.json, tokenizer.json, tokenizer_config.json, the image processor config
(preprocessor_config.json, or processor_config.json with an image_processor entry) and a chat template in
any of its three forms (chat_template.jinja, chat_template.json, or chat_template in tokenizer_config.json).
Fails for each one missing.`,
	Run: runFilesRequired,
}

func exists(dir, name string) bool {
	st, err := os.Stat(filepath.Join(dir, name))
	return err == nil && st.Mode().IsRegular()
}

func readJSON(path string) (map[string]any, error) {
	b, err := boundedio.ReadFile(path, boundedio.JSONLimit)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func runFilesRequired(p *Pass) error {
	dir := p.Model
	req := func(subject string, ok bool, okMsg, failMsg string) {
		if ok {
			p.Passf(subject, "%s", okMsg)
		} else {
			p.Failf(subject, "%s", failMsg)
		}
	}
	// Weights.
	switch {
	case exists(dir, safetensors.IndexName):
		ix, err := safetensors.ReadIndex(filepath.Join(dir, safetensors.IndexName))
		if err != nil {
			p.Failf("weights", "%v", err)
			break
		}
		var missing []string
		for _, f := range uniqueValues(ix.WeightMap) {
			if !exists(dir, f) {
				missing = append(missing, f)
			}
		}
		req("weights", len(missing) == 0, fmt.Sprintf("index and its %d shard(s) present", len(uniqueValues(ix.WeightMap))),
			fmt.Sprintf("%s names shards that are missing: %s", safetensors.IndexName, strings.Join(missing, ", ")))
	case exists(dir, safetensors.SingleName):
		p.Passf("weights", "model.safetensors present")
	default:
		p.Failf("weights", "no model.safetensors and no %s in %s", safetensors.IndexName, dir)
	}
	for _, f := range []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} {
		req(f, exists(dir, f), f+" present", f+" is missing")
	}
	// Image processor config: either file form.
	switch {
	case exists(dir, "preprocessor_config.json"):
		p.Passf("image processor config", "preprocessor_config.json present (transformers 4.x form)")
	case exists(dir, "processor_config.json"):
		m, err := readJSON(filepath.Join(dir, "processor_config.json"))
		if err != nil {
			p.Failf("image processor config", "%v", err)
		} else if _, ok := m["image_processor"].(map[string]any); ok {
			p.Passf("image processor config", "processor_config.json with image_processor present (transformers 5.x form)")
		} else {
			p.Failf("image processor config", "processor_config.json has no image_processor entry and there is no preprocessor_config.json")
		}
	default:
		p.Failf("image processor config", "neither preprocessor_config.json nor processor_config.json: the processor cannot preprocess images")
	}
	// Chat template, any form.
	var forms []string
	if exists(dir, "chat_template.jinja") {
		forms = append(forms, "chat_template.jinja")
	}
	if exists(dir, "chat_template.json") {
		forms = append(forms, "chat_template.json")
	}
	if m, err := readJSON(filepath.Join(dir, "tokenizer_config.json")); err == nil && m["chat_template"] != nil {
		forms = append(forms, "tokenizer_config.json chat_template")
	}
	req("chat template", len(forms) > 0, "present as "+strings.Join(forms, ", "),
		"no chat template in any form (chat_template.jinja, chat_template.json, tokenizer_config.json)")
	return nil
}

func uniqueValues(m map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range m {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// sideFileNames are compared with the base; they mirror convert.SideFiles.
var sideFileNames = []string{
	"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
	"added_tokens.json", "chat_template.jinja", "chat_template.json", "preprocessor_config.json", "processor_config.json",
}

// FilesSideEqual compares side files with the base.
var FilesSideEqual = &Check{
	ID: "files.side_equal",
	Doc: `Every side file of the base is present in the model and equal to the base's.
JSON files are compared semantically (key order and formatting do not matter) and a go-cmp diff is shown on
mismatch; config.json is compared without its dtype field (config.dtype checks that); other files (the Jinja
chat template) byte for byte. A side file the model has and the base does not is a warning (another
transformers version's form of the same content?).`,
	Requires: []Input{NeedBase},
	Run:      runFilesSideEqual,
}

func runFilesSideEqual(p *Pass) error {
	for _, f := range sideFileNames {
		inBase, inModel := exists(p.Base, f), exists(p.Model, f)
		switch {
		case !inBase && !inModel:
			continue
		case inBase && !inModel:
			p.Failf(f, "the base has %s; the model does not", f)
			continue
		case !inBase && inModel:
			p.Warnf(f, "the model has %s; the base does not", f)
			continue
		}
		a, err := boundedio.ReadFile(filepath.Join(p.Model, f), boundedio.TokenizerLimit)
		if err != nil {
			p.Failf(f, "%v", err)
			continue
		}
		b, err := boundedio.ReadFile(filepath.Join(p.Base, f), boundedio.TokenizerLimit)
		if err != nil {
			p.Warnf(f, "base: %v", err)
			continue
		}
		if bytes.Equal(a, b) {
			p.Passf(f, "identical to the base")
			continue
		}
		if !strings.HasSuffix(f, ".json") {
			if bytes.Equal(a, b) {
				p.Passf(f, "identical to the base")
			} else {
				p.Failf(f, "differs from the base:\n%s", textDiff(string(b), string(a)))
			}
			continue
		}
		var ja, jb any
		if err := json.Unmarshal(a, &ja); err != nil {
			p.Failf(f, "model's %s is not JSON: %v", f, err)
			continue
		}
		if err := json.Unmarshal(b, &jb); err != nil {
			p.Warnf(f, "base's %s is not JSON: %v", f, err)
			continue
		}
		if f == "config.json" {
			for _, m := range []any{ja, jb} {
				if mm, ok := m.(map[string]any); ok {
					delete(mm, "dtype")
					delete(mm, "torch_dtype")
				}
			}
		}
		// reflect.DeepEqual first: go-cmp is slow on a 7 MB tokenizer.json
		// and only needed to explain a difference.
		if reflect.DeepEqual(ja, jb) {
			p.Passf(f, "semantically equal to the base")
		} else {
			p.Failf(f, "differs from the base (-base +model):\n%s", truncate(cmp.Diff(jb, ja), 4000))
		}
	}
	return nil
}

// textDiff shows the first differing lines of two texts.
func textDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w == g {
			continue
		}
		fmt.Fprintf(&b, "line %d:\n- %s\n+ %s\n", i+1, truncate(w, 200), truncate(g, 200))
		if shown++; shown == 5 {
			b.WriteString("…\n")
			break
		}
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
