//go:build ollama

package ollamacheck

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// ImageInput is one image as transformers' Mllama processor hands it to the
// model.
type ImageInput struct {
	// Pixels are pixel_values for the image: [max tiles, channels, height,
	// width] row-major, unused tiles zero.
	Pixels []float32
	// AspectRatioID is transformers' id of the tile grid (1-based).
	AspectRatioID int
	// Tiles is the number of real tiles (the ones aspect_ratio_mask marks).
	Tiles int
}

// Reference computes what a faithful Mllama implementation answers.
// internal/mllama's engine can implement it; GoldenReference answers from
// the logits Hugging Face recorded.
type Reference interface {
	// LastLogits returns the logits of the last position of ids, with img
	// attached at the <|image|> token when not nil.
	LastLogits(ids []int32, img *ImageInput) ([]float32, error)
}

// Variant asks for transformers' forward pass with some of Ollama's
// departures applied on the reference side, which measures what each
// departure alone does to the logits.
type Variant struct {
	// LayerInputFeatures takes the vision encoder's intermediate features
	// from each listed layer's input, as Meta's reference, transformers 4.45
	// and Ollama do, instead of its output, as transformers 5.17 does (D10).
	LayerInputFeatures bool
	// NoCrossAttentionMask lets every token attend to every tile and keeps
	// every token's cross-attention output, as Ollama does (D4).
	NoCrossAttentionMask bool
}

// VariantReference is a Reference that also computes variants: a
// transformers-faithful engine, not recorded logits.
type VariantReference interface {
	Reference
	LastLogitsVariant(ids []int32, img *ImageInput, v Variant) ([]float32, error)
}

// ErrNoReference is returned by a Reference that has no answer for an input.
var ErrNoReference = errors.New("no reference logits for this input")

// Prompt is one smoke prompt: what transformers rendered, the ids it fed the
// model, the image if any, and what it generated.
type Prompt struct {
	Name string
	// Rendered is the chat-template output transformers tokenized.
	Rendered string
	IDs      []int32
	// Image is transformers' processing of ImageFile; nil for text prompts.
	Image *ImageInput
	// ImageFile is the image's path, for Ollama's own preprocessing.
	ImageFile string
	// Generated are transformers' greedy continuation tokens.
	Generated []int32
}

// ImagePos is the index of the <|image|> token in IDs, -1 when there is none.
func (p *Prompt) ImagePos(imageToken int32) int {
	return slices.Index(p.IDs, imageToken)
}

// TokenizerCase is one of the goldens' tokenizer strings.
type TokenizerCase struct {
	Text       string  `json:"text"`
	IDs        []int32 `json:"ids"`
	IDsWithBOS []int32 `json:"ids_with_bos"`
}

// PreprocessGolden is transformers' preprocessing of one image under one
// image-processor config.
type PreprocessGolden struct {
	Image string `json:"image"`
	// Size is width, height.
	Size          [2]int `json:"size"`
	Mode          string `json:"mode"`
	Config        string `json:"config"`
	AspectRatioID int    `json:"aspect_ratio_id"`
	NumTiles      int    `json:"num_tiles"`
	Shape         []int  `json:"pixel_values_shape"`
	AspectMask    []int  `json:"aspect_ratio_mask"`
	// Samples are [tile, channel, y, x, value] of pixel_values[0][0].
	Samples [][5]float64 `json:"samples"`
	// TileChannelMeans[tile][channel].
	TileChannelMeans [][]float64 `json:"tile_channel_means"`
	// TileSize is the config's size.height.
	TileSize int `json:"-"`
}

// Goldens are what Hugging Face recorded for a model: the smoke prompts
// (goldens.json "forward" and golden-<name>.safetensors), the tokenizer cases,
// and the image-preprocessing goldens (preprocess-goldens.json).
type Goldens struct {
	Dir        string
	Prompts    []Prompt
	Tokenizer  []TokenizerCase
	Preprocess []PreprocessGolden
	logits     map[string][]float32
}

// LoadGoldens reads a goldens directory laid out as the dev fixtures'
// (goldens/mllama-tiny-dev): goldens.json, golden-<prompt>.safetensors,
// preprocess-goldens.json (optional) and the images they name.
func LoadGoldens(dir string) (*Goldens, error) {
	p := filepath.Join(dir, "goldens.json")
	b, err := boundedio.ReadFile(p, maxSideFile)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Tokenizer []TokenizerCase `json:"tokenizer"`
		Forward   map[string]struct {
			Image     *string `json:"image"`
			Rendered  string  `json:"rendered"`
			InputIDs  []int32 `json:"input_ids"`
			Generated []int32 `json:"generated"`
		} `json:"forward"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	g := &Goldens{Dir: dir, Tokenizer: raw.Tokenizer, logits: map[string][]float32{}}
	names := slices.Sorted(maps.Keys(raw.Forward))
	for _, name := range names {
		f := raw.Forward[name]
		pr, logits, err := loadForward(dir, name)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(pr.IDs, f.InputIDs) {
			return nil, fmt.Errorf("%s: forward %q: input_ids differ from golden-%s.safetensors", p, name, name)
		}
		pr.Rendered, pr.Generated = f.Rendered, f.Generated
		if f.Image != nil {
			if pr.Image == nil {
				return nil, fmt.Errorf("%s: forward %q names image %s but golden-%s.safetensors has no pixel_values", p, name, *f.Image, name)
			}
			pr.ImageFile = filepath.Join(dir, filepath.FromSlash(*f.Image))
		}
		g.Prompts = append(g.Prompts, *pr)
		g.logits[name] = logits
	}
	if err := g.loadPreprocess(); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *Goldens) loadPreprocess() error {
	p := filepath.Join(g.Dir, "preprocess-goldens.json")
	b, err := boundedio.ReadFile(p, maxSideFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var raw struct {
		Configs map[string]struct {
			Size struct {
				Height int `json:"height"`
				Width  int `json:"width"`
			} `json:"size"`
		} `json:"configs"`
		Goldens []PreprocessGolden `json:"goldens"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	for _, pg := range raw.Goldens {
		c, ok := raw.Configs[pg.Config]
		if !ok || c.Size.Height <= 0 || c.Size.Height > maxTileSize || c.Size.Height != c.Size.Width {
			return fmt.Errorf("%s: image %s: config %q has no square size between 1 and %d", p, pg.Image, pg.Config, maxTileSize)
		}
		pg.TileSize = c.Size.Height
		g.Preprocess = append(g.Preprocess, pg)
	}
	return nil
}

// maxTileSize bounds the preprocessing goldens' tile sizes (Llama 3.2
// Vision's is 560); Ollama's processor allocates canvases of up to 4 tiles.
const maxTileSize = 4096

// maxGoldenElems bounds the tensors read from a golden file.
const maxGoldenElems = 1 << 26

// loadForward reads golden-<name>.safetensors.
func loadForward(dir, name string) (*Prompt, []float32, error) {
	p := filepath.Join(dir, "golden-"+name+".safetensors")
	f, err := safetensors.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	ints := func(t string) ([]int64, []int64, error) {
		info, ok := f.Tensor(t)
		if !ok {
			return nil, nil, fmt.Errorf("%s: no tensor %q", p, t)
		}
		if info.DType != dtype.I64 || info.NumElements() > maxGoldenElems {
			return nil, nil, fmt.Errorf("%s: tensor %q is %v%v, want I64 of at most %d elements", p, t, info.DType, info.Shape, maxGoldenElems)
		}
		b, _, err := f.ReadBytes(t)
		if err != nil {
			return nil, nil, err
		}
		out := make([]int64, info.NumElements())
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out, info.Shape, nil
	}
	floats := func(t string) ([]float32, []int64, error) {
		info, ok := f.Tensor(t)
		if !ok {
			return nil, nil, fmt.Errorf("%s: no tensor %q", p, t)
		}
		if info.DType != dtype.F32 || info.NumElements() > maxGoldenElems {
			return nil, nil, fmt.Errorf("%s: tensor %q is %v%v, want F32 of at most %d elements", p, t, info.DType, info.Shape, maxGoldenElems)
		}
		return f.ReadFloat32(t)
	}
	ids64, shape, err := ints("input_ids")
	if err != nil {
		return nil, nil, err
	}
	if len(shape) != 2 || shape[0] != 1 {
		return nil, nil, fmt.Errorf("%s: input_ids has shape %v, want [1, n]", p, shape)
	}
	pr := &Prompt{Name: name, IDs: make([]int32, len(ids64))}
	for i, id := range ids64 {
		if id < 0 || id > math.MaxInt32 {
			return nil, nil, fmt.Errorf("%s: input_ids[%d] = %d is not a token id", p, i, id)
		}
		pr.IDs[i] = int32(id)
	}
	logits, _, err := floats("last_logits")
	if err != nil {
		return nil, nil, err
	}
	if _, ok := f.Tensor("pixel_values"); !ok {
		return pr, logits, nil
	}
	px, pshape, err := floats("pixel_values")
	if err != nil {
		return nil, nil, err
	}
	// [batch 1, images 1, tiles, channels, height, width]
	if len(pshape) != 6 || pshape[0] != 1 || pshape[1] != 1 {
		return nil, nil, fmt.Errorf("%s: pixel_values has shape %v, want one image [1, 1, tiles, channels, h, w]", p, pshape)
	}
	ar, _, err := ints("aspect_ratio_ids")
	if err != nil {
		return nil, nil, err
	}
	mask, _, err := ints("aspect_ratio_mask")
	if err != nil {
		return nil, nil, err
	}
	if len(ar) != 1 || ar[0] < 0 || ar[0] > math.MaxInt32 {
		return nil, nil, fmt.Errorf("%s: aspect_ratio_ids %v, want one id", p, ar)
	}
	tiles := 0
	for _, m := range mask {
		if m != 0 {
			tiles++
		}
	}
	pr.Image = &ImageInput{Pixels: px, AspectRatioID: int(ar[0]), Tiles: tiles}
	return pr, logits, nil
}

// LastLogits answers from the recorded forwards: ids and, for images, the
// pixels and aspect-ratio id must be exactly those of a recorded prompt.
func (g *Goldens) LastLogits(ids []int32, img *ImageInput) ([]float32, error) {
	for _, p := range g.Prompts {
		if !slices.Equal(p.IDs, ids) || (p.Image == nil) != (img == nil) {
			continue
		}
		if img != nil && (img.AspectRatioID != p.Image.AspectRatioID || !slices.Equal(img.Pixels, p.Image.Pixels)) {
			continue
		}
		return g.logits[p.Name], nil
	}
	return nil, ErrNoReference
}
