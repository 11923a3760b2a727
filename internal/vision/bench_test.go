package vision_test

import (
	"image"
	"image/color"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptgate/ckptgate/internal/vision"
)

// BenchmarkPreprocess11B preprocesses for the real 11B config (tile 560):
// the fixtures' photo (decode included, no resize) and a 4000×3000 image
// (downscaled to 1120×840).
func BenchmarkPreprocess11B(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join(fixtures, "llama-3.2-11b-vision.preprocessor_config.json"))
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := vision.ParseConfig(raw, vision.FormPreprocessor)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode+preprocess photo_720x540.jpg", func(b *testing.B) {
		for b.Loop() {
			img, err := vision.DecodeFile(filepath.Join(fixtures, "images", "photo_720x540.jpg"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := vision.Preprocess(img, cfg); err != nil {
				b.Fatal(err)
			}
		}
	})
	big := image.NewRGBA(image.Rect(0, 0, 4000, 3000))
	for y := range 3000 {
		for x := range 4000 {
			big.SetRGBA(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	b.Run("preprocess 4000x3000", func(b *testing.B) {
		for b.Loop() {
			if _, err := vision.Preprocess(big, cfg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
