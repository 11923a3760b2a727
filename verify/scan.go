package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// sampleSize is how many fixed positions of each tensor are kept to compare
// tensors with each other (swap detection) without re-reading them.
const sampleSize = 4096

// TensorScan is what one streaming pass learned about one model tensor.
type TensorScan struct {
	Name   string // as in the model's files
	Legacy string // layout-independent name
	DType  dtype.DType
	Shape  []int64
	SHA256 string

	NaN, Inf int64
	AllZero  bool

	// Against the base (HasBase).
	HasBase   bool
	BaseDType dtype.DType
	// IdenticalToBase: every element equals the base's (bit for bit when
	// the dtypes are equal, value for value otherwise).
	IdenticalToBase bool
	// Changed counts elements whose value differs from the base's.
	Changed                 int64
	DiffSq, BaseSq, ModelSq float64
	MaxAbsDiff              float64
	BaseAllZero             bool
	sample, baseSample      []float32
	samplePos               []int64

	// Against the source (HasSource).
	HasSource   bool
	SourceDType dtype.DType
	// Differing counts elements that are not the exact round-to-nearest-even
	// cast of the source value (NaN compared by class).
	Differing  int64
	MaxULP     int64
	MaxRelErr  float64
	RelErrHist []int64
}

// RelL2 is ‖model − base‖ / ‖base‖ (+Inf when the base is all zero and the
// model is not).
func (s *TensorScan) RelL2() float64 {
	if s.BaseSq == 0 {
		if s.DiffSq == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Sqrt(s.DiffSq / s.BaseSq)
}

// NormRatio is ‖model‖ / ‖base‖.
func (s *TensorScan) NormRatio() float64 {
	if s.BaseSq == 0 {
		if s.ModelSq == 0 {
			return 1
		}
		return math.Inf(1)
	}
	return math.Sqrt(s.ModelSq / s.BaseSq)
}

// ChangedFrac is the fraction of elements that differ from the base.
func (s *TensorScan) ChangedFrac() float64 {
	n := volume(s.Shape)
	if n == 0 {
		return 0
	}
	return float64(s.Changed) / float64(n)
}

// Scan is the result of the streaming pass over all tensors.
type Scan struct {
	Tensors []*TensorScan // sorted by legacy name
	byLeg   map[string]*TensorScan
	// ModelLayout and BaseLayout are the key layouts of the two directories.
	ModelLayout, BaseLayout mllama.Layout
	// Unknown lists model tensor names that are not Mllama names.
	Unknown []string
	// BaseOnly lists base tensors (legacy names) the model lacks.
	BaseOnly []string
	// SourceOnly lists source tensors (legacy names) the model lacks.
	SourceOnly []string
	// SourceError says why the source could not be compared, if so.
	SourceError string
	// Bytes counts bytes read per input.
	Bytes map[string]int64
}

// Get returns a tensor by legacy name.
func (s *Scan) Get(legacy string) *TensorScan { return s.byLeg[legacy] }

func volume(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// scanJob is one model tensor to stream.
type scanJob struct {
	ts   *TensorScan
	base *safetensors.Dir
	src  *ckpt.Tensor
}

// runScan streams every model tensor once, with its base and source
// counterparts, computing checksums, drift, source exactness and samples.
func runScan(ctx context.Context, model, base *safetensors.Dir, src *ckpt.Checkpoint, jobs int) (*Scan, error) {
	sc := &Scan{byLeg: map[string]*TensorScan{}, Bytes: map[string]int64{}}
	baseLeg := map[string]string{}
	if base != nil {
		for _, n := range base.Names() {
			l, leg := mllama.ClassifyName(n)
			if l != mllama.LayoutUnknown {
				baseLeg[leg] = n
				if sc.BaseLayout == mllama.LayoutUnknown {
					sc.BaseLayout = l
				}
			}
		}
	}
	var srcByLeg map[string]*ckpt.Tensor
	if src != nil {
		names := make([]string, len(src.Tensors))
		for i, t := range src.Tensors {
			names[i] = t.Name
		}
		if m, err := mllama.MapNames(names); err != nil {
			sc.SourceError = err.Error()
		} else {
			srcByLeg = map[string]*ckpt.Tensor{}
			for _, t := range src.Tensors {
				if leg, ok := m.Legacy[t.Name]; ok {
					srcByLeg[leg] = t
				}
			}
		}
	}
	var work []scanJob
	for _, n := range model.Names() {
		l, leg := mllama.ClassifyName(n)
		if l == mllama.LayoutUnknown {
			sc.Unknown = append(sc.Unknown, n)
			continue
		}
		if sc.ModelLayout == mllama.LayoutUnknown {
			sc.ModelLayout = l
		}
		ti, _, _ := model.Info(n)
		ts := &TensorScan{Name: n, Legacy: leg, DType: ti.DType, Shape: ti.Shape}
		if _, dup := sc.byLeg[leg]; dup {
			sc.Unknown = append(sc.Unknown, n+" (duplicate of "+sc.byLeg[leg].Name+")")
			continue
		}
		sc.byLeg[leg] = ts
		sc.Tensors = append(sc.Tensors, ts)
		j := scanJob{ts: ts}
		if bn, ok := baseLeg[leg]; ok {
			bt, _, _ := base.Info(bn)
			if slices.Equal(bt.Shape, ti.Shape) && bt.DType.IsFloat() && ti.DType.IsFloat() {
				j.base = base
				ts.HasBase, ts.BaseDType = true, bt.DType
			}
		}
		if st, ok := srcByLeg[leg]; ok && slices.Equal(st.Shape, ti.Shape) && st.DType.IsFloat() && ti.DType.IsFloat() {
			j.src = st
			ts.HasSource, ts.SourceDType = true, st.DType
		}
		work = append(work, j)
	}
	for leg := range baseLeg {
		if sc.byLeg[leg] == nil {
			sc.BaseOnly = append(sc.BaseOnly, leg)
		}
	}
	for leg := range srcByLeg {
		if sc.byLeg[leg] == nil {
			sc.SourceOnly = append(sc.SourceOnly, leg)
		}
	}
	sort.Strings(sc.BaseOnly)
	sort.Strings(sc.SourceOnly)
	sort.Slice(sc.Tensors, func(i, j int) bool { return sc.Tensors[i].Legacy < sc.Tensors[j].Legacy })
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	// Largest first for a short tail.
	sort.SliceStable(work, func(i, j int) bool { return volume(work[i].ts.Shape) > volume(work[j].ts.Shape) })
	g, ctx := errgroup.WithContext(ctx)
	ch := make(chan scanJob)
	var mu sync.Mutex
	for w := 0; w < jobs; w++ {
		g.Go(func() error {
			st := newStreamer()
			for j := range ch {
				if err := ctx.Err(); err != nil {
					return err
				}
				baseName := ""
				if j.base != nil {
					baseName = baseLeg[j.ts.Legacy]
				}
				if err := st.scanTensor(model, j.base, baseName, j.src, j.ts); err != nil {
					return err
				}
			}
			mu.Lock()
			for k, v := range st.bytes {
				sc.Bytes[k] += v
			}
			mu.Unlock()
			return nil
		})
	}
	g.Go(func() error {
		defer close(ch)
		for _, j := range work {
			select {
			case ch <- j:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return sc, nil
}

// streamer holds one worker's buffers. A worker is two goroutines: a
// reader that reads pieces of the model, the base and the source (and
// hashes the model's bytes, which must be in order anyway) up to prefetch
// pieces ahead, and the worker itself, which folds them. Reading the next
// pieces while folding this one keeps the disk busy; the free list of
// pieces bounds the memory.
type streamer struct {
	rbuf   []byte
	mbuf   []byte // the second pass's model reads
	exp    []byte
	mf, bf []float64
	sf     []float64
	free   chan *piece
	bytes  map[string]int64
}

// pieceElems bounds a piece: reads of a few MB, and float64 scratch of
// 8 MB on the paths that widen whole pieces.
const pieceElems = 1 << 20

// prefetch is how many pieces a reader may be ahead of its worker.
const prefetch = 2

func newStreamer() *streamer {
	s := &streamer{rbuf: make([]byte, ckpt.DefaultBufSize), bytes: map[string]int64{},
		free: make(chan *piece, prefetch+1)}
	for range prefetch + 1 {
		s.free <- &piece{}
	}
	return s
}

// piece is one range of a tensor: off and k in elements, the model's and
// base's bytes, and the source's when the source drives the pass.
type piece struct {
	off, k     int64
	mb, bb, sb []byte
}

// acc accumulates one tensor's statistics over pieces fed in element order
// (or in any order when sequential is false, which only the hash needs).
type acc struct {
	ts  *TensorScan
	sha hash.Hash
	// next is the element the hash expects next.
	next    int64
	nonZero bool
	baseNZ  bool
	posIdx  int
}

func (s *streamer) scanTensor(model *safetensors.Dir, base *safetensors.Dir, baseName string, src *ckpt.Tensor, ts *TensorScan) error {
	n := volume(ts.Shape)
	a := &acc{ts: ts, sha: sha256.New()}
	ts.samplePos = samplePositions(n)
	ts.sample = make([]float32, len(ts.samplePos))
	if base != nil {
		ts.baseSample = make([]float32, len(ts.samplePos))
	}
	if src != nil {
		ts.RelErrHist = make([]int64, 11)
	}
	msr, err := model.Section(ts.Name)
	if err != nil {
		return err
	}
	var bsr *io.SectionReader
	if base != nil {
		if bsr, err = base.Section(baseName); err != nil {
			return err
		}
	}
	r := &pieceReader{s: s, a: a, msr: msr, bsr: bsr}
	if src != nil && sequentialChunks(src) {
		// One pass driven by the source: its runs arrive in element order,
		// so the model and base ranges are read once, in order.
		r.sd = src.DType
		err = s.pipeline(a, r, func() error {
			for _, c := range sortedChunks(src) {
				err := ckpt.WalkChunk(src, c, s.rbuf, func(dst int64, sb []byte) error {
					s.bytes["source"] += int64(len(sb))
					return r.emit(dst, int64(len(sb)/src.DType.Size()), sb)
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	} else {
		err = s.pipeline(a, r, func() error {
			for off := int64(0); off < n; off += pieceElems {
				if err := r.emit(off, min(pieceElems, n-off), nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if src != nil {
			// Boxes that are not in element order (tensor-parallel
			// layouts): compare against the source in a second pass.
			for i := range src.Chunks {
				err := ckpt.WalkChunk(src, &src.Chunks[i], s.rbuf, func(dst int64, sb []byte) error {
					k := int64(len(sb) / src.DType.Size())
					s.bytes["source"] += int64(len(sb))
					return s.compareSource(a, msr, dst, k, sb, src.DType)
				})
				if err != nil {
					return err
				}
			}
		}
	}
	if a.next != n {
		return fmt.Errorf("tensor %s: scanned %d of %d elements", ts.Name, a.next, n)
	}
	// The positions are needed only while streaming; the samples stay for
	// the swap check. Dropping them keeps an 11B model's 906 scans 29 MB
	// smaller.
	ts.samplePos = nil
	ts.SHA256 = hex.EncodeToString(a.sha.Sum(nil))
	ts.AllZero = n > 0 && !a.nonZero
	if base != nil {
		ts.BaseAllZero = n > 0 && !a.baseNZ
		// Same dtype: compared bit for bit; otherwise value for value (a
		// bf16 base widened to fp32 is exact).
		ts.IdenticalToBase = ts.Changed == 0
	}
	return nil
}

// errStopped ends a reader whose worker has failed.
var errStopped = errors.New("scan stopped")

// pieceReader is the reading half of a worker for one tensor.
type pieceReader struct {
	s        *streamer
	a        *acc
	msr, bsr *io.SectionReader
	sd       dtype.DType
	ready    chan *piece
	stop     chan struct{}
}

// emit reads the model (and base) range of k elements at off, with the
// source's bytes sb of the same range when given, and hands it to the
// worker in pieces of at most pieceElems elements.
func (r *pieceReader) emit(off, k int64, sb []byte) error {
	ts := r.a.ts
	for done := int64(0); done < k; {
		select {
		case <-r.stop: // checked first: a free piece may be waiting too
			return errStopped
		default:
		}
		n := min(pieceElems, k-done)
		var p *piece
		select {
		case p = <-r.s.free:
		case <-r.stop:
			return errStopped
		}
		p.off, p.k = off+done, n
		ms := int64(ts.DType.Size())
		p.mb = grow(p.mb, int(n*ms))
		if _, err := r.msr.ReadAt(p.mb, p.off*ms); err != nil {
			r.s.free <- p
			return fmt.Errorf("tensor %s: reading model: %w", ts.Name, err)
		}
		r.s.bytes["model"] += n * ms
		r.a.sha.Write(p.mb)
		p.bb = p.bb[:0]
		if r.bsr != nil {
			bs := int64(ts.BaseDType.Size())
			p.bb = grow(p.bb, int(n*bs))
			if _, err := r.bsr.ReadAt(p.bb, p.off*bs); err != nil {
				r.s.free <- p
				return fmt.Errorf("tensor %s: reading base: %w", ts.Name, err)
			}
			r.s.bytes["base"] += n * bs
		}
		p.sb = p.sb[:0]
		if sb != nil {
			// The source's buffer is reused for its next run: copy.
			ss := int64(r.sd.Size())
			p.sb = append(p.sb, sb[done*ss:(done+n)*ss]...)
		}
		select {
		case r.ready <- p:
		case <-r.stop:
			r.s.free <- p
			return errStopped
		}
		done += n
	}
	return nil
}

// pipeline runs produce (which calls r.emit) in a reader goroutine and
// folds the pieces it emits, in order, until it is done or either side
// fails.
func (s *streamer) pipeline(a *acc, r *pieceReader, produce func() error) error {
	r.ready = make(chan *piece, prefetch)
	r.stop = make(chan struct{})
	var readErr error
	go func() {
		defer close(r.ready)
		readErr = produce()
	}()
	var foldErr error
	for p := range r.ready {
		if foldErr == nil {
			if foldErr = s.fold(a, p, r.sd); foldErr != nil {
				close(r.stop)
			}
		}
		s.free <- p
	}
	if foldErr != nil {
		return foldErr
	}
	return readErr
}

// fold folds one piece (whose model bytes the reader has hashed) into a.
func (s *streamer) fold(a *acc, p *piece, sd dtype.DType) error {
	ts := a.ts
	if p.off != a.next {
		return fmt.Errorf("tensor %s: internal error: piece at %d, expected %d", ts.Name, p.off, a.next)
	}
	a.next = p.off + p.k
	var bb []byte
	if len(p.bb) > 0 {
		bb = p.bb
	}
	// mf holds the model's values as float64 when a generic path needed
	// them.
	var mf []float64
	switch {
	case ts.DType == dtype.BF16 && (bb == nil || ts.BaseDType == dtype.BF16):
		foldBF16(a, p.mb, bb)
	default:
		s.mf = growF(s.mf, int(p.k))
		toF64(s.mf, p.mb, ts.DType)
		mf = s.mf
		if bb != nil {
			s.bf = growF(s.bf, int(p.k))
			toF64(s.bf, bb, ts.BaseDType)
			foldWithBase(a, mf, s.bf, ts.DType == ts.BaseDType)
		} else {
			foldModel(a, mf)
		}
	}
	for a.posIdx < len(ts.samplePos) && ts.samplePos[a.posIdx] < p.off+p.k {
		i := int(ts.samplePos[a.posIdx] - p.off)
		ts.sample[a.posIdx] = float32(elemF64(p.mb, i, ts.DType))
		if bb != nil {
			ts.baseSample[a.posIdx] = float32(elemF64(bb, i, ts.BaseDType))
		}
		a.posIdx++
	}
	if len(p.sb) > 0 {
		s.compareSourceF(a, p.mb, mf, p.sb, sd)
	}
	return nil
}

// samplePositions spreads up to sampleSize positions evenly over n elements;
// same-shaped tensors get the same positions.
func samplePositions(n int64) []int64 {
	k := min(n, sampleSize)
	pos := make([]int64, k)
	for i := range pos {
		pos[i] = int64(i) * n / k
	}
	return pos
}

func sequentialChunks(t *ckpt.Tensor) bool {
	cs := sortedChunks(t)
	var at int64
	for _, c := range cs {
		// Every dim but the first must be full for the box to be one
		// contiguous range of the tensor.
		for d := 1; d < len(t.Shape); d++ {
			if c.Sizes[d] != t.Shape[d] {
				return false
			}
		}
		start := int64(0)
		if len(c.Offsets) > 0 {
			start = c.Offsets[0] * volume(t.Shape[1:])
		}
		if start != at {
			return false
		}
		at += c.Volume()
	}
	return at == volume(t.Shape)
}

func sortedChunks(t *ckpt.Tensor) []*ckpt.Chunk {
	var cs []*ckpt.Chunk
	for i := range t.Chunks {
		if t.Chunks[i].Volume() > 0 {
			cs = append(cs, &t.Chunks[i])
		}
	}
	sort.Slice(cs, func(i, j int) bool {
		if len(cs[i].Offsets) == 0 {
			return false
		}
		return cs[i].Offsets[0] < cs[j].Offsets[0]
	})
	return cs
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

func growF(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	return b[:n]
}
