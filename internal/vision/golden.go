package vision

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"

	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// Tolerances for comparing with transformers' goldens. One 8-bit level is
// about 0.015 after normalisation, so PixelTolerance allows a one-level
// difference (torch's float fallback resize, or libjpeg versions) and no
// more; MeanTolerance bounds a systematic shift.
const (
	PixelTolerance = 0.02
	MeanTolerance  = 0.005
)

// GoldensName is the preprocessing goldens' file name in a golden directory.
const GoldensName = "preprocess-goldens.json"

// maxGoldensBytes bounds the goldens file read into memory; the fixtures'
// 18 entries take 300 kB.
const maxGoldensBytes = 64 << 20

// Goldens is a preprocess-goldens.json: what transformers' image processor
// computed for images under named configs.
type Goldens struct {
	// Dir is the directory the file was read from; image paths are relative
	// to it.
	Dir     string
	Configs map[string]*Config
	Entries []Golden
}

// Golden is transformers' output for one image under one config.
type Golden struct {
	Image            string      `json:"image"`
	Size             [2]int      `json:"size"`
	Mode             string      `json:"mode"`
	Config           string      `json:"config"`
	ProcessorClass   string      `json:"processor_class"`
	AspectRatioID    int         `json:"aspect_ratio_id"`
	AspectRatioMask  []int       `json:"aspect_ratio_mask"`
	NumTiles         int         `json:"num_tiles"`
	PixelValuesShape []int       `json:"pixel_values_shape"`
	Samples          []Sample    `json:"samples"`
	TileChannelMeans [][]float64 `json:"tile_channel_means"`
}

// Sample is one recorded pixel: [tile, channel, y, x, value].
type Sample [5]float64

// LoadGoldens reads dir/preprocess-goldens.json and checks that every entry
// names a known config and a local image path.
func LoadGoldens(dir string) (*Goldens, error) {
	path := filepath.Join(dir, GoldensName)
	b, err := boundedio.ReadFile(path, maxGoldensBytes)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Configs map[string]json.RawMessage `json:"configs"`
		Goldens []Golden                   `json:"goldens"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g := &Goldens{Dir: dir, Configs: map[string]*Config{}, Entries: raw.Goldens}
	for name, c := range raw.Configs {
		cfg, err := ParseConfig(c, FormPreprocessor)
		if err != nil {
			return nil, fmt.Errorf("%s: config %q: %w", path, name, err)
		}
		cfg.Path = path
		g.Configs[name] = cfg
	}
	for i, e := range g.Entries {
		if g.Configs[e.Config] == nil {
			return nil, fmt.Errorf("%s: golden %d (%s) names config %q, which the file does not define", path, i, e.Image, e.Config)
		}
		if !filepath.IsLocal(e.Image) {
			return nil, fmt.Errorf("%s: golden %d: image path %q is not a local relative path", path, i, e.Image)
		}
	}
	return g, nil
}

// ConfigNames returns the config names, sorted.
func (g *Goldens) ConfigNames() []string {
	return slices.Sorted(maps.Keys(g.Configs))
}

// ImagePath is the golden's image file.
func (g *Goldens) ImagePath(e *Golden) string { return filepath.Join(g.Dir, e.Image) }

// Comparison is how far a Result is from a golden.
type Comparison struct {
	// Geometry lists mismatches of shape, aspect-ratio id, mask and tile
	// count; empty when they all agree.
	Geometry []string
	// MaxPixelErr is the largest |ours − HF| over the recorded samples, at
	// MaxPixelAt ([tile, channel, y, x]).
	MaxPixelErr float64
	MaxPixelAt  [4]int
	// MaxMeanErr is the largest error of a tile/channel mean, at
	// MaxMeanAt ([tile, channel]).
	MaxMeanErr float64
	MaxMeanAt  [2]int
}

// OK reports whether the result is within PixelTolerance and MeanTolerance
// with identical geometry.
func (c *Comparison) OK() bool {
	return len(c.Geometry) == 0 && c.MaxPixelErr <= PixelTolerance && c.MaxMeanErr <= MeanTolerance
}

func (c *Comparison) String() string {
	if len(c.Geometry) > 0 {
		return fmt.Sprintf("geometry differs: %v", c.Geometry)
	}
	return fmt.Sprintf("max pixel error %.4g at [tile %d, channel %d, y %d, x %d] (bound %g), max tile/channel mean error %.4g at [%d, %d] (bound %g)",
		c.MaxPixelErr, c.MaxPixelAt[0], c.MaxPixelAt[1], c.MaxPixelAt[2], c.MaxPixelAt[3], PixelTolerance,
		c.MaxMeanErr, c.MaxMeanAt[0], c.MaxMeanAt[1], MeanTolerance)
}

// Compare measures r against the golden. Samples or means that fall outside
// r's pixel_values count as geometry mismatches, never as panics.
func (e *Golden) Compare(r *Result) *Comparison {
	c := &Comparison{}
	geo := func(format string, a ...any) { c.Geometry = append(c.Geometry, fmt.Sprintf(format, a...)) }
	shape := []int{r.MaxTiles, 3, r.TileSize, r.TileSize}
	if !slices.Equal(shape, e.PixelValuesShape) {
		geo("pixel_values shape %v, HF %v", shape, e.PixelValuesShape)
	}
	if r.AspectRatioID != e.AspectRatioID {
		geo("aspect_ratio_id %d, HF %d", r.AspectRatioID, e.AspectRatioID)
	}
	if !slices.Equal(r.AspectRatioMask, e.AspectRatioMask) {
		geo("aspect_ratio_mask %v, HF %v", r.AspectRatioMask, e.AspectRatioMask)
	}
	if r.NumTiles != e.NumTiles {
		geo("num_tiles %d, HF %d", r.NumTiles, e.NumTiles)
	}
	if len(c.Geometry) > 0 {
		return c
	}
	t := r.TileSize
	for _, s := range e.Samples {
		var idx [4]int
		for k := range idx {
			idx[k] = int(s[k])
			if float64(idx[k]) != s[k] {
				idx[0] = -1 // not an integer index
			}
		}
		if idx[0] < 0 || idx[0] >= r.MaxTiles || idx[1] < 0 || idx[1] >= 3 || idx[2] < 0 || idx[2] >= t || idx[3] < 0 || idx[3] >= t {
			geo("sample %v is outside pixel_values %v", s[:4], shape)
			continue
		}
		v := r.PixelValues[((idx[0]*3+idx[1])*t+idx[2])*t+idx[3]]
		if d := math.Abs(float64(v) - s[4]); d > c.MaxPixelErr || math.IsNaN(d) {
			c.MaxPixelErr, c.MaxPixelAt = d, idx
			if math.IsNaN(d) {
				c.MaxPixelErr = math.Inf(1)
			}
		}
	}
	if len(e.TileChannelMeans) != r.MaxTiles {
		geo("%d tile means recorded for %d tiles", len(e.TileChannelMeans), r.MaxTiles)
		return c
	}
	for tile, means := range e.TileChannelMeans {
		if len(means) != 3 {
			geo("tile %d has %d channel means", tile, len(means))
			continue
		}
		for ch, want := range means {
			px := r.PixelValues[(tile*3+ch)*t*t : (tile*3+ch+1)*t*t]
			sum := 0.0
			for _, v := range px {
				sum += float64(v)
			}
			if d := math.Abs(sum/float64(len(px)) - want); d > c.MaxMeanErr || math.IsNaN(d) {
				c.MaxMeanErr, c.MaxMeanAt = d, [2]int{tile, ch}
				if math.IsNaN(d) {
					c.MaxMeanErr = math.Inf(1)
				}
			}
		}
	}
	return c
}
