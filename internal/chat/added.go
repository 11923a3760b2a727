package chat

import (
	"unicode"
	"unicode/utf8"
)

// AddedToken is one entry of tokenizer.json's added_tokens.
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// trieNode is a byte trie over added-token contents.
type trieNode struct {
	next  map[byte]*trieNode
	token *AddedToken // set where a token ends
}

// matcher finds added tokens in text the way tokenizers' AddedVocabulary
// does with its leftmost-longest Aho-Corasick automaton.
type matcher struct {
	root *trieNode
}

func newMatcher(tokens []*AddedToken) *matcher {
	m := &matcher{root: &trieNode{}}
	for _, t := range tokens {
		if t.Content == "" {
			continue
		}
		n := m.root
		for i := 0; i < len(t.Content); i++ {
			if n.next == nil {
				n.next = map[byte]*trieNode{}
			}
			c := t.Content[i]
			if n.next[c] == nil {
				n.next[c] = &trieNode{}
			}
			n = n.next[c]
		}
		if n.token == nil {
			n.token = t
		}
	}
	return m
}

// longestAt returns the longest token starting at s[i:], if any.
func (m *matcher) longestAt(s string, i int) (*AddedToken, int) {
	var best *AddedToken
	end := 0
	n := m.root
	for j := i; j < len(s) && n.next != nil; j++ {
		n = n.next[s[j]]
		if n == nil {
			break
		}
		if n.token != nil {
			best, end = n.token, j+1
		}
	}
	return best, end
}

// piece is a span of the input: an added token (token != nil) or text to
// pre-tokenize.
type piece struct {
	text  string
	token *AddedToken
}

// split cuts s at the added tokens it contains. A match rejected for
// single_word is skipped without looking for shorter overlapping tokens, as
// the automaton's iterator resumes after it; lstrip and rstrip take the
// neighbouring whitespace into the token.
func (m *matcher) split(s string) []piece {
	if m.root.next == nil || s == "" {
		return []piece{{text: s}}
	}
	var out []piece
	startOffset := 0
	for i := 0; i < len(s); {
		tok, end := m.longestAt(s, i)
		if tok == nil {
			i++
			continue
		}
		start, stop := i, end
		i = end
		if tok.SingleWord {
			startOK := start == 0 || !endsWithWord(s[:start])
			stopOK := stop == len(s) || !startsWithWord(s[stop:])
			if !startOK || !stopOK {
				continue
			}
		}
		if tok.LStrip {
			start = max(leftmostSpaceAtEnd(s[:start]), startOffset)
		}
		if tok.RStrip {
			stop += rightmostSpaceAtStart(s[stop:])
			i = stop
		}
		if startOffset < start {
			out = append(out, piece{text: s[startOffset:start]})
		}
		out = append(out, piece{text: s[start:stop], token: tok})
		startOffset = stop
	}
	if startOffset < len(s) {
		out = append(out, piece{text: s[startOffset:]})
	}
	return out
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) || unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Nd, r)
}

func endsWithWord(s string) bool {
	r, n := utf8.DecodeLastRuneInString(s)
	return n > 0 && isWordRune(r)
}

func startsWithWord(s string) bool {
	r, n := utf8.DecodeRuneInString(s)
	return n > 0 && isWordRune(r)
}

// leftmostSpaceAtEnd is where the run of whitespace ending s starts.
func leftmostSpaceAtEnd(s string) int {
	i := len(s)
	for i > 0 {
		r, n := utf8.DecodeLastRuneInString(s[:i])
		if !unicode.IsSpace(r) {
			break
		}
		i -= n
	}
	return i
}

// rightmostSpaceAtStart is the length of the run of whitespace starting s.
func rightmostSpaceAtStart(s string) int {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += n
	}
	return i
}
