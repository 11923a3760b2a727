// Package golden records what a converted Hugging Face Mllama directory holds
// and computes, and compares a model with such a recording, so that a change
// of torch, transformers or ckptgate shows up as a per-item difference.
//
// A recording (golden.json, schema ckptgate.golden/v1) holds, per item:
//
//   - files: every side file's name, size and SHA-256;
//   - config, generation_config, tokenizer_config, image_processor: the side
//     files' content normalised across the transformers 4.x and 5.x forms
//     (torch_dtype and dtype, rope_scaling + rope_theta and rope_parameters,
//     preprocessor_config.json and processor_config.json's image_processor,
//     special_tokens_map.json and tokenizer_config.json), and which form each
//     used;
//   - chat_template: per transformers loader, the template it would use, by
//     SHA-256, and the files it comes from;
//   - tokenizer: its layout-independent fingerprint, a hash of its pipeline
//     and its named special tokens;
//   - tensors: per tensor (by legacy name) dtype, shape, SHA-256 of the raw
//     bytes and summary statistics with a fixed sample of values;
//   - source (optional): the training checkpoint's tensors as stored (names,
//     dtypes, shapes, chunk counts, checksums) and its DCP metadata;
//   - renders: the chat template rendered on a fixed conversation suite, with
//     the token ids of each render;
//   - encodings: a fixed set of strings tokenized and decoded;
//   - preprocess: images preprocessed with the model's image processor;
//   - forward: the reference engine's last-position logits (top 256 and
//     summary statistics) and greedy tokens for a text and an image prompt.
//
// Compare sorts each item into exact (pass), within tolerance (warn, with the
// measured distance) and beyond it (fail). Form changes that leave the
// content equal pass with a note. The tolerances are Tolerances' fields.
package golden

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/ckptgate/ckptgate/internal/atomicfile"
	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// Schema is golden.json's "schema" value; it is what makes a directory a
// recorded golden rather than the dev fixtures' goldens.
const Schema = "ckptgate.golden/v1"

// FileName is the recording's file in a golden directory.
const FileName = "golden.json"

// maxFileSize bounds golden.json; a recording of the tiny model takes about
// 150 kB and one of an 11B model a few hundred kB more.
const maxFileSize = 64 << 20

// The items of a recording; a finding's ID is "golden." + item.
const (
	ItemFiles            = "files"
	ItemConfig           = "config"
	ItemGenerationConfig = "generation_config"
	ItemTokenizerConfig  = "tokenizer_config"
	ItemImageProcessor   = "image_processor"
	ItemChatTemplate     = "chat_template"
	ItemTokenizer        = "tokenizer"
	ItemTensors          = "tensors"
	ItemSource           = "source"
	ItemRenders          = "renders"
	ItemEncodings        = "encodings"
	ItemPreprocess       = "preprocess"
	ItemForward          = "forward"
)

// Items lists the items in report order.
var Items = []string{ItemFiles, ItemConfig, ItemGenerationConfig, ItemTokenizerConfig, ItemImageProcessor,
	ItemChatTemplate, ItemTokenizer, ItemTensors, ItemSource, ItemRenders, ItemEncodings, ItemPreprocess, ItemForward}

// ID is the report ID of an item's findings.
func ID(item string) string { return "golden." + item }

// Golden is one recording.
type Golden struct {
	Schema   string   `json:"schema"`
	Recorder Recorder `json:"recorder"`
	Inputs   Inputs   `json:"inputs"`

	Files            []File               `json:"files"`
	Config           *SideFile            `json:"config,omitempty"`
	GenerationConfig *SideFile            `json:"generation_config,omitempty"`
	TokenizerConfig  *SideFile            `json:"tokenizer_config,omitempty"`
	ImageProcessor   *SideFile            `json:"image_processor,omitempty"`
	ChatTemplate     map[string]*Template `json:"chat_template,omitempty"`
	Tokenizer        *Tokenizer           `json:"tokenizer,omitempty"`
	Weights          *Weights             `json:"weights,omitempty"`
	Source           *Source              `json:"source,omitempty"`
	Renders          map[string]*Render   `json:"renders,omitempty"`
	Encodings        []*Encoding          `json:"encodings,omitempty"`
	Preprocess       map[string]*Pixels   `json:"preprocess,omitempty"`
	Forward          map[string]*Forward  `json:"forward,omitempty"`

	// Missing says, per item (or "item/subject"), why it could not be
	// recorded.
	Missing map[string]string `json:"missing,omitempty"`

	// dir is the directory Load read the recording from; image paths are
	// relative to it.
	dir string
}

// Recorder names the toolchain that made a recording.
type Recorder struct {
	Ckptgate string `json:"ckptgate"`
	Go       string `json:"go"`
}

// Inputs are what a recording was made with besides the model: what Compare
// needs to record the model under test the same way.
type Inputs struct {
	// DateString is the chat templates' date_string.
	DateString string `json:"date_string"`
	// Images are the preprocessed images.
	Images []Image `json:"images,omitempty"`
	// PromptImage names the image (one of Images) of the image prompt.
	PromptImage string `json:"prompt_image,omitempty"`
	// NewTokens is how many tokens the forward prompts generate greedily.
	NewTokens int `json:"new_tokens"`
	// TopK is how many of the last position's logits are kept.
	TopK int `json:"top_k"`
}

// Image is one input image.
type Image struct {
	Name string `json:"name"`
	// Path is relative to the golden directory once written (absolute
	// while recording).
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// File is one side file of the model directory.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// SideFile is a side file's content, normalised so that the transformers 4.x
// and 5.x forms of equal content are equal.
type SideFile struct {
	// File names the file the content came from.
	File string `json:"file"`
	// Forms names, per concept, the spelling the file used (e.g. "dtype":
	// "torch_dtype"); a difference is a note, not a change.
	Forms map[string]string `json:"forms,omitempty"`
	// Version is the transformers_version the file records.
	Version string `json:"transformers_version,omitempty"`
	// Content is the normalised content.
	Content map[string]any `json:"content"`
}

// Template is the chat template one transformers loader would use.
type Template struct {
	From    []string `json:"from"`
	Names   []string `json:"names"`
	SHA256  string   `json:"sha256"`
	Version string   `json:"version"`
	Bytes   int      `json:"bytes"`
}

// Tokenizer summarises tokenizer.json and the named special tokens.
type Tokenizer struct {
	// Fingerprint covers the vocabulary, merges and added tokens
	// (chat.Tokenizer.Fingerprint).
	Fingerprint string `json:"fingerprint"`
	// Pipeline is the SHA-256 of the normalizer, pre_tokenizer,
	// post_processor and decoder, as canonical JSON.
	Pipeline  string            `json:"pipeline_sha256"`
	VocabSize int               `json:"vocab_size"`
	Merges    int               `json:"merges"`
	Added     int               `json:"added_tokens"`
	Named     map[string]string `json:"named_special_tokens"`
	// FileSHA256 is the raw file's hash (a difference alone is a note:
	// 4.x and 5.x serialise the same tokenizer differently).
	FileSHA256 string `json:"file_sha256"`
}

// Weights are the model's tensors.
type Weights struct {
	// Layout is the key layout of the names in the files.
	Layout  string             `json:"layout"`
	Files   []string           `json:"files"`
	Tensors map[string]*Tensor `json:"tensors"`
}

// Tensor is one tensor's manifest entry and statistics.
type Tensor struct {
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	// SHA256 is over the raw little-endian bytes in row-major order (the
	// manifests' definition).
	SHA256 string `json:"sha256"`
	// Stats is nil for tensors that are not floating point.
	Stats *Stats `json:"stats,omitempty"`
	// Chunks is the number of saved boxes (source tensors only).
	Chunks int `json:"chunks,omitempty"`
}

// Stats summarise a float tensor; non-finite values are counted, not summed.
type Stats struct {
	L2     Num   `json:"l2"`
	Mean   Num   `json:"mean"`
	AbsMax Num   `json:"abs_max"`
	NaN    int64 `json:"nan,omitempty"`
	Inf    int64 `json:"inf,omitempty"`
	// Sample holds the values at SamplePositions(n, SampleSize).
	Sample []Num `json:"sample"`
}

// Source is the training checkpoint the model was converted from.
type Source struct {
	Format string `json:"format"`
	// Layout is the Mllama key layout of the names.
	Layout  string             `json:"layout"`
	DCP     *DCPMetadata       `json:"dcp,omitempty"`
	Tensors map[string]*Tensor `json:"tensors"`
	// Notes are the reader's notes with the checkpoint's path replaced by
	// "<source>".
	Notes []string `json:"notes,omitempty"`
}

// DCPMetadata is what a DCP .metadata says beyond the tensors.
type DCPMetadata struct {
	// Version is the DCP format version ("" before torch wrote one).
	Version     string   `json:"version"`
	Entries     int      `json:"entries"`
	BytesKeys   []string `json:"bytes_keys,omitempty"`
	PlannerData bool     `json:"planner_data"`
	// Content hashes the entries and item placements in a fixed order;
	// SHA256 is the raw file's. A difference in either is a note: the
	// tensors themselves are compared one by one.
	Content string `json:"content_sha256"`
	SHA256  string `json:"sha256"`
}

// Render is one conversation rendered with the chat template.
type Render struct {
	Text *string `json:"text,omitempty"`
	// IDs are Text's token ids without added special tokens.
	IDs       []int  `json:"ids,omitempty"`
	ErrorType string `json:"error_type,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Encoding is one string through the tokenizer.
type Encoding struct {
	Text       string `json:"text"`
	IDs        []int  `json:"ids"`
	IDsWithBOS []int  `json:"ids_with_bos"`
	Decoded    string `json:"decoded"`
}

// Pixels is one image preprocessed with the model's image processor.
type Pixels struct {
	Image           string  `json:"image"`
	SHA256          string  `json:"image_sha256"`
	AspectRatioID   int     `json:"aspect_ratio_id"`
	AspectRatioMask []int   `json:"aspect_ratio_mask"`
	NumTiles        int     `json:"num_tiles"`
	Shape           []int64 `json:"shape"`
	// PixelSHA256 is over pixel_values as little-endian float32.
	PixelSHA256 string `json:"pixel_sha256"`
	// Means are per tile and channel.
	Means [][]Num `json:"tile_channel_means"`
	// Sample holds pixel_values at SamplePositions(len, SampleSize).
	Sample []Num `json:"sample"`

	values []float32
}

// Forward is one prompt through the reference engine.
type Forward struct {
	Image     string `json:"image,omitempty"`
	InputIDs  []int  `json:"input_ids"`
	TopIDs    []int  `json:"top_ids"`
	TopLogits []Num  `json:"top_logits"`
	Generated []int  `json:"generated"`
	// LogitsSHA256 is over all last-position logits as little-endian
	// float32.
	LogitsSHA256 string      `json:"logits_sha256"`
	Stats        LogitsStats `json:"stats"`

	logits []float32
}

// LogitsStats summarise a logit vector.
type LogitsStats struct {
	Vocab     int `json:"vocab"`
	Mean      Num `json:"mean"`
	Std       Num `json:"std"`
	Min       Num `json:"min"`
	Max       Num `json:"max"`
	LogSumExp Num `json:"logsumexp"`
	Entropy   Num `json:"entropy_nats"`
}

// Num is a float that JSON can carry even when it is NaN or infinite
// (written as the strings "NaN", "Inf" and "-Inf"): recordings describe
// broken models too.
type Num float64

// MarshalJSON writes finite values as numbers.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	switch {
	case math.IsNaN(f):
		return []byte(`"NaN"`), nil
	case math.IsInf(f, 1):
		return []byte(`"Inf"`), nil
	case math.IsInf(f, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
}

// UnmarshalJSON reads a number or one of the three strings.
func (n *Num) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"NaN"`:
		*n = Num(math.NaN())
		return nil
	case `"Inf"`:
		*n = Num(math.Inf(1))
		return nil
	case `"-Inf"`:
		*n = Num(math.Inf(-1))
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("want a number, \"NaN\", \"Inf\" or \"-Inf\", got %s", b)
	}
	*n = Num(f)
	return nil
}

// IsRecorded reports whether dir holds a recording (golden.json), as
// opposed to the dev fixtures' goldens (goldens.json and friends).
func IsRecorded(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, FileName))
	return err == nil && st.Mode().IsRegular()
}

// ErrNotRecorded is returned by Load for a directory without golden.json.
var ErrNotRecorded = errors.New("not a recorded golden directory (no " + FileName + ")")

// Limits on what Load accepts, so that Compare can index without further
// checks on sizes: a recording is input like any other.
const (
	maxEntries   = 1 << 20 // tensors, files, renders, …
	maxSample    = 1 << 12
	maxTopK      = 1 << 16
	maxIDs       = 1 << 20
	maxTiles     = 64
	maxRank      = 16
	maxNewTokens = 1 << 12
)

// Load reads dir/golden.json and checks its schema and sizes.
func Load(dir string) (*Golden, error) {
	path := filepath.Join(dir, FileName)
	b, err := boundedio.ReadFile(path, maxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotRecorded)
	}
	if err != nil {
		return nil, err
	}
	g, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g.dir = dir
	return g, nil
}

// Parse decodes and validates golden.json bytes.
func Parse(b []byte) (*Golden, error) {
	var head struct {
		Schema string `json:"schema"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, err
	}
	if head.Schema != Schema {
		return nil, fmt.Errorf("schema is %q, want %q", head.Schema, Schema)
	}
	var g Golden
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, err
	}
	if err := g.validate(); err != nil {
		return nil, err
	}
	return &g, nil
}

// validate bounds every count and size a comparison relies on.
func (g *Golden) validate() error {
	in := &g.Inputs
	if in.NewTokens < 0 || in.NewTokens > maxNewTokens {
		return fmt.Errorf("inputs.new_tokens is %d, want 0..%d", in.NewTokens, maxNewTokens)
	}
	if in.TopK < 0 || in.TopK > maxTopK {
		return fmt.Errorf("inputs.top_k is %d, want 0..%d", in.TopK, maxTopK)
	}
	if len(in.Images) > maxEntries || len(g.Files) > maxEntries || len(g.Renders) > maxEntries ||
		len(g.Encodings) > maxEntries || len(g.Preprocess) > maxEntries || len(g.Forward) > maxEntries {
		return fmt.Errorf("more than %d entries in a list", maxEntries)
	}
	for i, im := range in.Images {
		if im.Name == "" || im.Name != filepath.Base(im.Name) {
			return fmt.Errorf("inputs.images[%d]: name %q is not a file name", i, im.Name)
		}
	}
	checkTensors := func(what string, ts map[string]*Tensor) error {
		if len(ts) > maxEntries {
			return fmt.Errorf("%s: more than %d tensors", what, maxEntries)
		}
		for name, t := range ts {
			if t == nil {
				return fmt.Errorf("%s: tensor %q is null", what, name)
			}
			if len(t.Shape) > maxRank {
				return fmt.Errorf("%s: tensor %q has %d dimensions", what, name, len(t.Shape))
			}
			for _, d := range t.Shape {
				if d < 0 {
					return fmt.Errorf("%s: tensor %q has shape %v", what, name, t.Shape)
				}
			}
			if t.Stats != nil && len(t.Stats.Sample) > maxSample {
				return fmt.Errorf("%s: tensor %q has %d sampled values, more than %d", what, name, len(t.Stats.Sample), maxSample)
			}
		}
		return nil
	}
	if g.Weights != nil {
		if err := checkTensors("weights", g.Weights.Tensors); err != nil {
			return err
		}
	}
	if g.Source != nil {
		if err := checkTensors("source", g.Source.Tensors); err != nil {
			return err
		}
	}
	for name, r := range g.Renders {
		if r == nil || len(r.IDs) > maxIDs {
			return fmt.Errorf("renders[%q]: null or more than %d ids", name, maxIDs)
		}
	}
	for i, e := range g.Encodings {
		if e == nil || len(e.IDs) > maxIDs || len(e.IDsWithBOS) > maxIDs {
			return fmt.Errorf("encodings[%d]: null or more than %d ids", i, maxIDs)
		}
	}
	for name, p := range g.Preprocess {
		if p == nil || len(p.Sample) > maxSample || len(p.Means) > maxTiles || len(p.AspectRatioMask) > maxTiles || len(p.Shape) > maxRank {
			return fmt.Errorf("preprocess[%q]: null, or more than %d samples or %d tiles", name, maxSample, maxTiles)
		}
		for _, m := range p.Means {
			if len(m) > 16 {
				return fmt.Errorf("preprocess[%q]: %d channel means per tile", name, len(m))
			}
		}
	}
	for name, fw := range g.Forward {
		if fw == nil || len(fw.TopIDs) > maxTopK || len(fw.TopLogits) != len(fw.TopIDs) || len(fw.InputIDs) > maxIDs || len(fw.Generated) > maxNewTokens {
			return fmt.Errorf("forward[%q]: null, top_ids and top_logits of different lengths, or too many ids", name)
		}
	}
	return nil
}

// Dir is the directory the recording was loaded from ("" when recorded in
// memory).
func (g *Golden) Dir() string { return g.dir }

// ImagePath resolves a recorded image against the golden directory.
func (g *Golden) ImagePath(im Image) string {
	if filepath.IsAbs(im.Path) || g.dir == "" {
		return im.Path
	}
	return filepath.Join(g.dir, im.Path)
}

// Write writes dir/golden.json (creating dir), image paths made relative to
// dir. The file appears complete or not at all.
func (g *Golden) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	out := *g
	out.Inputs.Images = make([]Image, len(g.Inputs.Images))
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for i, im := range g.Inputs.Images {
		p := g.ImagePath(im)
		if abs, err := filepath.Abs(p); err == nil {
			if rel, err := filepath.Rel(absDir, abs); err == nil {
				p = filepath.ToSlash(rel)
			}
		}
		im.Path = p
		out.Inputs.Images[i] = im
	}
	b, err := json.MarshalIndent(&out, "", " ")
	if err != nil {
		return err
	}
	b = append(compactScalarArrays(b), '\n')
	if err := atomicfile.WriteBytes(filepath.Join(dir, FileName), b); err != nil {
		return err
	}
	g.dir = dir
	g.Inputs.Images = out.Inputs.Images
	return nil
}

// compactScalarArrays puts every array that holds no object or array on one
// line: an indented recording stays readable in a diff without spending a
// line on each of thousands of numbers.
func compactScalarArrays(b []byte) []byte {
	type open struct {
		at     int
		array  bool
		scalar bool
	}
	var stack []open
	out := make([]byte, 0, len(b))
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			if len(stack) > 0 {
				stack[len(stack)-1].scalar = false
			}
			stack = append(stack, open{at: len(out), array: c == '[', scalar: c == '['})
		case ']', '}':
			out = append(out, c)
			if len(stack) == 0 {
				continue
			}
			o := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if o.array && o.scalar {
				var buf bytes.Buffer
				if json.Compact(&buf, out[o.at:]) == nil {
					out = append(out[:o.at], buf.Bytes()...)
				}
			}
			continue
		}
		out = append(out, c)
	}
	return out
}

// imageNames lists the recorded images' names.
func (in *Inputs) imageNames() []string {
	names := make([]string, len(in.Images))
	for i, im := range in.Images {
		names[i] = im.Name
	}
	return names
}

// hasImage reports whether name is one of the inputs' images.
func (in *Inputs) hasImage(name string) bool { return slices.Contains(in.imageNames(), name) }
