package vision

import (
	"fmt"
	"math"
)

// AspectRatio is a tile grid: Rows tiles high, Cols tiles wide. transformers'
// docstrings call the pair (width, height), but its code, the aspect-ratio
// ids and the model's embeddings all use (rows, cols).
type AspectRatio struct{ Rows, Cols int }

// SupportedAspectRatios lists the grids of at most maxTiles tiles in
// transformers' order (get_all_supported_aspect_ratios): rows outer, cols
// inner. The id of a grid is its index here plus 1; 0 means "no image".
// For 4 tiles: (1,1) (1,2) (1,3) (1,4) (2,1) (2,2) (3,1) (4,1).
func SupportedAspectRatios(maxTiles int) []AspectRatio {
	var out []AspectRatio
	for r := 1; r <= maxTiles; r++ {
		for c := 1; c <= maxTiles; c++ {
			if r*c <= maxTiles {
				out = append(out, AspectRatio{r, c})
			}
		}
	}
	return out
}

// AspectRatioID returns the 1-based id of a grid among those of maxTiles,
// or 0 if it is not one of them.
func AspectRatioID(ar AspectRatio, maxTiles int) int {
	for i, a := range SupportedAspectRatios(maxTiles) {
		if a == ar {
			return i + 1
		}
	}
	return 0
}

// Dims is a width×height pair in pixels.
type Dims struct {
	Width  int `json:"width"`
	Height int `json:"height"`
}

func (d Dims) String() string { return fmt.Sprintf("%dx%d", d.Width, d.Height) }

// OptimalCanvas picks the tile grid for an image of w×h pixels as
// transformers' get_optimal_tiled_canvas does. Each grid's scale is the
// limiting side's (min of canvas/image over both sides, in float64). If any
// scale is ≥ 1 (exact fit counts as upscaling), the smallest such wins;
// otherwise the largest. Ties (exact float equality) go to the smallest
// canvas area, then to the first grid in SupportedAspectRatios order.
// All arguments must be positive (Preprocess validates them).
func OptimalCanvas(w, h, maxTiles, tile int) AspectRatio {
	ars := SupportedAspectRatios(maxTiles)
	scales := make([]float64, len(ars))
	up, down := math.Inf(1), math.Inf(-1)
	for i, a := range ars {
		sh := float64(a.Rows*tile) / float64(h)
		sw := float64(a.Cols*tile) / float64(w)
		s := sw
		if sw > sh {
			s = sh
		}
		scales[i] = s
		if s >= 1 {
			up = min(up, s)
		} else {
			down = max(down, s)
		}
	}
	selected := up
	if math.IsInf(up, 1) {
		selected = down
	}
	best, bestArea := AspectRatio{}, math.MaxInt
	for i, a := range ars {
		if scales[i] != selected {
			continue
		}
		if area := a.Rows * a.Cols; area < bestArea {
			best, bestArea = a, area
		}
	}
	return best
}

// FitToCanvas returns the size an image of w×h pixels is resized to inside a
// canvas of cw×ch, as transformers' get_image_size_fit_to_canvas does: each
// side's target is the image side clipped to [tile, canvas side]; the
// limiting side gets its target exactly and the other is scaled and floored
// (at least 1). An image with a side ≥ tile that fits the canvas keeps its
// size; both sides < tile means upscaling until one reaches tile.
func FitToCanvas(w, h, cw, ch, tile int) Dims {
	tw := min(max(w, tile), cw)
	th := min(max(h, tile), ch)
	sh := float64(th) / float64(h)
	sw := float64(tw) / float64(w)
	if sw < sh {
		return Dims{Width: tw, Height: min(max(int(math.Floor(float64(h)*sw)), 1), th)}
	}
	return Dims{Width: min(max(int(math.Floor(float64(w)*sh)), 1), tw), Height: th}
}
