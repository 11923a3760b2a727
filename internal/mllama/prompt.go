package mllama

import (
	"errors"
	"fmt"
	"image"

	"github.com/ardanlabs/jinja"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// Processor turns chat messages and images into model inputs for one model
// directory as transformers' MllamaProcessor does after apply_chat_template:
// the processor's chat template with the generation prompt, the tokenizer
// without added special tokens (the template writes <|begin_of_text|>), the
// image processor, and the cross-attention mask.
type Processor struct {
	// Template is the chat template a 5.17 processor loads from the
	// directory; TemplateFrom names the files it came from.
	Template     *chat.Template
	TemplateFrom []chat.Form
	Tokenizer    *chat.Tokenizer
	// Image is the image-processor config, nil when the directory has none
	// (text-only prompts still work).
	Image *vision.Config

	imageToken, maxTiles, tileSize int
}

// LoadProcessor reads the chat template, tokenizer and image-processor
// config of a model directory; cfg is the model's config.
func LoadProcessor(dir string, cfg *Config) (*Processor, error) {
	ts, err := chat.FindTemplates(dir)
	if err != nil {
		return nil, err
	}
	ld, err := ts.For(chat.LoaderProcessor)
	if err != nil {
		return nil, err
	}
	if ld == nil {
		// A processor without a template of its own: the tokenizer's is
		// the one apply_chat_template falls back to.
		ld, _ = ts.For(chat.LoaderTokenizer)
	}
	if ld == nil {
		return nil, fmt.Errorf("%s: no chat template (chat_template.jinja, chat_template.json or processor_config.json)", dir)
	}
	_, src, err := ld.Select("", false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	tpl, err := chat.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("%s: chat template from %v: %w", dir, ld.From, err)
	}
	tok, err := chat.LoadTokenizer(dir)
	if err != nil {
		return nil, err
	}
	p := &Processor{Template: tpl, TemplateFrom: ld.From, Tokenizer: tok,
		imageToken: cfg.ImageTokenIndex, maxTiles: cfg.Vision.MaxNumTiles, tileSize: cfg.Vision.ImageSize}
	ic, err := vision.LoadConfig(dir)
	switch {
	case errors.Is(err, vision.ErrNoConfig):
	case err != nil:
		return nil, err
	default:
		if ic.MaxImageTiles != p.maxTiles || ic.TileSize() != p.tileSize {
			return nil, fmt.Errorf("%s: %s: max_image_tiles %d and tile size %d disagree with config.json's vision_config max_num_tiles %d and image_size %d",
				dir, ic.Form, ic.MaxImageTiles, ic.TileSize(), p.maxTiles, p.tileSize)
		}
		p.Image = ic
	}
	return p, nil
}

// Prepared is a rendered, tokenized and preprocessed prompt.
type Prepared struct {
	// Text is the rendered chat template.
	Text string
	// Prompt is what the model takes.
	Prompt Prompt
	// Images are the image processor's results, one per image.
	Images []*vision.Result
}

// Prepare renders messages (a list of message objects as apply_chat_template
// takes them; see chat.DecodeJSON and chat.LoadJSON) with the generation
// prompt, tokenizes the text, and preprocesses the images, one per <|image|>
// token in order. date, when not empty, is the template's date_string.
func (p *Processor) Prepare(messages jinja.Value, images []image.Image, date string) (*Prepared, error) {
	req := chat.Request{Messages: messages, AddGenerationPrompt: true, SpecialTokens: p.Tokenizer.Named()}
	if date != "" {
		req.Vars = map[string]jinja.Value{"date_string": jinja.NewString(date)}
	}
	text, err := p.Template.Render(req)
	if err != nil {
		return nil, err
	}
	out := &Prepared{Text: text, Prompt: Prompt{IDs: p.Tokenizer.Encode(text, false)}}
	n := 0
	for _, id := range out.Prompt.IDs {
		if id == p.imageToken {
			n++
		}
	}
	if n != len(images) {
		return nil, fmt.Errorf("%w: the prompt has %d image tokens (id %d) but %d images were given", ErrInput, n, p.imageToken, len(images))
	}
	if len(images) == 0 {
		return out, nil
	}
	if p.Image == nil {
		return nil, fmt.Errorf("%w: the model directory has no image-processor config to preprocess images with", ErrInput)
	}
	tiles := make([]int, len(images))
	for i, img := range images {
		r, err := vision.Preprocess(img, p.Image)
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		out.Images = append(out.Images, r)
		out.Prompt.Images = append(out.Prompt.Images, Image{
			PixelValues: r.PixelValues, AspectRatioID: r.AspectRatioID, AspectRatioMask: r.AspectRatioMask,
		})
		tiles[i] = r.NumTiles
	}
	mask, err := vision.CrossAttentionMask(out.Prompt.IDs, p.imageToken, tiles, p.maxTiles)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	out.Prompt.CrossAttentionMask = mask
	return out, nil
}
