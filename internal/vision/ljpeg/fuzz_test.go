package ljpeg

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode feeds mutated JPEGs to the decoder: no panics, and a decoded
// image has the size its header announced. Seeds are testdata's files and
// the fixtures' photo.
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.jpg")
	seeds = append(seeds, "../../../goldens/mllama-tiny-dev/images/photo_720x540.jpg")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := DecodeConfig(bytes.NewReader(data))
		if err != nil || cfg.Width*cfg.Height > 1<<20 {
			return
		}
		img, err := Decode(bytes.NewReader(data))
		if err != nil {
			return
		}
		if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
			t.Fatalf("decoded %v, header %dx%d", b, cfg.Width, cfg.Height)
		}
	})
}
