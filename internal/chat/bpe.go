package chat

import "container/heap"

// mergeEntry is a merge rule: its rank (position in the merges list) and
// the id of the merged token.
type mergeEntry struct {
	rank, id int
}

// symbol is one piece of a word being merged, in a doubly linked list over
// the word's initial characters; a merged-away symbol has size 0.
type symbol struct {
	id         int
	prev, next int
	size       int
}

// candidate is a possible merge of the symbol at pos with its successor.
type candidate struct {
	pos, rank, id int
}

// candidates is a min-heap on (rank, pos). The position breaks ties between
// equal ranks: the leftmost pair merges first, as in tokenizers'
// Word::merge_all. Ollama's BPE orders by rank alone, which is why it
// splits runs of one repeated character differently (NOTES-ON-ISSUES 8).
type candidates []candidate

func (c candidates) Len() int { return len(c) }
func (c candidates) Less(i, j int) bool {
	if c[i].rank != c[j].rank {
		return c[i].rank < c[j].rank
	}
	return c[i].pos < c[j].pos
}
func (c candidates) Swap(i, j int) { c[i], c[j] = c[j], c[i] }
func (c *candidates) Push(x any)   { *c = append(*c, x.(candidate)) }
func (c *candidates) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}

// bpeWord tokenizes one pre-token (already mapped to byte-level characters)
// as the tokenizers BPE model does without dropout.
func (t *Tokenizer) bpeWord(word string) []int {
	if word == "" {
		return nil
	}
	if t.ignoreMerges {
		if id, ok := t.vocab[word]; ok {
			return []int{id}
		}
	}
	syms := t.initialSymbols(word)
	if len(syms) == 0 {
		return nil
	}
	var q candidates
	for i := 0; i+1 < len(syms); i++ {
		if m, ok := t.merges[[2]int{syms[i].id, syms[i+1].id}]; ok {
			q = append(q, candidate{pos: i, rank: m.rank, id: m.id})
		}
	}
	heap.Init(&q)
	for q.Len() > 0 {
		top := heap.Pop(&q).(candidate)
		cur := &syms[top.pos]
		if cur.size == 0 || cur.next < 0 {
			continue
		}
		right := syms[cur.next]
		// Skip entries made stale by an earlier merge of either side.
		if m, ok := t.merges[[2]int{cur.id, right.id}]; !ok || m.id != top.id {
			continue
		}
		cur.id = top.id
		cur.size += right.size
		syms[cur.next].size = 0
		cur.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if m, ok := t.merges[[2]int{syms[cur.prev].id, cur.id}]; ok {
				heap.Push(&q, candidate{pos: cur.prev, rank: m.rank, id: m.id})
			}
		}
		if cur.next >= 0 {
			if m, ok := t.merges[[2]int{cur.id, syms[cur.next].id}]; ok {
				heap.Push(&q, candidate{pos: top.pos, rank: m.rank, id: m.id})
			}
		}
	}
	ids := make([]int, 0, len(syms))
	for _, s := range syms {
		if s.size > 0 {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// initialSymbols splits a word into one symbol per character. A character
// missing from the vocabulary becomes the unknown token when the model has
// one (fused with a preceding unknown when fuse_unk is set) and is dropped
// otherwise, as tokenizers' BPE::merge_word does.
func (t *Tokenizer) initialSymbols(word string) []symbol {
	syms := make([]symbol, 0, len(word))
	pendingUnk, unkSize := false, 0
	flushUnk := func() {
		if pendingUnk {
			syms = append(syms, symbol{id: t.unkID, size: unkSize})
			pendingUnk, unkSize = false, 0
		}
	}
	for _, r := range word {
		size := len(string(r))
		if id, ok := t.vocab[string(r)]; ok {
			flushUnk()
			syms = append(syms, symbol{id: id, size: size})
			continue
		}
		if !t.hasUnk {
			continue
		}
		if pendingUnk && t.fuseUnk {
			unkSize += size
			continue
		}
		flushUnk()
		pendingUnk, unkSize = true, size
	}
	flushUnk()
	for i := range syms {
		syms[i].prev, syms[i].next = i-1, i+1
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}
