package chat

import (
	"fmt"
	"reflect"
	"sort"
)

// DiffTokenizers compares the vocabulary, merges, added tokens and pipeline
// (normalizer, pre-tokenizer, post-processor, decoder) of got against want
// and describes up to limit differences, first ones first in each part. An
// empty result means they tokenize alike.
func DiffTokenizers(got, want *Tokenizer, limit int) []string {
	var out []string
	add := func(format string, a ...any) bool {
		if len(out) >= limit {
			return false
		}
		out = append(out, fmt.Sprintf(format, a...))
		return true
	}

	if len(got.vocab) != len(want.vocab) {
		add("vocabulary has %d entries, base has %d", len(got.vocab), len(want.vocab))
	}
	for _, id := range unionIDs(got.vocabR, want.vocabR) {
		g, gok := got.vocabR[id]
		w, wok := want.vocabR[id]
		var more bool
		switch {
		case !gok:
			more = add("vocabulary id %d: missing, base has %q", id, w)
		case !wok:
			more = add("vocabulary id %d: %q, base has no such id", id, g)
		case g != w:
			more = add("vocabulary id %d: %q, base has %q", id, g, w)
		default:
			continue
		}
		if !more {
			return out
		}
	}

	if len(got.mergeList) != len(want.mergeList) {
		add("%d merges, base has %d", len(got.mergeList), len(want.mergeList))
	}
	for i := 0; i < min(len(got.mergeList), len(want.mergeList)); i++ {
		if got.mergeList[i] != want.mergeList[i] {
			if !add("merge rank %d: (%q, %q), base has (%q, %q)", i, got.mergeList[i][0], got.mergeList[i][1], want.mergeList[i][0], want.mergeList[i][1]) {
				return out
			}
		}
	}

	gotAdded, wantAdded := map[int]AddedToken{}, map[int]AddedToken{}
	for _, a := range got.added {
		gotAdded[a.ID] = a
	}
	for _, a := range want.added {
		wantAdded[a.ID] = a
	}
	for _, id := range unionIDs(gotAdded, wantAdded) {
		g, gok := gotAdded[id]
		w, wok := wantAdded[id]
		var more bool
		switch {
		case !gok:
			more = add("added token %d %q: missing", id, w.Content)
		case !wok:
			more = add("added token %d %q: not in the base", id, g.Content)
		case g != w:
			more = add("added token %d: %+v, base has %+v", id, g, w)
		default:
			continue
		}
		if !more {
			return out
		}
	}

	for _, part := range []string{"normalizer", "pre_tokenizer", "post_processor", "decoder"} {
		if !reflect.DeepEqual(got.pipeline[part], want.pipeline[part]) {
			if !add("%s differs from the base's", part) {
				return out
			}
		}
	}
	return out
}

func unionIDs[V any](a, b map[int]V) []int {
	ids := make([]int, 0, max(len(a), len(b)))
	for id := range a {
		ids = append(ids, id)
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	return ids
}

// DiffText says where got first differs from want, for texts that differ:
// the byte offset and a quoted excerpt of each around it, want's labelled
// wantName ("golden", "base", …).
func DiffText(want, got, wantName string) string {
	i := commonPrefix([]byte(want), []byte(got))
	lo := max(0, i-40)
	clip := func(s string) string {
		return fmt.Sprintf("%q", s[min(lo, len(s)):min(len(s), i+60)])
	}
	return fmt.Sprintf("first difference at byte %d: %s (%s: %s)", i, clip(got), wantName, clip(want))
}

// DiffIDs says where the token ids got part from want's, for sequences
// that differ: both lengths, the position and up to 8 ids of each from
// there ("end" past one's end), want's labelled wantName.
func DiffIDs(want, got []int, wantName string) string {
	i := commonPrefix(want, got)
	at := func(s []int) string {
		if i >= len(s) {
			return "end"
		}
		return fmt.Sprint(s[i:min(len(s), i+8)])
	}
	return fmt.Sprintf("%d ids (%s: %d), first difference at position %d: %s (%s: %s)",
		len(got), wantName, len(want), i, at(got), wantName, at(want))
}

// commonPrefix counts the leading elements a and b share.
func commonPrefix[E comparable](a, b []E) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}
