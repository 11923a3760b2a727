package vision

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// Form names the file, and so the transformers generation, a preprocessor
// config was read from.
type Form string

// The two forms. transformers 5.x loads the nested processor_config.json
// first and falls back to preprocessor_config.json; 4.x reads only
// preprocessor_config.json.
const (
	// FormProcessor is processor_config.json with the image-processor fields
	// nested under "image_processor" (what transformers 5.x saves).
	FormProcessor Form = "processor_config.json"
	// FormPreprocessor is preprocessor_config.json with the fields at the top
	// level (transformers 4.x and the Hub repos).
	FormPreprocessor Form = "preprocessor_config.json"
)

// Limits on what a config may ask for, so that Preprocess never allocates
// more than a few hundred MB whatever the file says. Llama 3.2 Vision uses
// 4 tiles of 560.
const (
	MaxTileSize   = 4096
	MaxImageTiles = 64
	// MaxTilePixels bounds max_image_tiles × tile², the pixel_values size
	// per channel.
	MaxTilePixels = 1 << 25
)

// Resample values as PIL numbers them (PIL.Image.Resampling).
var resampleNames = map[int]string{
	0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming",
}

// ResampleBilinear is PIL's BILINEAR, the only filter Mllama uses and the
// only one Preprocess implements.
const ResampleBilinear = 2

// Size is the tile size of the config's "size" field.
type Size struct {
	Height int `json:"height"`
	Width  int `json:"width"`
}

// Config is an Mllama image-processor config.
type Config struct {
	DoConvertRGB  bool      `json:"do_convert_rgb"`
	DoResize      bool      `json:"do_resize"`
	DoRescale     bool      `json:"do_rescale"`
	DoNormalize   bool      `json:"do_normalize"`
	DoPad         bool      `json:"do_pad"`
	ImageMean     []float64 `json:"image_mean"`
	ImageStd      []float64 `json:"image_std"`
	MaxImageTiles int       `json:"max_image_tiles"`
	Resample      int       `json:"resample"`
	RescaleFactor float64   `json:"rescale_factor"`
	Size          Size      `json:"size"`
	// ImageProcessorType and ProcessorClass are informational; empty when
	// absent.
	ImageProcessorType string `json:"image_processor_type,omitempty"`
	ProcessorClass     string `json:"processor_class,omitempty"`

	// Form and Path say where the config was read from.
	Form Form   `json:"-"`
	Path string `json:"-"`
	// Defaulted lists the fields the file did not set and that were given
	// MllamaImageProcessor's class defaults (which, for these fields, are
	// the values Llama 3.2 Vision uses).
	Defaulted []string `json:"-"`
	// Extra holds the fields Config does not model, as written.
	Extra map[string]json.RawMessage `json:"-"`
}

// TileSize is the square tile's side (size.height).
func (c *Config) TileSize() int { return c.Size.Height }

// ErrNoConfig is returned by LoadConfig when a directory has no image
// processor config in either form.
var ErrNoConfig = errors.New("no preprocessor_config.json, nor processor_config.json with an image_processor")

// LoadConfig returns the image-processor config of a model directory that
// transformers 5.17 would load: processor_config.json's "image_processor"
// when present, else preprocessor_config.json. Missing both is ErrNoConfig;
// a file that does not parse or validate is an error naming it.
func LoadConfig(dir string) (*Config, error) {
	cs, err := LoadConfigs(dir)
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

// LoadConfigs returns every image-processor config present in dir, the one
// transformers 5.x uses first. Checks compare them: 4.x and 5.x would
// preprocess differently when they disagree.
func LoadConfigs(dir string) ([]*Config, error) {
	var out []*Config
	for _, f := range []Form{FormProcessor, FormPreprocessor} {
		p := filepath.Join(dir, string(f))
		b, err := boundedio.ReadFile(p, maxConfigBytes)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var outer map[string]json.RawMessage
		if f == FormProcessor {
			// A processor_config.json without "image_processor" (4.x writes
			// one for processor attributes) is not an image-processor config.
			if err := json.Unmarshal(b, &outer); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			inner, ok := outer["image_processor"]
			if !ok {
				continue
			}
			b = inner
		}
		c, err := ParseConfig(b, f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if pc, ok := outer["processor_class"]; ok && c.ProcessorClass == "" {
			// 5.x keeps processor_class beside image_processor; 4.x inside.
			if err := json.Unmarshal(pc, &c.ProcessorClass); err != nil {
				return nil, fmt.Errorf("%s: processor_class: %w", p, err)
			}
		}
		c.Path = p
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoConfig)
	}
	return out, nil
}

// maxConfigBytes bounds config files read into memory; the real one is 437.
const maxConfigBytes = 1 << 20

// ParseConfig parses the image-processor fields (the top-level object of
// preprocessor_config.json, or processor_config.json's "image_processor") and
// validates them. Fields that MllamaImageProcessor defaults to the values
// Llama 3.2 Vision uses may be absent; size, image_mean and image_std may
// not, because the class defaults for them (224, 0.5) fit no Mllama model
// and transformers would apply them silently.
func ParseConfig(b []byte, form Form) (*Config, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, errors.New("not a JSON object")
	}
	// Start from MllamaImageProcessor's class defaults for the fields whose
	// defaults are Llama 3.2 Vision's values.
	c := &Config{
		DoConvertRGB: true, DoResize: true, DoRescale: true, DoNormalize: true, DoPad: true,
		MaxImageTiles: 4, Resample: ResampleBilinear, RescaleFactor: 1.0 / 255,
		Form: form, Extra: map[string]json.RawMessage{},
	}
	fields := []struct {
		key      string
		dst      any
		required bool
	}{
		{"do_convert_rgb", &c.DoConvertRGB, false},
		{"do_resize", &c.DoResize, false},
		{"do_rescale", &c.DoRescale, false},
		{"do_normalize", &c.DoNormalize, false},
		{"do_pad", &c.DoPad, false},
		{"image_mean", &c.ImageMean, true},
		{"image_std", &c.ImageStd, true},
		{"max_image_tiles", &c.MaxImageTiles, false},
		{"resample", &c.Resample, false},
		{"rescale_factor", &c.RescaleFactor, false},
		{"size", &c.Size, true},
		{"image_processor_type", &c.ImageProcessorType, false},
		{"processor_class", &c.ProcessorClass, false},
	}
	var errs []error
	known := map[string]bool{}
	for _, f := range fields {
		known[f.key] = true
		v, ok := raw[f.key]
		switch {
		case (!ok || string(v) == "null") && f.required:
			errs = append(errs, fmt.Errorf("%s is missing (transformers would silently use MllamaImageProcessor's class default, which fits no Mllama model)", f.key))
		case !ok || string(v) == "null":
			if _, informational := f.dst.(*string); !informational {
				c.Defaulted = append(c.Defaulted, f.key)
			}
		default:
			if err := unmarshalStrict(v, f.dst); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s is not %s", f.key, abbrev(v), typeName(f.dst)))
			}
		}
	}
	for k, v := range raw {
		if !known[k] {
			c.Extra[k] = v
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// unmarshalStrict decodes v into dst, refusing unknown fields in objects (a
// size with "shortest_edge" is not a tile size).
func unmarshalStrict(v json.RawMessage, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}

func typeName(dst any) string {
	switch dst.(type) {
	case *bool:
		return "a boolean"
	case *int:
		return "an integer"
	case *float64:
		return "a number"
	case *string:
		return "a string"
	case *[]float64:
		return "a list of numbers"
	case *Size:
		return `{"height": int, "width": int}`
	}
	return fmt.Sprintf("%T", dst)
}

func abbrev(v json.RawMessage) string {
	s := string(v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// Validate reports every field that transformers' MllamaImageProcessor
// would reject, or that ckptgate cannot honour, joined into one error.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !c.DoResize {
		bad("do_resize is false; MllamaImageProcessor does not support that")
	}
	if !c.DoPad {
		bad("do_pad is false; MllamaImageProcessor does not support that")
	}
	switch {
	case c.Size.Height <= 0 || c.Size.Width <= 0:
		bad("size height=%d width=%d: both must be positive", c.Size.Height, c.Size.Width)
	case c.Size.Height != c.Size.Width:
		bad("size height=%d width=%d: MllamaImageProcessor needs square tiles", c.Size.Height, c.Size.Width)
	case c.Size.Height > MaxTileSize:
		bad("size %d exceeds ckptgate's limit of %d", c.Size.Height, MaxTileSize)
	}
	switch {
	case c.MaxImageTiles < 1:
		bad("max_image_tiles is %d; it must be at least 1", c.MaxImageTiles)
	case c.MaxImageTiles > MaxImageTiles:
		bad("max_image_tiles %d exceeds ckptgate's limit of %d", c.MaxImageTiles, MaxImageTiles)
	case c.Size.Height > 0 && c.Size.Height <= MaxTileSize &&
		int64(c.MaxImageTiles)*int64(c.Size.Height)*int64(c.Size.Height) > MaxTilePixels:
		bad("max_image_tiles × size² = %d×%d² exceeds ckptgate's limit of %d pixels", c.MaxImageTiles, c.Size.Height, MaxTilePixels)
	}
	for _, v := range []struct {
		name string
		vals []float64
	}{{"image_mean", c.ImageMean}, {"image_std", c.ImageStd}} {
		if len(v.vals) != 3 {
			bad("%s has %d values; want 3 (R, G, B)", v.name, len(v.vals))
			continue
		}
		for i, x := range v.vals {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				bad("%s[%d] is %v", v.name, i, x)
			} else if v.name == "image_std" && x <= 0 {
				bad("image_std[%d] is %v; it must be positive", i, x)
			}
		}
	}
	if _, ok := resampleNames[c.Resample]; !ok {
		bad("resample %d is not a PIL resampling filter (0-5)", c.Resample)
	}
	if !(c.RescaleFactor > 0) || math.IsInf(c.RescaleFactor, 0) {
		bad("rescale_factor %v must be a positive number", c.RescaleFactor)
	}
	if c.ImageProcessorType != "" && !strings.HasPrefix(c.ImageProcessorType, "MllamaImageProcessor") {
		bad("image_processor_type %q is not an Mllama image processor", c.ImageProcessorType)
	}
	return errors.Join(errs...)
}

// ResampleName is PIL's name for the config's resample value.
func (c *Config) ResampleName() string {
	if n, ok := resampleNames[c.Resample]; ok {
		return n
	}
	return fmt.Sprintf("unknown (%d)", c.Resample)
}

// Difference is one field on which two configs disagree.
type Difference struct {
	Field string
	A, B  string
	// Cosmetic is true for fields that do not change the pixels:
	// processor_class and the image_processor_type spelling.
	Cosmetic bool
}

// Diff compares the fields that determine preprocessing, plus the
// informational ones (marked Cosmetic) and any extra fields. The form and
// path are not compared: the same values in 4.x and 5.x files are equal.
func Diff(a, b *Config) []Difference {
	var out []Difference
	add := func(field string, x, y any, cosmetic bool) {
		xs, ys := render(x), render(y)
		if xs != ys {
			out = append(out, Difference{Field: field, A: xs, B: ys, Cosmetic: cosmetic})
		}
	}
	add("do_convert_rgb", a.DoConvertRGB, b.DoConvertRGB, false)
	add("do_resize", a.DoResize, b.DoResize, false)
	add("do_rescale", a.DoRescale, b.DoRescale, false)
	add("do_normalize", a.DoNormalize, b.DoNormalize, false)
	add("do_pad", a.DoPad, b.DoPad, false)
	add("image_mean", a.ImageMean, b.ImageMean, false)
	add("image_std", a.ImageStd, b.ImageStd, false)
	add("max_image_tiles", a.MaxImageTiles, b.MaxImageTiles, false)
	add("resample", a.Resample, b.Resample, false)
	add("rescale_factor", a.RescaleFactor, b.RescaleFactor, false)
	add("size", a.Size, b.Size, false)
	add("image_processor_type", a.ImageProcessorType, b.ImageProcessorType, true)
	add("processor_class", a.ProcessorClass, b.ProcessorClass, true)
	keys := map[string]bool{}
	for k := range a.Extra {
		keys[k] = true
	}
	for k := range b.Extra {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		x, y := canonicalJSON(a.Extra[k]), canonicalJSON(b.Extra[k])
		if x != y {
			out = append(out, Difference{Field: k, A: x, B: y})
		}
	}
	return out
}

func render(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// canonicalJSON re-encodes a value so that whitespace and key order do not
// count as differences; absent is "(absent)".
func canonicalJSON(v json.RawMessage) string {
	if v == nil {
		return "(absent)"
	}
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return string(v)
	}
	return render(x)
}
