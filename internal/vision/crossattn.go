package vision

import "fmt"

// CrossAttentionMask builds the mask MllamaProcessor gives the model for one
// token sequence: mask[t][j][k] is 1 when text position t may attend to tile
// k of image j. ids holds the sequence with one imageTokenID per image, in
// order; numTiles[j] is image j's tile count (Result.NumTiles). The result is
// [len(ids)][len(numTiles)][maxTiles], HF's cross_attention_mask[0].
//
// As in transformers' get_cross_attention_token_mask, image j is visible
// from its own token up to the next image token; the last image to the end
// of the sequence; and consecutive image tokens share the span of the text
// after the last of them. Positions before the first image token see
// nothing.
func CrossAttentionMask(ids []int, imageTokenID int, numTiles []int, maxTiles int) ([][][]int, error) {
	var at []int
	for i, id := range ids {
		if id == imageTokenID {
			at = append(at, i)
		}
	}
	if len(at) != len(numTiles) {
		return nil, fmt.Errorf("the sequence has %d image tokens (id %d) but %d images were given", len(at), imageTokenID, len(numTiles))
	}
	if maxTiles < 1 {
		return nil, fmt.Errorf("max tiles is %d; it must be at least 1", maxTiles)
	}
	for j, n := range numTiles {
		if n < 1 || n > maxTiles {
			return nil, fmt.Errorf("image %d has %d tiles; want 1 to %d", j, n, maxTiles)
		}
	}
	// Spans [start, end) per image.
	spans := make([][2]int, len(at))
	for j, p := range at {
		end := len(ids)
		if j+1 < len(at) {
			end = at[j+1]
		}
		spans[j] = [2]int{p, end}
	}
	// Walking back, an image token directly followed by another inherits
	// the later one's end.
	for j := len(spans) - 2; j >= 0; j-- {
		if spans[j][0] == spans[j][1]-1 {
			spans[j][1] = spans[j+1][1]
		}
	}
	mask := make([][][]int, len(ids))
	cells := make([]int, len(ids)*len(numTiles)*maxTiles)
	for t := range mask {
		mask[t] = make([][]int, len(numTiles))
		for j := range mask[t] {
			off := (t*len(numTiles) + j) * maxTiles
			mask[t][j] = cells[off : off+maxTiles : off+maxTiles]
		}
	}
	for j, s := range spans {
		for t := s[0]; t < s[1]; t++ {
			for k := range numTiles[j] {
				mask[t][j][k] = 1
			}
		}
	}
	return mask, nil
}
