package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

// File is an open, validated safetensors file.
type File struct {
	Path   string
	Header *Header
	f      *os.File
	byName map[string]int
}

// Open opens path and validates its header against the file length.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	h, err := ReadHeader(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	sf := &File{Path: path, Header: h, f: f, byName: make(map[string]int, len(h.Tensors))}
	for i, t := range h.Tensors {
		sf.byName[t.Name] = i
	}
	return sf, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Tensor returns the named tensor's info.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Header.Tensors[i], true
}

// Section returns a reader over the named tensor's bytes.
func (f *File) Section(name string) (*io.SectionReader, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.Path, name)
	}
	return io.NewSectionReader(f.f, f.Header.DataStart()+t.Begin, t.NumBytes()), nil
}

// ReadBytes reads the named tensor's raw little-endian bytes. Its size was
// checked against the file's when the header was validated.
func (f *File) ReadBytes(name string) ([]byte, TensorInfo, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, TensorInfo{}, fmt.Errorf("%s: no tensor %q", f.Path, name)
	}
	b := make([]byte, t.NumBytes())
	if _, err := f.f.ReadAt(b, f.Header.DataStart()+t.Begin); err != nil {
		return nil, t, fmt.Errorf("%s: reading %q: %w", f.Path, name, err)
	}
	return b, t, nil
}

// ReadFloat32 reads the named floating-point tensor widened to float32.
func (f *File) ReadFloat32(name string) ([]float32, []int64, error) {
	b, t, err := f.ReadBytes(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float32, t.NumElements())
	if err := dtype.ToFloat32(out, b, t.DType); err != nil {
		return nil, nil, fmt.Errorf("%s: tensor %q: %w", f.Path, name, err)
	}
	return out, t.Shape, nil
}

// ReaderAt exposes the underlying file for positioned reads.
func (f *File) ReaderAt() io.ReaderAt { return f.f }

// IndexName is the file name of a sharded checkpoint's index.
const IndexName = "model.safetensors.index.json"

// SingleName is the file name of an unsharded checkpoint.
const SingleName = "model.safetensors"

// Index is a model.safetensors.index.json.
type Index struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// TotalSize returns metadata.total_size and whether it is a valid integer.
func (ix *Index) TotalSize() (int64, bool) {
	v, ok := ix.Metadata["total_size"]
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		return int64(n), float64(int64(n)) == n
	}
	return 0, false
}

// ReadIndex parses an index file.
func ReadIndex(path string) (*Index, error) {
	b, err := boundedio.ReadFile(path, boundedio.JSONLimit)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var ix Index
	if err := d.Decode(&ix); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ix.WeightMap == nil {
		return nil, fmt.Errorf("%s: no weight_map", path)
	}
	return &ix, nil
}

// Dir is the set of safetensors weights of a Hugging Face model directory:
// either model.safetensors or the shards named by model.safetensors.index.json.
type Dir struct {
	Path string
	// Index is nil for a single-file model.
	Index *Index
	// Files are keyed by base name.
	Files map[string]*File
	// where maps each tensor name to the base name of the file holding it.
	where map[string]string
}

// ErrNoWeights is returned by OpenDir when the directory holds neither
// model.safetensors nor an index.
var ErrNoWeights = errors.New("no model.safetensors or model.safetensors.index.json")

// OpenDir opens the weights of a model directory. With an index, every shard
// it names is opened and every tensor must be in the shard the index says;
// a tensor in no index entry or in two shards is an error.
func OpenDir(dir string) (*Dir, error) {
	d := &Dir{Path: dir, Files: map[string]*File{}, where: map[string]string{}}
	ixPath := filepath.Join(dir, IndexName)
	if _, err := os.Stat(ixPath); err == nil {
		ix, err := ReadIndex(ixPath)
		if err != nil {
			return nil, err
		}
		d.Index = ix
		var shards []string
		seen := map[string]bool{}
		for _, f := range ix.WeightMap {
			if !seen[f] {
				seen[f] = true
				shards = append(shards, f)
			}
		}
		sort.Strings(shards)
		for _, s := range shards {
			if s != filepath.Base(s) || s == ".." || s == "." {
				d.Close()
				return nil, fmt.Errorf("%s: shard name %q is not a plain file name", ixPath, s)
			}
			f, err := Open(filepath.Join(dir, s))
			if err != nil {
				d.Close()
				return nil, err
			}
			d.Files[s] = f
			for _, t := range f.Header.Tensors {
				if prev, dup := d.where[t.Name]; dup {
					d.Close()
					return nil, fmt.Errorf("%s: tensor %q is in both %s and %s", dir, t.Name, prev, s)
				}
				d.where[t.Name] = s
			}
		}
		for name, s := range ix.WeightMap {
			if got, ok := d.where[name]; !ok || got != s {
				d.Close()
				if !ok {
					return nil, fmt.Errorf("%s: index maps %q to %s, which does not hold it", ixPath, name, s)
				}
				return nil, fmt.Errorf("%s: index maps %q to %s, but it is in %s", ixPath, name, s, got)
			}
		}
		for name, s := range d.where {
			if _, ok := ix.WeightMap[name]; !ok {
				d.Close()
				return nil, fmt.Errorf("%s: tensor %q in %s is missing from the index", ixPath, name, s)
			}
		}
		return d, nil
	}
	p := filepath.Join(dir, SingleName)
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoWeights)
	}
	f, err := Open(p)
	if err != nil {
		return nil, err
	}
	d.Files[SingleName] = f
	for _, t := range f.Header.Tensors {
		d.where[t.Name] = SingleName
	}
	return d, nil
}

// Close closes every file.
func (d *Dir) Close() error {
	var first error
	for _, f := range d.Files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Names returns every tensor name, sorted.
func (d *Dir) Names() []string {
	return slices.Sorted(maps.Keys(d.where))
}

// Info returns a tensor's info and the base name of its file.
func (d *Dir) Info(name string) (TensorInfo, string, bool) {
	s, ok := d.where[name]
	if !ok {
		return TensorInfo{}, "", false
	}
	t, _ := d.Files[s].Tensor(name)
	return t, s, true
}

// Section returns a reader over a tensor's bytes.
func (d *Dir) Section(name string) (*io.SectionReader, error) {
	f, err := d.file(name)
	if err != nil {
		return nil, err
	}
	return f.Section(name)
}

// file returns the file holding the named tensor.
func (d *Dir) file(name string) (*File, error) {
	s, ok := d.where[name]
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", d.Path, name)
	}
	return d.Files[s], nil
}

// ReadBytes reads a tensor's raw little-endian bytes; errors name its file.
func (d *Dir) ReadBytes(name string) ([]byte, TensorInfo, error) {
	f, err := d.file(name)
	if err != nil {
		return nil, TensorInfo{}, err
	}
	return f.ReadBytes(name)
}

// ReadFloat32 reads a floating-point tensor widened to float32; errors name
// its file.
func (d *Dir) ReadFloat32(name string) ([]float32, []int64, error) {
	f, err := d.file(name)
	if err != nil {
		return nil, nil, err
	}
	return f.ReadFloat32(name)
}
