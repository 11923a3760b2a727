package chat

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// MaxTokenizerFileSize bounds tokenizer.json (Llama 3's is 9–17 MB).
const MaxTokenizerFileSize = 512 << 20

// Merge is one BPE merge rule, the pair of tokens it joins.
type Merge [2]string

// UnmarshalJSONFrom accepts both forms tokenizers writes: ["a", "b"]
// (0.20+) and "a b" (older files), which must hold exactly one space. It
// reads tokens directly, as a Llama tokenizer.json holds some 280,000
// merges and the reflective path would double the load time.
func (m *Merge) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	switch dec.PeekKind() {
	case '"':
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		s := tok.String()
		a, b, ok := strings.Cut(s, " ")
		if !ok || strings.Contains(b, " ") {
			return fmt.Errorf("merge %q is not two tokens separated by one space", s)
		}
		*m = Merge{a, b}
		return nil
	case '[':
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		var pair Merge
		n := 0
		for dec.PeekKind() == '"' {
			tok, err := dec.ReadToken()
			if err != nil {
				return err
			}
			if n < 2 {
				pair[n] = tok.String()
			}
			n++
		}
		end, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if end.Kind() != ']' || n != 2 {
			return fmt.Errorf("merge is not a pair of strings")
		}
		*m = pair
		return nil
	}
	return fmt.Errorf("merge is neither a string nor a pair of strings")
}

// Tokenizer encodes and decodes text as Hugging Face tokenizers does with a
// model directory's tokenizer.json: added tokens matched first, the
// pre-tokenizer's regex split and byte-level mapping, then BPE with
// rank-then-position merge order.
//
// Ollama's tokenizer package is not used: its merge heap orders by rank
// only, its pre-tokenizer regex runs in RE2 mode with an ASCII \s, it
// matches added tokens by id order rather than leftmost-longest, and its
// Decode drops NUL bytes and indexes the vocabulary without a bound check.
// None of its pieces can be used apart from its Encode.
type Tokenizer struct {
	// Path is the tokenizer.json read.
	Path string

	vocab        map[string]int
	vocabR       map[int]string
	mergeList    []Merge
	merges       map[[2]int]mergeEntry
	ignoreMerges bool
	hasUnk       bool
	unkID        int
	fuseUnk      bool

	added          []AddedToken // sorted by id
	addedByContent map[string]int
	addedByID      map[int]*AddedToken
	rawMatch       *matcher // tokens with normalized=false
	normMatch      *matcher // tokens with normalized=true

	pre              []preStep
	prefix, suffix   []int // the post-processor's single-sequence template
	byteLevelDecoder bool

	pipeline map[string]any // normalizer … decoder, as decoded JSON
	named    map[string]string

	fingerOnce sync.Once
	finger     string
}

// tokenizerFile is the part of tokenizer.json read here.
type tokenizerFile struct {
	AddedTokens   []AddedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         struct {
		Type                    string   `json:"type"`
		Dropout                 *float64 `json:"dropout"`
		UnkToken                *string  `json:"unk_token"`
		ContinuingSubwordPrefix *string  `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string  `json:"end_of_word_suffix"`
		FuseUnk                 bool     `json:"fuse_unk"`
		ByteFallback            bool     `json:"byte_fallback"`
		IgnoreMerges            bool     `json:"ignore_merges"`
		// Decoded apart, concurrently: they are most of the file.
		Vocab  jsontext.Value `json:"vocab"`
		Merges jsontext.Value `json:"merges"`
	} `json:"model"`
}

// LoadTokenizer reads dir/tokenizer.json (merges in either form) and the
// named special tokens of dir/tokenizer_config.json and
// special_tokens_map.json. When tokenizer_config.json has the 4.x
// added_tokens_decoder, each entry must agree with tokenizer.json.
func LoadTokenizer(dir string) (*Tokenizer, error) {
	path := filepath.Join(dir, "tokenizer.json")
	t, err := ParseTokenizerFile(path)
	if err != nil {
		return nil, err
	}
	if t.named, err = LoadSpecialTokens(dir); err != nil {
		return nil, err
	}
	if err := t.checkAddedTokensDecoder(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		return nil, err
	}
	return t, nil
}

// ParseTokenizerFile reads one tokenizer.json.
func ParseTokenizerFile(path string) (*Tokenizer, error) {
	b, err := boundedio.ReadFile(path, MaxTokenizerFileSize)
	if err != nil {
		return nil, err
	}
	t, err := parseTokenizer(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.Path = path
	return t, nil
}

func parseTokenizer(b []byte) (*Tokenizer, error) {
	var tf tokenizerFile
	if err := json.Unmarshal(b, &tf); err != nil {
		return nil, err
	}
	m := &tf.Model
	switch {
	case m.Type != "BPE":
		return nil, fmt.Errorf("model.type is %q; only BPE is supported", m.Type)
	case m.Dropout != nil && *m.Dropout != 0:
		return nil, fmt.Errorf("model.dropout is %v; only none is supported", *m.Dropout)
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return nil, fmt.Errorf("model.continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return nil, fmt.Errorf("model.end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	case m.ByteFallback:
		return nil, fmt.Errorf("model.byte_fallback=true is not supported")
	case !isNull(tf.Normalizer):
		return nil, fmt.Errorf("normalizer %s is not supported (only null)", abbreviate(tf.Normalizer))
	}
	vocab, mergeList, err := decodeVocabMerges(m.Vocab, m.Merges)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{
		vocab:        vocab,
		vocabR:       make(map[int]string, len(vocab)),
		mergeList:    mergeList,
		merges:       make(map[[2]int]mergeEntry, len(mergeList)),
		ignoreMerges: m.IgnoreMerges,
		fuseUnk:      m.FuseUnk,
		pipeline:     map[string]any{},
	}
	if t.vocab == nil {
		return nil, fmt.Errorf("model.vocab is missing")
	}
	for tok, id := range t.vocab {
		if id < 0 || id > math.MaxUint32 {
			return nil, fmt.Errorf("model.vocab: %q has id %d, outside 0..2^32-1", tok, id)
		}
		if other, dup := t.vocabR[id]; dup {
			a, b := min(tok, other), max(tok, other)
			return nil, fmt.Errorf("model.vocab: %q and %q share id %d", a, b, id)
		}
		t.vocabR[id] = tok
	}
	if m.UnkToken != nil {
		id, ok := t.vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model.unk_token %q is not in the vocabulary", *m.UnkToken)
		}
		t.hasUnk, t.unkID = true, id
	}
	pairs, err := resolveMerges(t.vocab, t.mergeList)
	if err != nil {
		return nil, err
	}
	for rank, p := range pairs {
		// A repeated pair takes its last rank, as tokenizers' HashMap does.
		t.merges[[2]int{p[0], p[1]}] = mergeEntry{rank: rank, id: p[2]}
	}
	if err := t.setAdded(tf.AddedTokens); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(tf.PreTokenizer); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if t.prefix, t.suffix, err = parsePostProcessor(tf.PostProcessor); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	if t.byteLevelDecoder, err = parseDecoder(tf.Decoder); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	for name, raw := range map[string]json.RawMessage{"normalizer": tf.Normalizer, "pre_tokenizer": tf.PreTokenizer, "post_processor": tf.PostProcessor, "decoder": tf.Decoder} {
		var v any
		if !isNull(raw) {
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		t.pipeline[name] = v
	}
	return t, nil
}

// decodeVocabMerges decodes model.vocab and model.merges, each on its own
// goroutine: together they are nearly all of a Llama tokenizer.json, and
// loading it is most of a smoke run.
func decodeVocabMerges(rawVocab, rawMerges jsontext.Value) (map[string]int, []Merge, error) {
	var (
		vocab      map[string]int
		merges     []Merge
		vErr, mErr error
		wg         sync.WaitGroup
	)
	if len(rawVocab) > 0 {
		wg.Go(func() { vErr = json.Unmarshal(rawVocab, &vocab) })
	}
	if len(rawMerges) > 0 {
		mErr = json.Unmarshal(rawMerges, &merges)
	}
	wg.Wait()
	switch {
	case vErr != nil:
		return nil, nil, fmt.Errorf("model.vocab: %w", vErr)
	case mErr != nil:
		return nil, nil, fmt.Errorf("model.merges: %w", mErr)
	}
	return vocab, merges, nil
}

// resolveMerges maps every merge to the ids of its two tokens and of their
// concatenation, in parallel chunks (the vocabulary is only read). The
// error is the lowest-ranked merge with a token outside the vocabulary.
func resolveMerges(vocab map[string]int, merges []Merge) ([][3]int, error) {
	pairs := make([][3]int, len(merges))
	workers := max(1, min(runtime.GOMAXPROCS(0), 4, len(merges)/10000))
	bad := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*len(merges)/workers, (w+1)*len(merges)/workers
		bad[w] = -1
		wg.Go(func() {
			for rank := lo; rank < hi; rank++ {
				mg := merges[rank]
				a, okA := vocab[mg[0]]
				b, okB := vocab[mg[1]]
				j, okJ := vocab[mg[0]+mg[1]]
				if !okA || !okB || !okJ {
					bad[w] = rank
					return
				}
				pairs[rank] = [3]int{a, b, j}
			}
		})
	}
	wg.Wait()
	for _, rank := range bad {
		if rank >= 0 {
			mg := merges[rank]
			return nil, fmt.Errorf("model.merges[%d] (%q, %q): a token is not in the vocabulary", rank, mg[0], mg[1])
		}
	}
	return pairs, nil
}

func (t *Tokenizer) setAdded(tokens []AddedToken) error {
	t.added = append([]AddedToken(nil), tokens...)
	sort.SliceStable(t.added, func(i, j int) bool { return t.added[i].ID < t.added[j].ID })
	t.addedByContent = make(map[string]int, len(tokens))
	t.addedByID = make(map[int]*AddedToken, len(tokens))
	var raw, norm []*AddedToken
	for i := range t.added {
		a := &t.added[i]
		switch {
		case a.ID < 0 || a.ID > math.MaxUint32:
			return fmt.Errorf("added_tokens: %q has id %d, outside 0..2^32-1", a.Content, a.ID)
		case a.Content == "":
			return fmt.Errorf("added_tokens: id %d has empty content", a.ID)
		}
		if prev, dup := t.addedByID[a.ID]; dup {
			return fmt.Errorf("added_tokens: %q and %q share id %d", prev.Content, a.Content, a.ID)
		}
		if prev, dup := t.addedByContent[a.Content]; dup {
			return fmt.Errorf("added_tokens: %q appears with ids %d and %d", a.Content, prev, a.ID)
		}
		if vid, ok := t.vocab[a.Content]; ok && vid != a.ID {
			return fmt.Errorf("added_tokens: %q has id %d but the vocabulary gives it %d", a.Content, a.ID, vid)
		}
		t.addedByID[a.ID] = a
		t.addedByContent[a.Content] = a.ID
		if a.Normalized {
			norm = append(norm, a)
		} else {
			raw = append(raw, a)
		}
	}
	t.rawMatch, t.normMatch = newMatcher(raw), newMatcher(norm)
	return nil
}

// parsePostProcessor reads the single-sequence template of a
// TemplateProcessing post-processor, alone or in a Sequence; ByteLevel
// post-processors change only offsets and are skipped.
func parsePostProcessor(raw json.RawMessage) (prefix, suffix []int, err error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, nil, err
	}
	switch head.Type {
	case "ByteLevel":
		return nil, nil, nil
	case "Sequence":
		var seq struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &seq); err != nil {
			return nil, nil, err
		}
		found := false
		for i, p := range seq.Processors {
			pre, suf, err := parsePostProcessor(p)
			if err != nil {
				return nil, nil, fmt.Errorf("processors[%d]: %w", i, err)
			}
			if pre != nil || suf != nil {
				if found {
					return nil, nil, fmt.Errorf("more than one TemplateProcessing")
				}
				found, prefix, suffix = true, pre, suf
			}
		}
		return prefix, suffix, nil
	case "TemplateProcessing":
		var tp struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &tp); err != nil {
			return nil, nil, err
		}
		seen := false
		prefix, suffix = []int{}, []int{}
		for _, item := range tp.Single {
			switch {
			case item.Sequence != nil:
				if seen || item.Sequence.ID != "A" {
					return nil, nil, fmt.Errorf("single template must hold sequence A exactly once")
				}
				seen = true
			case item.SpecialToken != nil:
				st, ok := tp.SpecialTokens[item.SpecialToken.ID]
				if !ok {
					return nil, nil, fmt.Errorf("special token %q is not in special_tokens", item.SpecialToken.ID)
				}
				if seen {
					suffix = append(suffix, st.IDs...)
				} else {
					prefix = append(prefix, st.IDs...)
				}
			default:
				return nil, nil, fmt.Errorf("single template item is neither SpecialToken nor Sequence")
			}
		}
		if !seen {
			return nil, nil, fmt.Errorf("single template lacks sequence A")
		}
		return prefix, suffix, nil
	}
	return nil, nil, fmt.Errorf("unsupported post_processor type %q", head.Type)
}

// parseDecoder accepts a ByteLevel decoder or none (tokens joined by
// spaces, as tokenizers does without a decoder).
func parseDecoder(raw json.RawMessage) (bool, error) {
	if isNull(raw) {
		return false, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return false, err
	}
	if head.Type != "ByteLevel" {
		return false, fmt.Errorf("unsupported decoder type %q", head.Type)
	}
	return true, nil
}

// checkAddedTokensDecoder compares tokenizer_config.json's 4.x
// added_tokens_decoder, when present, with tokenizer.json's added tokens.
func (t *Tokenizer) checkAddedTokensDecoder(path string) error {
	b, err := readOptional(path)
	if b == nil || err != nil {
		return err
	}
	var cfg struct {
		AddedTokensDecoder map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens_decoder"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	keys := slices.Sorted(maps.Keys(cfg.AddedTokensDecoder))
	for _, k := range keys {
		e := cfg.AddedTokensDecoder[k]
		id, err := strconv.Atoi(k)
		if err != nil {
			return fmt.Errorf("%s: added_tokens_decoder key %q is not an id", path, k)
		}
		a, ok := t.addedByID[id]
		switch {
		case !ok:
			return fmt.Errorf("%s: added_tokens_decoder[%d] is %q, but %s has no added token with id %d", path, id, e.Content, t.Path, id)
		case a.Content != e.Content:
			return fmt.Errorf("%s: added_tokens_decoder[%d] is %q, but %s says %q", path, id, e.Content, t.Path, a.Content)
		case a.Special != e.Special:
			return fmt.Errorf("%s: added_tokens_decoder[%d] %q has special=%v, but %s says %v", path, id, e.Content, e.Special, t.Path, a.Special)
		}
	}
	return nil
}

// Encode tokenizes text as tokenizer(text, add_special_tokens=addSpecial)
// does. Added tokens in the text (special ones included) become their
// single ids. Invalid UTF-8 bytes are read as U+FFFD, one each.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	text = string([]rune(text))
	var ids []int
	if addSpecial {
		ids = append(ids, t.prefix...)
	}
	for _, p := range t.rawMatch.split(text) {
		if p.token != nil {
			ids = append(ids, p.token.ID)
			continue
		}
		for _, q := range t.normMatch.split(p.text) {
			if q.token != nil {
				ids = append(ids, q.token.ID)
				continue
			}
			ids = append(ids, t.encodeText(q.text)...)
		}
	}
	if addSpecial {
		ids = append(ids, t.suffix...)
	}
	if ids == nil {
		ids = []int{}
	}
	return ids
}

func (t *Tokenizer) encodeText(s string) []int {
	if s == "" {
		return nil
	}
	words, err := preTokenize(t.pre, s)
	if err != nil {
		// regexp2 fails only on a match timeout, which is not set.
		words = []string{s}
	}
	var ids []int
	for _, w := range words {
		ids = append(ids, t.bpeWord(w)...)
	}
	return ids
}

// Tokens returns the token strings of ids, as convert_ids_to_tokens does;
// an unknown id gives "".
func (t *Tokenizer) Tokens(ids []int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i], _ = t.token(id)
	}
	return out
}

func (t *Tokenizer) token(id int) (string, bool) {
	if a, ok := t.addedByID[id]; ok {
		return a.Content, true
	}
	s, ok := t.vocabR[id]
	return s, ok
}

// Decode turns ids back into text as tokenizer.decode(ids) does in
// transformers 5.17: special tokens kept, unknown ids skipped, the
// ByteLevel decoder, no clean-up of spaces (transformers 5.7+ ignores
// clean_up_tokenization_spaces for BPE models; PR #44915).
func (t *Tokenizer) Decode(ids []int) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if s, ok := t.token(id); ok {
			toks = append(toks, s)
		}
	}
	if !t.byteLevelDecoder {
		return strings.Join(toks, " ")
	}
	return byteLevelDecode(toks)
}

// TokenID returns the id of one token string, added tokens first, as
// convert_tokens_to_ids does.
func (t *Tokenizer) TokenID(s string) (int, bool) {
	if id, ok := t.addedByContent[s]; ok {
		return id, true
	}
	id, ok := t.vocab[s]
	return id, ok
}

// Special returns the added tokens marked special, by content.
func (t *Tokenizer) Special() map[string]int {
	out := map[string]int{}
	for _, a := range t.added {
		if a.Special {
			out[a.Content] = a.ID
		}
	}
	return out
}

// Named returns the named special tokens (bos_token, eos_token, …) of the
// tokenizer config, which templates receive.
func (t *Tokenizer) Named() map[string]string {
	out := make(map[string]string, len(t.named))
	for k, v := range t.named {
		out[k] = v
	}
	return out
}

// AddedTokens returns the added tokens sorted by id.
func (t *Tokenizer) AddedTokens() []AddedToken { return append([]AddedToken(nil), t.added...) }

// VocabSize is the number of entries in the model vocabulary (added tokens
// not counted).
func (t *Tokenizer) VocabSize() int { return len(t.vocab) }

// Merges returns the merge rules in rank order.
func (t *Tokenizer) Merges() []Merge { return append([]Merge(nil), t.mergeList...) }

// Fingerprint is "sha256:" and the hex SHA-256 of the vocabulary (by id),
// the merges (in rank order) and the added tokens (by id, with their
// flags), in a fixed binary encoding. It does not depend on how
// tokenizer.json is laid out (key order, merges as pairs or strings,
// whitespace), so a 4.x and a 5.x save of one tokenizer agree.
func (t *Tokenizer) Fingerprint() string {
	t.fingerOnce.Do(func() { t.finger = t.computeFingerprint() })
	return t.finger
}

func (t *Tokenizer) computeFingerprint() string {
	// One buffer hashed once: writing 800,000 short strings to the hash
	// one by one costs more than the hashing.
	b := make([]byte, 0, 8<<20)
	num := func(n int) { b = binary.LittleEndian.AppendUint64(b, uint64(n)) }
	str := func(s string) {
		num(len(s))
		b = append(b, s...)
	}
	b = append(b, "ckptgate tokenizer fingerprint v1\x00"...)
	ids := slices.Sorted(maps.Keys(t.vocabR))
	num(len(ids))
	for _, id := range ids {
		num(id)
		str(t.vocabR[id])
	}
	num(len(t.mergeList))
	for _, m := range t.mergeList {
		str(m[0])
		str(m[1])
	}
	num(len(t.added))
	for _, a := range t.added {
		num(a.ID)
		str(a.Content)
		var flags byte
		for i, f := range []bool{a.SingleWord, a.LStrip, a.RStrip, a.Normalized, a.Special} {
			if f {
				flags |= 1 << i
			}
		}
		b = append(b, flags)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func abbreviate(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}
