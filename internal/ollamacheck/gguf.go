//go:build ollama

package ollamacheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"runtime/debug"

	"github.com/ollama/ollama/convert"
	"github.com/ollama/ollama/fs/ggml"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// GGUF tensor types this package reads and writes (ggml's enum).
const (
	kindF32  = uint32(ggml.TensorTypeF32)
	kindF16  = uint32(ggml.TensorTypeF16)
	kindBF16 = uint32(ggml.TensorTypeBF16)
)

// Convert runs Ollama's converter (convert.ConvertModel) over fsys and writes
// the GGUF to path. A panic in the converter's own goroutine becomes an error.
func Convert(fsys fs.FS, path string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("ollama's converter panicked: %v\n%s", r, debug.Stack())
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return convert.ConvertModel(fsys, f)
}

// GGUF is a decoded GGUF file: its key-values and tensor directory.
type GGUF struct {
	Path    string
	KV      ggml.KV
	Tensors []*ggml.Tensor
	byName  map[string]*ggml.Tensor
	data    uint64
	size    int64
}

// ReadGGUF decodes the GGUF at path with Ollama's own decoder (fs/ggml).
func ReadGGUF(path string) (*GGUF, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m, err := ggml.Decode(f, -1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g := &GGUF{Path: path, KV: m.KV(), Tensors: m.Tensors().Items(), byName: map[string]*ggml.Tensor{},
		data: m.Tensors().Offset, size: st.Size()}
	for _, t := range g.Tensors {
		g.byName[t.Name] = t
	}
	return g, nil
}

// Tensor returns the named tensor's directory entry.
func (g *GGUF) Tensor(name string) (*ggml.Tensor, bool) {
	t, ok := g.byName[name]
	return t, ok
}

// Names lists the tensor names in file order.
func (g *GGUF) Names() []string {
	out := make([]string, len(g.Tensors))
	for i, t := range g.Tensors {
		out[i] = t.Name
	}
	return out
}

// ReadFloat32 reads an F32, F16 or BF16 tensor widened to float32, in GGUF
// element order (the Hugging Face row-major order: GGUF reverses the shape,
// not the data).
func (g *GGUF) ReadFloat32(name string) ([]float32, error) {
	t, ok := g.byName[name]
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", g.Path, name)
	}
	var from dtype.DType
	switch t.Kind {
	case kindF32:
		from = dtype.F32
	case kindF16:
		from = dtype.F16
	case kindBF16:
		from = dtype.BF16
	default:
		return nil, fmt.Errorf("%s: tensor %q has type %s, not F32, F16 or BF16", g.Path, name, ggml.TensorType(t.Kind))
	}
	n := t.Elements()
	size := t.Size()
	if size != n*uint64(from.Size()) || g.data+t.Offset+size > uint64(g.size) || n > math.MaxInt32 {
		return nil, fmt.Errorf("%s: tensor %q: %d elements at offset %d run past the %d-byte file", g.Path, name, n, t.Offset, g.size)
	}
	f, err := os.Open(g.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, int64(g.data+t.Offset)); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", g.Path, name, err)
	}
	out := make([]float32, n)
	if err := dtype.ToFloat32(out, b, from); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", g.Path, name, err)
	}
	return out, nil
}

// f32Data writes float32 values little-endian, as a GGUF tensor body.
type f32Data []float32

func (d f32Data) WriteTo(w io.Writer) (int64, error) {
	return int64(4 * len(d)), binary.Write(w, binary.LittleEndian, []float32(d))
}

// writeGGUF writes a GGUF with Ollama's writer. The tensors' shapes are in
// GGUF order.
func writeGGUF(path string, kv ggml.KV, ts []*ggml.Tensor) (err error) {
	if len(ts) == 0 {
		return errors.New("no tensors to write")
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return ggml.WriteGGUF(f, kv, ts)
}
