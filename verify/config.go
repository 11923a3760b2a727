package verify

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// ConfigChecks is the config.* family.
var ConfigChecks = []*Check{ConfigParse, ConfigShapes, ConfigCrossLayers, ConfigEmbeddings, ConfigVision, ConfigImage, ConfigDType}

func needConfig(p *Pass) bool {
	if p.Config == nil {
		p.Skipf("config.json", "config.json unreadable: %v", p.ConfigErr)
		return false
	}
	return true
}

// ConfigParse checks that config.json is a Mllama config.
var ConfigParse = &Check{
	ID: "config.parse",
	Doc: `config.json parses as a Mllama config (model_type mllama, text_config and vision_config).
Also reports which transformers form it is in: dtype vs torch_dtype, rope_parameters vs rope_scaling.`,
	Run: func(p *Pass) error {
		if p.Config == nil {
			p.Failf("config.json", "%v", p.ConfigErr)
			return nil
		}
		c := p.Config
		p.Passf("config.json", "Mllama config written by transformers %s (dtype field %q, rope in %q)", c.TransformersVersion, c.DTypeKey, c.Text.RopeForm)
		return nil
	},
}

// ConfigShapes compares the tensors with the shapes the config implies.
var ConfigShapes = &Check{
	ID: "config.shapes",
	Doc: `The tensors are exactly those config.json implies, with the shapes its sizes imply.
The table is what MllamaForConditionalGeneration built from the config saves: layers, heads, KV heads, FFN,
vocabulary + 8 embedding rows, cross-attention layers, vision layers, tiles, aspect ratios, projector. Fails
per missing, extra or mis-shaped tensor.`,
	Run: func(p *Pass) error {
		if !needConfig(p) || !needScan(p) {
			return nil
		}
		want, err := mllama.ExpectedShapes(p.Config)
		if err != nil {
			p.Failf("config.json", "%v", err)
			return nil
		}
		var problems []string
		for leg, shape := range want {
			t := p.Scan.Get(leg)
			switch {
			case t == nil:
				problems = append(problems, "missing "+leg)
			case !slices.Equal(t.Shape, shape):
				problems = append(problems, fmt.Sprintf("%s is %v, config implies %v", t.Name, t.Shape, shape))
			}
		}
		for _, t := range p.Scan.Tensors {
			if _, ok := want[t.Legacy]; !ok {
				problems = append(problems, "unexpected "+t.Name)
			}
		}
		sort.Strings(problems)
		if len(problems) > 0 {
			p.Failf("config.json", "%d tensor(s) disagree with the config: %s", len(problems), strings.Join(limitList(problems, 15), "; "))
		} else {
			p.Passf("config.json", "all %d tensors have the shapes the config implies", len(want))
		}
		return nil
	},
}

var layerRe = regexp.MustCompile(`^language_model\.model\.layers\.(\d+)\.cross_attn\.`)

// ConfigCrossLayers checks cross_attention_layers against the tensors.
var ConfigCrossLayers = &Check{
	ID:  "config.cross_attention_layers",
	Doc: "text_config.cross_attention_layers lists exactly the decoder layers that have cross_attn tensors.",
	Run: func(p *Pass) error {
		if !needConfig(p) || !needScan(p) {
			return nil
		}
		have := map[int]bool{}
		for _, t := range p.Scan.Tensors {
			if m := layerRe.FindStringSubmatch(t.Legacy); m != nil {
				n, _ := strconv.Atoi(m[1])
				have[n] = true
			}
		}
		var got []int
		for n := range have {
			got = append(got, n)
		}
		sort.Ints(got)
		cfg := append([]int(nil), p.Config.Text.CrossAttentionLayers...)
		sort.Ints(cfg)
		if fmt.Sprint(got) != fmt.Sprint(cfg) {
			p.Failf("text_config.cross_attention_layers", "config says %v, the tensors have cross-attention in layers %v", p.Config.Text.CrossAttentionLayers, got)
		} else {
			p.Passf("text_config.cross_attention_layers", "%v match the tensors", cfg)
		}
		return nil
	},
}

// ConfigEmbeddings checks vocabulary sizes.
var ConfigEmbeddings = &Check{
	ID:  "config.embeddings",
	Doc: "embed_tokens has vocab_size + 8 rows (Mllama's extra image and padding rows) and lm_head has vocab_size rows.",
	Run: func(p *Pass) error {
		if !needConfig(p) || !needScan(p) {
			return nil
		}
		v := int64(p.Config.Text.VocabSize)
		for _, c := range []struct {
			leg  string
			rows int64
		}{{"language_model.model.embed_tokens.weight", v + 8}, {"language_model.lm_head.weight", v}} {
			t := p.Scan.Get(c.leg)
			switch {
			case t == nil:
				p.Failf(c.leg, "missing")
			case len(t.Shape) != 2 || t.Shape[0] != c.rows:
				p.Failf(t.Name, "shape %v, want %d rows for vocab_size %d", t.Shape, c.rows, v)
			default:
				p.Passf(t.Name, "%d rows for vocab_size %d", c.rows, v)
			}
		}
		return nil
	},
}

// ConfigVision checks the vision output width.
var ConfigVision = &Check{
	ID: "config.vision",
	Doc: `The vision output width matches the vision tower and the projector.
vision_output_dim = vision hidden_size × (len(intermediate_layers_indices) + 1), every intermediate layer
index is a local layer, and the projector maps vision_output_dim to the text hidden size.`,
	Run: func(p *Pass) error {
		if !needConfig(p) {
			return nil
		}
		v := p.Config.Vision
		want := v.HiddenSize * (len(v.IntermediateLayersIndices) + 1)
		if v.VisionOutputDim != want {
			p.Failf("vision_config.vision_output_dim", "%d, but hidden_size %d × (%d intermediate layers + 1) = %d", v.VisionOutputDim, v.HiddenSize, len(v.IntermediateLayersIndices), want)
		} else {
			p.Passf("vision_config.vision_output_dim", "%d = %d × (%d + 1)", want, v.HiddenSize, len(v.IntermediateLayersIndices))
		}
		for _, idx := range v.IntermediateLayersIndices {
			if idx < 0 || idx >= v.NumHiddenLayers {
				p.Failf("vision_config.intermediate_layers_indices", "index %d outside the %d local layers", idx, v.NumHiddenLayers)
			}
		}
		if p.Scan != nil {
			if t := p.Scan.Get("multi_modal_projector.weight"); t != nil {
				if len(t.Shape) != 2 || t.Shape[0] != int64(p.Config.Text.HiddenSize) || t.Shape[1] != int64(v.VisionOutputDim) {
					p.Failf(t.Name, "shape %v, want [%d %d]", t.Shape, p.Config.Text.HiddenSize, v.VisionOutputDim)
				}
			}
		}
		return nil
	},
}

// ConfigImage checks tile geometry against the image processor.
var ConfigImage = &Check{
	ID: "config.image",
	Doc: `The image processor tiles images the way the vision tower expects.
vision_config.image_size equals the processor's tile size (size.height = size.width) and
vision_config.max_num_tiles its max_image_tiles; otherwise image features are garbage. The processor config
is the one transformers 5.x uses (processor_config.json's image_processor first, then
preprocessor_config.json).`,
	Run: func(p *Pass) error {
		if !needConfig(p) {
			return nil
		}
		ip, err := vision.LoadConfig(p.Model)
		if err != nil {
			p.Skipf("image processor", "%v (see files.required and preprocess.config)", err)
			return nil
		}
		file := filepath.Base(ip.Path)
		v := p.Config.Vision
		if ip.Size.Height != v.ImageSize || ip.Size.Width != v.ImageSize {
			p.Failf(file, "tile size %dx%d, vision_config.image_size is %d", ip.Size.Height, ip.Size.Width, v.ImageSize)
		} else {
			p.Passf(file, "tile size %d matches vision_config.image_size", v.ImageSize)
		}
		if ip.MaxImageTiles != v.MaxNumTiles {
			p.Failf(file, "max_image_tiles %d, vision_config.max_num_tiles is %d", ip.MaxImageTiles, v.MaxNumTiles)
		} else {
			p.Passf(file, "max_image_tiles %d matches vision_config.max_num_tiles", v.MaxNumTiles)
		}
		return nil
	},
}

// ConfigDType checks the dtype field against the tensors.
var ConfigDType = &Check{
	ID: "config.dtype",
	Doc: `config.json's dtype field (dtype in transformers ≥ 4.56, torch_dtype before) names the tensors' dtype.
A wrong field makes from_pretrained(dtype="auto") load the wrong precision. The rest of config.json is
compared with the base by files.side_equal.`,
	Run: func(p *Pass) error {
		if !needConfig(p) || !needScan(p) {
			return nil
		}
		var d dtype.DType
		for _, t := range p.Scan.Tensors {
			if d == dtype.Invalid {
				d = t.DType
			} else if d != t.DType {
				p.Skipf("config.json", "tensors have mixed dtypes")
				return nil
			}
		}
		switch {
		case p.Config.DTypeKey == "":
			p.Warnf("config.json", "no dtype field; transformers will load %s weights as float32 unless told", d.TorchName())
		case p.Config.DType != d:
			p.Failf("config.json", "%s is %q, the tensors are %s", p.Config.DTypeKey, p.Config.DType.TorchName(), d.TorchName())
		default:
			p.Passf("config.json", "%s %q matches the tensors", p.Config.DTypeKey, d.TorchName())
		}
		if p.BaseConfig != nil && p.BaseConfig.DTypeKey != "" && p.BaseConfig.DTypeKey != p.Config.DTypeKey {
			p.Warnf("config.json", "field is %q, the base uses %q", p.Config.DTypeKey, p.BaseConfig.DTypeKey)
		}
		return nil
	},
}
