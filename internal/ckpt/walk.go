package ckpt

import (
	"fmt"
	"hash/crc32"
	"io"
	"sort"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// DefaultBufSize is the scratch size Walk callers use when they have no
// better figure: large enough for sequential disk throughput, small enough
// that a few per core stay well under the memory budget.
const DefaultBufSize = 8 << 20

// WalkChunk streams chunk c of tensor t. fn receives consecutive runs of the
// chunk's elements as little-endian bytes of t.DType, with the row-major
// element index in the global tensor where each run starts. At most len(buf)
// bytes are read at a time; fn must not keep src. The storage's CRC-32 is
// checked (while streaming when the view reads the storage front to back,
// by a separate pass otherwise) before WalkChunk returns nil.
func WalkChunk(t *Tensor, c *Chunk, buf []byte, fn func(dstElem int64, src []byte) error) error {
	if c.Volume() == 0 {
		return nil
	}
	r, err := WalkPart(t, c, Part{0, c.Volume()}, buf, fn)
	if err != nil {
		return err
	}
	return CheckParts(t, c, []PartResult{r}, buf)
}

// Part is a contiguous range of a chunk: its elements [Lo, Hi) in the
// chunk's row-major order. Parts of one chunk can be walked by different
// goroutines, so that one huge chunk does not leave the other cores idle.
type Part struct{ Lo, Hi int64 }

// SplitChunk cuts chunk c into parts of at most maxElems elements (one part
// when it is smaller).
func SplitChunk(c *Chunk, maxElems int64) []Part {
	n := c.Volume()
	if maxElems <= 0 || n <= maxElems {
		return []Part{{0, n}}
	}
	var ps []Part
	for lo := int64(0); lo < n; lo += maxElems {
		ps = append(ps, Part{lo, min(lo+maxElems, n)})
	}
	return ps
}

// PartResult is what CheckParts needs to verify a chunk's storage CRC from
// its parts.
type PartResult struct {
	Part
	// Streamed is true when the part read storage bytes [Lo, Hi)·esize in
	// order (the view is the whole storage, contiguous); CRC is then their
	// CRC-32.
	Streamed bool
	CRC      uint32
	// HasCRC and Want come from the view.
	HasCRC bool
	Want   uint32
	Where  string
}

// WalkPart streams part p of chunk c as WalkChunk streams the whole chunk,
// and returns what CheckParts needs to verify the CRC once every part is
// done.
func WalkPart(t *Tensor, c *Chunk, p Part, buf []byte, fn func(dstElem int64, src []byte) error) (PartResult, error) {
	res := PartResult{Part: p}
	if p.Lo < 0 || p.Hi > c.Volume() || p.Lo > p.Hi {
		return res, fmt.Errorf("ckpt: part [%d,%d) of a chunk of %d elements", p.Lo, p.Hi, c.Volume())
	}
	if p.Lo == p.Hi {
		return res, nil
	}
	v, err := c.Open()
	if err != nil {
		return res, err
	}
	res.HasCRC, res.Want, res.Where = v.HasCRC, v.CRC32, v.Where
	esize := int64(t.DType.Size())
	if len(buf) < int(esize) {
		return res, fmt.Errorf("ckpt: scratch buffer of %d bytes is too small", len(buf))
	}
	if err := checkView(t, c, v); err != nil {
		return res, err
	}
	n := len(v.Size)
	// Inner dims that are contiguous in the storage.
	srcK := 0
	want := int64(1)
	for d := n - 1; d >= 0; d-- {
		if v.Size[d] != 1 && v.Stride[d] != want {
			break
		}
		want *= v.Size[d]
		srcK++
	}
	// Inner dims that are contiguous in the destination: every dim inside
	// the run but its outermost must be full.
	dstK := 0
	for d := n - 1; d >= 0; d-- {
		dstK++
		if c.Sizes[d] != t.Shape[d] {
			break
		}
	}
	k := min(srcK, dstK)
	run := volume(v.Size[n-k:])
	gstride := make([]int64, n)
	s := int64(1)
	for d := n - 1; d >= 0; d-- {
		gstride[d] = s
		s *= t.Shape[d]
	}
	outer := v.Size[:n-k]
	res.Streamed = v.HasCRC && k == n && v.Offset == 0 && volume(v.Size)*esize == v.StorageLen
	maxElems := int64(len(buf)) / esize
	idx := make([]int64, len(outer))
	for r := p.Lo / run; r*run < p.Hi; r++ {
		// The run's outer index, row-major.
		q := r
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d] = q % outer[d]
			q /= outer[d]
		}
		srcE := v.Offset
		dstE := int64(0)
		for d := 0; d < n; d++ {
			var i int64
			if d < len(idx) {
				i = idx[d]
			}
			srcE += i * v.Stride[d]
			dstE += (c.Offsets[d] + i) * gstride[d]
		}
		from, to := max(p.Lo-r*run, 0), min(p.Hi-r*run, run)
		for done := from; done < to; {
			m := min(to-done, maxElems)
			b := buf[:m*esize]
			if _, err := v.R.ReadAt(b, (srcE+done)*esize); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return res, fmt.Errorf("%w: tensor %q: reading %s: %v", ErrCorrupt, t.Name, v.Where, err)
			}
			if res.Streamed {
				res.CRC = crc32.Update(res.CRC, crc32.IEEETable, b)
			}
			if v.BigEndian {
				dtype.SwapBytes(b, int(esize))
			}
			if err := fn(dstE+done, b); err != nil {
				return res, err
			}
			done += m
		}
	}
	return res, nil
}

// CheckParts verifies chunk c's storage CRC-32 from the results of walking
// all its parts: streamed parts' CRCs are combined in order; otherwise (a
// strided view) the storage is read once more to compute it.
func CheckParts(t *Tensor, c *Chunk, rs []PartResult, buf []byte) error {
	if len(rs) == 0 || !rs[0].HasCRC {
		return nil
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Lo < rs[j].Lo })
	esize := int64(t.DType.Size())
	var crc uint32
	at := int64(0)
	streamed := true
	for _, r := range rs {
		if !r.Streamed || r.Lo != at {
			streamed = false
			break
		}
		crc = CombineCRC(crc, r.CRC, (r.Hi-r.Lo)*esize)
		at = r.Hi
	}
	if !streamed || at != c.Volume() {
		v, err := c.Open()
		if err != nil {
			return err
		}
		if crc, err = StorageCRC(v, buf); err != nil {
			return err
		}
	}
	if crc != rs[0].Want {
		return fmt.Errorf("%w: tensor %q: %s: CRC-32 %08x, archive says %08x", ErrCorrupt, t.Name, rs[0].Where, crc, rs[0].Want)
	}
	return nil
}

// CombineCRC returns the CRC-32 (IEEE) of the concatenation A‖B from crcA,
// crcB and len(B): appending len2 zero bytes to A is a linear map over
// GF(2), applied by repeated squaring of the one-zero-bit operator.
func CombineCRC(crcA, crcB uint32, len2 int64) uint32 {
	if len2 <= 0 {
		return crcA
	}
	var even, odd [32]uint32
	odd[0] = 0xedb88320 // the reflected IEEE polynomial: one zero bit
	row := uint32(1)
	for i := 1; i < 32; i++ {
		odd[i] = row
		row <<= 1
	}
	gf2Square(&even, &odd) // two zero bits
	gf2Square(&odd, &even) // four zero bits
	for {
		gf2Square(&even, &odd) // one zero byte, then 4, 16, … as len2 is consumed
		if len2&1 != 0 {
			crcA = gf2Times(&even, crcA)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
		gf2Square(&odd, &even)
		if len2&1 != 0 {
			crcA = gf2Times(&odd, crcA)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
	}
	return crcA ^ crcB
}

func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat *[32]uint32) {
	for i := range square {
		square[i] = gf2Times(mat, mat[i])
	}
}

// StorageCRC reads a view's whole storage and returns its CRC-32.
func StorageCRC(v *View, buf []byte) (uint32, error) {
	sr := io.NewSectionReader(v.R, 0, v.StorageLen)
	h := crc32.NewIEEE()
	if _, err := io.CopyBuffer(h, sr, buf); err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrCorrupt, v.Where, err)
	}
	return h.Sum32(), nil
}

func checkView(t *Tensor, c *Chunk, v *View) error {
	if v.DType != t.DType {
		return fmt.Errorf("%w: tensor %q: %s holds %v, metadata says %v", ErrCorrupt, t.Name, v.Where, v.DType, t.DType)
	}
	if len(v.Size) != len(c.Sizes) || len(v.Stride) != len(v.Size) {
		return fmt.Errorf("%w: tensor %q: %s has shape %v (stride %v), chunk is %v", ErrCorrupt, t.Name, v.Where, v.Size, v.Stride, c.Sizes)
	}
	for d := range v.Size {
		if v.Size[d] != c.Sizes[d] {
			return fmt.Errorf("%w: tensor %q: %s has shape %v, chunk is %v", ErrCorrupt, t.Name, v.Where, v.Size, c.Sizes)
		}
	}
	esize := int64(t.DType.Size())
	if v.Offset < 0 {
		return fmt.Errorf("%w: tensor %q: %s: negative storage offset %d", ErrCorrupt, t.Name, v.Where, v.Offset)
	}
	// Last element's position, with overflow checks, must be inside the storage.
	last := v.Offset
	for d := range v.Size {
		if v.Stride[d] == 0 && v.Size[d] > 1 {
			// An expanded (broadcast) view: a tiny storage could stand for
			// an arbitrarily large tensor. Weights are never saved so.
			return fmt.Errorf("%w: tensor %q: %s: expanded view (stride 0 over %d elements in dim %d)", ErrCorrupt, t.Name, v.Where, v.Size[d], d)
		}
		if v.Stride[d] < 0 {
			return fmt.Errorf("%w: tensor %q: %s: negative stride %v", ErrCorrupt, t.Name, v.Where, v.Stride)
		}
		if v.Size[d] > 0 {
			step, err := CheckedVolume([]int64{v.Size[d] - 1, v.Stride[d]}, 0)
			if err != nil || last > (1<<62)-step {
				return fmt.Errorf("%w: tensor %q: %s: size %v with stride %v overflows", ErrCorrupt, t.Name, v.Where, v.Size, v.Stride)
			}
			last += step
		}
	}
	if last >= v.StorageLen/esize || (last+1)*esize > v.StorageLen {
		return fmt.Errorf("%w: tensor %q: %s: view (offset %d, size %v, stride %v) reaches element %d of a storage of %d bytes",
			ErrCorrupt, t.Name, v.Where, v.Offset, v.Size, v.Stride, last, v.StorageLen)
	}
	return nil
}
