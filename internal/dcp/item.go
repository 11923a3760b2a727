package dcp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/torchzip"
)

// zipSlack is what a torch.save archive of one tensor holds besides the
// tensor's bytes: records, headers, padding (an empty tensor's item is
// 1513 bytes). It bounds how far a zstd stream may decode.
const zipSlack = 64 << 10

// opener returns the Open function of a chunk: it reads the item's zip
// archive (decoding transforms first) and its data.pkl, and returns the
// tensor's view. The view's dtype and shape are the item's own, which
// ckpt.WalkChunk checks against the metadata's.
func (r *reader) opener(k modelKey, cm ChunkMeta, it Item) func() (*ckpt.View, error) {
	return func() (*ckpt.View, error) {
		path := filepath.Join(r.dir, it.RelativePath)
		where := fmt.Sprintf("%s item at %d+%d (%s chunk at %v)", path, it.Offset, it.Length, k.key, cm.Offsets)
		var ra io.ReaderAt = io.NewSectionReader(r.pool.reader(it.RelativePath), it.Offset, it.Length)
		size := it.Length
		if len(it.Transforms) > 0 {
			limit, err := ckpt.CheckedVolume(cm.Sizes, k.meta.DType.Size())
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ckpt.ErrCorrupt, where, err)
			}
			limit = limit*int64(k.meta.DType.Size()) + zipSlack
			b, err := decodeTransforms(ra, it, limit)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ckpt.ErrCorrupt, where, err)
			}
			ra, size = bytes.NewReader(b), int64(len(b))
		}
		a, err := torchzip.Open(ra, size, where)
		if err != nil {
			return nil, err
		}
		t, err := a.LoadTensor()
		if err != nil {
			return nil, err
		}
		return t.View(), nil
	}
}

// decodeTransforms applies an item's transform descriptors in list order
// (DCP stores them in decode order). Only stream.zstd with major version 1
// exists; the output is capped at limit bytes.
func decodeTransforms(r io.ReaderAt, it Item, limit int64) ([]byte, error) {
	var data []byte
	src := io.NewSectionReader(r, 0, it.Length)
	for i, desc := range it.Transforms {
		name, version, _ := strings.Cut(desc, "/")
		name, _, _ = strings.Cut(name, "@")
		major, _, _ := strings.Cut(version, ".")
		if name != "stream.zstd" || major != "1" {
			return nil, fmt.Errorf("unsupported transform %q (only \"stream.zstd/1\" is known)", desc)
		}
		var in io.Reader = src
		if i > 0 {
			in = bytes.NewReader(data)
		}
		out, err := unzstd(in, limit)
		if err != nil {
			return nil, fmt.Errorf("transform %q: %v", desc, err)
		}
		data = out
	}
	return data, nil
}

// unzstd decodes a zstd frame stream, refusing output beyond limit bytes
// (decompression bombs) and frames whose window exceeds it.
func unzstd(in io.Reader, limit int64) ([]byte, error) {
	// Torch's writer uses the library's default window (a few MB); the
	// window is capped so that a frame header cannot make the decoder
	// reserve more than the output may hold.
	window := uint64(min(max(limit, zstd.MinWindowSize), 1<<31))
	dec, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(limit)+1), zstd.WithDecoderMaxWindow(window))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(dec, limit+1))
	if n > limit || errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return nil, fmt.Errorf("decodes to more than %d bytes, the most a torch.save archive of this chunk can take", limit)
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
