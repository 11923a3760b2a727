package ljpeg

import (
	"bytes"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// decodeRGB decodes a file and returns its pixels as packed RGB.
func decodeRGB(t *testing.T, path string, decode func(*bytes.Reader) (image.Image, error)) ([]byte, image.Rectangle) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	out := make([]byte, 0, 3*b.Dx()*b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return out, b
}

func ljpegDecode(r *bytes.Reader) (image.Image, error) { return Decode(r) }
func stdDecode(r *bytes.Reader) (image.Image, error)   { return jpeg.Decode(r) }

// TestMatchesPIL decodes JPEGs of every chroma layout libjpeg-turbo treats
// differently (4:2:0, 4:2:2, 4:4:4, 4:4:0, 4:1:1, 2-sample-wide chroma,
// grey, progressive, restart markers) and requires PIL's pixels exactly.
// testdata/make.sh made the files and PIL's decodes (*.rgb).
func TestMatchesPIL(t *testing.T) {
	files, err := filepath.Glob("testdata/*.jpg")
	if err != nil || len(files) < 9 {
		t.Fatalf("testdata: %v, %d files", err, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".jpg") + ".rgb")
			if err != nil {
				t.Fatal(err)
			}
			got, b := decodeRGB(t, f, ljpegDecode)
			if len(got) != len(want) {
				t.Fatalf("%v decodes to %d bytes, PIL %d", b, len(got), len(want))
			}
			diff, worst := 0, 0
			for i := range got {
				if d := absDiff(got[i], want[i]); d > 0 {
					diff++
					worst = max(worst, d)
				}
			}
			std, _ := decodeRGB(t, f, stdDecode)
			stdWorst := 0
			for i := range std {
				stdWorst = max(stdWorst, absDiff(std[i], want[i]))
			}
			t.Logf("%v: %d values differ from PIL (max %d); image/jpeg: max %d", b, diff, worst, stdWorst)
			if diff > 0 {
				t.Errorf("%d of %d values differ from PIL, by up to %d", diff, len(got), worst)
			}
		})
	}
}

func absDiff(a, b byte) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

// TestEmptyImage: a SOF announcing zero rows or columns is an error, as in
// libjpeg, not an empty image (the fuzzer found a 3x0 header decoding to an
// empty rectangle). The headers are patched into a real PIL-written file.
func TestEmptyImage(t *testing.T) {
	orig, err := os.ReadFile("testdata/q90_420_37x29.jpg")
	if err != nil {
		t.Fatal(err)
	}
	sof := bytes.Index(orig, []byte{0xff, 0xc0})
	if sof < 0 {
		t.Fatal("no baseline SOF in testdata/q90_420_37x29.jpg")
	}
	for _, tc := range []struct {
		name string
		at   int
	}{{"zero height", sof + 5}, {"zero width", sof + 7}} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			b[tc.at], b[tc.at+1] = 0, 0
			if _, err := DecodeConfig(bytes.NewReader(b)); err == nil || !strings.Contains(err.Error(), "empty image") {
				t.Errorf("DecodeConfig: got %v, want an empty image error", err)
			}
			if _, err := Decode(bytes.NewReader(b)); err == nil {
				t.Error("Decode accepted an empty image")
			}
		})
	}
}
