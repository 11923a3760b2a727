package vision_test

import (
	"encoding/binary"
	"fmt"
	"image"
	"path/filepath"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/internal/vision"
)

const fixtures = "../../goldens/mllama-tiny-dev"

// TestGoldens preprocesses every image of preprocess-goldens.json under both
// recorded configs (the real 11B one, tile 560, and the tiny one, tile 56)
// and compares with what transformers 5.17 computed.
func TestGoldens(t *testing.T) {
	g, err := vision.LoadGoldens(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Entries) != 18 || len(g.Configs) != 2 {
		t.Fatalf("%d goldens under %d configs; the fixtures have 18 under 2", len(g.Entries), len(g.Configs))
	}
	for i := range g.Entries {
		e := &g.Entries[i]
		t.Run(e.Config+"/"+filepath.Base(e.Image), func(t *testing.T) {
			img, err := vision.DecodeFile(g.ImagePath(e))
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() != e.Size[0] || b.Dy() != e.Size[1] {
				t.Fatalf("decoded %dx%d, PIL %dx%d", b.Dx(), b.Dy(), e.Size[0], e.Size[1])
			}
			if got, want := pilMode(img), e.Mode; got != want {
				t.Errorf("decoded as %s (%T), PIL mode %s", got, img, want)
			}
			r, err := vision.Preprocess(img, g.Configs[e.Config])
			if err != nil {
				t.Fatal(err)
			}
			c := e.Compare(r)
			t.Logf("%s %s: %v → %v canvas %v grid %dx%d id %d: %v",
				e.Config, e.Image, r.Input, r.Resized, r.Canvas, r.Grid.Rows, r.Grid.Cols, r.AspectRatioID, c)
			if !c.OK() {
				t.Errorf("differs from transformers: %v", c)
			}
		})
	}
}

// pilMode names the PIL mode a decoded image corresponds to.
func pilMode(img image.Image) string {
	switch m := img.(type) {
	case *image.Gray:
		return "L"
	case *image.RGBA:
		if m.Opaque() {
			return "RGB"
		}
	case *image.NRGBA:
		return "RGBA"
	}
	return fmt.Sprintf("%T", img)
}

// TestGoldenImageUser reproduces the exact model inputs HF built for the
// forward golden (landscape_800x600.png, the tiny model's processor, a
// downscale to 112×84): pixel_values element by element, the aspect-ratio
// id and mask, and the cross-attention mask for its input_ids.
func TestGoldenImageUser(t *testing.T) {
	f, err := safetensors.Open(filepath.Join(fixtures, "golden-image_user.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	cfg, err := vision.LoadConfig(filepath.Join(fixtures, "base"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := vision.DecodeFile(filepath.Join(fixtures, "images", "landscape_800x600.png"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := vision.Preprocess(img, cfg)
	if err != nil {
		t.Fatal(err)
	}

	want, shape := readF32(t, f, "pixel_values")
	if fmt.Sprint(shape) != fmt.Sprint([]int64{1, 1, 4, 3, 56, 56}) || len(want) != len(r.PixelValues) {
		t.Fatalf("pixel_values shape %v, ours %v", shape, r.Shape())
	}
	maxErr, at := vision.MaxAbsDiff(r.PixelValues, want)
	differing := 0
	for i := range want {
		if r.PixelValues[i] != want[i] {
			differing++
		}
	}
	t.Logf("pixel_values: %d of %d elements differ, max abs error %g (at %d)", differing, len(want), maxErr, at)
	// transformers ran torch's AVX2 uint8 resize and the fused float32
	// normalisation, both reproduced bit for bit: any difference at all is a
	// regression, even one within PixelTolerance.
	if differing > 0 {
		t.Errorf("%d of %d pixel_values differ from HF's, max abs error %g (bound for other inputs %g)", differing, len(want), maxErr, vision.PixelTolerance)
	}

	ids := readI64(t, f, "aspect_ratio_ids")
	if len(ids) != 1 || ids[0] != int64(r.AspectRatioID) {
		t.Errorf("aspect_ratio_ids %v, ours %d", ids, r.AspectRatioID)
	}
	mask := readI64(t, f, "aspect_ratio_mask")
	if fmt.Sprint(mask) != fmt.Sprint(r.AspectRatioMask) {
		t.Errorf("aspect_ratio_mask %v, ours %v", mask, r.AspectRatioMask)
	}

	inputIDs := readI64(t, f, "input_ids")
	tokens := make([]int, len(inputIDs))
	for i, v := range inputIDs {
		tokens[i] = int(v)
	}
	cam, err := vision.CrossAttentionMask(tokens, 128256, []int{r.NumTiles}, r.MaxTiles)
	if err != nil {
		t.Fatal(err)
	}
	wantCAM := readI64(t, f, "cross_attention_mask") // [1, L, 1, 4]
	var got []int64
	for _, row := range cam {
		for _, img := range row {
			for _, v := range img {
				got = append(got, int64(v))
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(wantCAM) {
		t.Errorf("cross_attention_mask\n ours %v\n HF   %v", got, wantCAM)
	}
}

func readF32(t *testing.T, f *safetensors.File, name string) ([]float32, []int64) {
	t.Helper()
	out, shape, err := f.ReadFloat32(name)
	if err != nil {
		t.Fatal(err)
	}
	return out, shape
}

func readI64(t *testing.T, f *safetensors.File, name string) []int64 {
	t.Helper()
	b, info, err := f.ReadBytes(name)
	if err != nil {
		t.Fatal(err)
	}
	if info.DType != dtype.I64 {
		t.Fatalf("%s is %v, want I64", name, info.DType)
	}
	out := make([]int64, len(b)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}
