package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/reports"
)

// TokenizerChecks is the tokenizer.* family: the tokenizer against the base
// and against the goldens' HF tokenizations.
var TokenizerChecks = []*Check{TokenizerVocab, TokenizerFingerprint, TokenizerGolden}

// tokenizerCache keeps the last tokenizers loaded, keyed by the contents of
// their files: several checks read the same tokenizers, a converted model
// usually carries a byte copy of the base's, and parsing a Llama
// tokenizer.json takes most of a second while hashing it takes a few
// milliseconds.
var tokenizerCache struct {
	sync.Mutex
	entries map[string]*chat.Tokenizer
}

// tokenizerCacheSize bounds the cache; a run reads a model and a base.
const tokenizerCacheSize = 4

// tokenizerKey hashes the files LoadTokenizer reads ("" when one cannot be
// read: the load will then report the error).
func tokenizerKey(dir string) string {
	h := sha256.New()
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} {
		fh, err := os.Open(filepath.Join(dir, f))
		if os.IsNotExist(err) {
			fmt.Fprintf(h, "%s absent\n", f)
			continue
		}
		if err != nil {
			return ""
		}
		fmt.Fprintf(h, "%s\n", f)
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return ""
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// loadTokenizer loads dir's tokenizer, through the cache.
func loadTokenizer(dir string) (*chat.Tokenizer, error) {
	key := tokenizerKey(dir)
	if key == "" {
		return chat.LoadTokenizer(dir)
	}
	tokenizerCache.Lock()
	t, ok := tokenizerCache.entries[key]
	tokenizerCache.Unlock()
	if ok {
		return t, nil
	}
	t, err := chat.LoadTokenizer(dir)
	if err != nil {
		return nil, err
	}
	tokenizerCache.Lock()
	defer tokenizerCache.Unlock()
	if tokenizerCache.entries == nil || len(tokenizerCache.entries) >= tokenizerCacheSize {
		tokenizerCache.entries = map[string]*chat.Tokenizer{}
	}
	tokenizerCache.entries[key] = t
	return t, nil
}

// TokenizerVocab compares the tokenizer with the base's.
var TokenizerVocab = &Check{
	ID: "tokenizer.vocab",
	Doc: `The tokenizer's vocabulary, merges, added tokens and pipeline equal the base's.
Compares tokenizer.json semantically (either merges form, any key order): every vocabulary id, every merge in
rank order, every added token with its flags, and the normalizer, pre-tokenizer, post-processor and decoder.
Fails naming the first differences. Also compares the named special tokens of the tokenizer config
(bos_token, eos_token, pad_token, …): a difference is a warning, since Instruct and base models legitimately
differ in eos_token.`,
	Requires: []Input{NeedBase},
	Run: func(p *Pass) error {
		model, err := loadTokenizer(p.Model)
		if err != nil {
			p.Failf("tokenizer.json", "%v", err)
			return nil
		}
		base, err := loadTokenizer(p.Base)
		if err != nil {
			p.Skipf("tokenizer.json", "base: %v", err)
			return nil
		}
		if diffs := chat.DiffTokenizers(model, base, 10); len(diffs) > 0 {
			p.Report(reports.StatusFail, "tokenizer.json", "differs from the base's: "+strings.Join(diffs, "; "), map[string]any{"differences": diffs})
		} else {
			p.Passf("tokenizer.json", "%d vocabulary entries, %d merges and %d added tokens equal to the base's", model.VocabSize(), len(model.Merges()), len(model.AddedTokens()))
		}
		mn, bn := model.Named(), base.Named()
		for _, k := range chat.NamedSpecialTokens {
			if mn[k] != bn[k] {
				p.Warnf(k, "%s is %q, the base's %q", k, mn[k], bn[k])
			}
		}
		return nil
	},
}

// TokenizerFingerprint reports the layout-independent fingerprint.
var TokenizerFingerprint = &Check{
	ID: "tokenizer.fingerprint",
	Doc: `Reports the tokenizer's fingerprint and compares it with the base's and the goldens'.
The fingerprint is a SHA-256 over the vocabulary, merges and added tokens, independent of how tokenizer.json is
laid out, so a 4.x and a 5.x save of one tokenizer agree. Fails when it differs from the base's, or from the
goldens' tokenizer_fingerprint when goldens.json records one.`,
	Run: func(p *Pass) error {
		model, err := loadTokenizer(p.Model)
		if err != nil {
			p.Failf("tokenizer.json", "%v", err)
			return nil
		}
		fp := model.Fingerprint()
		details := map[string]string{"fingerprint": fp}
		compared := []string{}
		if p.Base != "" {
			if base, err := loadTokenizer(p.Base); err == nil {
				details["base"] = base.Fingerprint()
				if base.Fingerprint() != fp {
					p.Report(reports.StatusFail, "tokenizer.json", fmt.Sprintf("fingerprint %s, the base's %s", fp, base.Fingerprint()), details)
					return nil
				}
				compared = append(compared, "the base's")
			}
		}
		if p.Golden != "" {
			if g, err := chat.LoadGoldens(filepath.Join(p.Golden, "goldens.json")); err == nil && g.TokenizerFingerprint != "" {
				details["golden"] = g.TokenizerFingerprint
				if g.TokenizerFingerprint != fp {
					p.Report(reports.StatusFail, "tokenizer.json", fmt.Sprintf("fingerprint %s, the goldens' %s", fp, g.TokenizerFingerprint), details)
					return nil
				}
				compared = append(compared, "the goldens'")
			}
		}
		msg := "fingerprint " + fp
		if len(compared) > 0 {
			msg += ", equal to " + strings.Join(compared, " and ")
		}
		p.Report(reports.StatusPass, "tokenizer.json", msg, details)
		return nil
	},
}

// TokenizerGolden replays the goldens' tokenizer cases.
var TokenizerGolden = &Check{
	ID: "tokenizer.golden",
	Doc: `The tokenizer encodes and decodes the goldens' strings exactly as Hugging Face did.
For each case of goldens.json "tokenizer": the ids with add_special_tokens=False, the ids with it (BOS
prepended by the post-processor) and the decoded text must all match. Fails per case.`,
	Requires: []Input{NeedGolden},
	Run: func(p *Pass) error {
		g := chatGoldens(p, "tokenizer", func(g *chat.Goldens) int { return len(g.Tokenizer) })
		if g == nil {
			return nil
		}
		tok, err := loadTokenizer(p.Model)
		if err != nil {
			p.Failf("tokenizer.json", "%v", err)
			return nil
		}
		bad := 0
		for _, c := range g.Tokenizer {
			subject := fmt.Sprintf("%.40q", c.Text)
			if ids := tok.Encode(c.Text, false); !slices.Equal(ids, c.IDs) {
				p.Failf(subject, "ids: %s", chat.DiffIDs(c.IDs, ids, "golden"))
				bad++
				continue
			}
			if ids := tok.Encode(c.Text, true); !slices.Equal(ids, c.IDsWithBOS) {
				p.Failf(subject, "ids with special tokens: %s", chat.DiffIDs(c.IDsWithBOS, ids, "golden"))
				bad++
				continue
			}
			if got := tok.Decode(c.IDs); got != c.Decoded {
				p.Failf(subject, "decodes to %q, want %q", got, c.Decoded)
				bad++
			}
		}
		if bad == 0 {
			p.Passf("goldens.json", "%d strings encode, encode with BOS and decode as HF did", len(g.Tokenizer))
		}
		return nil
	},
}
