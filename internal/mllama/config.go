// Package mllama knows Llama 3.2 Vision (transformers' Mllama): its
// config.json in the forms transformers 4.x and 5.x write, its tensor names in
// the legacy (Hub) and the 4.52+/5.x layouts, the shapes the config implies,
// and a reference forward pass faithful to modeling_mllama.
package mllama

import (
	"encoding/json"
	"fmt"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

// RopeScaling is the llama3 RoPE scaling of the text model.
type RopeScaling struct {
	RopeType                      string  `json:"rope_type"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor"`
	HighFreqFactor                float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings"`
	// RopeTheta is set from rope_parameters (5.x) or the text config's
	// rope_theta (4.x).
	RopeTheta float64 `json:"rope_theta"`
}

// TextConfig is text_config.
type TextConfig struct {
	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	NumKeyValueHeads      int     `json:"num_key_value_heads"`
	IntermediateSize      int     `json:"intermediate_size"`
	CrossAttentionLayers  []int   `json:"cross_attention_layers"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	RopeTheta             float64 `json:"rope_theta"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	TieWordEmbeddings     bool    `json:"tie_word_embeddings"`
	HiddenAct             string  `json:"hidden_act"`
	BOSTokenID            *int    `json:"bos_token_id"`
	PadTokenID            *int    `json:"pad_token_id"`
	// RopeScaling merges rope_parameters (5.x) and rope_scaling (4.x).
	RopeScaling *RopeScaling `json:"-"`
	// RopeForm is "rope_parameters" or "rope_scaling", as the file has it.
	RopeForm string `json:"-"`
}

// HeadDim is hidden_size / num_attention_heads.
func (t *TextConfig) HeadDim() int {
	if t.NumAttentionHeads == 0 {
		return 0
	}
	return t.HiddenSize / t.NumAttentionHeads
}

// IsCross reports whether decoder layer i is a cross-attention layer.
func (t *TextConfig) IsCross(i int) bool {
	for _, l := range t.CrossAttentionLayers {
		if l == i {
			return true
		}
	}
	return false
}

// VisionConfig is vision_config.
type VisionConfig struct {
	HiddenSize                int      `json:"hidden_size"`
	NumHiddenLayers           int      `json:"num_hidden_layers"`
	NumGlobalLayers           int      `json:"num_global_layers"`
	AttentionHeads            int      `json:"attention_heads"`
	IntermediateSize          int      `json:"intermediate_size"`
	VisionOutputDim           int      `json:"vision_output_dim"`
	ImageSize                 int      `json:"image_size"`
	PatchSize                 int      `json:"patch_size"`
	NumChannels               int      `json:"num_channels"`
	MaxNumTiles               int      `json:"max_num_tiles"`
	NormEps                   float64  `json:"norm_eps"`
	IntermediateLayersIndices []int    `json:"intermediate_layers_indices"`
	SupportedAspectRatios     [][2]int `json:"supported_aspect_ratios"`
	HiddenAct                 string   `json:"hidden_act"`
}

// NumPatches is (image_size/patch_size)² + 1 (the class token).
func (v *VisionConfig) NumPatches() int {
	if v.PatchSize == 0 {
		return 0
	}
	n := v.ImageSize / v.PatchSize
	return n*n + 1
}

// MaxAspectRatioID is the number of supported aspect ratios (ids are 1-based,
// 0 is padding).
func (v *VisionConfig) MaxAspectRatioID() int { return len(v.SupportedAspectRatios) }

// Config is a Mllama config.json.
type Config struct {
	Architectures   []string     `json:"architectures"`
	ModelType       string       `json:"model_type"`
	ImageTokenIndex int          `json:"image_token_index"`
	Text            TextConfig   `json:"text_config"`
	Vision          VisionConfig `json:"vision_config"`
	// DType is the top-level dtype ("dtype" in 5.x, "torch_dtype" in 4.x).
	DType dtype.DType `json:"-"`
	// DTypeKey is the key the file uses for it ("dtype" or "torch_dtype";
	// empty when absent).
	DTypeKey string `json:"-"`
	// TransformersVersion as recorded.
	TransformersVersion string `json:"transformers_version"`
	// Raw is the whole file, for checks that look at fields not modelled here.
	Raw map[string]any `json:"-"`
}

// LoadConfig reads and parses a config.json.
func LoadConfig(path string) (*Config, error) {
	b, err := boundedio.ReadFile(path, boundedio.JSONLimit)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses config.json bytes, accepting the 4.x and 5.x forms.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &c.Raw); err != nil {
		return nil, err
	}
	if c.ModelType != "mllama" {
		return nil, fmt.Errorf("model_type is %q, not \"mllama\"", c.ModelType)
	}
	for _, k := range []string{"dtype", "torch_dtype"} {
		if s, ok := c.Raw[k].(string); ok {
			d, ok := dtype.ParseTorch(s)
			if !ok {
				return nil, fmt.Errorf("%s %q is not a torch dtype", k, s)
			}
			c.DType, c.DTypeKey = d, k
			break
		}
	}
	var text struct {
		RopeParameters *RopeScaling `json:"rope_parameters"`
		RopeScaling    *RopeScaling `json:"rope_scaling"`
	}
	if tc, ok := c.Raw["text_config"]; ok {
		tb, _ := json.Marshal(tc)
		if err := json.Unmarshal(tb, &text); err != nil {
			return nil, fmt.Errorf("text_config: %w", err)
		}
	}
	switch {
	case text.RopeParameters != nil:
		c.Text.RopeScaling, c.Text.RopeForm = text.RopeParameters, "rope_parameters"
	case text.RopeScaling != nil:
		c.Text.RopeScaling, c.Text.RopeForm = text.RopeScaling, "rope_scaling"
		if c.Text.RopeScaling.RopeTheta == 0 {
			c.Text.RopeScaling.RopeTheta = c.Text.RopeTheta
		}
	}
	if c.Text.RopeScaling != nil && c.Text.RopeTheta == 0 {
		c.Text.RopeTheta = c.Text.RopeScaling.RopeTheta
	}
	if c.Text.RopeTheta == 0 {
		c.Text.RopeTheta = 500000 // MllamaTextConfig's default
	}
	if c.Text.RMSNormEps == 0 {
		c.Text.RMSNormEps = 1e-5
	}
	if c.Vision.NormEps == 0 {
		c.Vision.NormEps = 1e-5
	}
	if c.Vision.NumChannels == 0 {
		c.Vision.NumChannels = 3
	}
	return &c, nil
}
