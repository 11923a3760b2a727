// Package ckpt is the common shape of a training checkpoint once a reader has
// parsed it: named tensors made of chunks (boxes of the global tensor), each
// chunk a strided view into some storage that is read through byte ranges.
// Readers (internal/dcp for DCP directories, internal/torchzip for torch.save
// files) produce it; the converter and the verifier consume it through Walk,
// which streams every tensor in bounded memory.
package ckpt

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// ErrCorrupt is wrapped by errors about inconsistent or damaged checkpoint
// data (the input's fault, exit code 2).
var ErrCorrupt = errors.New("corrupt checkpoint")

// View is a strided tensor view of a storage: element idx lives at byte
// (Offset + Σ idx[i]·Stride[i]) · DType.Size() of the storage.
type View struct {
	// R reads the raw storage bytes; StorageLen is their count.
	R          io.ReaderAt
	StorageLen int64
	DType      dtype.DType
	BigEndian  bool
	Offset     int64
	Size       []int64
	Stride     []int64
	// CRC32 of the whole storage, checked when HasCRC.
	CRC32  uint32
	HasCRC bool
	// Where names the storage in errors ("__0_0.distcp item at 4096, archive/data/0").
	Where string
}

// Chunk is one box of a global tensor.
type Chunk struct {
	Offsets, Sizes []int64
	// Open returns the chunk's data. It may be called from several
	// goroutines for different chunks.
	Open func() (*View, error)
	// Where names the chunk's source in errors.
	Where string
	// Resident is how many bytes Open holds in memory while the chunk is
	// read (a compressed item is decoded whole); 0 for byte-range reads.
	Resident int64
}

// Volume is the number of elements in the box.
func (c *Chunk) Volume() int64 { return volume(c.Sizes) }

// Tensor is a global tensor of the checkpoint.
type Tensor struct {
	// Name is the key as the checkpoint has it, after its group (e.g. the
	// "model" of llama-recipes' {"model": state_dict}) has been removed.
	Name   string
	DType  dtype.DType
	Shape  []int64
	Chunks []Chunk
}

// NumElements is the product of the shape.
func (t *Tensor) NumElements() int64 { return volume(t.Shape) }

// NumBytes is the size of the whole tensor in its dtype.
func (t *Tensor) NumBytes() int64 { return t.NumElements() * int64(t.DType.Size()) }

// Checkpoint is a parsed source checkpoint.
type Checkpoint struct {
	// Format is "dcp" or "torch.save".
	Format string
	// Path is the directory or file it was read from.
	Path string
	// Tensors in the order the checkpoint lists them.
	Tensors []*Tensor
	// Notes are things the reader skipped or tolerated (bytes items,
	// optimizer state, orphan files), for the user to see.
	Notes []string
	// Closer releases open files; may be nil.
	Closer io.Closer
}

// Close releases the checkpoint's files.
func (c *Checkpoint) Close() error {
	if c == nil || c.Closer == nil {
		return nil
	}
	return c.Closer.Close()
}

func volume(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// CheckedVolume multiplies sizes, failing on negative sizes or overflow past
// MaxInt64/elemSize so that later byte arithmetic cannot overflow.
func CheckedVolume(sizes []int64, elemSize int) (int64, error) {
	n := uint64(1)
	for _, d := range sizes {
		if d < 0 {
			return 0, fmt.Errorf("negative size %d in %v", d, sizes)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("size %v overflows", sizes)
		}
		n = lo
	}
	if elemSize > 0 {
		hi, lo := bits.Mul64(n, uint64(elemSize))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("size %v of %d-byte elements overflows", sizes, elemSize)
		}
	}
	return int64(n), nil
}

// ValidateCoverage checks that t's chunks lie within its shape, do not
// overlap, and together cover every element exactly once (torch only warns
// about this; ckptgate refuses). Zero-volume chunks are ignored.
func ValidateCoverage(t *Tensor) error {
	total, err := CheckedVolume(t.Shape, t.DType.Size())
	if err != nil {
		return fmt.Errorf("%w: tensor %q: %v", ErrCorrupt, t.Name, err)
	}
	var sum int64
	var live []int
	for i := range t.Chunks {
		c := &t.Chunks[i]
		if len(c.Offsets) != len(t.Shape) || len(c.Sizes) != len(t.Shape) {
			return fmt.Errorf("%w: tensor %q: chunk %d (%s) has offsets %v and sizes %v for a %d-d tensor of shape %v",
				ErrCorrupt, t.Name, i, c.Where, c.Offsets, c.Sizes, len(t.Shape), t.Shape)
		}
		for d := range t.Shape {
			if c.Offsets[d] < 0 || c.Sizes[d] < 0 || c.Offsets[d] > t.Shape[d] || c.Sizes[d] > t.Shape[d]-c.Offsets[d] {
				return fmt.Errorf("%w: tensor %q: chunk %d (%s) at offsets %v with sizes %v lies outside shape %v",
					ErrCorrupt, t.Name, i, c.Where, c.Offsets, c.Sizes, t.Shape)
			}
		}
		v := volume(c.Sizes)
		if v == 0 {
			continue
		}
		sum += v
		live = append(live, i)
	}
	// Sweep along dim 0: only chunks whose dim-0 ranges intersect can
	// overlap, which keeps hostile metadata with many chunks from costing
	// a quadratic number of comparisons in the usual dim-0 sharding.
	if len(t.Shape) > 0 {
		sort.Slice(live, func(a, b int) bool { return t.Chunks[live[a]].Offsets[0] < t.Chunks[live[b]].Offsets[0] })
	}
	var active []int
	for _, i := range live {
		c := &t.Chunks[i]
		kept := active[:0]
		for _, j := range active {
			o := &t.Chunks[j]
			if len(t.Shape) > 0 && o.Offsets[0]+o.Sizes[0] <= c.Offsets[0] {
				continue
			}
			if boxesOverlap(o, c) {
				return fmt.Errorf("%w: tensor %q: chunks at offsets %v (%s) and %v (%s) overlap",
					ErrCorrupt, t.Name, o.Offsets, o.Where, c.Offsets, c.Where)
			}
			kept = append(kept, j)
		}
		active = append(kept, i)
	}
	if sum != total {
		return fmt.Errorf("%w: tensor %q: chunks cover %d of its %d elements (shape %v)", ErrCorrupt, t.Name, sum, total, t.Shape)
	}
	return nil
}

func boxesOverlap(a, b *Chunk) bool {
	for d := range a.Offsets {
		if a.Offsets[d]+a.Sizes[d] <= b.Offsets[d] || b.Offsets[d]+b.Sizes[d] <= a.Offsets[d] {
			return false
		}
	}
	return true
}
