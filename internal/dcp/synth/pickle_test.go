package synth

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"testing"
)

// TestDumpsMatchesCPython pickles the graph testdata/make-pickle.py builds
// and compares the bytes with what CPython wrote for it: frames, memo
// references, batches and every int opcode must come out identical.
func TestDumpsMatchesCPython(t *testing.T) {
	want, err := os.ReadFile("testdata/python-pickle4.bin")
	if err != nil {
		t.Fatal(err)
	}
	pow10 := func(n int) int64 {
		x := int64(1)
		for range n {
			x *= 10
		}
		return x
	}
	big := &pyDict{}
	for i := range 6000 {
		big.set(str(fmt.Sprintf("k%d", i)), int64(i%9)*pow10(i%19))
	}
	thousand := &pyDict{}
	for i := range 1000 {
		thousand.set(str(fmt.Sprintf("t%d", i)), i)
	}
	l1000 := &pyList{}
	for i := range 1000 {
		l1000.items = append(l1000.items, i)
	}
	l1001 := &pyList{}
	for i := range 1001 {
		l1001.items = append(l1001.items, str(fmt.Sprintf("s%d", i)))
	}
	ints := &pyList{}
	for _, x := range []int64{-1, -255, math.MinInt32, math.MinInt32 - 1, 1 << 31, math.MaxInt64, math.MinInt64, 255, 256, 65535, 65536} {
		ints.items = append(ints.items, x)
	}
	shared := str("shared")
	pair := tuple(shared, 7)
	root := &pyDict{}
	root.set(str("big"), big)
	root.set(str("thousand"), thousand)
	root.set(str("l1000"), l1000)
	root.set(str("l1001"), l1001)
	root.set(str("ints"), ints)
	root.set(str("refs"), &pyList{items: []any{shared, pair, pair, shared}})
	one := &pyDict{}
	one.set(str("a"), &pyList{items: []any{true, false, nil, tuple()}})
	root.set(str("one"), one)

	got := dumps(root, 4)
	if !bytes.Equal(got, want) {
		at := 0
		for at < min(len(got), len(want)) && got[at] == want[at] {
			at++
		}
		t.Fatalf("pickle differs from CPython's at byte %d (%d and %d bytes): CPython % x, synth % x",
			at, len(want), len(got), want[at:min(at+16, len(want))], got[at:min(at+16, len(got))])
	}
}
