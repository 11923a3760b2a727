// Package vision is Llama 3.2 Vision's (Mllama's) image preprocessing as
// transformers 5.17's MllamaImageProcessor computes it on its default
// torchvision backend: decoding as PIL does, the tiled-canvas geometry,
// torch's antialiased bilinear uint8 resize, zero padding, the fused
// rescale-and-normalise in float32, row-major tiles. It also builds the
// processor's cross-attention mask for a token sequence.
//
// Geometry (canvas, resized size, aspect-ratio id and mask, tile count) is
// exact. Pixels are exact wherever the reference ran the AVX2 uint8 kernel
// and decoded with libjpeg-turbo, which is what the fixtures record; the
// test bound is 0.02 per pixel (about 1.3 levels of 255 after
// normalisation) and 0.005 per tile/channel mean.
package vision

import (
	"errors"
	"fmt"
	"image"
	"math"
)

// ErrUnsupported is wrapped when a valid config asks for something
// Preprocess does not implement (a resample filter other than bilinear).
var ErrUnsupported = errors.New("unsupported preprocessing")

// Result is the processor's output for one image.
type Result struct {
	// PixelValues is float32 [MaxTiles, 3, TileSize, TileSize]: the image's
	// tiles in row-major order, then zero tiles up to MaxTiles, as HF packs
	// them (its pixel_values[0][0]).
	PixelValues []float32
	MaxTiles    int
	TileSize    int
	// Grid is the tile arrangement, (rows, cols).
	Grid AspectRatio
	// AspectRatioID is the 1-based index of Grid in
	// SupportedAspectRatios(MaxTiles), HF's aspect_ratio_ids.
	AspectRatioID int
	// AspectRatioMask is 1 for the image's tiles (and always for the
	// first), 0 for the padding tiles.
	AspectRatioMask []int
	// NumTiles is Grid.Rows × Grid.Cols.
	NumTiles int
	// Input, Resized and Canvas are the image's size, its size after
	// resizing, and the padded canvas (Grid × TileSize).
	Input, Resized, Canvas Dims
}

// Shape is PixelValues' shape.
func (r *Result) Shape() []int64 {
	return []int64{int64(r.MaxTiles), 3, int64(r.TileSize), int64(r.TileSize)}
}

// Preprocess runs the Mllama image processor on one image. Decode the image
// with Decode (or DecodeFile) for PIL's pixels; other image.Image values are
// converted with Go's colour models.
func Preprocess(img image.Image, cfg *Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Resample != ResampleBilinear {
		return nil, fmt.Errorf("%w: resample %d (%s); only 2 (bilinear), Mllama's, is implemented", ErrUnsupported, cfg.Resample, cfg.ResampleName())
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("%w: image is %dx%d", ErrImage, w, h)
	}
	if int64(w)*int64(h) > MaxPixels {
		return nil, fmt.Errorf("%w: image is %dx%d, more than the %d pixels ckptgate accepts", ErrImage, w, h, MaxPixels)
	}
	if !cfg.DoConvertRGB && !isRGBOrGrey(img) {
		return nil, fmt.Errorf("%w: do_convert_rgb is false and the image is neither RGB nor grey; transformers would pass its channels through unconverted", ErrUnsupported)
	}
	tile, maxTiles := cfg.TileSize(), cfg.MaxImageTiles
	grid := OptimalCanvas(w, h, maxTiles, tile)
	canvas := Dims{Width: grid.Cols * tile, Height: grid.Rows * tile}
	resized := FitToCanvas(w, h, canvas.Width, canvas.Height, tile)

	rgb := toRGB(img)
	var chans [3][]uint8
	for c := range chans {
		chans[c] = resizePlane(rgb.c[c], w, h, resized.Width, resized.Height)
	}

	r := &Result{
		PixelValues:     make([]float32, maxTiles*3*tile*tile),
		MaxTiles:        maxTiles,
		TileSize:        tile,
		Grid:            grid,
		AspectRatioID:   AspectRatioID(grid, maxTiles),
		AspectRatioMask: make([]int, maxTiles),
		NumTiles:        grid.Rows * grid.Cols,
		Input:           Dims{Width: w, Height: h},
		Resized:         resized,
		Canvas:          canvas,
	}
	r.AspectRatioMask[0] = 1
	for i := range r.NumTiles {
		r.AspectRatioMask[i] = 1
	}
	norm := newNormalizer(cfg)
	for c := range 3 {
		lut := norm.table(c)
		src := chans[c]
		for tr := range grid.Rows {
			for tc := range grid.Cols {
				t := tr*grid.Cols + tc
				dst := r.PixelValues[(t*3+c)*tile*tile : (t*3+c+1)*tile*tile]
				for y := range tile {
					sy := tr*tile + y
					for x := range tile {
						sx := tc*tile + x
						v := uint8(0) // padding is 0 before normalisation
						if sy < resized.Height && sx < resized.Width {
							v = src[sy*resized.Width+sx]
						}
						dst[y*tile+x] = lut[v]
					}
				}
			}
		}
	}
	return r, nil
}

func isRGBOrGrey(img image.Image) bool {
	switch m := img.(type) {
	case *image.Gray:
		return true
	case *image.RGBA:
		return m.Opaque()
	}
	return false
}

// normalizer reproduces the torchvision backend's _rescale_and_normalize
// in float32. With both steps on, the rescale is folded into the constants:
// mean' = f32(mean)·f32(1/rescale_factor) and std' likewise, each rounded
// to float32, then (x − mean')/std'. With one step, it is x·f32(factor) or
// (x − f32(mean))/f32(std).
type normalizer struct {
	doRescale, doNormalize bool
	factor                 float32
	mean, std              [3]float32
}

func newNormalizer(cfg *Config) normalizer {
	n := normalizer{doRescale: cfg.DoRescale, doNormalize: cfg.DoNormalize, factor: float32(cfg.RescaleFactor)}
	for c := range 3 {
		n.mean[c], n.std[c] = float32(cfg.ImageMean[c]), float32(cfg.ImageStd[c])
		if n.doRescale && n.doNormalize {
			// torch multiplies a float32 tensor by a Python float in float32.
			inv := float32(1 / cfg.RescaleFactor)
			n.mean[c] *= inv
			n.std[c] *= inv
		}
	}
	return n
}

// table maps each uint8 value to its normalised value for channel c.
func (n normalizer) table(c int) *[256]float32 {
	var t [256]float32
	for v := range t {
		x := float32(v)
		switch {
		case n.doNormalize:
			t[v] = (x - n.mean[c]) / n.std[c]
		case n.doRescale:
			t[v] = x * n.factor
		default:
			t[v] = x
		}
	}
	return &t
}

// MaxAbsDiff is the largest |a[i] − b[i]| over the common length and its
// index (-1 when there is none); NaN counts as infinitely far. It is meant
// for comparing pixel values with goldens.
func MaxAbsDiff(a, b []float32) (float64, int) {
	worst, at := 0.0, -1
	for i := range min(len(a), len(b)) {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > worst || at < 0 {
			worst, at = d, i
		}
	}
	return worst, at
}
