package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/vision"
)

func init() { register(newPreprocessCmd) }

// preprocessOutput is what `preprocess --json` prints.
type preprocessOutput struct {
	Image            string      `json:"image"`
	Config           string      `json:"config"`
	ConfigForm       vision.Form `json:"config_form"`
	Input            vision.Dims `json:"input"`
	Resized          vision.Dims `json:"resized"`
	Canvas           vision.Dims `json:"canvas"`
	Rows             int         `json:"rows"`
	Cols             int         `json:"cols"`
	AspectRatioID    int         `json:"aspect_ratio_id"`
	AspectRatioMask  []int       `json:"aspect_ratio_mask"`
	NumTiles         int         `json:"num_tiles"`
	PixelValuesShape []int64     `json:"pixel_values_shape"`
	Out              string      `json:"out,omitempty"`
}

func newPreprocessCmd() *cobra.Command {
	var model, imagePath, out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "preprocess --model DIR --image FILE",
		Short: "Preprocess an image as transformers' Mllama image processor does",
		Long: `Preprocess one image with a model directory's image-processor config (processor_config.json's
"image_processor" as transformers 5.x reads it, else preprocessor_config.json) exactly as transformers 5.17's
MllamaImageProcessor does: PIL's decoding (PNG, JPEG, GIF; transparency composited on white), the tile grid,
torch's antialiased bilinear resize, padding, normalisation and row-major tiles.

Prints the tile grid, aspect_ratio_id, aspect_ratio_mask and num_tiles (--json for JSON). --out writes
pixel_values, float32 [max_image_tiles, 3, tile, tile], to a safetensors file.

Exit codes: 0 ok, 2 bad image, config or flags, 3 internal error.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || imagePath == "" {
				return exit.BadInputError(fmt.Errorf("--model and --image are required"))
			}
			cfg, err := vision.LoadConfig(model)
			if err != nil {
				return exit.BadInputError(err)
			}
			img, err := vision.DecodeFile(imagePath)
			if err != nil {
				return exit.BadInputError(err)
			}
			r, err := vision.Preprocess(img, cfg)
			if err != nil {
				return exit.BadInputError(fmt.Errorf("%s with %s: %w", imagePath, cfg.Path, err))
			}
			if out != "" {
				if err := writeF32Tensor(out, "pixel_values", r.Shape(), r.PixelValues); err != nil {
					return err
				}
			}
			o := preprocessOutput{
				Image: imagePath, Config: cfg.Path, ConfigForm: cfg.Form,
				Input: r.Input, Resized: r.Resized, Canvas: r.Canvas, Rows: r.Grid.Rows, Cols: r.Grid.Cols,
				AspectRatioID: r.AspectRatioID, AspectRatioMask: r.AspectRatioMask, NumTiles: r.NumTiles,
				PixelValuesShape: r.Shape(), Out: out,
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(o)
			}
			printPreprocess(w, o)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&model, "model", "", "model directory holding processor_config.json or preprocessor_config.json")
	fl.StringVar(&imagePath, "image", "", "image file (PNG, JPEG or GIF)")
	fl.StringVar(&out, "out", "", "write pixel_values to this safetensors file")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printPreprocess(w io.Writer, o preprocessOutput) {
	fmt.Fprintf(w, "image              %s (%v)\n", o.Image, o.Input)
	fmt.Fprintf(w, "config             %s (%s)\n", o.Config, o.ConfigForm)
	fmt.Fprintf(w, "resized            %v\n", o.Resized)
	fmt.Fprintf(w, "canvas             %v (%d rows × %d cols of tiles)\n", o.Canvas, o.Rows, o.Cols)
	fmt.Fprintf(w, "aspect_ratio_id    %d\n", o.AspectRatioID)
	fmt.Fprintf(w, "aspect_ratio_mask  %v\n", o.AspectRatioMask)
	fmt.Fprintf(w, "num_tiles          %d\n", o.NumTiles)
	if o.Out != "" {
		fmt.Fprintf(w, "pixel_values       F32 %v → %s\n", o.PixelValuesShape, o.Out)
	}
}
