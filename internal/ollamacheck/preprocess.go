//go:build ollama

package ollamacheck

import (
	"bytes"
	"fmt"
	"image"
	"maps"
	"math"
	"path/filepath"

	"github.com/ollama/ollama/fs/ggml"
	ollamamllama "github.com/ollama/ollama/model/models/mllama"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/mllama"
)

// maxImagePixels bounds the images decoded (width × height), far above any
// photo a vision prompt carries.
const maxImagePixels = 64 << 20

// decodeImage decodes an image file with the decoders Ollama registers
// (JPEG, PNG, BMP, TIFF, WebP), after checking its declared size.
func decodeImage(path string) (image.Image, error) {
	b, err := boundedio.ReadFile(path, maxSideFile)
	if err != nil {
		return nil, err
	}
	c, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Width <= 0 || c.Height <= 0 || int64(c.Width)*int64(c.Height) > maxImagePixels {
		return nil, fmt.Errorf("%s: %d×%d pixels, outside 1 to %d", path, c.Width, c.Height, maxImagePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// processorFor returns Ollama's mllama image processor for a tile size,
// built by Ollama's own constructor (mllama.New) from the GGUF's key-values
// with vision.image_size replaced. Nothing is loaded; this is pure Go.
func processorFor(kv ggml.KV, tile int) (p ollamamllama.ImageProcessor, err error) {
	defer recoverInto(&err, "building ollama's image processor")
	kv = maps.Clone(kv)
	kv["mllama.vision.image_size"] = uint32(tile)
	m, err := ollamamllama.New(kv)
	if err != nil {
		return p, err
	}
	mm, ok := m.(*ollamamllama.Model)
	if !ok {
		return p, fmt.Errorf("ollama's mllama.New made a %T", m)
	}
	return mm.ImageProcessor, nil
}

// Grid is a tile arrangement.
type Grid struct {
	Rows int `json:"rows"`
	Cols int `json:"cols"`
}

func (g Grid) String() string { return fmt.Sprintf("%d row(s) × %d col(s)", g.Rows, g.Cols) }

// PreprocessComparison is Ollama's preprocessing of one image against
// transformers'.
type PreprocessComparison struct {
	Image    string `json:"image"`
	Mode     string `json:"mode"`
	Config   string `json:"config"`
	TileSize int    `json:"tile_size"`
	// HFID and OllamaID are the aspect-ratio ids each feeds its vision
	// model; HFGrid and OllamaGrid the tile grids they chose.
	HFID       int  `json:"hf_id"`
	OllamaID   int  `json:"ollama_id"`
	HFGrid     Grid `json:"hf_grid"`
	OllamaGrid Grid `json:"ollama_grid"`
	// ExactFit is true when transformers' canvas fits the image at scale
	// exactly 1, the case D2 handles differently.
	ExactFit bool `json:"exact_fit"`
	// SampleMaxAbs and SampleMeanAbs compare transformers' sampled pixels
	// with Ollama's at the same places (normalised units); MeansMaxAbs the
	// per-tile, per-channel means. Only when the grids agree.
	SampleMaxAbs  float64 `json:"sample_max_abs,omitempty"`
	SampleMeanAbs float64 `json:"sample_mean_abs,omitempty"`
	MeansMaxAbs   float64 `json:"means_max_abs,omitempty"`
	// Ollama holds Ollama's pixels (not serialised).
	Ollama *OllamaPixels `json:"-"`
}

// SameGrid reports whether both chose the same tiles.
func (c *PreprocessComparison) SameGrid() bool { return c.HFGrid == c.OllamaGrid }

// comparePreprocess runs Ollama's processor on every preprocessing golden.
// ratios is the model's supported_aspect_ratios ([rows, cols] per id, as
// transformers indexes them).
func comparePreprocess(kv ggml.KV, channels, tiles int, gs []PreprocessGolden, dir string, ratios [][2]int) ([]PreprocessComparison, error) {
	procs := map[int]ollamamllama.ImageProcessor{}
	var out []PreprocessComparison
	for _, g := range gs {
		p, ok := procs[g.TileSize]
		if !ok {
			var err error
			if p, err = processorFor(kv, g.TileSize); err != nil {
				return nil, err
			}
			procs[g.TileSize] = p
		}
		img, err := decodeImage(filepath.Join(dir, filepath.FromSlash(g.Image)))
		if err != nil {
			return nil, err
		}
		op, err := preprocess(p, img, g.TileSize*g.TileSize*channels*tiles)
		if err != nil {
			return nil, fmt.Errorf("%s at tile size %d: %w", g.Image, g.TileSize, err)
		}
		if g.AspectRatioID < 1 || g.AspectRatioID > len(ratios) {
			return nil, fmt.Errorf("%s: transformers' aspect-ratio id %d is not among the model's %d supported ratios", g.Image, g.AspectRatioID, len(ratios))
		}
		hf := ratios[g.AspectRatioID-1]
		c := PreprocessComparison{Image: g.Image, Mode: g.Mode, Config: g.Config, TileSize: g.TileSize,
			HFID: g.AspectRatioID, OllamaID: op.AspectRatioID, HFGrid: Grid{hf[0], hf[1]}, OllamaGrid: Grid{op.Rows, op.Cols}, Ollama: op}
		w, h := float64(g.Size[0]), float64(g.Size[1])
		c.ExactFit = math.Min(float64(hf[0]*g.TileSize)/h, float64(hf[1]*g.TileSize)/w) == 1
		if c.SameGrid() {
			c.SampleMaxAbs, c.SampleMeanAbs, c.MeansMaxAbs, err = pixelDistance(g, op.Pixels, channels, tiles)
			if err != nil {
				return nil, err
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// pixelDistance compares transformers' sampled pixels and per-tile channel
// means with Ollama's pixels ([tiles][channels][y][x]).
func pixelDistance(g PreprocessGolden, px []float32, channels, tiles int) (maxAbs, meanAbs, meansMax float64, err error) {
	s := g.TileSize
	plane := s * s
	at := func(t, c, y, x int) (float64, error) {
		if t < 0 || t >= tiles || c < 0 || c >= channels || y < 0 || y >= s || x < 0 || x >= s {
			return 0, fmt.Errorf("%s: sample [%d %d %d %d] is outside %d tiles × %d channels × %d×%d", g.Image, t, c, y, x, tiles, channels, s, s)
		}
		return float64(px[(t*channels+c)*plane+y*s+x]), nil
	}
	for _, sm := range g.Samples {
		v, err := at(int(sm[0]), int(sm[1]), int(sm[2]), int(sm[3]))
		if err != nil {
			return 0, 0, 0, err
		}
		d := math.Abs(v - sm[4])
		maxAbs = math.Max(maxAbs, d)
		meanAbs += d
	}
	if len(g.Samples) > 0 {
		meanAbs /= float64(len(g.Samples))
	}
	for t, row := range g.TileChannelMeans {
		for c, want := range row {
			if t >= tiles || c >= channels {
				return 0, 0, 0, fmt.Errorf("%s: tile_channel_means has tile %d channel %d, beyond %d×%d", g.Image, t, c, tiles, channels)
			}
			var sum float64
			base := (t*channels + c) * plane
			for _, v := range px[base : base+plane] {
				sum += float64(v)
			}
			meansMax = math.Max(meansMax, math.Abs(sum/float64(plane)-want))
		}
	}
	return maxAbs, meanAbs, meansMax, nil
}

// aspectRatios returns the config's supported_aspect_ratios, or the list
// transformers derives from max_num_tiles when the config has none.
func aspectRatios(cfg *mllama.Config) [][2]int {
	if len(cfg.Vision.SupportedAspectRatios) > 0 {
		return cfg.Vision.SupportedAspectRatios
	}
	var out [][2]int
	n := cfg.Vision.MaxNumTiles
	for a := 1; a <= n; a++ {
		for b := 1; b <= n; b++ {
			if a*b <= n {
				out = append(out, [2]int{a, b})
			}
		}
	}
	return out
}
