package vision

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/png"
	"io"
	"os"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/vision/ljpeg"
)

// Limits on the images Decode accepts. They are checked against the header
// before any pixel memory is allocated.
const (
	// MaxPixels bounds width×height (a 8192×8192 image; PIL warns of a
	// decompression bomb at 89 Mpx).
	MaxPixels = 1 << 26
	// MaxFileBytes bounds the encoded file.
	MaxFileBytes = 256 << 20
)

// ErrImage is wrapped by every error about an image that cannot be decoded:
// unknown format, corrupt data, or dimensions beyond the limits.
var ErrImage = errors.New("bad image")

// DecodeFile reads and decodes an image file; errors name the file.
func DecodeFile(path string) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// Decode decodes a PNG, JPEG or GIF image into the pixels PIL's Image.open
// gives transformers: JPEGs through ljpeg (libjpeg-turbo's pixels, not
// image/jpeg's), and an RGB PNG with a tRNS colour as opaque, since PIL keeps
// such an image in mode "RGB" and transformers' convert_to_rgb then leaves
// it untouched. EXIF orientation is not applied (Image.open does not).
func Decode(r io.Reader) (image.Image, error) {
	data, err := boundedio.ReadAll(r, MaxFileBytes)
	if errors.Is(err, boundedio.ErrTooLarge) {
		return nil, fmt.Errorf("%w: file %w", ErrImage, err)
	}
	if err != nil {
		return nil, err
	}
	return decodeBytes(data, MaxPixels)
}

type format struct {
	name   string
	magic  string
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

var formats = []format{
	{"PNG", "\x89PNG\r\n\x1a\n", png.DecodeConfig, png.Decode},
	{"JPEG", "\xff\xd8", ljpeg.DecodeConfig, ljpeg.Decode},
	{"GIF", "GIF87a", gif.DecodeConfig, gif.Decode},
	{"GIF", "GIF89a", gif.DecodeConfig, gif.Decode},
}

func decodeBytes(data []byte, maxPixels int) (image.Image, error) {
	var f *format
	for i := range formats {
		if bytes.HasPrefix(data, []byte(formats[i].magic)) {
			f = &formats[i]
			break
		}
	}
	if f == nil {
		return nil, fmt.Errorf("%w: not a PNG, JPEG or GIF file", ErrImage)
	}
	cfg, err := f.config(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %s header: %v", ErrImage, f.name, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("%w: %s is %dx%d", ErrImage, f.name, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > int64(maxPixels) {
		return nil, fmt.Errorf("%w: %s is %dx%d, more than the %d pixels ckptgate accepts", ErrImage, f.name, cfg.Width, cfg.Height, maxPixels)
	}
	img, err := f.decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrImage, f.name, err)
	}
	screen := image.Rect(0, 0, cfg.Width, cfg.Height)
	if b := img.Bounds(); !b.In(screen) {
		return nil, fmt.Errorf("%w: %s decodes to %v, outside its %dx%d header size", ErrImage, f.name, b, cfg.Width, cfg.Height)
	} else if b != screen {
		// A GIF whose first frame covers part of the logical screen: PIL
		// shows the frame on the full screen; the rest is taken as
		// transparent here, which becomes white.
		canvas := image.NewNRGBA(screen)
		draw.Draw(canvas, b, img, b.Min, draw.Src)
		img = canvas
	}
	if f.name == "PNG" && pngColorType(data) == pngTruecolor {
		img = dropAlpha(img)
	}
	return img, nil
}

const pngTruecolor = 2

// pngColorType reads the colour type from the IHDR chunk, which the PNG
// signature check and DecodeConfig have already validated.
func pngColorType(data []byte) int {
	const at = 8 + 8 + 4 + 4 + 1 // signature, chunk length+type, width, height, bit depth
	if len(data) <= at {
		return -1
	}
	return int(data[at])
}

// dropAlpha makes an image opaque without compositing, as PIL treats a tRNS
// colour in an RGB PNG.
func dropAlpha(img image.Image) image.Image {
	switch m := img.(type) {
	case *image.NRGBA:
		out := image.NewRGBA(m.Rect)
		copy(out.Pix, m.Pix)
		for i := 3; i < len(out.Pix); i += 4 {
			out.Pix[i] = 255
		}
		return out
	case *image.NRGBA64:
		out := image.NewRGBA64(m.Rect)
		copy(out.Pix, m.Pix)
		for i := 6; i < len(out.Pix); i += 8 {
			out.Pix[i], out.Pix[i+1] = 255, 255
		}
		return out
	}
	return img
}

// planes is an 8-bit RGB image stored channel-first ([3][h*w]), like the
// uint8 tensor torchvision's pil_to_tensor makes.
type planes struct {
	w, h int
	c    [3][]uint8
}

// toRGB converts an image to RGB as transformers' Mllama convert_to_rgb does
// for PIL images: anything but RGB goes through PIL's convert("RGBA") and is
// alpha-composited over opaque white with Pillow's integer arithmetic, then
// the alpha is dropped. Grey is replicated; CMYK uses Pillow's cmyk2rgb.
// 16-bit colour samples keep their high byte, as PIL's PNG reader does.
func toRGB(img image.Image) planes {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	p := planes{w: w, h: h}
	for i := range p.c {
		p.c[i] = make([]uint8, w*h)
	}
	set := func(i int, px [3]uint8) { p.c[0][i], p.c[1][i], p.c[2][i] = px[0], px[1], px[2] }
	switch m := img.(type) {
	case *image.Gray:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := range w {
				v := row[x]
				set(y*w+x, [3]uint8{v, v, v})
			}
		}
	case *image.RGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := range w {
				px := row[4*x : 4*x+4]
				if px[3] == 255 {
					set(y*w+x, [3]uint8{px[0], px[1], px[2]})
				} else {
					c := color.NRGBAModel.Convert(color.RGBA{px[0], px[1], px[2], px[3]}).(color.NRGBA)
					set(y*w+x, overWhite(c))
				}
			}
		}
	case *image.NRGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := range w {
				px := row[4*x : 4*x+4]
				set(y*w+x, overWhite(color.NRGBA{px[0], px[1], px[2], px[3]}))
			}
		}
	case *image.CMYK:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := range w {
				px := row[4*x : 4*x+4]
				set(y*w+x, cmykToRGB(px[0], px[1], px[2], px[3]))
			}
		}
	default:
		for y := range h {
			for x := range w {
				set(y*w+x, overWhite(nrgba8(m.At(b.Min.X+x, b.Min.Y+y))))
			}
		}
	}
	return p
}

// nrgba8 converts any colour to straight 8-bit RGBA, keeping the high byte
// of 16-bit samples.
func nrgba8(c color.Color) color.NRGBA {
	switch c := c.(type) {
	case color.NRGBA:
		return c
	case color.Gray16:
		// PIL opens 16-bit grey PNGs as "I;16", whose 8-bit conversions
		// clip at 255 (not verified against transformers: no fixture has
		// such an image).
		v := uint8(min(c.Y, 255))
		return color.NRGBA{v, v, v, 255}
	}
	n := color.NRGBA64Model.Convert(c).(color.NRGBA64)
	return color.NRGBA{uint8(n.R >> 8), uint8(n.G >> 8), uint8(n.B >> 8), uint8(n.A >> 8)}
}

// overWhite is Pillow's Image.alpha_composite of c over opaque white, in its
// 7-bit-fraction integer arithmetic.
func overWhite(c color.NRGBA) [3]uint8 {
	if c.A == 255 {
		return [3]uint8{c.R, c.G, c.B}
	}
	if c.A == 0 {
		return [3]uint8{255, 255, 255}
	}
	const prec = 7
	// With an opaque white background outa255 is 255·255, so
	// coef1 = a·255·255·2⁷ / (255·255) = a·2⁷.
	coef1 := uint32(c.A) << prec
	coef2 := 255<<prec - coef1
	mix := func(v uint8) uint8 {
		t := uint32(v)*coef1 + 255*coef2 + 0x80<<prec
		return uint8((((t >> 8) + t) >> 8) >> prec)
	}
	return [3]uint8{mix(c.R), mix(c.G), mix(c.B)}
}

// cmykToRGB is Pillow's cmyk2rgb.
func cmykToRGB(c, m, y, k uint8) [3]uint8 {
	nk := 255 - int32(k)
	f := func(v uint8) uint8 {
		t := int32(v)*nk + 128
		return uint8(max(0, min(255, nk-((t>>8)+t)>>8)))
	}
	return [3]uint8{f(c), f(m), f(y)}
}
