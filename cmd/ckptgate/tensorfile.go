package main

import (
	"encoding/binary"
	"io"
	"math"

	"github.com/ckptgate/ckptgate/internal/atomicfile"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// writeF32Tensor writes values as the only tensor of a safetensors file
// (preprocess --out, smoke --logits-out), laid out as the Rust writer would,
// so that Python reads it as torch would have saved it. The file appears
// complete or not at all.
func writeF32Tensor(path, name string, shape []int64, values []float32) error {
	l, err := safetensors.NewLayout(map[string]string{"format": "pt"}, []safetensors.Entry{
		{Name: name, DType: dtype.F32, Shape: shape},
	})
	if err != nil {
		return err
	}
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		if _, err := w.Write(l.Header); err != nil {
			return err
		}
		_, err := w.Write(data)
		return err
	})
}
