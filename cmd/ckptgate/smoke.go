package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"math"
	"runtime"
	"time"

	"github.com/ardanlabs/jinja"
	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/vision"
)

func init() { register(newSmokeCmd) }

// smokeTop is how many next-token candidates smoke reports.
const smokeTop = 10

// smokeOutput is what `smoke --json` prints.
type smokeOutput struct {
	Model         string        `json:"model"`
	Text          string        `json:"text"`
	InputIDs      []int         `json:"input_ids"`
	Images        []smokeImage  `json:"images,omitempty"`
	TopIDs        []int         `json:"top_ids"`
	TopLogits     []jsonNum     `json:"top_logits"`
	EntropyNats   jsonNum       `json:"entropy_nats"`
	Generated     []int         `json:"generated"`
	GeneratedText string        `json:"generated_text"`
	LogitsOut     string        `json:"logits_out,omitempty"`
	Seconds       smokeSeconds  `json:"seconds"`
	Engine        string        `json:"engine"`
	Cores         int           `json:"cores"`
	StopIDs       []int         `json:"stop_ids,omitempty"`
	TemplateFrom  []chat.Form   `json:"template_from,omitempty"`
	Tokens        []smokeTokens `json:"-"`
}

// jsonNum is a float that prints as null when it is NaN or infinite, which
// JSON cannot spell.
type jsonNum float64

func (f jsonNum) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

type smokeImage struct {
	Path            string `json:"path"`
	AspectRatioID   int    `json:"aspect_ratio_id"`
	AspectRatioMask []int  `json:"aspect_ratio_mask"`
	NumTiles        int    `json:"num_tiles"`
}

type smokeSeconds struct {
	Load     float64 `json:"load"`
	Prepare  float64 `json:"prepare"`
	Generate float64 `json:"generate"`
}

type smokeTokens struct {
	ID    int
	Text  string
	Logit float64
}

func newSmokeCmd() *cobra.Command {
	var (
		model, messages, prompt, imagePath, date, logitsOut string
		maxNew, jobs                                        int
		asJSON                                              bool
	)
	cmd := &cobra.Command{
		Use:   "smoke --model DIR (--prompt TEXT | --messages FILE.json) [--image FILE]",
		Short: "Run a prompt through the model in the pure-Go reference engine",
		Long: `Run one prompt through the model with ckptgate's reference forward pass (transformers 5.17's
modeling_mllama in float32, eager attention) and decode greedily.

The prompt is rendered with the model's chat template and the generation prompt (the template
transformers' processor loads; date_string from --date-string, else today), tokenized with its tokenizer
without adding a BOS (the template writes it), and any image is preprocessed with its image-processor
config, as MllamaProcessor does. --prompt TEXT is one user message (after the image, with --image);
--messages is a JSON list of messages, with one {"type": "image"} entry per --image.

Decoding is greedy with a KV cache for --max-new-tokens tokens, stopping after any of
generation_config.json's eos_token_id. Prints the prompt's size, the 10 most likely next tokens and the
generated text; --json prints input_ids, top_ids and top_logits (10, last prompt position), generated
and more. --logits-out writes last_logits, F32 [vocab], to a safetensors file.

The engine holds the weights in float32 (an 11B model needs about 43 GB of memory) and uses every core
(--jobs to limit).

Exit codes: 0 ok; 1 the logits are NaN or infinite; 2 missing or invalid model files, messages, image or
flags; 3 internal error.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" {
				return exit.BadInputError(errors.New("--model is required"))
			}
			if (prompt == "") == (messages == "") {
				return exit.BadInputError(errors.New("give exactly one of --prompt and --messages"))
			}
			if maxNew < 0 {
				return exit.BadInputError(fmt.Errorf("--max-new-tokens is %d", maxNew))
			}
			out := smokeOutput{Model: model, LogitsOut: logitsOut, Cores: runtime.GOMAXPROCS(0),
				Engine: "ckptgate reference (transformers 5.17 modeling_mllama, float32, eager)"}
			if jobs > 0 {
				out.Cores = min(jobs, out.Cores)
			}
			t0 := time.Now()
			m, err := mllama.OpenDir(model, jobs)
			if err != nil {
				return exit.BadInputError(err)
			}
			proc, err := mllama.LoadProcessor(model, m.Config)
			if err != nil {
				return exit.BadInputError(err)
			}
			stop, err := mllama.StopIDs(model, m.Config)
			if err != nil {
				return exit.BadInputError(err)
			}
			out.StopIDs, out.TemplateFrom = stop, proc.TemplateFrom
			t1 := time.Now()
			msgs, err := smokeMessages(messages, prompt, imagePath != "")
			if err != nil {
				return exit.BadInputError(err)
			}
			var imgs []image.Image
			if imagePath != "" {
				img, err := vision.DecodeFile(imagePath)
				if err != nil {
					return exit.BadInputError(err)
				}
				imgs = append(imgs, img)
			}
			prep, err := proc.Prepare(msgs, imgs, date)
			if err != nil {
				return exit.BadInputError(err)
			}
			t2 := time.Now()
			gen, err := m.Generate(prep.Prompt, maxNew, stop)
			if err != nil {
				return exit.BadInputError(err)
			}
			t3 := time.Now()
			out.Seconds = smokeSeconds{Load: t1.Sub(t0).Seconds(), Prepare: t2.Sub(t1).Seconds(), Generate: t3.Sub(t2).Seconds()}
			out.Text, out.InputIDs, out.Generated = prep.Text, prep.Prompt.IDs, gen.Tokens
			out.GeneratedText = proc.Tokenizer.Decode(gen.Tokens)
			for _, r := range prep.Images {
				out.Images = append(out.Images, smokeImage{Path: imagePath, AspectRatioID: r.AspectRatioID,
					AspectRatioMask: r.AspectRatioMask, NumTiles: r.NumTiles})
			}
			out.TopIDs = mllama.TopK(gen.Logits, smokeTop)
			for _, id := range out.TopIDs {
				out.TopLogits = append(out.TopLogits, jsonNum(gen.Logits[id]))
				out.Tokens = append(out.Tokens, smokeTokens{ID: id, Text: proc.Tokenizer.Decode([]int{id}), Logit: float64(gen.Logits[id])})
			}
			out.EntropyNats = jsonNum(mllama.Entropy(gen.Logits))
			if logitsOut != "" {
				if err := writeF32Tensor(logitsOut, "last_logits", []int64{int64(len(gen.Logits))}, gen.Logits); err != nil {
					return err
				}
			}
			if err := printSmoke(cmd.OutOrStdout(), &out, asJSON); err != nil {
				return err
			}
			if bad := nonFinite(gen.Logits); bad > 0 {
				return fmt.Errorf("%d of %d last-position logits are NaN or infinite: %w", bad, len(gen.Logits), exit.ErrCheckFailed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "Hugging Face model directory (required)")
	f.StringVar(&prompt, "prompt", "", "text of one user message")
	f.StringVar(&messages, "messages", "", "JSON file with the list of messages")
	f.StringVar(&imagePath, "image", "", "image file (PNG, JPEG or GIF) for the prompt's <|image|>")
	f.IntVar(&maxNew, "max-new-tokens", 12, "tokens to generate greedily")
	f.StringVar(&date, "date-string", "", `date_string for the template, e.g. "27 Nov 2026" (default: today)`)
	f.StringVar(&logitsOut, "logits-out", "", "write the last prompt position's logits to this safetensors file")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.IntVar(&jobs, "jobs", 0, "goroutines for the forward pass (0: all cores)")
	return cmd
}

// smokeMessages loads --messages or builds one user message from --prompt,
// with an image entry first when an image is given.
func smokeMessages(file, prompt string, withImage bool) (jinja.Value, error) {
	if file != "" {
		return chat.LoadJSON(file)
	}
	var content []map[string]string
	if withImage {
		content = append(content, map[string]string{"type": "image"})
	}
	content = append(content, map[string]string{"type": "text", "text": prompt})
	b, err := json.Marshal([]map[string]any{{"role": "user", "content": content}})
	if err != nil {
		return jinja.Undefined(), err
	}
	return chat.DecodeJSON(b)
}

func nonFinite(x []float32) int {
	n := 0
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			n++
		}
	}
	return n
}

func printSmoke(w io.Writer, o *smokeOutput, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(o)
	}
	fmt.Fprintf(w, "model       %s (%s, %d cores)\n", o.Model, o.Engine, o.Cores)
	fmt.Fprintf(w, "prompt      %d tokens, template from %v\n", len(o.InputIDs), o.TemplateFrom)
	for _, im := range o.Images {
		fmt.Fprintf(w, "image       %s: %d tiles, aspect_ratio_id %d, mask %v\n", im.Path, im.NumTiles, im.AspectRatioID, im.AspectRatioMask)
	}
	fmt.Fprintf(w, "next token  entropy %.4f nats\n", float64(o.EntropyNats))
	for i, t := range o.Tokens {
		fmt.Fprintf(w, "  %2d  %6d  %-20q %9.5f\n", i+1, t.ID, t.Text, t.Logit)
	}
	fmt.Fprintf(w, "generated   %v\n            %q\n", o.Generated, o.GeneratedText)
	fmt.Fprintf(w, "seconds     load %.3f, prepare %.3f, generate %.3f\n", o.Seconds.Load, o.Seconds.Prepare, o.Seconds.Generate)
	if o.LogitsOut != "" {
		fmt.Fprintf(w, "logits      last_logits → %s\n", o.LogitsOut)
	}
	return nil
}
