package golden

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// Options say what to record.
type Options struct {
	// Model is the Hugging Face model directory.
	Model string
	// Source is the training checkpoint the model was converted from
	// (optional).
	Source *ckpt.Checkpoint
	// Images are image files to preprocess.
	Images []string
	// PromptImage is the image of the image prompt: one of Images, by path
	// or file name; empty means the first of Images. Without images the
	// image prompt is not recorded.
	PromptImage string
	// Jobs bounds parallelism (0: all cores).
	Jobs int
	// Version is the ckptgate version to stamp; empty takes the build
	// info's.
	Version string
	// SkipImagePrompt records no image prompt even when images are given.
	SkipImagePrompt bool
	// NewTokens and TopK default to DefaultNewTokens and DefaultTopK.
	NewTokens, TopK int
}

// RecordFor records a model the way want was recorded: with want's images
// (resolved against its directory), prompt image, token counts and top-k.
// o.Model, o.Source, o.Jobs and o.Version are used as given. An image file
// that is no longer there is noted in Missing, and its items are skipped
// when compared.
func RecordFor(ctx context.Context, want *Golden, o Options) (*Golden, error) {
	o.Images, o.PromptImage, o.SkipImagePrompt = nil, "", want.Inputs.PromptImage == ""
	o.NewTokens, o.TopK = want.Inputs.NewTokens, want.Inputs.TopK
	absent := map[string]string{}
	for _, im := range want.Inputs.Images {
		p := want.ImagePath(im)
		if _, err := os.Stat(p); err != nil {
			absent[im.Name] = fmt.Sprintf("%s at %s (recorded with the golden): %v", imageAbsent, p, err)
			continue
		}
		o.Images = append(o.Images, p)
		if im.Name == want.Inputs.PromptImage {
			o.PromptImage = p
		}
	}
	if _, gone := absent[want.Inputs.PromptImage]; gone {
		o.SkipImagePrompt = true
	}
	got, err := Record(ctx, o)
	if err != nil {
		return nil, err
	}
	if len(absent) > 0 && got.Preprocess == nil && got.Missing[ItemPreprocess] == "" {
		// Every image is gone: the per-image reasons below say so.
		got.Preprocess = map[string]*Pixels{}
	}
	for name, why := range absent {
		if got.Missing == nil {
			got.Missing = map[string]string{}
		}
		got.Missing[ItemPreprocess+"/"+name] = why
		if name == want.Inputs.PromptImage {
			got.Missing[ItemForward+"/image"] = why
		}
	}
	return got, nil
}

// Record records a model directory. Items that cannot be recorded (a side
// file that is absent or malformed, weights the engine cannot run) are
// listed in Missing with the reason; the error is for inputs that cannot be
// read at all, bad options, and cancellation.
func Record(ctx context.Context, o Options) (*Golden, error) {
	st, err := os.Stat(o.Model)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", o.Model)
	}
	if o.NewTokens == 0 {
		o.NewTokens = DefaultNewTokens
	}
	if o.TopK == 0 {
		o.TopK = DefaultTopK
	}
	if o.NewTokens < 0 || o.NewTokens > maxNewTokens || o.TopK < 0 || o.TopK > maxTopK {
		return nil, fmt.Errorf("new tokens %d and top-k %d must lie in 0..%d and 0..%d", o.NewTokens, o.TopK, maxNewTokens, maxTopK)
	}
	g := &Golden{
		Schema:   Schema,
		Recorder: Recorder{Ckptgate: o.Version, Go: runtime.Version()},
		Inputs:   Inputs{DateString: builtin.DateString, NewTokens: o.NewTokens, TopK: o.TopK},
		Missing:  map[string]string{},
	}
	if g.Recorder.Ckptgate == "" {
		g.Recorder.Ckptgate = buildVersion()
	}
	if err := g.recordInputs(o); err != nil {
		return nil, err
	}
	if g.Files, err = recordFiles(o.Model); err != nil {
		return nil, err
	}
	r := &recorder{g: g, o: o}
	r.sideFiles()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.chat()
	if err := r.weights(ctx); err != nil {
		return nil, err
	}
	if o.Source != nil {
		if g.Source, err = recordSource(ctx, o.Source, o.Jobs); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			g.Missing[ItemSource] = err.Error()
		}
	}
	r.preprocess()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.forward()
	if r.weightsDir != nil {
		r.weightsDir.Close()
	}
	if len(g.Missing) == 0 {
		g.Missing = nil
	}
	return g, ctx.Err()
}

// buildVersion is the module version or VCS revision of the running binary.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

// recordInputs hashes the images and picks the prompt image.
func (g *Golden) recordInputs(o Options) error {
	seen := map[string]bool{}
	for _, p := range o.Images {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		sum, _, err := hashFile(abs)
		if err != nil {
			return err
		}
		name := filepath.Base(abs)
		if seen[name] {
			return fmt.Errorf("two images are named %s; images are told apart by file name", name)
		}
		seen[name] = true
		g.Inputs.Images = append(g.Inputs.Images, Image{Name: name, Path: abs, SHA256: sum})
	}
	switch {
	case o.SkipImagePrompt:
	case o.PromptImage == "" && len(g.Inputs.Images) > 0:
		g.Inputs.PromptImage = g.Inputs.Images[0].Name
	case o.PromptImage != "":
		name := filepath.Base(o.PromptImage)
		if !g.Inputs.hasImage(name) {
			return fmt.Errorf("the prompt image %s is not one of the images %v", o.PromptImage, g.Inputs.imageNames())
		}
		g.Inputs.PromptImage = name
	}
	return nil
}

// recorder carries what the steps of one recording share.
type recorder struct {
	g          *Golden
	o          Options
	cfg        *mllama.Config
	proc       *mllama.Processor
	tok        *chat.Tokenizer
	image      *vision.Config
	weightsDir *safetensors.Dir
}

// miss notes why an item could not be recorded.
func (r *recorder) miss(item string, err error) { r.g.Missing[item] = err.Error() }

// sideFiles records the JSON side files and the chat templates.
func (r *recorder) sideFiles() {
	g, dir := r.g, r.o.Model
	var err error
	if g.Config, err = recordConfig(dir); err != nil {
		r.miss(ItemConfig, err)
	}
	if g.GenerationConfig, err = recordGenerationConfig(dir); err != nil {
		r.miss(ItemGenerationConfig, err)
	}
	if g.TokenizerConfig, err = recordTokenizerConfig(dir); err != nil {
		r.miss(ItemTokenizerConfig, err)
	}
	if g.ImageProcessor, err = recordImageProcessor(dir); err != nil {
		r.miss(ItemImageProcessor, err)
	} else {
		r.image, _ = vision.LoadConfig(dir)
	}
	ts, problems, err := recordTemplates(dir)
	if err != nil {
		r.miss(ItemChatTemplate, err)
	}
	for l, p := range problems {
		g.Missing[ItemChatTemplate+"/"+l] = p
	}
	if len(ts) > 0 {
		g.ChatTemplate = ts
	}
	if r.cfg, err = mllama.LoadConfig(filepath.Join(dir, "config.json")); err != nil {
		r.cfg = nil
	}
}

// chat records the tokenizer, the encodings and the renders. The tokenizer
// is loaded once, by the processor when the directory has one (parsing a
// Llama tokenizer.json takes most of a second).
func (r *recorder) chat() {
	g, dir := r.g, r.o.Model
	var procErr error
	if r.cfg != nil {
		r.proc, procErr = mllama.LoadProcessor(dir, r.cfg)
	} else {
		procErr = errors.New("config.json could not be read (see golden.config)")
	}
	if r.proc != nil {
		r.tok = r.proc.Tokenizer
	} else {
		var err error
		if r.tok, err = chat.LoadTokenizer(dir); err != nil {
			r.miss(ItemTokenizer, err)
			r.miss(ItemEncodings, err)
			r.miss(ItemRenders, err)
			return
		}
	}
	var err error
	if g.Tokenizer, err = recordTokenizer(dir, r.tok); err != nil {
		r.miss(ItemTokenizer, err)
	}
	for _, s := range builtin.Strings {
		ids := r.tok.Encode(s, false)
		g.Encodings = append(g.Encodings, &Encoding{Text: s, IDs: ids, IDsWithBOS: r.tok.Encode(s, true), Decoded: r.tok.Decode(ids)})
	}
	if r.proc == nil {
		r.miss(ItemRenders, fmt.Errorf("no chat template to render with: %w", procErr))
		return
	}
	g.Renders = map[string]*Render{}
	for _, c := range builtin.Conversations {
		g.Renders[c.Name] = render(r.proc.Template, r.tok, c)
	}
}

// render renders one conversation with the processor's template, as
// transformers' processor.apply_chat_template(tokenize=False) does, and
// tokenizes the text without adding special tokens.
func render(tpl *chat.Template, tok *chat.Tokenizer, c conversation) *Render {
	req, err := chat.TemplateCase{Messages: c.Messages, Kwargs: c.Kwargs}.Request(tok.Named())
	if err != nil {
		return &Render{ErrorType: "Error", Error: err.Error()}
	}
	req.Now = suiteClock
	text, err := tpl.Render(req)
	var te *chat.TemplateError
	switch {
	case errors.As(err, &te):
		return &Render{ErrorType: te.Type, Error: te.Message}
	case err != nil:
		return &Render{ErrorType: "Error", Error: err.Error()}
	}
	return &Render{Text: &text, IDs: tok.Encode(text, false)}
}

// weights records the tensors.
func (r *recorder) weights(ctx context.Context) error {
	d, err := safetensors.OpenDir(r.o.Model)
	if err != nil {
		r.miss(ItemTensors, err)
		return nil
	}
	r.weightsDir = d
	w, err := recordWeights(ctx, d, r.o.Jobs)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.miss(ItemTensors, err)
		return nil
	}
	r.g.Weights = w
	return nil
}

// preprocess runs every image through the model's image processor.
func (r *recorder) preprocess() {
	g := r.g
	if len(g.Inputs.Images) == 0 {
		return
	}
	if r.image == nil {
		r.miss(ItemPreprocess, errors.New("no image-processor config (see golden.image_processor)"))
		return
	}
	g.Preprocess = map[string]*Pixels{}
	for _, im := range g.Inputs.Images {
		px, err := preprocessImage(g.ImagePath(im), r.image)
		if err != nil {
			g.Missing[ItemPreprocess+"/"+im.Name] = err.Error()
			continue
		}
		px.Image, px.SHA256 = im.Name, im.SHA256
		g.Preprocess[im.Name] = px
	}
}

func preprocessImage(path string, cfg *vision.Config) (*Pixels, error) {
	img, err := vision.DecodeFile(path)
	if err != nil {
		return nil, err
	}
	res, err := vision.Preprocess(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	px := &Pixels{AspectRatioID: res.AspectRatioID, AspectRatioMask: res.AspectRatioMask, NumTiles: res.NumTiles,
		Shape: res.Shape(), values: res.PixelValues}
	px.PixelSHA256 = floatsSHA256(res.PixelValues)
	plane := res.TileSize * res.TileSize
	for t := 0; t < res.MaxTiles; t++ {
		var means []Num
		for c := 0; c < 3; c++ {
			off := (t*3 + c) * plane
			if off+plane > len(res.PixelValues) {
				break
			}
			sum := 0.0
			for _, v := range res.PixelValues[off : off+plane] {
				sum += float64(v)
			}
			means = append(means, Num(sum/float64(plane)))
		}
		px.Means = append(px.Means, means)
	}
	for _, p := range SamplePositions(int64(len(res.PixelValues)), SampleSize) {
		px.Sample = append(px.Sample, Num(res.PixelValues[p]))
	}
	return px, nil
}

// forward runs the prompts through the reference engine.
func (r *recorder) forward() {
	g := r.g
	switch {
	case r.cfg == nil:
		r.miss(ItemForward, errors.New("config.json could not be read (see golden.config)"))
		return
	case r.weightsDir == nil:
		r.miss(ItemForward, errors.New("the weights could not be read (see golden.tensors)"))
		return
	case r.proc == nil:
		r.miss(ItemForward, errors.New("no processor to build prompts with (see golden.chat_template and golden.renders)"))
		return
	}
	m, err := mllama.New(r.cfg, r.weightsDir, r.o.Jobs)
	if err != nil {
		r.miss(ItemForward, err)
		return
	}
	var promptImage image.Image
	for _, im := range g.Inputs.Images {
		if im.Name == g.Inputs.PromptImage {
			promptImage, err = vision.DecodeFile(g.ImagePath(im))
			if err != nil {
				g.Missing[ItemForward+"/image"] = err.Error()
			}
		}
	}
	g.Forward = map[string]*Forward{}
	for _, p := range builtin.Prompts {
		var imgs []image.Image
		fw := &Forward{}
		if p.Image {
			if promptImage == nil {
				if _, noted := g.Missing[ItemForward+"/image"]; !noted {
					g.Missing[ItemForward+"/"+p.Name] = "no prompt image was given"
				}
				continue
			}
			imgs = append(imgs, promptImage)
			fw.Image = g.Inputs.PromptImage
		}
		msgs, err := chat.DecodeJSON(p.Messages)
		if err != nil {
			g.Missing[ItemForward+"/"+p.Name] = err.Error()
			continue
		}
		prep, err := r.proc.Prepare(msgs, imgs, g.Inputs.DateString)
		if err != nil {
			g.Missing[ItemForward+"/"+p.Name] = err.Error()
			continue
		}
		gen, err := m.Generate(prep.Prompt, g.Inputs.NewTokens, nil)
		if err != nil {
			g.Missing[ItemForward+"/"+p.Name] = err.Error()
			continue
		}
		fw.InputIDs, fw.Generated, fw.logits = prep.Prompt.IDs, gen.Tokens, gen.Logits
		fw.TopIDs = mllama.TopK(gen.Logits, min(g.Inputs.TopK, len(gen.Logits)))
		for _, id := range fw.TopIDs {
			fw.TopLogits = append(fw.TopLogits, Num(gen.Logits[id]))
		}
		fw.LogitsSHA256 = floatsSHA256(gen.Logits)
		fw.Stats = logitsStats(gen.Logits)
		g.Forward[p.Name] = fw
	}
}

// floatsSHA256 hashes float32 values as little-endian bytes.
func floatsSHA256(x []float32) string {
	h := sha256.New()
	b := make([]byte, 0, 4096)
	for i, v := range x {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		if len(b) == cap(b) || i == len(x)-1 {
			h.Write(b)
			b = b[:0]
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// logitsStats summarises a logit vector over its finite values.
func logitsStats(x []float32) LogitsStats {
	s := LogitsStats{Vocab: len(x), Min: Num(math.Inf(1)), Max: Num(math.Inf(-1))}
	var sum, sumSq float64
	n := 0
	for _, v := range x {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		n++
		sum += f
		sumSq += f * f
		s.Min, s.Max = Num(math.Min(float64(s.Min), f)), Num(math.Max(float64(s.Max), f))
	}
	if n == 0 {
		nan := Num(math.NaN())
		return LogitsStats{Vocab: len(x), Mean: nan, Std: nan, Min: nan, Max: nan, LogSumExp: nan, Entropy: nan}
	}
	mean := sum / float64(n)
	s.Mean, s.Std = Num(mean), Num(math.Sqrt(math.Max(0, sumSq/float64(n)-mean*mean)))
	lse := 0.0
	for _, v := range x {
		if f := float64(v); !math.IsNaN(f) && !math.IsInf(f, 0) {
			lse += math.Exp(f - float64(s.Max))
		}
	}
	s.LogSumExp = Num(float64(s.Max) + math.Log(lse))
	s.Entropy = Num(mllama.Entropy(x))
	return s
}
