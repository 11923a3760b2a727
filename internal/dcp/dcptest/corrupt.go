package dcptest

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/ckptgate/ckptgate/internal/dcp"
	"github.com/ckptgate/ckptgate/internal/pickle"
)

// Corruption damages a copy of a DCP fixture run in one named way.
type Corruption struct {
	Name string
	// Want is a substring of the error that opening the damaged checkpoint
	// and streaming all its tensors must end with.
	Want string
	// Apply damages the checkpoint directory dir in place.
	Apply func(dir string) error
}

// Corruptions apply to any of the DCP fixture runs (DCPRuns). Each must
// make reading fail with an error that matches ckpt.ErrCorrupt and names
// the file at fault.
var Corruptions = []Corruption{
	{"truncated-item", "extends past the end of the file", truncateItem},
	{"missing-rank-file", "data files the metadata references are missing", removeRank1},
	{"metadata-missing", "checkpoint incomplete", removeFile(".metadata")},
	{"metadata-truncated", "malformed pickle", truncateMetadata},
	{"metadata-tmp-only", "save crashed while finishing", renameMetadataTmp},
	{"forbidden-global", "os.system is not in the allowlist", forbiddenGlobal},
	{"path-escape", "not plain names inside the checkpoint directory", escapePath},
	{"crc-mismatch", "CRC-32", flipDataByte},
	{"overlapping-chunks", "overlap", overlapChunks},
	{"out-of-bounds-chunk", "lies outside shape", outOfBoundsChunk},
	{"dtype-mismatch", "metadata says", dtypeMismatch},
	{"shape-mismatch", "has shape", shapeMismatch},
	{"missing-item", "has no storage_data entry", missingItem},
	{"item-past-eof", "extends past the end of the file", itemPastEOF},
	{"empty-directory", "checkpoint incomplete", emptyDir},
	{"optimizer-only", "contains optimizer state, not weights", optimizerOnly},
	{"duplicate-after-cleaning", "both name tensor", duplicateAfterCleaning},
	{"dcp-safetensors", "SAFETENSORS serialization format is not supported", safetensorsItem},
	{"unknown-transform", "unsupported transform", unknownTransform},
	{"zstd-bomb", "decodes to more than", zstdBomb},
}

// itemRef is a non-empty chunk of a model tensor and its item.
type itemRef struct {
	key   string
	meta  *dcp.TensorMeta
	chunk dcp.ChunkMeta
	item  dcp.Item
}

// modelItems lists the items of the model's non-empty chunks in metadata
// order. The model group is found from planner_data as the reader does.
func modelItems(dir string) ([]itemRef, *dcp.Metadata, error) {
	p := filepath.Join(dir, ".metadata")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	m, err := dcp.ParseMetadata(b, p)
	if err != nil {
		return nil, nil, err
	}
	var refs []itemRef
	for _, e := range m.Entries {
		if e.Tensor == nil {
			continue
		}
		if path := m.PlannerData[e.Key]; len(path) > 1 && path[0] != "model" {
			continue
		}
		for _, c := range e.Tensor.Chunks {
			if volume(c.Sizes) == 0 {
				continue
			}
			it, ok := m.Items[dcp.KeyOf(e.Key, c.Offsets)]
			if !ok {
				return nil, nil, fmt.Errorf("%s: no item for %s at %v", p, e.Key, c.Offsets)
			}
			refs = append(refs, itemRef{key: e.Key, meta: e.Tensor, chunk: c, item: it})
		}
	}
	if len(refs) == 0 {
		return nil, nil, fmt.Errorf("%s: no model items", p)
	}
	return refs, m, nil
}

func volume(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

func removeFile(name string) func(string) error {
	return func(dir string) error { return os.Remove(filepath.Join(dir, name)) }
}

// truncateItem cuts 100 bytes off the data file whose last model item ends
// latest, as a partial copy would.
func truncateItem(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	best := refs[0].item
	for _, r := range refs {
		if r.item.Offset+r.item.Length > best.Offset+best.Length {
			best = r.item
		}
	}
	return os.Truncate(filepath.Join(dir, best.RelativePath), best.Offset+best.Length-100)
}

// removeRank1 deletes rank 1's data files.
func removeRank1(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "__1_*.distcp"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("%s: no rank 1 files (%v)", dir, err)
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	return nil
}

func truncateMetadata(dir string) error {
	p := filepath.Join(dir, ".metadata")
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	return os.Truncate(p, st.Size()/2)
}

func renameMetadataTmp(dir string) error {
	return os.Rename(filepath.Join(dir, ".metadata"), filepath.Join(dir, ".metadata.tmp"))
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// forbiddenGlobal makes storage_meta the result of os.system("…"), the
// classic pickle payload.
func forbiddenGlobal(dir string) error {
	return EditMetadata(dir, func(root *pickle.Object) error {
		payload := &pickle.Object{Class: &pickle.Class{Module: "os", Name: "system"}, Args: pickle.Tuple{"touch /tmp/ckptgate-pwned"}}
		return setField(root, "storage_meta", payload)
	})
}

// escapePath points the first model item at ../<its file>.
func escapePath(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	r := refs[0]
	return editItem(dir, r.key, r.chunk.Offsets, func(info *pickle.Object) error {
		return setField(info, "relative_path", "../"+r.item.RelativePath)
	})
}

// flipDataByte inverts one byte of the tensor data (the data/0 record) of
// the first model item, leaving the zip's CRC as torch wrote it.
func flipDataByte(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	it := refs[0].item
	f, err := os.OpenFile(filepath.Join(dir, it.RelativePath), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := zip.NewReader(io.NewSectionReader(f, it.Offset, it.Length), it.Length)
	if err != nil {
		return err
	}
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "/data/0") {
			off, err := zf.DataOffset()
			if err != nil {
				return err
			}
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, it.Offset+off); err != nil {
				return err
			}
			b[0] ^= 0xFF
			_, err = f.WriteAt(b, it.Offset+off)
			return err
		}
	}
	return fmt.Errorf("%s: item at %d has no data/0 record", it.RelativePath, it.Offset)
}

// multiChunk returns the first model tensor with at least two non-empty
// chunks.
func multiChunk(refs []itemRef) (itemRef, itemRef, error) {
	for i := 0; i+1 < len(refs); i++ {
		for j := i + 1; j < len(refs); j++ {
			if refs[i].key == refs[j].key {
				return refs[i], refs[j], nil
			}
		}
	}
	return itemRef{}, itemRef{}, fmt.Errorf("no tensor with two non-empty chunks")
}

// overlapChunks grows the first chunk of a sharded tensor by one row, into
// the next chunk; its offsets (and so its item) stay.
func overlapChunks(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	a, b, err := multiChunk(refs)
	if err != nil {
		return err
	}
	if a.chunk.Offsets[0] > b.chunk.Offsets[0] {
		a = b
	}
	sizes := slices.Clone(a.chunk.Sizes)
	sizes[0]++
	return editChunk(dir, a.key, a.chunk.Offsets, "sizes", sizes)
}

// outOfBoundsChunk grows the last chunk of a sharded tensor past the
// tensor's end.
func outOfBoundsChunk(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	a, b, err := multiChunk(refs)
	if err != nil {
		return err
	}
	if b.chunk.Offsets[0] < a.chunk.Offsets[0] {
		b = a
	}
	sizes := slices.Clone(b.chunk.Sizes)
	sizes[0] = b.meta.Size[0] - b.chunk.Offsets[0] + 1
	return editChunk(dir, b.key, b.chunk.Offsets, "sizes", sizes)
}

// dtypeMismatch changes the metadata dtype of the first model tensor
// (bf16 ↔ fp16, fp32 → fp16); its items still hold the original dtype.
func dtypeMismatch(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	key := refs[0].key
	return editTensor(dir, key, func(tsm *pickle.Object) error {
		props, _ := tsm.Attr("properties")
		po, ok := props.(*pickle.Object)
		if !ok {
			return fmt.Errorf("%s: properties is a %s", key, pickle.TypeName(props))
		}
		st, ok := po.State.(pickle.Tuple)
		if !ok || len(st) < 5 {
			return fmt.Errorf("%s: TensorProperties state is a %s", key, pickle.TypeName(po.State))
		}
		old, _ := st[0].(*pickle.Class)
		name := "float16"
		if old != nil && old.Name == "float16" {
			name = "bfloat16"
		}
		st = slices.Clone(st)
		st[0] = &pickle.Class{Module: "torch", Name: name}
		po.State = st
		return nil
	})
}

// shapeMismatch points a chunk's storage_data entry at the item of a chunk
// of the same dtype and another shape.
func shapeMismatch(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	for _, a := range refs {
		for _, b := range refs {
			if a.meta.DType == b.meta.DType && len(a.chunk.Sizes) == len(b.chunk.Sizes) && !slices.Equal(a.chunk.Sizes, b.chunk.Sizes) {
				return editItem(dir, a.key, a.chunk.Offsets, func(info *pickle.Object) error {
					if err := setField(info, "offset", b.item.Offset); err != nil {
						return err
					}
					if err := setField(info, "relative_path", b.item.RelativePath); err != nil {
						return err
					}
					return setField(info, "length", b.item.Length)
				})
			}
		}
	}
	return fmt.Errorf("%s: no two chunks of one dtype and different shapes", dir)
}

// missingItem removes the storage_data entry of the first model item.
func missingItem(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	r := refs[0]
	return EditMetadata(dir, func(root *pickle.Object) error {
		sd, err := dictField(root, "storage_data")
		if err != nil {
			return err
		}
		out := pickle.NewDict()
		for _, e := range sd.Entries() {
			if !isIndex(e.Key, r.key, r.chunk.Offsets) {
				if err := out.Set(e.Key, e.Value); err != nil {
					return err
				}
			}
		}
		if out.Len() == sd.Len() {
			return fmt.Errorf("no storage_data entry for %s", r.key)
		}
		return setField(root, "storage_data", out)
	})
}

// itemPastEOF makes the first model item one byte longer than its file.
func itemPastEOF(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	r := refs[0]
	st, err := os.Stat(filepath.Join(dir, r.item.RelativePath))
	if err != nil {
		return err
	}
	return editItem(dir, r.key, r.chunk.Offsets, func(info *pickle.Object) error {
		return setField(info, "length", st.Size()-r.item.Offset+1)
	})
}

// optimizerOnly moves every tensor into the optim group in planner_data,
// as if the directory held only optimizer state (accelerate's optimizer_0).
func optimizerOnly(dir string) error {
	return EditMetadata(dir, func(root *pickle.Object) error {
		pd, err := dictField(root, "planner_data")
		if err != nil {
			return err
		}
		sdm, err := dictField(root, "state_dict_metadata")
		if err != nil {
			return err
		}
		for _, e := range sdm.Entries() {
			if o, ok := e.Value.(*pickle.Object); ok && o.Class.Name == "TensorStorageMetadata" {
				key := e.Key.(string)
				if err := pd.Set(key, pickle.Tuple{"optim", "state", key, "exp_avg"}); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// duplicateAfterCleaning renames, in planner_data, the second model tensor
// to the first one's FQN with an _orig_mod. infix, which the reader strips.
func duplicateAfterCleaning(dir string) error {
	refs, m, err := modelItems(dir)
	if err != nil {
		return err
	}
	first := refs[0].key
	var second string
	for _, r := range refs {
		if r.key != first {
			second = r.key
			break
		}
	}
	path := slices.Clone(m.PlannerData[first])
	if len(path) == 0 || second == "" {
		return fmt.Errorf("%s: no planner_data for %s", dir, first)
	}
	last := len(path) - 1
	path[last] = "_orig_mod." + fmt.Sprint(path[last])
	return EditMetadata(dir, func(root *pickle.Object) error {
		pd, err := dictField(root, "planner_data")
		if err != nil {
			return err
		}
		return pd.Set(second, pickle.Tuple(path))
	})
}

// safetensorsItem overwrites the first model item of a data file with the
// start of a safetensors blob, what DCP's SAFETENSORS serialization puts
// in its files.
func safetensorsItem(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	first := refs[0].item
	for _, r := range refs {
		if r.item.RelativePath == first.RelativePath && r.item.Offset < first.Offset {
			first = r.item
		}
	}
	header := `{"__metadata__":{"format":"pt"}}`
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	f, err := os.OpenFile(filepath.Join(dir, first.RelativePath), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt(b, first.Offset)
	return err
}

// unknownTransform gives the first model item a transform no torch
// release defines.
func unknownTransform(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	r := refs[0]
	return editItem(dir, r.key, r.chunk.Offsets, func(info *pickle.Object) error {
		return setField(info, "transform_descriptors", &pickle.List{Items: []any{"stream.lz4/1"}})
	})
}

// zstdBomb appends to a data file a zstd stream that decodes to far more
// than the first model item's chunk can hold, and points the item at it.
func zstdBomb(dir string) error {
	refs, _, err := modelItems(dir)
	if err != nil {
		return err
	}
	r := refs[0]
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return err
	}
	bomb := enc.EncodeAll(make([]byte, 4<<20), nil)
	enc.Close()
	p := filepath.Join(dir, r.item.RelativePath)
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(bomb); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return editItem(dir, r.key, r.chunk.Offsets, func(info *pickle.Object) error {
		if err := setField(info, "offset", st.Size()); err != nil {
			return err
		}
		if err := setField(info, "length", int64(len(bomb))); err != nil {
			return err
		}
		return setField(info, "transform_descriptors", &pickle.List{Items: []any{"stream.zstd/1"}})
	})
}

// setField sets a dataclass field in an object's BUILD state.
func setField(o *pickle.Object, name string, v any) error {
	st, ok := o.State.(*pickle.Dict)
	if !ok {
		return fmt.Errorf("%s has no field dict", o.Class)
	}
	return st.Set(name, v)
}

func dictField(o *pickle.Object, name string) (*pickle.Dict, error) {
	v, _ := o.Attr(name)
	d, ok := v.(*pickle.Dict)
	if !ok {
		return nil, fmt.Errorf("%s.%s is a %s", o.Class, name, pickle.TypeName(v))
	}
	return d, nil
}

// sizeDims reads a recorded torch.Size(...) object.
func sizeDims(v any) ([]int64, bool) {
	o, ok := v.(*pickle.Object)
	if !ok || !o.Class.Is("torch", "Size") || len(o.Args) != 1 {
		return nil, false
	}
	t, ok := o.Args[0].(pickle.Tuple)
	if !ok {
		return nil, false
	}
	dims := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok {
			return nil, false
		}
		dims[i] = n
	}
	return dims, true
}

// newSize is a fresh torch.Size(dims), of the class like holds.
func newSize(like any, dims []int64) *pickle.Object {
	t := make(pickle.Tuple, len(dims))
	for i, d := range dims {
		t[i] = d
	}
	return &pickle.Object{Class: like.(*pickle.Object).Class, Args: pickle.Tuple{t}}
}

// isIndex reports whether a storage_data key is MetadataIndex(fqn, offsets).
func isIndex(k any, fqn string, offsets []int64) bool {
	o, ok := k.(*pickle.Object)
	if !ok {
		return false
	}
	f, _ := o.Attr("fqn")
	off, _ := o.Attr("offset")
	dims, ok := sizeDims(off)
	return f == fqn && ok && slices.Equal(dims, offsets)
}

// editItem edits the _StorageInfo of (fqn, offsets).
func editItem(dir, fqn string, offsets []int64, edit func(info *pickle.Object) error) error {
	return EditMetadata(dir, func(root *pickle.Object) error {
		sd, err := dictField(root, "storage_data")
		if err != nil {
			return err
		}
		for _, e := range sd.Entries() {
			if isIndex(e.Key, fqn, offsets) {
				info, ok := e.Value.(*pickle.Object)
				if !ok {
					return fmt.Errorf("storage_data[%s] is a %s", fqn, pickle.TypeName(e.Value))
				}
				return edit(info)
			}
		}
		return fmt.Errorf("no storage_data entry for %s at %v", fqn, offsets)
	})
}

// editTensor edits the TensorStorageMetadata of key.
func editTensor(dir, key string, edit func(tsm *pickle.Object) error) error {
	return EditMetadata(dir, func(root *pickle.Object) error {
		sdm, err := dictField(root, "state_dict_metadata")
		if err != nil {
			return err
		}
		v, _ := sdm.Get(key)
		tsm, ok := v.(*pickle.Object)
		if !ok {
			return fmt.Errorf("state_dict_metadata[%s] is a %s", key, pickle.TypeName(v))
		}
		return edit(tsm)
	})
}

// editChunk replaces field ("offsets" or "sizes") of key's chunk at
// offsets with a fresh torch.Size (sizes may be shared through the memo).
func editChunk(dir, key string, offsets []int64, field string, dims []int64) error {
	return editTensor(dir, key, func(tsm *pickle.Object) error {
		cv, _ := tsm.Attr("chunks")
		chunks, ok := cv.(*pickle.List)
		if !ok {
			return fmt.Errorf("%s.chunks is a %s", key, pickle.TypeName(cv))
		}
		for _, c := range chunks.Items {
			co, ok := c.(*pickle.Object)
			if !ok {
				continue
			}
			off, _ := co.Attr("offsets")
			if d, ok := sizeDims(off); ok && slices.Equal(d, offsets) {
				old, _ := co.Attr(field)
				return setField(co, field, newSize(old, dims))
			}
		}
		return fmt.Errorf("%s has no chunk at %v", key, offsets)
	})
}
