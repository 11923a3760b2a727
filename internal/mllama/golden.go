package mllama

import (
	"encoding/binary"
	"fmt"

	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// ReadGoldenInputs reads a golden-<name>.safetensors of the goldens: the
// exact model inputs transformers' MllamaProcessor built for a prompt and
// the last-position logits it computed, every dtype and shape checked
// against cfg before anything is read.
func ReadGoldenInputs(path string, cfg *Config) (Prompt, []float32, error) {
	var p Prompt
	f, err := safetensors.Open(path)
	if err != nil {
		return p, nil, err
	}
	defer f.Close()
	read := func(name string, dt dtype.DType, shape ...int64) ([]byte, []int64, error) {
		t, ok := f.Tensor(name)
		if !ok {
			return nil, nil, fmt.Errorf("%s: no tensor %q", path, name)
		}
		if t.DType != dt {
			return nil, nil, fmt.Errorf("%s: %s is %v, want %v", path, name, t.DType, dt)
		}
		if len(t.Shape) != len(shape) {
			return nil, nil, fmt.Errorf("%s: %s has shape %v, want %d dimensions", path, name, t.Shape, len(shape))
		}
		for i, d := range shape {
			if d >= 0 && t.Shape[i] != d {
				return nil, nil, fmt.Errorf("%s: %s has shape %v, want %v (-1: any)", path, name, t.Shape, shape)
			}
		}
		b, _, err := f.ReadBytes(name)
		return b, t.Shape, err
	}
	ints := func(b []byte) []int {
		out := make([]int, len(b)/8)
		for i := range out {
			out[i] = int(int64(binary.LittleEndian.Uint64(b[8*i:])))
		}
		return out
	}
	floats := func(b []byte) []float32 {
		out := make([]float32, len(b)/4)
		_ = dtype.ToFloat32(out, b, dtype.F32)
		return out
	}
	tc, vc := &cfg.Text, &cfg.Vision
	b, _, err := read("last_logits", dtype.F32, int64(tc.VocabSize))
	if err != nil {
		return p, nil, err
	}
	logits := floats(b)
	b, shape, err := read("input_ids", dtype.I64, 1, -1)
	if err != nil {
		return p, nil, err
	}
	p.IDs = ints(b)
	if len(p.IDs) == 0 || (tc.MaxPositionEmbeddings > 0 && len(p.IDs) > tc.MaxPositionEmbeddings) {
		return p, nil, fmt.Errorf("%s: input_ids has shape %v", path, shape)
	}
	if _, ok := f.Tensor("pixel_values"); !ok {
		return p, logits, nil
	}
	tiles, size := int64(vc.MaxNumTiles), int64(vc.ImageSize)
	b, shape, err = read("pixel_values", dtype.F32, 1, -1, tiles, int64(vc.NumChannels), size, size)
	if err != nil {
		return p, nil, err
	}
	images := int(shape[1])
	if images < 1 || images > 64 {
		return p, nil, fmt.Errorf("%s: pixel_values holds %d images", path, images)
	}
	pix := floats(b)
	b, _, err = read("aspect_ratio_ids", dtype.I64, 1, int64(images))
	if err != nil {
		return p, nil, err
	}
	ids := ints(b)
	b, _, err = read("aspect_ratio_mask", dtype.I64, 1, int64(images), tiles)
	if err != nil {
		return p, nil, err
	}
	arMask := ints(b)
	b, _, err = read("cross_attention_mask", dtype.I64, 1, int64(len(p.IDs)), int64(images), tiles)
	if err != nil {
		return p, nil, err
	}
	cm := ints(b)
	per := len(pix) / images
	for i := 0; i < images; i++ {
		p.Images = append(p.Images, Image{PixelValues: pix[i*per : (i+1)*per], AspectRatioID: ids[i],
			AspectRatioMask: arMask[i*int(tiles) : (i+1)*int(tiles)]})
	}
	for t := range p.IDs {
		row := make([][]int, images)
		for i := range row {
			off := (t*images + i) * int(tiles)
			row[i] = cm[off : off+int(tiles)]
		}
		p.CrossAttentionMask = append(p.CrossAttentionMask, row)
	}
	return p, logits, nil
}
