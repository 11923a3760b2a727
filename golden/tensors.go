package golden

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"maps"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dcp"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// pieceBytes is how much of a tensor one read takes.
const pieceBytes = 8 << 20

// maxAssemble bounds the memory used to put a source tensor whose chunks are
// not in element order back together; larger ones are recorded without a
// checksum.
const maxAssemble = 256 << 20

// acc folds a tensor's bytes, fed in element order, into its checksum and
// statistics.
type acc struct {
	dt     dtype.DType
	n      int64
	next   int64
	sha    hash.Hash
	float  bool
	sum    float64
	sumSq  float64
	absMax float64
	nan    int64
	inf    int64
	pos    []int64
	sample []Num
	f32    []float32
}

func newAcc(dt dtype.DType, shape []int64) *acc {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	a := &acc{dt: dt, n: n, sha: sha256.New()}
	switch dt {
	case dtype.F32, dtype.BF16, dtype.F16, dtype.F64:
		a.float = true
		a.pos = SamplePositions(n, SampleSize)
		a.sample = make([]Num, 0, len(a.pos))
	}
	return a
}

// add folds the run of elements starting at element off.
func (a *acc) add(off int64, b []byte) error {
	size := int64(a.dt.Size())
	if off != a.next || int64(len(b))%size != 0 {
		return fmt.Errorf("piece of %d bytes at element %d, expected element %d", len(b), off, a.next)
	}
	k := int64(len(b)) / size
	if a.next+k > a.n {
		return fmt.Errorf("%d elements past the tensor's %d", a.next+k-a.n, a.n)
	}
	a.sha.Write(b)
	if a.float {
		if int64(cap(a.f32)) < k {
			a.f32 = make([]float32, k)
		}
		f := a.f32[:k]
		if err := dtype.ToFloat32(f, b, a.dt); err != nil {
			return err
		}
		for _, v := range f {
			x := float64(v)
			switch {
			case math.IsNaN(x):
				a.nan++
			case math.IsInf(x, 0):
				a.inf++
			default:
				a.sum += x
				a.sumSq += x * x
				a.absMax = math.Max(a.absMax, math.Abs(x))
			}
		}
		for len(a.sample) < len(a.pos) && a.pos[len(a.sample)] < off+k {
			a.sample = append(a.sample, Num(f[a.pos[len(a.sample)]-off]))
		}
	}
	a.next += k
	return nil
}

// tensor returns the record once every element was fed.
func (a *acc) tensor(shape []int64) (*Tensor, error) {
	if a.next != a.n {
		return nil, fmt.Errorf("read %d of %d elements", a.next, a.n)
	}
	t := &Tensor{DType: a.dt.String(), Shape: append([]int64{}, shape...), SHA256: hex.EncodeToString(a.sha.Sum(nil))}
	if a.float {
		finite := a.n - a.nan - a.inf
		mean := 0.0
		if finite > 0 {
			mean = a.sum / float64(finite)
		}
		t.Stats = &Stats{L2: Num(math.Sqrt(a.sumSq)), Mean: Num(mean), AbsMax: Num(a.absMax), NaN: a.nan, Inf: a.inf, Sample: a.sample}
	}
	return t, nil
}

// layoutName is a layout's short name in recordings.
func layoutName(l mllama.Layout) string {
	switch l {
	case mllama.LayoutLegacy:
		return "legacy"
	case mllama.LayoutNew:
		return "new"
	}
	return "unknown"
}

// recordWeights streams every tensor of the model's safetensors once.
func recordWeights(ctx context.Context, d *safetensors.Dir, jobs int) (*Weights, error) {
	w := &Weights{Tensors: map[string]*Tensor{}}
	w.Files = slices.Sorted(maps.Keys(d.Files))
	type job struct{ name, legacy string }
	var work []job
	layout := mllama.LayoutUnknown
	for _, n := range d.Names() {
		l, leg := mllama.ClassifyName(n)
		if l == mllama.LayoutUnknown {
			// Not an Mllama name: keep it under its own name, so that
			// it still counts.
			leg = n
		} else if layout == mllama.LayoutUnknown {
			layout = l
		} else if l != layout {
			w.Layout = "mixed"
		}
		if _, dup := w.Tensors[leg]; dup {
			return nil, fmt.Errorf("%s: tensors %q and another name the same legacy tensor", d.Path, n)
		}
		w.Tensors[leg] = nil
		work = append(work, job{n, leg})
	}
	if w.Layout == "" {
		w.Layout = layoutName(layout)
	}
	var mu sync.Mutex
	err := parallel(ctx, jobs, len(work), func(i int) error {
		j := work[i]
		info, _, _ := d.Info(j.name)
		sr, err := d.Section(j.name)
		if err != nil {
			return err
		}
		t, err := streamSection(sr, info.DType, info.Shape)
		if err != nil {
			return fmt.Errorf("%s: tensor %s: %w", d.Path, j.name, err)
		}
		mu.Lock()
		w.Tensors[j.legacy] = t
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// streamSection reads a tensor's bytes piece by piece.
func streamSection(sr *io.SectionReader, dt dtype.DType, shape []int64) (*Tensor, error) {
	if dt.Size() == 0 {
		return nil, fmt.Errorf("dtype %v has no fixed element size", dt)
	}
	a := newAcc(dt, shape)
	size := int64(dt.Size())
	if sr.Size() != a.n*size {
		return nil, fmt.Errorf("%d bytes for %d elements of %v", sr.Size(), a.n, dt)
	}
	step := max(size, pieceBytes/size*size)
	buf := make([]byte, min(step, max(sr.Size(), size)))
	for off := int64(0); off < sr.Size(); off += step {
		b := buf[:min(step, sr.Size()-off)]
		if _, err := sr.ReadAt(b, off); err != nil {
			return nil, err
		}
		if err := a.add(off/size, b); err != nil {
			return nil, err
		}
	}
	return a.tensor(shape)
}

// parallel runs fn(0..n-1) on up to jobs goroutines, stopping at the first
// error or when ctx ends.
func parallel(ctx context.Context, jobs, n int, fn func(i int) error) error {
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i := 0; i < n; i++ {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			return fn(i)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// gctx ends with Wait; only the caller's context says whether the
	// work was cut short.
	return ctx.Err()
}

// recordSource records the training checkpoint: its tensors as stored, with
// checksums of the assembled tensors, and its DCP metadata.
func recordSource(ctx context.Context, c *ckpt.Checkpoint, jobs int) (*Source, error) {
	s := &Source{Format: c.Format, Tensors: map[string]*Tensor{}}
	names := make([]string, len(c.Tensors))
	for i, t := range c.Tensors {
		names[i] = t.Name
		if _, dup := s.Tensors[t.Name]; dup {
			return nil, fmt.Errorf("%s: tensor %q appears twice", c.Path, t.Name)
		}
		s.Tensors[t.Name] = nil
	}
	s.Layout = "unknown"
	if m, err := mllama.MapNames(names); err == nil {
		s.Layout = layoutName(m.Layout)
	}
	for _, n := range c.Notes {
		s.Notes = append(s.Notes, strings.ReplaceAll(n, c.Path, "<source>"))
	}
	if c.Format == "dcp" {
		meta, err := recordDCPMetadata(c.Path)
		if err != nil && !isNotExist(err) {
			return nil, err
		}
		s.DCP = meta
	}
	var mu sync.Mutex
	err := parallel(ctx, jobs, len(c.Tensors), func(i int) error {
		t := c.Tensors[i]
		rec, err := streamSource(t)
		if err != nil {
			return fmt.Errorf("%s: tensor %s: %w", c.Path, t.Name, err)
		}
		mu.Lock()
		s.Tensors[t.Name] = rec
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// streamSource feeds a source tensor to an accumulator in element order:
// directly when its chunks are consecutive row ranges (what FSDP saves),
// else through a buffer of the whole tensor when it is small enough.
func streamSource(t *ckpt.Tensor) (*Tensor, error) {
	var chunks []*ckpt.Chunk
	for i := range t.Chunks {
		if t.Chunks[i].Volume() > 0 {
			chunks = append(chunks, &t.Chunks[i])
		}
	}
	sort.Slice(chunks, func(i, j int) bool { return rowStart(t, chunks[i]) < rowStart(t, chunks[j]) })
	if t.DType.Size() == 0 {
		return nil, fmt.Errorf("dtype %v has no fixed element size", t.DType)
	}
	a := newAcc(t.DType, t.Shape)
	buf := make([]byte, ckpt.DefaultBufSize)
	if inOrder(t, chunks) {
		for _, c := range chunks {
			if err := ckpt.WalkChunk(t, c, buf, a.add); err != nil {
				return nil, err
			}
		}
	} else {
		if t.NumBytes() > maxAssemble {
			rec := &Tensor{DType: t.DType.String(), Shape: append([]int64{}, t.Shape...), Chunks: len(t.Chunks)}
			return rec, nil
		}
		whole := make([]byte, t.NumBytes())
		size := int64(t.DType.Size())
		for _, c := range chunks {
			err := ckpt.WalkChunk(t, c, buf, func(dst int64, src []byte) error {
				copy(whole[dst*size:], src)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		for off := int64(0); off < int64(len(whole)); off += pieceBytes {
			end := min(int64(len(whole)), off+pieceBytes)
			end -= (end - off) % size
			if err := a.add(off/size, whole[off:end]); err != nil {
				return nil, err
			}
		}
	}
	rec, err := a.tensor(t.Shape)
	if err != nil {
		return nil, err
	}
	rec.Chunks = len(t.Chunks)
	return rec, nil
}

// rowStart is a chunk's first element when it is a range of whole rows.
func rowStart(t *ckpt.Tensor, c *ckpt.Chunk) int64 {
	if len(c.Offsets) == 0 {
		return 0
	}
	row := int64(1)
	for _, d := range t.Shape[1:] {
		row *= d
	}
	return c.Offsets[0] * row
}

// inOrder reports whether the chunks, sorted by rowStart, are consecutive
// ranges of whole rows covering the tensor.
func inOrder(t *ckpt.Tensor, chunks []*ckpt.Chunk) bool {
	var at int64
	for _, c := range chunks {
		for d := 1; d < len(t.Shape); d++ {
			if c.Sizes[d] != t.Shape[d] {
				return false
			}
		}
		if rowStart(t, c) != at {
			return false
		}
		at += c.Volume()
	}
	return at == t.NumElements()
}

// maxMetadata bounds a DCP .metadata read here; an 11B model's is a few MB.
const maxMetadata = 256 << 20

// recordDCPMetadata reads dir/.metadata.
func recordDCPMetadata(dir string) (*DCPMetadata, error) {
	path := filepath.Join(dir, ".metadata")
	b, err := boundedio.ReadFile(path, maxMetadata)
	if err != nil {
		return nil, err
	}
	m, err := dcp.ParseMetadata(b, path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	out := &DCPMetadata{Version: m.Version, Entries: len(m.Entries), PlannerData: m.PlannerData != nil, SHA256: hex.EncodeToString(sum[:]),
		Content: metadataContent(m)}
	for _, e := range m.Entries {
		if e.Tensor == nil {
			out.BytesKeys = append(out.BytesKeys, e.Key)
		}
	}
	sort.Strings(out.BytesKeys)
	return out, nil
}

// metadataContent hashes what a .metadata says, independent of the order
// torch pickled it in: every entry (key, dtype, size, chunks) and where each
// item lies, sorted. torch also records the save's path and a random save_id,
// and the order of storage_data follows the writer threads, so the raw bytes
// of two identical saves differ.
func metadataContent(m *dcp.Metadata) string {
	var lines []string
	for _, e := range m.Entries {
		if e.Tensor == nil {
			lines = append(lines, fmt.Sprintf("entry %q bytes", e.Key))
			continue
		}
		var chunks []string
		for _, c := range e.Tensor.Chunks {
			chunks = append(chunks, fmt.Sprint(c.Offsets, c.Sizes))
		}
		sort.Strings(chunks)
		lines = append(lines, fmt.Sprintf("entry %q %v %v %s", e.Key, e.Tensor.DType, e.Tensor.Size, strings.Join(chunks, " ")))
	}
	for k, it := range m.Items {
		lines = append(lines, fmt.Sprintf("item %q %q %v %q %d %d %q", k.FQN, k.Offsets, k.HasOffsets, it.RelativePath, it.Offset, it.Length, it.Transforms))
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		fmt.Fprintln(h, l)
	}
	return hex.EncodeToString(h.Sum(nil))
}
