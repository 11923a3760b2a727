package vision

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConvertToRGBMatchesPIL decodes images in the modes transformers'
// convert_to_rgb treats specially (RGBA, LA, P and L with transparency, GIF,
// CMYK JPEG, and an RGB PNG with a tRNS colour, which PIL leaves opaque)
// and requires PIL's RGB exactly. testdata/make.sh made them.
func TestConvertToRGBMatchesPIL(t *testing.T) {
	refs, err := filepath.Glob("testdata/*.rgb")
	if err != nil || len(refs) != 7 {
		t.Fatalf("testdata: %v, %d references", err, len(refs))
	}
	for _, ref := range refs {
		src := strings.TrimSuffix(ref, ".rgb")
		t.Run(filepath.Base(src), func(t *testing.T) {
			want, err := os.ReadFile(ref)
			if err != nil {
				t.Fatal(err)
			}
			img, err := DecodeFile(src)
			if err != nil {
				t.Fatal(err)
			}
			p := toRGB(img)
			if 3*p.w*p.h != len(want) {
				t.Fatalf("%dx%d, PIL has %d bytes", p.w, p.h, len(want))
			}
			bad := 0
			for i := range p.w * p.h {
				for c := range 3 {
					if p.c[c][i] != want[3*i+c] {
						if bad < 5 {
							t.Errorf("pixel (%d,%d) channel %d: %d, PIL %d (decoded as %T)", i%p.w, i/p.w, c, p.c[c][i], want[3*i+c], img)
						}
						bad++
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d values differ", bad)
			}
		})
	}
}

// TestOverWhite checks Pillow's alpha compositing on the two pixels the
// preprocessing spec recorded from transformers 5.17.
func TestOverWhite(t *testing.T) {
	for _, tc := range []struct {
		in   color.NRGBA
		want [3]uint8
	}{
		{color.NRGBA{255, 0, 0, 0}, [3]uint8{255, 255, 255}},
		{color.NRGBA{0, 0, 255, 128}, [3]uint8{127, 127, 255}},
		{color.NRGBA{10, 20, 30, 255}, [3]uint8{10, 20, 30}},
	} {
		if got := overWhite(tc.in); got != tc.want {
			t.Errorf("overWhite(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// pngWithHeader returns a PNG signature and an IHDR chunk declaring w×h,
// with no image data.
func pngWithHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit truecolour
	chunk := append([]byte("IHDR"), ihdr...)
	binary.Write(&b, binary.BigEndian, uint32(13))
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestDecodeRefuses(t *testing.T) {
	photo, err := os.ReadFile("../../goldens/mllama-tiny-dev/images/photo_720x540.jpg")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a PNG, JPEG or GIF"},
		{"text", []byte("hello"), "not a PNG, JPEG or GIF"},
		// Refused from the header alone: decoding would allocate 40 GB.
		{"huge PNG", pngWithHeader(100000, 100000), "more than the 67108864 pixels"},
		{"zero PNG", pngWithHeader(0, 10), "PNG header"},
		{"truncated JPEG", photo[:len(photo)/2], "JPEG"},
		{"JPEG header only", photo[:600], "JPEG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.data))
			if !errors.Is(err, ErrImage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want ErrImage mentioning %q", err, tc.want)
			}
		})
	}
}

func TestDecodeFileNamesFile(t *testing.T) {
	_, err := DecodeFile("testdata/make.sh")
	if err == nil || !strings.Contains(err.Error(), "testdata/make.sh") || !errors.Is(err, ErrImage) {
		t.Fatalf("error %v; want one naming testdata/make.sh", err)
	}
}
