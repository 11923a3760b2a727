package verify

// The per-element statistics of the scan: folding model, base and source
// values into a tensor's accumulators, and the exact-cast comparison with
// the source.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

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

// elemF64 is element i of little-endian floats b, widened as toF64 does.
func elemF64(b []byte, i int, d dtype.DType) float64 {
	var one [1]float64
	es := d.Size()
	toF64(one[:], b[i*es:(i+1)*es], d)
	return one[0]
}

// foldBF16 is foldWithBase (foldModel when bb is nil) for bf16 model and
// base bytes, reading each element's bits once instead of widening whole
// pieces first; it computes the same values in the same order. For bf16,
// an exponent of all ones is Inf (mantissa 0) or NaN, and two non-NaN
// values differ exactly when their bits do. The loop's common case (both
// values finite) has no data-dependent branch.
func foldBF16(a *acc, mb, bb []byte) {
	ts := a.ts
	n := len(mb) / 2
	le := binary.LittleEndian
	nan, inf, modelSq := ts.NaN, ts.Inf, ts.ModelSq
	var modelOr, baseOr uint16 // non-zero when some value is (NaN included)
	widen := func(bits uint16) float64 { return float64(math.Float32frombits(uint32(bits) << 16)) }
	nonFinite := func(bits uint16) {
		if bits&0x7f != 0 {
			nan++
		} else {
			inf++
		}
	}
	if bb == nil {
		for i := 0; i < n; i++ {
			mbits := le.Uint16(mb[2*i:])
			modelOr |= mbits
			if mbits&0x7f80 != 0x7f80 {
				m := widen(mbits)
				modelSq += m * m
			} else {
				nonFinite(mbits)
			}
		}
		ts.NaN, ts.Inf, ts.ModelSq = nan, inf, modelSq
		a.nonZero = a.nonZero || modelOr&0x7fff != 0
		return
	}
	changed, diffSq, baseSq, maxAbs := ts.Changed, ts.DiffSq, ts.BaseSq, ts.MaxAbsDiff
	bb = bb[:2*n]
	for i := 0; i < n; i++ {
		mbits, bbits := le.Uint16(mb[2*i:]), le.Uint16(bb[2*i:])
		modelOr |= mbits
		baseOr |= bbits
		m, b := widen(mbits), widen(bbits)
		if mbits&0x7f80 != 0x7f80 && bbits&0x7f80 != 0x7f80 {
			var c int64
			if mbits != bbits {
				c = 1
			}
			changed += c
			d := m - b
			diffSq += d * d
			if d > maxAbs {
				maxAbs = d
			} else if -d > maxAbs {
				maxAbs = -d
			}
			baseSq += b * b
			modelSq += m * m
			continue
		}
		// An Inf or NaN on either side: no difference to sum.
		mNaN := mbits&0x7fff > 0x7f80
		bNaN := bbits&0x7fff > 0x7f80
		if mbits != bbits && !(mNaN && bNaN) {
			changed++
		}
		if bbits&0x7f80 != 0x7f80 {
			baseSq += b * b
		}
		if mbits&0x7f80 != 0x7f80 {
			modelSq += m * m
		} else {
			nonFinite(mbits)
		}
	}
	ts.NaN, ts.Inf, ts.ModelSq = nan, inf, modelSq
	ts.Changed, ts.DiffSq, ts.BaseSq, ts.MaxAbsDiff = changed, diffSq, baseSq, maxAbs
	a.nonZero = a.nonZero || modelOr&0x7fff != 0
	a.baseNZ = a.baseNZ || baseOr&0x7fff != 0
}

// foldModel counts NaN and infinite elements, notes a non-zero one and sums
// the squares of the finite ones. The loops below keep their sums in
// locals, in element order, so they give the same bits as one addition per
// element into the fields would; a value is finite when v-v == 0 (NaN and
// ±Inf give NaN) and NaN when v != v.
func foldModel(a *acc, mf []float64) {
	ts := a.ts
	nan, inf, modelSq, nonZero := ts.NaN, ts.Inf, ts.ModelSq, a.nonZero
	for _, m := range mf {
		if m-m == 0 {
			modelSq += m * m
		} else if m != m {
			nan++
		} else {
			inf++
		}
		if m != 0 {
			nonZero = true
		}
	}
	ts.NaN, ts.Inf, ts.ModelSq, a.nonZero = nan, inf, modelSq, nonZero
}

// foldWithBase is foldModel plus the comparison with the base: changed
// elements (NaN equal to NaN; with equal dtypes, values that differ only in
// their bits — which for non-NaN floats can only be +0 and -0 — count as
// changed), the squared norms of the difference and of the base, the
// largest |difference|.
func foldWithBase(a *acc, mf, bf []float64, sameDType bool) {
	ts := a.ts
	nan, inf, modelSq, nonZero := ts.NaN, ts.Inf, ts.ModelSq, a.nonZero
	changed, diffSq, baseSq, maxAbs, baseNZ := ts.Changed, ts.DiffSq, ts.BaseSq, ts.MaxAbsDiff, a.baseNZ
	for i, m := range mf {
		b := bf[i]
		if b != 0 {
			baseNZ = true
		}
		mNaN, bNaN := m != m, b != b
		if mNaN || bNaN {
			if mNaN != bNaN {
				changed++
			}
		} else if m != b || (sameDType && math.Signbit(m) != math.Signbit(b)) {
			changed++
		}
		if d := m - b; d-d == 0 {
			diffSq += d * d
			if ad := math.Abs(d); ad > maxAbs {
				maxAbs = ad
			}
		}
		if b-b == 0 {
			baseSq += b * b
		}
		if m-m == 0 {
			modelSq += m * m
		} else if mNaN {
			nan++
		} else {
			inf++
		}
		if m != 0 {
			nonZero = true
		}
	}
	ts.NaN, ts.Inf, ts.ModelSq, a.nonZero = nan, inf, modelSq, nonZero
	ts.Changed, ts.DiffSq, ts.BaseSq, ts.MaxAbsDiff, a.baseNZ = changed, diffSq, baseSq, maxAbs, baseNZ
}

// compareSource reads the model range for a source run (second-pass path).
func (s *streamer) compareSource(a *acc, msr *io.SectionReader, off, k int64, sb []byte, sd dtype.DType) error {
	ms := int64(a.ts.DType.Size())
	ss := int64(sd.Size())
	for done := int64(0); done < k; {
		n := min(pieceElems, k-done)
		s.mbuf = grow(s.mbuf, int(n*ms))
		if _, err := msr.ReadAt(s.mbuf, (off+done)*ms); err != nil {
			return fmt.Errorf("tensor %s: reading model: %w", a.ts.Name, err)
		}
		s.mf = growF(s.mf, int(n))
		toF64(s.mf, s.mbuf, a.ts.DType)
		s.compareSourceF(a, s.mbuf, s.mf, sb[done*ss:(done+n)*ss], sd)
		done += n
	}
	return nil
}

// compareSourceF checks that every model element is the exact cast of the
// source element to the model's dtype. mf are the model's values widened,
// or nil when the caller has not widened them.
func (s *streamer) compareSourceF(a *acc, mb []byte, mf []float64, sb []byte, sd dtype.DType) {
	ts := a.ts
	md := ts.DType
	ms := md.Size()
	k := len(sb) / sd.Size()
	if sd == md && bytes.Equal(mb[:k*ms], sb[:k*ms]) {
		// Every element is its source's bits: exact, relative error 0
		// (NaNs, equal by class, land in bucket 0 too).
		ts.RelErrHist[0] += int64(k)
		return
	}
	c := &srcTally{ms: ms, differing: ts.Differing, maxULP: ts.MaxULP, maxRel: ts.MaxRelErr}
	defer c.addTo(ts)
	if md == dtype.BF16 && sd == dtype.F32 {
		c.bf16FromF32(mb, sb[:4*k])
		return
	}
	if mf == nil {
		s.mf = growF(s.mf, k)
		toF64(s.mf, mb, md)
		mf = s.mf
	}
	s.sf = growF(s.sf, k)
	toF64(s.sf, sb, sd)
	s.exp = grow(s.exp, k*ms)
	exp := s.exp
	if _, err := dtype.Convert(exp, md, sb[:k*sd.Size()], sd); err != nil {
		c.differing += int64(k)
		return
	}
	for i := 0; i < k; i++ {
		c.elem(mf[i], s.sf[i], elemBits(mb, i, ms), elemBits(exp, i, ms))
	}
}

// srcTally accumulates a piece's comparison with the source in locals,
// added to the tensor's totals at the end.
type srcTally struct {
	ms                int
	differing, maxULP int64
	maxRel            float64
	hist              [11]int64
}

// elem compares model value m (bits mbits) with source value x, whose cast
// to the model's dtype has bits ebits.
func (c *srcTally) elem(m, x float64, mbits, ebits uint64) {
	if m != m || x != x {
		if (m != m) != (x != x) {
			c.differing++
			c.maxULP = math.MaxInt64
		}
		c.hist[0]++
		return
	}
	if mbits != ebits {
		c.differing++
		if u := ulpDistance(mbits, ebits, c.ms); u > c.maxULP {
			c.maxULP = u
		}
	}
	rel := 0.0
	if m != x {
		// math.Max and IsInf without their NaN cases (m and x are not
		// NaN here).
		ax := math.Abs(x)
		if ax < math.SmallestNonzeroFloat64 {
			ax = math.SmallestNonzeroFloat64
		}
		rel = math.Abs(m-x) / ax
		if x-x != 0 || m-m != 0 {
			rel = math.Inf(1)
		}
	}
	if rel > c.maxRel {
		c.maxRel = rel
	}
	c.hist[histBucket(rel)]++
}

// bf16FromF32 is elem over a bf16 model cast from an fp32 source (FSDP2's
// fp32 parameters), with the cast Convert makes, written out so that the
// common element (not NaN, rounded exactly) stays in registers: the same
// comparisons and the same arithmetic as elem.
func (c *srcTally) bf16FromF32(mb, sb []byte) {
	le := binary.LittleEndian
	n := len(sb) / 4
	mb = mb[:2*n]
	maxRel := c.maxRel
	// Two histograms, for even and odd elements, so that runs of elements
	// in one bucket do not wait on each other's increments.
	var hist [2][11]int64
	for i := 0; i < n; i++ {
		mbits := le.Uint16(mb[2*i:])
		xf := math.Float32frombits(le.Uint32(sb[4*i:]))
		m, x := float64(dtype.F32FromBF16(mbits)), float64(xf)
		ebits := dtype.BF16FromF32(xf)
		if m != m || x != x || mbits != ebits {
			c.maxRel = maxRel
			c.elem(m, x, uint64(mbits), uint64(ebits))
			maxRel = c.maxRel
			continue
		}
		rel := 0.0
		if m != x {
			ax := math.Abs(x)
			if ax < math.SmallestNonzeroFloat64 {
				ax = math.SmallestNonzeroFloat64
			}
			rel = math.Abs(m-x) / ax
			if x-x != 0 || m-m != 0 {
				rel = math.Inf(1)
			}
		}
		if rel > maxRel {
			maxRel = rel
		}
		hist[i&1][histBucket(rel)]++
	}
	c.maxRel = maxRel
	for b := range c.hist {
		c.hist[b] += hist[0][b] + hist[1][b]
	}
}

func (c *srcTally) addTo(ts *TensorScan) {
	ts.Differing, ts.MaxULP, ts.MaxRelErr = c.differing, c.maxULP, c.maxRel
	for i, n := range c.hist {
		ts.RelErrHist[i] += n
	}
}

// histBucket: 0 exact; k in 1..9 for [1e-(11-k), 1e-(10-k)); 10 for ≥ 1e-1
// (and NaN). Each binade holds at most one decade edge, so the bucket is
// the one of the binade's start, plus one at or past its edge.
func histBucket(rel float64) int {
	switch {
	case rel == 0:
		return 0
	case rel != rel:
		return 10
	}
	e := int(math.Float64bits(rel)>>52&0x7ff) - 1023
	switch {
	case e < histMinExp:
		return 1
	case e > histMaxExp:
		return 10
	}
	b := &histBinades[e-histMinExp]
	up := 0
	if rel >= b.edge { // a conditional move, not a branch
		up = 1
	}
	return b.bucket + up
}

// histEdges[k] is 10^(k-10) as math.Pow computes it.
var histEdges = func() (e [10]float64) {
	for k := 1; k <= 9; k++ {
		e[k] = math.Pow(10, float64(k-10))
	}
	return e
}()

// The binades [2^e, 2^(e+1)) that hold or follow an edge: from the one of
// 1e-9 (e = -30) to the one of 1e-1 (e = -4).
const histMinExp, histMaxExp = -30, -4

// histBinades[e-histMinExp] is the bucket of 2^e and the edge inside its
// binade (+Inf when none).
var histBinades = func() (t [histMaxExp - histMinExp + 1]struct {
	bucket int
	edge   float64
}) {
	for i := range t {
		lo := math.Ldexp(1, histMinExp+i)
		hi := 2 * lo
		t[i].bucket, t[i].edge = 10, math.Inf(1)
		for k := 1; k <= 9; k++ {
			if lo < histEdges[k] {
				t[i].bucket = k
				break
			}
		}
		for k := 1; k <= 9; k++ {
			if lo < histEdges[k] && histEdges[k] < hi {
				t[i].edge = histEdges[k]
			}
		}
	}
	return t
}()

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
