//go:build ollama

package ollamacheck

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/ollama/ollama/fs/ggml"

	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// Source reads a Hugging Face directory's tensors by their legacy (Hub
// layout) names, whichever layout the files use.
type Source struct {
	Dir    *safetensors.Dir
	actual map[string]string
}

// OpenSource opens the directory's weights (model.safetensors or the index).
func OpenSource(dir string) (*Source, error) {
	d, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Source{Dir: d, actual: map[string]string{}}
	for _, n := range d.Names() {
		_, legacy := mllama.ClassifyName(n)
		s.actual[legacy] = n
	}
	return s, nil
}

// Close closes the weight files.
func (s *Source) Close() error { return s.Dir.Close() }

// Shape returns the shape of the tensor with the given legacy name.
func (s *Source) Shape(legacy string) ([]int64, bool) {
	n, ok := s.actual[legacy]
	if !ok {
		return nil, false
	}
	t, _, ok := s.Dir.Info(n)
	return t.Shape, ok
}

// ReadFloat32 reads the tensor with the given legacy name, widened to float32.
func (s *Source) ReadFloat32(legacy string) ([]float32, []int64, error) {
	n, ok := s.actual[legacy]
	if !ok {
		return nil, nil, fmt.Errorf("%s: no tensor %q in either layout", s.Dir.Path, legacy)
	}
	return s.Dir.ReadFloat32(n)
}

// F32Result says how the F32 GGUF was made.
type F32Result struct {
	// Rebuilt counts the F16/BF16 tensors rebuilt at F32 from the source,
	// Copied the F32 tensors taken from the converter's GGUF as they were.
	Rebuilt, Copied int
	// Mismatched lists rebuilt tensors whose values, rounded to the
	// converter's type, differ from the converter's bytes: the rebuilt
	// tensor is then not what the converter would have written.
	Mismatched []string
}

// WriteF32 writes to path a GGUF with the key-values and tensor set of conv
// (a GGUF written by Ollama's converter) in which every tensor is F32.
// Ollama's converter has no F32 output: it writes F16 even from F32 sources
// (ollama-as-a-library.md §2.7). The F16/BF16 tensors are therefore rebuilt
// from the source with the converter's transforms (exp), and each rebuilt
// tensor is proven equal to the converter's: rounded to the converter's type
// it must give the converter's bytes exactly. Mismatches are listed, not
// written.
func WriteF32(conv *GGUF, src *Source, exp []Expected, path string) (*F32Result, error) {
	byGGUF := map[string]Expected{}
	for _, e := range exp {
		byGGUF[e.GGUF] = e
	}
	res := &F32Result{}
	var ts []*ggml.Tensor
	for _, t := range conv.Tensors {
		var data []float32
		switch t.Kind {
		case kindF32:
			d, err := conv.ReadFloat32(t.Name)
			if err != nil {
				return nil, err
			}
			data = d
			res.Copied++
		case kindF16, kindBF16:
			e, ok := byGGUF[t.Name]
			if !ok || e.Source == "" {
				return nil, fmt.Errorf("%s: tensor %q has no known source tensor to rebuild it from", conv.Path, t.Name)
			}
			d, err := rebuild(src, e)
			if err != nil {
				return nil, err
			}
			same, err := roundsTo(conv, t, d)
			if err != nil {
				return nil, err
			}
			if !same {
				res.Mismatched = append(res.Mismatched, t.Name)
				continue
			}
			data = d
			res.Rebuilt++
		default:
			return nil, fmt.Errorf("%s: tensor %q has type %s; only F32, F16 and BF16 GGUFs can be rebuilt at F32", conv.Path, t.Name, ggml.TensorType(t.Kind))
		}
		ts = append(ts, &ggml.Tensor{Name: t.Name, Kind: kindF32, Shape: slices.Clone(t.Shape), WriterTo: f32Data(data)})
	}
	if len(res.Mismatched) > 0 {
		return res, fmt.Errorf("%d tensors rebuilt at F32 do not round to the converter's bytes: %v", len(res.Mismatched), res.Mismatched)
	}
	kv := maps.Clone(conv.KV)
	kv["general.file_type"] = uint32(ggml.FileTypeF32)
	return res, writeGGUF(path, kv, ts)
}

// rebuild makes one tensor's float32 values from the source as the
// converter does before it rounds them.
func rebuild(src *Source, e Expected) ([]float32, error) {
	data, shape, err := src.ReadFloat32(e.Source)
	if err != nil {
		return nil, err
	}
	switch e.Transform {
	case Copy:
		return data, nil
	case InterleaveHeads:
		if len(shape) != 2 {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, want a matrix to interleave", src.Dir.Path, e.Source, shape)
		}
		return interleaveHeads(data, shape[0], shape[1], e.Heads)
	case Tanh, OneMinusTanh:
		out := make([]float32, len(data))
		for i, x := range data {
			y := float32(math.Tanh(float64(x)))
			if e.Transform == OneMinusTanh {
				y = 1 - y
			}
			out[i] = y
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q: transform %v cannot be rebuilt", e.GGUF, e.Transform)
}

// roundsTo reports whether data rounded to t's type equals t's bytes in conv.
func roundsTo(conv *GGUF, t *ggml.Tensor, data []float32) (bool, error) {
	got, err := conv.ReadFloat32(t.Name)
	if err != nil {
		return false, err
	}
	if len(got) != len(data) {
		return false, nil
	}
	for i, x := range data {
		var r float32
		switch t.Kind {
		case kindF16:
			r = dtype.F32FromF16(dtype.F16FromF32(x))
		case kindBF16:
			r = dtype.F32FromBF16(dtype.BF16FromF32(x))
		}
		if math.Float32bits(r) != math.Float32bits(got[i]) {
			return false, nil
		}
	}
	return true, nil
}
