package chat

import (
	"strings"
	"unicode/utf8"
)

// byteToRune is GPT-2's bytes_to_unicode table, which the ByteLevel
// pre-tokenizer and decoder use: printable Latin-1 bytes stand for
// themselves, the other 68 bytes are moved to U+0100 onwards in byte order.
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := make(map[rune]byte, 256)
	next := rune(256)
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		r := rune(b)
		if !printable {
			r = next
			next++
		}
		b2r[b] = r
		r2b[r] = byte(b)
	}
	return b2r, r2b
}()

// byteLevel maps each byte of s to its GPT-2 character.
func byteLevel(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// byteLevelDecode turns tokens back into bytes as the tokenizers ByteLevel
// decoder does: a token made only of GPT-2 characters becomes their bytes;
// any other token (an added token with a character outside the table) is
// kept as its own UTF-8 bytes. The joined bytes are then read as UTF-8
// lossily, like Rust's String::from_utf8_lossy.
func byteLevelDecode(tokens []string) string {
	var out []byte
	for _, t := range tokens {
		start := len(out)
		ok := true
		for _, r := range t {
			b, found := runeToByte[r]
			if !found {
				ok = false
				break
			}
			out = append(out, b)
		}
		if !ok {
			out = append(out[:start], t...)
		}
	}
	return lossyUTF8(out)
}

// lossyUTF8 replaces each maximal invalid subsequence with U+FFFD, the
// Unicode "substitution of maximal subparts" that Rust's from_utf8_lossy
// and Python's errors="replace" follow. Go's own conversion replaces every
// invalid byte separately, which would print more replacement characters.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var s strings.Builder
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || n > 1 {
			s.WriteRune(r)
			i += n
			continue
		}
		s.WriteRune(utf8.RuneError)
		i += maximalSubpart(b[i:])
	}
	return s.String()
}

// maximalSubpart is the length (≥ 1) of the longest prefix of b that starts
// a well-formed UTF-8 sequence, given that b does not start with one.
func maximalSubpart(b []byte) int {
	lead := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case lead >= 0xC2 && lead <= 0xDF:
		need = 1
	case lead == 0xE0:
		need, lo = 2, 0xA0
	case lead >= 0xE1 && lead <= 0xEC, lead == 0xEE, lead == 0xEF:
		need = 2
	case lead == 0xED:
		need, hi = 2, 0x9F
	case lead == 0xF0:
		need, lo = 3, 0x90
	case lead >= 0xF1 && lead <= 0xF3:
		need = 3
	case lead == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		c := b[n]
		if c < lo || c > hi {
			break
		}
		n++
		lo, hi = 0x80, 0xBF
	}
	return n
}
