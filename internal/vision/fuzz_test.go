package vision

import (
	"os"
	"path/filepath"
	"testing"
)

// fuzzMaxPixels keeps each fuzz input's decoded image small, so memory stays
// bounded whatever the header claims.
const fuzzMaxPixels = 1 << 18

// FuzzPreprocess decodes mutated images and preprocesses what decodes with
// the tiny model's config (tile 56): no panics, and a result of the promised
// shape. Seeds are the fixture images and testdata's.
func FuzzPreprocess(f *testing.F) {
	var seeds []string
	for _, pat := range []string{"../../goldens/mllama-tiny-dev/images/*", "testdata/*.png", "testdata/*.gif", "testdata/*.jpg", "ljpeg/testdata/*.jpg"} {
		m, _ := filepath.Glob(pat)
		seeds = append(seeds, m...)
	}
	if len(seeds) < 9 {
		f.Fatalf("only %d seed images", len(seeds))
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	cfg, err := LoadConfig("../../goldens/mllama-tiny-dev/base")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := decodeBytes(data, fuzzMaxPixels)
		if err != nil {
			return
		}
		r, err := Preprocess(img, cfg)
		if err != nil {
			t.Fatalf("decoded %T %v but Preprocess failed: %v", img, img.Bounds(), err)
		}
		if len(r.PixelValues) != 4*3*56*56 || r.NumTiles < 1 || r.NumTiles > 4 || r.AspectRatioID < 1 || r.AspectRatioID > 8 {
			t.Fatalf("result shape %v, %d tiles, id %d", r.Shape(), r.NumTiles, r.AspectRatioID)
		}
		if r.Resized.Width > r.Canvas.Width || r.Resized.Height > r.Canvas.Height {
			t.Fatalf("resized %v exceeds canvas %v", r.Resized, r.Canvas)
		}
	})
}

// FuzzParseConfig: no panics on hostile configs, and whatever parses also
// validates. Seeds are the fixtures' configs in both forms.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{
		"../../goldens/mllama-tiny-dev/base-hub/preprocessor_config.json",
		"../../goldens/mllama-tiny-dev/llama-3.2-11b-vision.preprocessor_config.json",
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, FormPreprocessor)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config that does not validate: %v", err)
		}
	})
}
