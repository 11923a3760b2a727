package vision_test

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// TestGeometryWorkedExamples is the table transformers 5.17 produced for the
// 11B config (tile 560, 4 tiles) in chat-template-and-preprocessing.md §6.2,
// including the exact-fit cases Ollama gets wrong (560×560, 561×560) and
// the limiting side set exactly (1121×1120 → 1120×1119).
func TestGeometryWorkedExamples(t *testing.T) {
	for _, tc := range []struct {
		in, canvas, resized vision.Dims
		id                  int
		mask                []int
	}{
		{vision.Dims{800, 600}, vision.Dims{1120, 1120}, vision.Dims{800, 600}, 6, []int{1, 1, 1, 1}},
		{vision.Dims{300, 1200}, vision.Dims{560, 1680}, vision.Dims{300, 1200}, 7, []int{1, 1, 1, 0}},
		{vision.Dims{560, 560}, vision.Dims{560, 560}, vision.Dims{560, 560}, 1, []int{1, 0, 0, 0}},
		{vision.Dims{1120, 1120}, vision.Dims{1120, 1120}, vision.Dims{1120, 1120}, 6, []int{1, 1, 1, 1}},
		{vision.Dims{50, 30}, vision.Dims{560, 560}, vision.Dims{560, 336}, 1, []int{1, 0, 0, 0}},
		{vision.Dims{640, 480}, vision.Dims{1120, 560}, vision.Dims{640, 480}, 2, []int{1, 1, 0, 0}},
		{vision.Dims{480, 640}, vision.Dims{560, 1120}, vision.Dims{480, 640}, 5, []int{1, 1, 0, 0}},
		{vision.Dims{1200, 300}, vision.Dims{1680, 560}, vision.Dims{1200, 300}, 3, []int{1, 1, 1, 0}},
		{vision.Dims{2000, 200}, vision.Dims{2240, 560}, vision.Dims{2000, 200}, 4, []int{1, 1, 1, 1}},
		{vision.Dims{561, 560}, vision.Dims{1120, 560}, vision.Dims{561, 560}, 2, []int{1, 1, 0, 0}},
		{vision.Dims{4000, 3000}, vision.Dims{1120, 1120}, vision.Dims{1120, 840}, 6, []int{1, 1, 1, 1}},
		{vision.Dims{1121, 1120}, vision.Dims{1120, 1120}, vision.Dims{1120, 1119}, 6, []int{1, 1, 1, 1}},
	} {
		t.Run(tc.in.String(), func(t *testing.T) {
			grid := vision.OptimalCanvas(tc.in.Width, tc.in.Height, 4, 560)
			canvas := vision.Dims{Width: grid.Cols * 560, Height: grid.Rows * 560}
			if canvas != tc.canvas {
				t.Fatalf("canvas %v, HF %v", canvas, tc.canvas)
			}
			if got := vision.FitToCanvas(tc.in.Width, tc.in.Height, canvas.Width, canvas.Height, 560); got != tc.resized {
				t.Errorf("resized to %v, HF %v", got, tc.resized)
			}
			if id := vision.AspectRatioID(grid, 4); id != tc.id {
				t.Errorf("aspect_ratio_id %d, HF %d", id, tc.id)
			}
			n := grid.Rows * grid.Cols
			if n != tc.mask[0]+tc.mask[1]+tc.mask[2]+tc.mask[3] {
				t.Errorf("%d tiles, HF mask %v", n, tc.mask)
			}
		})
	}
}

// TestAspectRatiosMatchModelConfig: the ids index the model's aspect-ratio
// embeddings, so the list must be config.json's supported_aspect_ratios.
func TestAspectRatiosMatchModelConfig(t *testing.T) {
	mc, err := mllama.LoadConfig(filepath.Join(fixtures, "base", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]int
	for _, a := range vision.SupportedAspectRatios(mc.Vision.MaxNumTiles) {
		got = append(got, [2]int{a.Rows, a.Cols})
	}
	if d := cmp.Diff(mc.Vision.SupportedAspectRatios, got); d != "" {
		t.Errorf("supported aspect ratios (-config.json +ours):\n%s", d)
	}
}

// TestFitToCanvasTinySides: transformers 5.17's get_image_size_fit_to_canvas
// keeps a side of at least 1 pixel ("math.floor(...) or 1") when an extreme
// aspect ratio would floor it to 0; no fixture has such an image.
func TestFitToCanvasTinySides(t *testing.T) {
	grid := vision.OptimalCanvas(10000, 1, 4, 560)
	canvas := vision.Dims{Width: grid.Cols * 560, Height: grid.Rows * 560}
	if got := vision.FitToCanvas(10000, 1, canvas.Width, canvas.Height, 560); got != (vision.Dims{Width: 2240, Height: 1}) {
		t.Errorf("10000x1 resized to %v in %v", got, canvas)
	}
}
