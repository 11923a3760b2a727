package chat

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

// DiffText and DiffIDs on transformers' own render and ids of a golden
// conversation, against copies changed at a known place: the message gives
// the first differing offset, 40 bytes (8 ids) of context before and 60
// after, and says which side is the golden's.
func TestDiffTextAndIDs(t *testing.T) {
	g, err := LoadGoldens(filepath.Join(dev, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := g.Templates["multi_turn"]
	if c.Rendered == nil || len(*c.Rendered) < 300 || len(c.InputIDs) < 20 {
		t.Fatalf("golden multi_turn: want a render of 300+ bytes and 20+ ids, got %+v", c)
	}
	text, ids := *c.Rendered, c.InputIDs
	if text[150] == '#' {
		t.Fatalf("the golden render has # at byte 150; pick another change")
	}
	changed := text[:150] + "#" + text[151:]
	for _, tc := range []struct {
		name, got, want string
	}{
		{"changed byte", changed,
			fmt.Sprintf("first difference at byte 150: %q (golden: %q)", changed[110:210], text[110:210])},
		{"cut short", text[:100],
			fmt.Sprintf("first difference at byte 100: %q (golden: %q)", text[60:100], text[60:160])},
		{"one more byte", text + "x",
			fmt.Sprintf("first difference at byte %d: %q (golden: %q)", len(text), text[len(text)-40:]+"x", text[len(text)-40:])},
	} {
		if d := DiffText(text, tc.got, "golden"); d != tc.want {
			t.Errorf("%s: DiffText =\n %s\nwant\n %s", tc.name, d, tc.want)
		}
	}

	more := append(slices.Clone(ids), 128009)
	bumped := slices.Clone(ids)
	bumped[7]++
	n := len(ids)
	for _, tc := range []struct {
		name string
		got  []int
		want string
	}{
		{"changed id", bumped, fmt.Sprintf("%d ids (golden: %d), first difference at position 7: %v (golden: %v)", n, n, bumped[7:15], ids[7:15])},
		{"one more", more, fmt.Sprintf("%d ids (golden: %d), first difference at position %d: [128009] (golden: end)", n+1, n, n)},
		{"one fewer", ids[:n-1], fmt.Sprintf("%d ids (golden: %d), first difference at position %d: end (golden: %v)", n-1, n, n-1, ids[n-1:])},
	} {
		if d := DiffIDs(ids, tc.got, "golden"); d != tc.want {
			t.Errorf("%s: DiffIDs =\n %s\nwant\n %s", tc.name, d, tc.want)
		}
	}
}
