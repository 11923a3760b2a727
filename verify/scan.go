package verify

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math"
	"runtime"
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
	Changed                  int64
	DiffSq, BaseSq, ModelSq  float64
	MaxAbsDiff               float64
	BaseAllZero              bool
	sample, baseSample       []float32
	samplePos                []int64

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
			if equalShape(bt.Shape, ti.Shape) && bt.DType.IsFloat() && ti.DType.IsFloat() {
				j.base = base
				ts.HasBase, ts.BaseDType = true, bt.DType
			}
		}
		if st, ok := srcByLeg[leg]; ok && equalShape(st.Shape, ti.Shape) && st.DType.IsFloat() && ti.DType.IsFloat() {
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

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// streamer holds one worker's buffers.
type streamer struct {
	mbuf, bbuf, rbuf []byte
	mf, bf, sf       []float64
	bytes            map[string]int64
}

const pieceElems = 1 << 20

func newStreamer() *streamer {
	return &streamer{rbuf: make([]byte, ckpt.DefaultBufSize), bytes: map[string]int64{}}
}

// acc accumulates one tensor's statistics over pieces fed in element order
// (or in any order when sequential is false, which only the hash needs).
type acc struct {
	ts  *TensorScan
	sha hash.Hash
	// next is the element the hash expects next.
	next     int64
	nonZero  bool
	baseNZ   bool
	posIdx   int
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
	if src != nil && sequentialChunks(src) {
		// One pass driven by the source: its runs arrive in element order,
		// so the model and base ranges are read once, in order.
		chunks := sortedChunks(src)
		for _, c := range chunks {
			err := ckpt.WalkChunk(src, c, s.rbuf, func(dst int64, sb []byte) error {
				k := int64(len(sb) / src.DType.Size())
				s.bytes["source"] += int64(len(sb))
				return s.feed(a, msr, bsr, dst, k, sb, src.DType)
			})
			if err != nil {
				return err
			}
		}
	} else {
		for off := int64(0); off < n; off += pieceElems {
			k := min(pieceElems, n-off)
			if err := s.feed(a, msr, bsr, off, k, nil, dtype.Invalid); err != nil {
				return err
			}
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

// toF64 widens little-endian floats.
func toF64(dst []float64, src []byte, d dtype.DType) {
	le := binary.LittleEndian
	switch d {
	case dtype.F32:
		for i := range dst {
			dst[i] = float64(math.Float32frombits(le.Uint32(src[4*i:])))
		}
	case dtype.BF16:
		for i := range dst {
			dst[i] = float64(dtype.F32FromBF16(le.Uint16(src[2*i:])))
		}
	case dtype.F16:
		for i := range dst {
			dst[i] = float64(dtype.F32FromF16(le.Uint16(src[2*i:])))
		}
	case dtype.F64:
		for i := range dst {
			dst[i] = math.Float64frombits(le.Uint64(src[8*i:]))
		}
	}
}

// feed reads k model (and base) elements at off and folds them, and the
// source run sb when given, into a.
func (s *streamer) feed(a *acc, msr, bsr *io.SectionReader, off, k int64, sb []byte, sd dtype.DType) error {
	ts := a.ts
	if off != a.next {
		return fmt.Errorf("tensor %s: internal error: piece at %d, expected %d", ts.Name, off, a.next)
	}
	ms := int64(ts.DType.Size())
	s.mbuf = grow(s.mbuf, int(k*ms))
	if _, err := msr.ReadAt(s.mbuf, off*ms); err != nil {
		return fmt.Errorf("tensor %s: reading model: %w", ts.Name, err)
	}
	s.bytes["model"] += k * ms
	a.sha.Write(s.mbuf)
	a.next = off + k
	s.mf = growF(s.mf, int(k))
	toF64(s.mf, s.mbuf, ts.DType)
	var bf []float64
	var bb []byte
	if bsr != nil {
		bs := int64(ts.BaseDType.Size())
		s.bbuf = grow(s.bbuf, int(k*bs))
		if _, err := bsr.ReadAt(s.bbuf, off*bs); err != nil {
			return fmt.Errorf("tensor %s: reading base: %w", ts.Name, err)
		}
		s.bytes["base"] += k * bs
		bb = s.bbuf
		s.bf = growF(s.bf, int(k))
		toF64(s.bf, s.bbuf, ts.BaseDType)
		bf = s.bf
	}
	for i, m := range s.mf {
		switch {
		case math.IsNaN(m):
			ts.NaN++
		case math.IsInf(m, 0):
			ts.Inf++
		}
		if m != 0 {
			a.nonZero = true
		}
		if bf != nil {
			b := bf[i]
			if b != 0 {
				a.baseNZ = true
			}
			d := m - b
			if math.IsNaN(m) || math.IsNaN(b) {
				if math.IsNaN(m) != math.IsNaN(b) {
					ts.Changed++
				}
			} else if m != b || (ts.DType == ts.BaseDType && !bitsEqual(s.mbuf, bb, i, int(ms))) {
				ts.Changed++
			}
			if !math.IsNaN(d) && !math.IsInf(d, 0) {
				ts.DiffSq += d * d
				ts.MaxAbsDiff = math.Max(ts.MaxAbsDiff, math.Abs(d))
			}
			if !math.IsNaN(b) && !math.IsInf(b, 0) {
				ts.BaseSq += b * b
			}
		}
		if !math.IsNaN(m) && !math.IsInf(m, 0) {
			ts.ModelSq += m * m
		}
	}
	for a.posIdx < len(ts.samplePos) && ts.samplePos[a.posIdx] < off+k {
		i := ts.samplePos[a.posIdx] - off
		ts.sample[a.posIdx] = float32(s.mf[i])
		if bf != nil {
			ts.baseSample[a.posIdx] = float32(bf[i])
		}
		a.posIdx++
	}
	if sb != nil {
		s.compareSourceF(a, s.mbuf, s.mf, sb, sd)
	}
	return nil
}

func bitsEqual(a, b []byte, i, size int) bool {
	for j := i * size; j < (i+1)*size; j++ {
		if a[j] != b[j] {
			return false
		}
	}
	return true
}

// compareSource reads the model range for a source run (second-pass path).
func (s *streamer) compareSource(a *acc, msr *io.SectionReader, off, k int64, sb []byte, sd dtype.DType) error {
	ms := int64(a.ts.DType.Size())
	mb := make([]byte, k*ms)
	if _, err := msr.ReadAt(mb, off*ms); err != nil {
		return fmt.Errorf("tensor %s: reading model: %w", a.ts.Name, err)
	}
	mf := make([]float64, k)
	toF64(mf, mb, a.ts.DType)
	s.compareSourceF(a, mb, mf, sb, sd)
	return nil
}

// compareSourceF checks that every model element is the exact cast of the
// source element to the model's dtype.
func (s *streamer) compareSourceF(a *acc, mb []byte, mf []float64, sb []byte, sd dtype.DType) {
	ts := a.ts
	k := len(mf)
	md := ts.DType
	ms := md.Size()
	s.sf = growF(s.sf, k)
	toF64(s.sf, sb, sd)
	exp := grow(nil, k*ms)
	if _, err := dtype.Convert(exp, md, sb[:k*sd.Size()], sd); err != nil {
		ts.Differing += int64(k)
		return
	}
	for i := 0; i < k; i++ {
		m, x := mf[i], s.sf[i]
		mbits := elemBits(mb, i, ms)
		ebits := elemBits(exp, i, ms)
		if math.IsNaN(m) || math.IsNaN(x) {
			if math.IsNaN(m) != math.IsNaN(x) {
				ts.Differing++
				ts.MaxULP = math.MaxInt64
			}
			ts.RelErrHist[0]++
			continue
		}
		if mbits != ebits {
			ts.Differing++
			if u := ulpDistance(mbits, ebits, ms); u > ts.MaxULP {
				ts.MaxULP = u
			}
		}
		rel := 0.0
		if m != x {
			rel = math.Abs(m-x) / math.Max(math.Abs(x), math.SmallestNonzeroFloat64)
			if math.IsInf(x, 0) || math.IsInf(m, 0) {
				rel = math.Inf(1)
			}
		}
		if rel > ts.MaxRelErr {
			ts.MaxRelErr = rel
		}
		ts.RelErrHist[histBucket(rel)]++
	}
}

// histBucket: 0 exact; k in 1..9 for [1e-(11-k), 1e-(10-k)); 10 for ≥ 1e-1.
func histBucket(rel float64) int {
	if rel == 0 {
		return 0
	}
	for k := 1; k <= 9; k++ {
		if rel < math.Pow(10, float64(k-10)) {
			return k
		}
	}
	return 10
}

func elemBits(b []byte, i, size int) uint64 {
	switch size {
	case 2:
		return uint64(binary.LittleEndian.Uint16(b[2*i:]))
	case 4:
		return uint64(binary.LittleEndian.Uint32(b[4*i:]))
	case 8:
		return binary.LittleEndian.Uint64(b[8*i:])
	}
	return 0
}

// ulpDistance counts representable values between two floats of the same
// width, via the sign-magnitude → ordered-integer mapping.
func ulpDistance(a, b uint64, size int) int64 {
	sign := uint64(1) << (8*size - 1)
	ord := func(x uint64) int64 {
		if x&sign != 0 {
			return -int64(x &^ sign)
		}
		return int64(x)
	}
	d := ord(a) - ord(b)
	if d < 0 {
		d = -d
	}
	return d
}
