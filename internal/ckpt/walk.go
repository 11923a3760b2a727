package ckpt

import (
	"fmt"
	"hash/crc32"
	"io"

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
	v, err := c.Open()
	if err != nil {
		return err
	}
	esize := int64(t.DType.Size())
	if len(buf) < int(esize) {
		return fmt.Errorf("ckpt: scratch buffer of %d bytes is too small", len(buf))
	}
	if err := checkView(t, c, v); err != nil {
		return err
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
	idx := make([]int64, len(outer))
	streaming := v.HasCRC && k == n && v.Offset == 0 && volume(v.Size)*esize == v.StorageLen
	var crc uint32
	maxElems := int64(len(buf)) / esize
	for {
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
		for done := int64(0); done < run; {
			m := min(run-done, maxElems)
			b := buf[:m*esize]
			if _, err := v.R.ReadAt(b, (srcE+done)*esize); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("%w: tensor %q: reading %s: %v", ErrCorrupt, t.Name, v.Where, err)
			}
			if streaming {
				crc = crc32.Update(crc, crc32.IEEETable, b)
			}
			if v.BigEndian {
				dtype.SwapBytes(b, int(esize))
			}
			if err := fn(dstE+done, b); err != nil {
				return err
			}
			done += m
		}
		// Advance the outer index (row-major).
		d := len(idx) - 1
		for ; d >= 0; d-- {
			idx[d]++
			if idx[d] < outer[d] {
				break
			}
			idx[d] = 0
		}
		if d < 0 {
			break
		}
	}
	if v.HasCRC {
		if !streaming {
			if crc, err = StorageCRC(v, buf); err != nil {
				return err
			}
		}
		if crc != v.CRC32 {
			return fmt.Errorf("%w: tensor %q: %s: CRC-32 %08x, archive says %08x", ErrCorrupt, t.Name, v.Where, crc, v.CRC32)
		}
	}
	return nil
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
