package verify

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/vision"
	"github.com/ckptgate/ckptgate/reports"
)

// PreprocessChecks is the preprocess.* family: the image-processor config,
// its agreement with the base, and transformers' goldens.
var PreprocessChecks = []*Check{PreprocessConfig, PreprocessBase, PreprocessGolden}

// PreprocessConfig validates the image-processor config against the
// vision tower.
var PreprocessConfig = &Check{
	ID: "preprocess.config",
	Doc: `The image-processor config is valid and fits the vision tower in config.json.
Reads processor_config.json ("image_processor", the transformers 5.x form) and preprocessor_config.json (4.x)
and reports which are present and which one transformers 5.17 loads (the nested one first).
Passes when its fields validate (square positive tile, three means and stds with std > 0, max_image_tiles ≥ 1,
a PIL resample value, do_resize and do_pad on) and the tile equals vision_config.image_size, max_image_tiles
equals vision_config.max_num_tiles, and vision_config.supported_aspect_ratios is the list the processor derives
(the aspect-ratio ids index the model's embeddings in that order).
Warns when both forms are present but differ (4.x and 5.x would preprocess differently), when fields are left to
the class defaults, and when resample is not bilinear (ckptgate cannot reproduce it).
Fails when no config is present (transformers would silently use 224-pixel tiles and mean/std 0.5), when one
does not parse or validate, or when it disagrees with config.json.`,
	Run: runPreprocessConfig,
}

func runPreprocessConfig(p *Pass) error {
	cs, err := vision.LoadConfigs(p.Model)
	if errors.Is(err, vision.ErrNoConfig) {
		p.Failf("image processor", "no preprocessor_config.json, and no processor_config.json with \"image_processor\": transformers would silently preprocess with MllamaImageProcessor's class defaults (224-pixel tiles, mean and std 0.5), which fit no Mllama model")
		return nil
	}
	if err != nil {
		p.Failf("image processor", "%v", err)
		return nil
	}
	cfg := cs[0]
	subject := filepath.Base(cfg.Path)
	forms := make([]string, len(cs))
	for i, c := range cs {
		forms[i] = string(c.Form)
	}
	details := map[string]any{"forms": forms, "loaded": cfg.Form, "config": cfg}

	if len(cs) == 2 {
		if d := substantive(vision.Diff(cs[0], cs[1])); len(d) > 0 {
			p.Warnf(subject, "processor_config.json (read by transformers 5.x) and preprocessor_config.json (read by 4.x) disagree: %s", describeDiffs(d, "processor_config.json", "preprocessor_config.json"))
		}
	}
	if len(cfg.Defaulted) > 0 {
		p.Warnf(subject, "%s not set; transformers uses MllamaImageProcessor's class defaults (Llama 3.2 Vision's values)", strings.Join(cfg.Defaulted, ", "))
	}
	if cfg.Resample != vision.ResampleBilinear {
		p.Warnf(subject, "resample is %d (%s); Mllama uses 2 (bilinear) and ckptgate reproduces only that", cfg.Resample, cfg.ResampleName())
	}

	mc, err := mllama.LoadConfig(filepath.Join(p.Model, "config.json"))
	if err != nil {
		p.Skipf("config.json", "cannot compare the image processor with the vision tower: %v", err)
		return nil
	}
	v := mc.Vision
	var bad []string
	if cfg.TileSize() != v.ImageSize {
		bad = append(bad, fmt.Sprintf("tile size %d but vision_config.image_size is %d", cfg.TileSize(), v.ImageSize))
	}
	if cfg.MaxImageTiles != v.MaxNumTiles {
		bad = append(bad, fmt.Sprintf("max_image_tiles %d but vision_config.max_num_tiles is %d", cfg.MaxImageTiles, v.MaxNumTiles))
	}
	var derived [][2]int
	for _, a := range vision.SupportedAspectRatios(cfg.MaxImageTiles) {
		derived = append(derived, [2]int{a.Rows, a.Cols})
	}
	if !slices.Equal(derived, v.SupportedAspectRatios) {
		bad = append(bad, fmt.Sprintf("vision_config.supported_aspect_ratios is %v but max_image_tiles %d gives %v (aspect-ratio ids would select the wrong embeddings)", v.SupportedAspectRatios, cfg.MaxImageTiles, derived))
	}
	if len(bad) > 0 {
		p.Failf(subject, "the image processor does not fit the vision tower: %s", strings.Join(bad, "; "))
		return nil
	}
	msg := fmt.Sprintf("%s (%s form; present: %s): %s; fits vision_config (image_size %d, max_num_tiles %d, %d aspect ratios)",
		subject, formGeneration(cfg.Form), strings.Join(forms, ", "), describeConfig(cfg), v.ImageSize, v.MaxNumTiles, len(derived))
	p.Report(reports.StatusPass, subject, msg, details)
	return nil
}

// PreprocessBase compares the model's image processor with the base's.
var PreprocessBase = &Check{
	ID: "preprocess.base",
	Doc: `The image-processor config equals the base model's, and preprocesses an image identically.
The configs are compared field by field, whatever form each is stored in (4.x preprocessor_config.json and
5.x processor_config.json with the same values are equal; processor_class and image_processor_type are noted
but do not count). Then one image (the first golden image when a golden directory is given, else a built-in
1500×1000 test pattern that needs downscaling) is preprocessed with both configs.
Passes when no field differs and the pixel values, aspect-ratio id, mask and tile count are identical.
Fails on each differing field and when the preprocessed image differs. Skips when either has no config.`,
	Requires: []Input{NeedBase},
	Run:      runPreprocessBase,
}

func runPreprocessBase(p *Pass) error {
	model, err := vision.LoadConfig(p.Model)
	if err != nil {
		p.Skipf("image processor", "model: %v (see preprocess.config)", err)
		return nil
	}
	base, err := vision.LoadConfig(p.Base)
	if err != nil {
		p.Skipf("image processor", "base: %v", err)
		return nil
	}
	subject := filepath.Base(model.Path)
	all := vision.Diff(model, base)
	if d := substantive(all); len(d) > 0 {
		p.Failf(subject, "differs from the base's %s: %s", filepath.Base(base.Path), describeDiffs(d, "model", "base"))
	} else {
		msg := fmt.Sprintf("equals the base's %s", filepath.Base(base.Path))
		if model.Form != base.Form {
			msg += fmt.Sprintf(" (the model stores the %s form, the base the %s form)", formGeneration(model.Form), formGeneration(base.Form))
		}
		if len(all) > 0 {
			msg += "; informational fields differ: " + describeDiffs(all, "model", "base")
		}
		p.Passf(subject, "%s", msg)
	}

	img, name, err := preprocessProbe(p.Golden)
	if err != nil {
		p.Failf("probe image", "%v", err)
		return nil
	}
	rm, errM := vision.Preprocess(img, model)
	rb, errB := vision.Preprocess(img, base)
	switch {
	case errM != nil || errB != nil:
		p.Failf(name, "cannot preprocess with both configs: model: %v; base: %v", errM, errB)
	case rm.AspectRatioID != rb.AspectRatioID || rm.NumTiles != rb.NumTiles || !slices.Equal(rm.Shape(), rb.Shape()):
		p.Failf(name, "model's config gives %v tiles of %d (grid %dx%d, aspect_ratio_id %d); base's gives %v tiles of %d (grid %dx%d, aspect_ratio_id %d)",
			rm.NumTiles, rm.TileSize, rm.Grid.Rows, rm.Grid.Cols, rm.AspectRatioID, rb.NumTiles, rb.TileSize, rb.Grid.Rows, rb.Grid.Cols, rb.AspectRatioID)
	default:
		if d, at := vision.MaxAbsDiff(rm.PixelValues, rb.PixelValues); d > 0 {
			p.Failf(name, "pixel_values differ from the base's by up to %g (element %d of %v)", d, at, rm.Shape())
		} else {
			p.Passf(name, "identical pixel_values %v, aspect_ratio_id %d, %d tiles with the model's and the base's config", rm.Shape(), rm.AspectRatioID, rm.NumTiles)
		}
	}
	return nil
}

// preprocessProbe returns the image preprocess.base runs through both
// configs: the first golden image, or a built-in pattern.
func preprocessProbe(goldenDir string) (image.Image, string, error) {
	if goldenDir != "" {
		g, err := vision.LoadGoldens(goldenDir)
		if err == nil && len(g.Entries) > 0 {
			img, err := vision.DecodeFile(g.ImagePath(&g.Entries[0]))
			return img, g.Entries[0].Image, err
		}
	}
	// Smooth gradients with a sharp-edged block: downscaling exercises the
	// antialiasing filter, the block its edges.
	const w, h = 1500, 1000
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{uint8(x * 255 / (w - 1)), uint8(y * 255 / (h - 1)), uint8((x ^ y) & 0xff), 255}
			if x > w/5 && x < w/2 && y > h/5 && y < h/2 {
				c = color.RGBA{250, 20, 30, 255}
			}
			m.SetRGBA(x, y, c)
		}
	}
	return m, "built-in 1500x1000 pattern", nil
}

// PreprocessGolden compares the model's preprocessing with transformers'.
var PreprocessGolden = &Check{
	ID: "preprocess.golden",
	Doc: `Preprocessing with the model's config reproduces transformers' goldens (preprocess-goldens.json).
The goldens hold, per image and named config, what transformers 5.17's MllamaImageProcessor computed:
aspect_ratio_id, aspect_ratio_mask, num_tiles, 256 sampled pixels and per-tile/channel means. The goldens of
every config equal to the model's are checked by decoding the image and preprocessing it with the model's config.
Passes per image when the geometry is identical, every sampled pixel is within 0.02 (about one 8-bit level
after normalisation) and every mean within 0.005. Fails per image otherwise.
Warns when the model's config equals none of the goldens' configs (nothing to compare). Skips without
preprocess-goldens.json in the golden directory.`,
	Requires: []Input{NeedGolden},
	Run:      runPreprocessGolden,
}

func runPreprocessGolden(p *Pass) error {
	g, err := vision.LoadGoldens(p.Golden)
	if errors.Is(err, fs.ErrNotExist) {
		p.Skipf(vision.GoldensName, "no %s in %s", vision.GoldensName, p.Golden)
		return nil
	}
	if err != nil {
		p.Failf(vision.GoldensName, "%v", err)
		return nil
	}
	cfg, err := vision.LoadConfig(p.Model)
	if err != nil {
		p.Skipf("image processor", "%v (see preprocess.config)", err)
		return nil
	}
	var matching []string
	var near []string
	for _, name := range g.ConfigNames() {
		if d := substantive(vision.Diff(cfg, g.Configs[name])); len(d) == 0 {
			matching = append(matching, name)
		} else {
			near = append(near, fmt.Sprintf("%s (%s)", name, describeDiffs(d, "model", "golden")))
		}
	}
	if len(matching) == 0 {
		p.Warnf(vision.GoldensName, "the model's image-processor config equals none of the goldens' configs, so there is nothing to compare: %s", strings.Join(near, "; "))
		return nil
	}
	for i := range g.Entries {
		e := &g.Entries[i]
		if !slices.Contains(matching, e.Config) {
			continue
		}
		subject := fmt.Sprintf("%s (%s)", e.Image, e.Config)
		img, err := vision.DecodeFile(g.ImagePath(e))
		if err != nil {
			p.Failf(subject, "%v", err)
			continue
		}
		r, err := vision.Preprocess(img, cfg)
		if err != nil {
			p.Failf(subject, "%v", err)
			continue
		}
		c := e.Compare(r)
		details := map[string]any{
			"max_pixel_err": c.MaxPixelErr, "max_pixel_at": c.MaxPixelAt, "pixel_tolerance": vision.PixelTolerance,
			"max_mean_err": c.MaxMeanErr, "max_mean_at": c.MaxMeanAt, "mean_tolerance": vision.MeanTolerance,
			"aspect_ratio_id": r.AspectRatioID, "num_tiles": r.NumTiles, "resized": r.Resized, "canvas": r.Canvas,
		}
		if c.OK() {
			p.Report(reports.StatusPass, subject, fmt.Sprintf("matches transformers: %v → %v on a %v canvas, aspect_ratio_id %d; %v", r.Input, r.Resized, r.Canvas, r.AspectRatioID, c), details)
		} else {
			details["geometry"] = c.Geometry
			p.Report(reports.StatusFail, subject, fmt.Sprintf("differs from transformers: %v", c), details)
		}
	}
	return nil
}

// substantive drops the differences that do not change preprocessing.
func substantive(ds []vision.Difference) []vision.Difference {
	var out []vision.Difference
	for _, d := range ds {
		if !d.Cosmetic {
			out = append(out, d)
		}
	}
	return out
}

func describeDiffs(ds []vision.Difference, a, b string) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%s: %s %s, %s %s", d.Field, a, d.A, b, d.B)
	}
	return strings.Join(parts, "; ")
}

func describeConfig(c *vision.Config) string {
	return fmt.Sprintf("tile %d, max %d tiles, %s resample, rescale %g, mean %v, std %v", c.TileSize(), c.MaxImageTiles, c.ResampleName(), c.RescaleFactor, c.ImageMean, c.ImageStd)
}

func formGeneration(f vision.Form) string {
	if f == vision.FormProcessor {
		return "transformers 5.x"
	}
	return "transformers 4.x"
}
