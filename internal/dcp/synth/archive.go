package synth

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// A torch.save archive as torch 2.11's PyTorchStreamWriter (miniz in ZIP64
// mode) writes it to a stream (checkpoint-formats.md §5.1): records stored,
// each record's data 64-byte aligned by an "FB" extra field of 'Z' bytes,
// sizes and CRC-32 in a data descriptor after the data and in the central
// directory, then the ZIP64 end records and the classic one.

const (
	alignment = 64
	// nameHash is the first half of .data/serialization_id: torch's
	// combined hash of the record names, the same for every archive that
	// holds one storage (data.pkl, .format_version, .storage_alignment,
	// byteorder, data/0, version), as every item of the fixtures shows.
	nameHash uint64 = 15728199511854643026

	sigLocal      = 0x04034b50
	sigDescriptor = 0x08074b50
	sigCentral    = 0x02014b50
	sigZip64End   = 0x06064b50
	sigZip64Loc   = 0x07064b50
	sigEnd        = 0x06054b50
	flagUTF8      = 0x0800
	flagDescr     = 0x0008
	// zip64Made is "made by" of the ZIP64 end record: UNIX, version 3.0.
	zip64Made   = 0x031e
	zip64Needed = 45
)

// archiveWriter writes one archive to w, counting its bytes from 0.
type archiveWriter struct {
	w       *bufio.Writer
	at      int64
	records []zipRecord
	// crcChain is torch's hash_combine of the records' CRCs, the second
	// half of the serialization id.
	crcChain uint64
	err      error
}

type zipRecord struct {
	name   string
	offset int64 // of its local header
	size   int64
	crc    uint32
}

func (a *archiveWriter) put(b []byte) {
	if a.err != nil {
		return
	}
	_, a.err = a.w.Write(b)
	a.at += int64(len(b))
}

// begin writes a record's local header, padded so its data is aligned.
func (a *archiveWriter) begin(name string, size int64) error {
	if size >= math.MaxUint32 || a.at >= math.MaxUint32 {
		return fmt.Errorf("synth: record %s of %d bytes at %d needs ZIP64 fields, which the synthetic writer does not write", name, size, a.at)
	}
	full := "archive/" + name
	start := a.at + 30 + int64(len(full)) + 4
	pad := (alignment - start%alignment) % alignment
	flags := uint16(flagUTF8)
	if size > 0 {
		flags |= flagDescr
	}
	h := make([]byte, 0, 30+len(full)+4+int(pad))
	h = binary.LittleEndian.AppendUint32(h, sigLocal)
	h = binary.LittleEndian.AppendUint16(h, 0) // version needed
	h = binary.LittleEndian.AppendUint16(h, flags)
	h = append(h, make([]byte, 2+2+2+4+4+4)...) // method, time, date, crc, sizes: deferred
	h = binary.LittleEndian.AppendUint16(h, uint16(len(full)))
	h = binary.LittleEndian.AppendUint16(h, uint16(4+pad))
	h = append(h, full...)
	h = append(h, 'F', 'B')
	h = binary.LittleEndian.AppendUint16(h, uint16(pad))
	for range pad {
		h = append(h, 'Z')
	}
	a.records = append(a.records, zipRecord{name: full, offset: a.at, size: size})
	a.put(h)
	return a.err
}

// end writes the data descriptor of the record begun last.
func (a *archiveWriter) end(crc uint32) {
	r := &a.records[len(a.records)-1]
	r.crc = crc
	if r.size == 0 {
		// torch combines only the CRCs of records with data.
		return
	}
	a.crcChain = hashCombine(a.crcChain, uint64(crc))
	d := binary.LittleEndian.AppendUint32(nil, sigDescriptor)
	d = binary.LittleEndian.AppendUint32(d, crc)
	d = binary.LittleEndian.AppendUint32(d, uint32(r.size))
	d = binary.LittleEndian.AppendUint32(d, uint32(r.size))
	a.put(d)
}

// hashCombine is c10::hash_combine on 64-bit size_t.
func hashCombine(seed, v uint64) uint64 {
	return seed ^ (v + 0x9e3779b9 + (seed << 6) + (seed >> 2))
}

func (a *archiveWriter) small(name string, data []byte) {
	if err := a.begin(name, int64(len(data))); err != nil {
		return
	}
	a.put(data)
	a.end(crc32.ChecksumIEEE(data))
}

// finish writes the serialization id record and the directories.
func (a *archiveWriter) finish() error {
	a.small(".data/serialization_id", []byte(fmt.Sprintf("%020d%020d", nameHash, a.crcChain)))
	cdStart := a.at
	for _, r := range a.records {
		flags := uint16(flagUTF8)
		if r.size > 0 {
			flags |= flagDescr
		}
		c := binary.LittleEndian.AppendUint32(nil, sigCentral)
		c = binary.LittleEndian.AppendUint16(c, 0) // made by
		c = binary.LittleEndian.AppendUint16(c, 0) // needed
		c = binary.LittleEndian.AppendUint16(c, flags)
		c = append(c, 0, 0, 0, 0, 0, 0) // method, time, date
		c = binary.LittleEndian.AppendUint32(c, r.crc)
		c = binary.LittleEndian.AppendUint32(c, uint32(r.size))
		c = binary.LittleEndian.AppendUint32(c, uint32(r.size))
		c = binary.LittleEndian.AppendUint16(c, uint16(len(r.name)))
		c = append(c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) // extra, comment, disk, attributes
		c = binary.LittleEndian.AppendUint32(c, uint32(r.offset))
		c = append(c, r.name...)
		a.put(c)
	}
	cdSize := a.at - cdStart
	n := uint64(len(a.records))
	endAt := a.at
	e := binary.LittleEndian.AppendUint32(nil, sigZip64End)
	e = binary.LittleEndian.AppendUint64(e, 44)
	e = binary.LittleEndian.AppendUint16(e, zip64Made)
	e = binary.LittleEndian.AppendUint16(e, zip64Needed)
	e = append(e, 0, 0, 0, 0, 0, 0, 0, 0) // this disk, directory's disk
	e = binary.LittleEndian.AppendUint64(e, n)
	e = binary.LittleEndian.AppendUint64(e, n)
	e = binary.LittleEndian.AppendUint64(e, uint64(cdSize))
	e = binary.LittleEndian.AppendUint64(e, uint64(cdStart))
	e = binary.LittleEndian.AppendUint32(e, sigZip64Loc)
	e = binary.LittleEndian.AppendUint32(e, 0)
	e = binary.LittleEndian.AppendUint64(e, uint64(endAt))
	e = binary.LittleEndian.AppendUint32(e, 1)
	e = binary.LittleEndian.AppendUint32(e, sigEnd)
	e = append(e, 0, 0, 0, 0)
	e = binary.LittleEndian.AppendUint16(e, uint16(n))
	e = binary.LittleEndian.AppendUint16(e, uint16(n))
	e = binary.LittleEndian.AppendUint32(e, uint32(cdSize))
	e = binary.LittleEndian.AppendUint32(e, uint32(cdStart))
	e = binary.LittleEndian.AppendUint16(e, 0)
	a.put(e)
	return a.err
}

// storageClass is the typed storage class torch.save names for a dtype.
var storageClass = map[dtype.DType]string{
	dtype.F32: "FloatStorage", dtype.BF16: "BFloat16Storage", dtype.F16: "HalfStorage", dtype.F64: "DoubleStorage",
}

// dataPkl is data.pkl of torch.save(t) for a contiguous tensor of the given
// size on a storage of exactly its elements: _rebuild_tensor_v2(storage,
// 0, size, stride, False, OrderedDict()), pickle protocol 2.
func dataPkl(d dtype.DType, size []int64) []byte {
	numel := int64(1)
	for _, s := range size {
		numel *= s
	}
	// Contiguous strides, as torch computes them (a zero-sized dim counts
	// as one).
	stride := make([]int64, len(size))
	acc := int64(1)
	for i := len(size) - 1; i >= 0; i-- {
		stride[i] = acc
		acc *= max(size[i], 1)
	}
	ints := func(xs []int64) *pyTuple {
		t := &pyTuple{}
		for _, x := range xs {
			t.items = append(t.items, x)
		}
		return t
	}
	storage := &pyPers{pid: tuple(str("storage"), &pyGlobal{str("torch"), str(storageClass[d])}, str("0"), str("cpu"), numel)}
	hooks := &pyReduce{fn: &pyGlobal{str("collections"), str("OrderedDict")}, args: tuple()}
	rebuild := &pyReduce{
		fn:   &pyGlobal{str("torch._utils"), str("_rebuild_tensor_v2")},
		args: tuple(storage, int64(0), ints(size), ints(stride), false, hooks),
	}
	return dumps(rebuild, 2)
}

// writeItem writes torch.save(chunk) of a contiguous chunk of size
// elements of dtype d, streaming its data from fill (which fills a buffer
// with the next elements) through buf. It returns the archive's length.
func writeItem(w *bufio.Writer, d dtype.DType, size []int64, buf []byte, fill func(dst []byte, first int64)) (int64, error) {
	if _, ok := storageClass[d]; !ok {
		return 0, fmt.Errorf("synth: no torch storage class for %v", d)
	}
	a := &archiveWriter{w: w}
	a.small("data.pkl", dataPkl(d, size))
	a.small(".format_version", []byte("1"))
	a.small(".storage_alignment", []byte("64"))
	a.small("byteorder", []byte("little"))
	numel := int64(1)
	for _, s := range size {
		numel *= s
	}
	esize := int64(d.Size())
	if err := a.begin("data/0", numel*esize); err != nil {
		return 0, err
	}
	var crc uint32
	per := int64(len(buf)) / esize
	for at := int64(0); at < numel && a.err == nil; {
		k := min(per, numel-at)
		b := buf[:k*esize]
		fill(b, at)
		crc = crc32.Update(crc, crc32.IEEETable, b)
		a.put(b)
		at += k
	}
	a.end(crc)
	a.small("version", []byte("3\n"))
	if err := a.finish(); err != nil {
		return 0, err
	}
	return a.at, nil
}
