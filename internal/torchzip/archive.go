// Package torchzip reads torch.save archives (the zip format of torch ≥ 1.6)
// through byte ranges: whole .pt files, and the tensor items that DCP embeds
// in its .distcp files. data.pkl is interpreted by the restricted unpickler
// with only the tensor-rebuild globals allowed; storages are never read
// here, but described as byte ranges of the archive (with the CRC-32 of the
// central directory) for ckpt.WalkChunk to stream.
package torchzip

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// ErrFormat is wrapped by errors about input that is not a torch.save zip
// archive torch ≥ 1.6 would load, or that holds something ckptgate does not
// convert. It matches ckpt.ErrCorrupt.
var ErrFormat error = formatError{}

type formatError struct{}

func (formatError) Error() string { return "not a readable torch.save archive" }
func (formatError) Unwrap() error { return ckpt.ErrCorrupt }

// Bounds on the small records read into memory.
const (
	// MaxPickle bounds data.pkl: the pickle of a 90B model's state dict is
	// a few MB.
	MaxPickle = 256 << 20
	maxSmall  = 64
	// maxVersion is torch's kMaxSupportedFileFormatVersion.
	maxVersion = 10
)

// Archive is an opened torch.save archive.
type Archive struct {
	r     io.ReaderAt
	size  int64
	where string
	// Prefix is the archive's top-level folder ("archive" for archives
	// written to a stream, as DCP items are; the file's base name
	// otherwise).
	Prefix string
	// BigEndian is set when the byteorder record says "big".
	BigEndian bool
	// Version is the serialization format version record.
	Version int
	records map[string]*zip.File
}

// Open reads the central directory of the archive held by r[0:size] and its
// small records (byteorder, version). where names the archive in errors
// ("model.pt", "__0_0.distcp item at 4096+1577"). Nothing else is read.
func Open(r io.ReaderAt, size int64, where string) (*Archive, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: %s: negative size %d", ErrFormat, where, size)
	}
	head := make([]byte, min(size, 512))
	if _, err := r.ReadAt(head, 0); err != nil && !(err == io.EOF && len(head) == 0) {
		return nil, fmt.Errorf("%w: %s: reading the first %d bytes: %v", ErrFormat, where, len(head), err)
	}
	if err := Sniff(head); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: bad zip central directory: %v", ErrFormat, where, err)
	}
	a := &Archive{r: r, size: size, where: where, records: map[string]*zip.File{}}
	if len(zr.File) == 0 {
		return nil, fmt.Errorf("%w: %s: the zip archive has no records", ErrFormat, where)
	}
	// torch takes the prefix from the first record and requires every
	// record to share it (PyTorchStreamReader::init).
	prefix, _, ok := strings.Cut(zr.File[0].Name, "/")
	if !ok || prefix == "" {
		return nil, fmt.Errorf("%w: %s: first record %q is not inside an archive folder", ErrFormat, where, zr.File[0].Name)
	}
	a.Prefix = prefix
	for _, f := range zr.File {
		name, ok := strings.CutPrefix(f.Name, prefix+"/")
		if !ok {
			return nil, fmt.Errorf("%w: %s: record %q is outside the archive folder %q", ErrFormat, where, f.Name, prefix)
		}
		if _, dup := a.records[name]; dup {
			return nil, fmt.Errorf("%w: %s: record %q appears twice", ErrFormat, where, f.Name)
		}
		a.records[name] = f
	}
	if _, ok := a.records["data.pkl"]; !ok {
		return nil, fmt.Errorf("%w: %s: no %s/data.pkl record", ErrFormat, where, prefix)
	}
	if err := a.readByteorder(); err != nil {
		return nil, err
	}
	if err := a.readVersion(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Archive) readByteorder() error {
	if _, ok := a.records["byteorder"]; !ok {
		// torch's default load endianness when the record is absent
		// (archives from before the record existed) is little.
		return nil
	}
	b, err := a.readSmall("byteorder", maxSmall)
	if err != nil {
		return err
	}
	switch string(b) {
	case "little":
	case "big":
		a.BigEndian = true
	default:
		return fmt.Errorf("%w: %s: byteorder record is %q, want \"little\" or \"big\"", ErrFormat, a.where, b)
	}
	return nil
}

func (a *Archive) readVersion() error {
	name := "version"
	if _, ok := a.records[name]; !ok {
		name = ".data/version"
	}
	if _, ok := a.records[name]; !ok {
		return fmt.Errorf("%w: %s: no version record (%s/version or %s/.data/version)", ErrFormat, a.where, a.Prefix, a.Prefix)
	}
	b, err := a.readSmall(name, maxSmall)
	if err != nil {
		return err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || v < 1 || v > maxVersion {
		return fmt.Errorf("%w: %s: %s/%s is %q, want a format version from 1 to %d", ErrFormat, a.where, a.Prefix, name, b, maxVersion)
	}
	a.Version = v
	return nil
}

// Record is where a stored record's bytes lie in the archive.
type Record struct {
	// Name is the record's full name ("archive/data/0").
	Name string
	// Offset and Size locate its bytes in the archive.
	Offset, Size int64
	CRC32        uint32
}

// Record locates the record name (without the archive prefix). Records must
// be stored uncompressed, as torch writes them.
func (a *Archive) Record(name string) (Record, error) {
	f, ok := a.records[name]
	if !ok {
		return Record{}, fmt.Errorf("%w: %s: no record %s/%s", ErrFormat, a.where, a.Prefix, name)
	}
	if f.Method != zip.Store {
		return Record{}, fmt.Errorf("%w: %s: record %s is compressed (method %d); torch stores records uncompressed", ErrFormat, a.where, f.Name, f.Method)
	}
	if f.UncompressedSize64 != f.CompressedSize64 {
		return Record{}, fmt.Errorf("%w: %s: stored record %s has %d compressed and %d uncompressed bytes", ErrFormat, a.where, f.Name, f.CompressedSize64, f.UncompressedSize64)
	}
	off, err := f.DataOffset()
	if err != nil {
		return Record{}, fmt.Errorf("%w: %s: record %s: bad local header: %v", ErrFormat, a.where, f.Name, err)
	}
	if off < 0 || f.UncompressedSize64 > uint64(a.size) || off > a.size-int64(f.UncompressedSize64) {
		return Record{}, fmt.Errorf("%w: %s: record %s (%d bytes at %d) extends past the archive's %d bytes",
			ErrFormat, a.where, f.Name, f.UncompressedSize64, off, a.size)
	}
	return Record{Name: f.Name, Offset: off, Size: int64(f.UncompressedSize64), CRC32: f.CRC32}, nil
}

// readSmall reads a whole record of at most max bytes and checks its CRC.
func (a *Archive) readSmall(name string, max int64) ([]byte, error) {
	rec, err := a.Record(name)
	if err != nil {
		return nil, err
	}
	if rec.Size > max {
		return nil, fmt.Errorf("%w: %s: record %s has %d bytes, at most %d expected", ErrFormat, a.where, rec.Name, rec.Size, max)
	}
	b := make([]byte, rec.Size)
	if _, err := a.r.ReadAt(b, rec.Offset); err != nil && !(err == io.EOF && len(b) == 0) {
		return nil, fmt.Errorf("%w: %s: reading record %s: %v", ErrFormat, a.where, rec.Name, err)
	}
	if got := crc32.ChecksumIEEE(b); got != rec.CRC32 && rec.CRC32 != 0 {
		return nil, fmt.Errorf("%w: %s: record %s: CRC-32 %08x, central directory says %08x", ckpt.ErrCorrupt, a.where, rec.Name, got, rec.CRC32)
	}
	return b, nil
}

// Sniff classifies the first bytes of a file (up to 512 are used) and
// returns nil for a zip archive, else an ErrFormat error naming what the
// bytes look like: the containers torch < 1.6 wrote, gzip, or a
// safetensors blob (what DCP's SAFETENSORS serialization writes).
func Sniff(head []byte) error {
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return nil
	case bytes.HasPrefix(head, []byte("PYTORCH1")):
		return fmt.Errorf("%w: pre-release \"PYTORCH1\" format, not supported", ErrFormat)
	case bytes.HasPrefix(head, legacyMagic):
		return fmt.Errorf("%w: legacy torch.save format of torch < 1.6 (_use_new_zipfile_serialization=False), not supported; re-save it with a current torch", ErrFormat)
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return fmt.Errorf("%w: gzip-compressed file; decompress it first", ErrFormat)
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return fmt.Errorf("%w: tar archive (torch < 0.4 format), not supported", ErrFormat)
	case len(head) >= 9 && head[8] == '{' && binary.LittleEndian.Uint64(head) < 100_000_000:
		return fmt.Errorf("%w: a safetensors blob (8-byte header length and '{'), not a torch.save zip", ErrFormat)
	case len(head) == 0:
		return fmt.Errorf("%w: empty", ErrFormat)
	}
	n := min(len(head), 8)
	return fmt.Errorf("%w: starts with % x, not the zip signature 50 4b 03 04", ErrFormat, head[:n])
}

// legacyMagic is how a torch < 1.6 file starts: PROTO 2, then LONG1 of the
// magic number 0x1950a86a20f9469cfc6c.
var legacyMagic = []byte{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}

// errorsAs is errors.As returning the target.
func errorsAs[T error](err error) (T, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}
