package chat

import (
	"encoding/json"
	"fmt"
	"path/filepath"
)

// NamedSpecialTokens are the attributes transformers passes to every chat
// template when they are set (tokenization_utils_base.py, 5.17). In 5.x
// additional_special_tokens is not among them.
var NamedSpecialTokens = []string{"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}

// LoadSpecialTokens reads the named special tokens of a model directory from
// tokenizer_config.json and, where present, special_tokens_map.json, whose
// values win as they do when transformers loads a tokenizer. Values may be
// strings or AddedToken objects ({"content": …}); either file may be absent.
func LoadSpecialTokens(dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, name := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
		path := filepath.Join(dir, name)
		b, err := readOptional(path)
		if err != nil {
			return nil, err
		}
		if b == nil {
			continue
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, key := range NamedSpecialTokens {
			raw, ok := doc[key]
			if !ok {
				continue
			}
			tok, set, err := parseTokenValue(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, key, err)
			}
			if set {
				out[key] = tok
			}
		}
	}
	return out, nil
}

// parseTokenValue accepts null, a string, or {"content": string, …}.
func parseTokenValue(raw json.RawMessage) (string, bool, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false, err
	}
	switch t := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return t, true, nil
	case map[string]any:
		if c, ok := t["content"].(string); ok {
			return c, true, nil
		}
		return "", false, fmt.Errorf("token object has no string \"content\"")
	}
	return "", false, fmt.Errorf("want a string or {\"content\": string}, got %s", raw)
}
