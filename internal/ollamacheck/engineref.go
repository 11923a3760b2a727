//go:build ollama

package ollamacheck

import (
	"fmt"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// EngineReference answers from internal/mllama's forward pass, which is
// faithful to transformers 5.17's modeling_mllama in float32, and computes
// the Variants that apply Ollama's departures one at a time.
type EngineReference struct {
	m *mllama.Model
}

// NewEngineReference loads the model directory into internal/mllama's
// engine (float32 weights in memory: practical for small models).
func NewEngineReference(dir string, jobs int) (*EngineReference, error) {
	m, err := mllama.OpenDir(dir, jobs)
	if err != nil {
		return nil, err
	}
	return &EngineReference{m: m}, nil
}

// LastLogits is transformers' forward pass.
func (r *EngineReference) LastLogits(ids []int32, img *ImageInput) ([]float32, error) {
	return r.LastLogitsVariant(ids, img, Variant{})
}

// LastLogitsVariant is transformers' forward pass with the departures v
// names applied.
func (r *EngineReference) LastLogitsVariant(ids []int32, img *ImageInput, v Variant) ([]float32, error) {
	m := r.m
	m.Intermediate = mllama.LayerOutput
	if v.LayerInputFeatures {
		m.Intermediate = mllama.LayerInput
	}
	in := make([]int, len(ids))
	for i, id := range ids {
		in[i] = int(id)
	}
	var images []mllama.Image
	var mask [][][]int
	if img != nil {
		tiles := m.Config.Vision.MaxNumTiles
		if img.Tiles < 1 || img.Tiles > tiles {
			return nil, fmt.Errorf("image has %d tiles, want 1 to %d", img.Tiles, tiles)
		}
		am := make([]int, tiles)
		for k := range img.Tiles {
			am[k] = 1
		}
		images = []mllama.Image{{PixelValues: img.Pixels, AspectRatioID: img.AspectRatioID, AspectRatioMask: am}}
		if !v.NoCrossAttentionMask {
			var err error
			if mask, err = vision.CrossAttentionMask(in, m.Config.ImageTokenIndex, []int{img.Tiles}, tiles); err != nil {
				return nil, err
			}
		}
	}
	s, err := m.NewSession(images)
	if err != nil {
		return nil, err
	}
	return s.Forward(in, mask)
}
