package vision_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptgate/ckptgate/internal/vision"
)

const (
	bos = 128000
	img = 128256
)

func TestCrossAttentionMaskSpans(t *testing.T) {
	// The span examples transformers 5.17 gave (chat-template-and-
	// preprocessing.md §6.3): [start, end) per image, -1 meaning the end.
	for _, tc := range []struct {
		name  string
		ids   []int
		spans [][2]int
	}{
		{"image first", []int{img, bos, 1, 2, 3}, [][2]int{{0, 5}}},
		{"adjacent images share the text", []int{bos, img, img, 1, 2}, [][2]int{{1, 5}, {2, 5}}},
		{"two images", []int{bos, img, 1, 2, img, 3, 4}, [][2]int{{1, 4}, {4, 7}}},
		{"image last", []int{bos, 1, img}, [][2]int{{2, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tiles := make([]int, len(tc.spans))
			for i := range tiles {
				tiles[i] = 1
			}
			m, err := vision.CrossAttentionMask(tc.ids, img, tiles, 1)
			if err != nil {
				t.Fatal(err)
			}
			for j, s := range tc.spans {
				for p := range tc.ids {
					want := 0
					if p >= s[0] && p < s[1] {
						want = 1
					}
					if m[p][j][0] != want {
						t.Errorf("position %d, image %d: %d, want %d (span %v)", p, j, m[p][j][0], want, s)
					}
				}
			}
		})
	}
}

// TestCrossAttentionMaskDense is §6.3's dense example: ids [BOS, IMG, a, b,
// IMG, c, d], num_tiles [4, 2].
func TestCrossAttentionMaskDense(t *testing.T) {
	m, err := vision.CrossAttentionMask([]int{bos, img, 1, 2, img, 3, 4}, img, []int{4, 2}, 4)
	if err != nil {
		t.Fatal(err)
	}
	z, first, second := []int{0, 0, 0, 0}, []int{1, 1, 1, 1}, []int{1, 1, 0, 0}
	want := [][][]int{
		{z, z},
		{first, z}, {first, z}, {first, z},
		{z, second}, {z, second}, {z, second},
	}
	if d := cmp.Diff(want, m); d != "" {
		t.Errorf("mask (-HF +ours):\n%s", d)
	}
}

func TestCrossAttentionMaskErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ids      []int
		tiles    []int
		maxTiles int
		want     string
	}{
		{"count", []int{bos, img, 1}, []int{4, 4}, 4, "1 image tokens"},
		{"too many tiles", []int{bos, img}, []int{5}, 4, "image 0 has 5 tiles"},
		{"no tiles", []int{bos, img}, []int{0}, 4, "image 0 has 0 tiles"},
		{"max tiles", []int{bos}, nil, 0, "max tiles is 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vision.CrossAttentionMask(tc.ids, img, tc.tiles, tc.maxTiles)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want %q", err, tc.want)
			}
		})
	}
}
