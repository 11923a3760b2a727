package chat

import (
	"encoding/json"
	"fmt"

	"github.com/dlclark/regexp2"
)

// gpt2Pattern is the split the ByteLevel pre-tokenizer applies when its
// use_regex is set (tokenizers' byte_level.rs).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// preStep is one pre-tokenizer of the pipeline: it splits each piece with
// split (when set), then maps the pieces to byte-level characters (when
// byteLevel is set).
type preStep struct {
	split     *regexp2.Regexp
	byteLevel bool
}

// parsePreTokenizer reads tokenizer.json's pre_tokenizer. It supports what
// Llama 3 and GPT-2 style tokenizers use: Split (Regex or String pattern,
// behavior Isolated, not inverted), ByteLevel without add_prefix_space,
// and Sequence of those.
func parsePreTokenizer(raw json.RawMessage) ([]preStep, error) {
	if isNull(raw) {
		return nil, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, err
	}
	switch head.Type {
	case "Sequence":
		var seq struct {
			Pretokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(raw, &seq); err != nil {
			return nil, err
		}
		var steps []preStep
		for i, p := range seq.Pretokenizers {
			s, err := parsePreTokenizer(p)
			if err != nil {
				return nil, fmt.Errorf("pretokenizers[%d]: %w", i, err)
			}
			steps = append(steps, s...)
		}
		return steps, nil
	case "Split":
		var sp struct {
			Pattern struct {
				Regex  *string `json:"Regex"`
				String *string `json:"String"`
			} `json:"pattern"`
			Behavior string `json:"behavior"`
			Invert   bool   `json:"invert"`
		}
		if err := json.Unmarshal(raw, &sp); err != nil {
			return nil, err
		}
		if sp.Behavior != "Isolated" || sp.Invert {
			return nil, fmt.Errorf("unsupported Split: behavior %q, invert %v (only Isolated, not inverted)", sp.Behavior, sp.Invert)
		}
		var pat string
		switch {
		case sp.Pattern.Regex != nil:
			pat = *sp.Pattern.Regex
		case sp.Pattern.String != nil:
			pat = regexp2.Escape(*sp.Pattern.String)
		default:
			return nil, fmt.Errorf("split pattern has neither a Regex nor a String")
		}
		re, err := compileSplit(pat)
		if err != nil {
			return nil, err
		}
		return []preStep{{split: re}}, nil
	case "ByteLevel":
		var bl struct {
			AddPrefixSpace bool  `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := json.Unmarshal(raw, &bl); err != nil {
			return nil, err
		}
		if bl.AddPrefixSpace {
			return nil, fmt.Errorf("unsupported ByteLevel add_prefix_space=true")
		}
		step := preStep{byteLevel: true}
		// use_regex defaults to true in tokenizers.
		if bl.UseRegex == nil || *bl.UseRegex {
			re, err := compileSplit(gpt2Pattern)
			if err != nil {
				return nil, err
			}
			step.split = re
		}
		return []preStep{step}, nil
	}
	return nil, fmt.Errorf("unsupported pre_tokenizer type %q", head.Type)
}

// compileSplit compiles a pre-tokenizer pattern. tokenizers runs these with
// Oniguruma, where \s, \p{L} and \p{N} are Unicode classes; regexp2's
// default (.NET) syntax has the same meaning. Ollama compiles the same
// pattern in regexp2's RE2 mode, where \s is ASCII only — one of the two
// ways its tokenizer departs from HF (chat-template-and-preprocessing.md
// §5.5).
func compileSplit(pattern string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("pre-tokenizer pattern %q: %w", pattern, err)
	}
	return re, nil
}

// preTokenize runs the pipeline over one piece of text that holds no added
// token.
func preTokenize(steps []preStep, text string) ([]string, error) {
	pieces := []string{text}
	for _, st := range steps {
		if st.split != nil {
			var next []string
			for _, p := range pieces {
				parts, err := splitIsolated(st.split, p)
				if err != nil {
					return nil, err
				}
				next = append(next, parts...)
			}
			pieces = next
		}
		if st.byteLevel {
			for i, p := range pieces {
				pieces[i] = byteLevel(p)
			}
		}
	}
	return pieces, nil
}

// splitIsolated cuts s into its matches and the text between them, all
// kept, in order (the Isolated behaviour). Empty pieces are dropped.
func splitIsolated(re *regexp2.Regexp, s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	runes := []rune(s)
	var out []string
	last := 0
	m, err := re.FindRunesMatch(runes)
	for ; m != nil && err == nil; m, err = re.FindNextMatch(m) {
		if m.Length == 0 {
			continue
		}
		if m.Index > last {
			out = append(out, string(runes[last:m.Index]))
		}
		out = append(out, string(runes[m.Index:m.Index+m.Length]))
		last = m.Index + m.Length
	}
	if err != nil {
		return nil, err
	}
	if last < len(runes) {
		out = append(out, string(runes[last:]))
	}
	return out, nil
}

func isNull(raw json.RawMessage) bool {
	s := string(raw)
	return len(raw) == 0 || s == "null"
}
