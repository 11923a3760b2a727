package dcp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/pickle"
	"github.com/ckptgate/ckptgate/internal/torchzip"
)

// Metadata is what a DCP .metadata (or rank-local __R.metadata) pickle
// says: every saved key with its chunks, and where each chunk's item lies.
type Metadata struct {
	// Entries are state_dict_metadata in the pickle's order.
	Entries []Entry
	// PlannerData maps each key to the path of its value in the saved
	// (nested) state dict, e.g. "model.x" → ["model", "x"]; elements are
	// string or int64. Nil when the pickle has none or it is not of that
	// form (custom planners); PlannerNote then says why.
	PlannerData map[string][]any
	PlannerNote string
	// Items maps (key, chunk offsets) to the item's place.
	Items map[ItemKey]Item
	// Version is the DCP format version ("1.0.0"), empty in older files.
	Version string
}

// Entry is one key of state_dict_metadata.
type Entry struct {
	Key string
	// Tensor is nil for a bytes entry (BytesStorageMetadata).
	Tensor *TensorMeta
}

// TensorMeta is a TensorStorageMetadata: the global tensor and its chunks.
type TensorMeta struct {
	DType  dtype.DType
	Size   []int64
	Chunks []ChunkMeta
}

// ChunkMeta is a ChunkStorageMetadata: one saved box.
type ChunkMeta struct {
	Offsets, Sizes []int64
}

// Item is a _StorageInfo: where one item's bytes are.
type Item struct {
	RelativePath string
	Offset       int64
	Length       int64
	// Transforms are the transform descriptors in decode order
	// ("stream.zstd/1"); nil when the item is stored as is.
	Transforms []string
}

// ItemKey is a MetadataIndex without its index hint: a key and the chunk
// offsets. Bytes items have no offsets (Python None), which differs from
// the empty offsets of a 0-d tensor.
type ItemKey struct {
	FQN        string
	Offsets    string
	HasOffsets bool
}

// KeyOf returns the ItemKey of the chunk at offsets (nil for bytes items).
func KeyOf(fqn string, offsets []int64) ItemKey {
	if offsets == nil {
		return ItemKey{FQN: fqn}
	}
	var b strings.Builder
	for i, o := range offsets {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(o, 10))
	}
	return ItemKey{FQN: fqn, Offsets: b.String(), HasOffsets: true}
}

// maxDims bounds a tensor's rank.
const maxDims = 64

// Globals of the .metadata allowlist that the decoder compares against.
const (
	modMetadata = "torch.distributed.checkpoint.metadata"
	modShard    = "torch.distributed._shard.sharded_tensor.metadata"
	modFS       = "torch.distributed.checkpoint.filesystem"
)

// strided is what torch.serialization._get_layout("torch.strided") gives.
type strided struct{}

// allowlist is exactly the globals a .metadata may name (checkpoint-formats
// §3.5); classes are plain records filled by BUILD, and only torch.Size,
// _get_layout, the memory-format enums and the pathlib classes may be
// called.
var allowlist = func() pickle.Allowlist {
	a := pickle.NewAllowlist(
		pickle.Instance(modMetadata, "Metadata"),
		pickle.Instance(modMetadata, "TensorStorageMetadata"),
		pickle.Instance(modMetadata, "BytesStorageMetadata"),
		pickle.Instance(modMetadata, "ChunkStorageMetadata"),
		pickle.Instance(modMetadata, "MetadataIndex"),
		pickle.Instance(modMetadata, "TensorProperties"),
		pickle.Instance(modMetadata, "StorageMeta"),
		pickle.Instance(modShard, "TensorProperties"),
		pickle.Instance(modFS, "_StorageInfo"),
		pickle.Func(modMetadata, "_MEM_FORMAT_ENCODING", memFormat),
		pickle.Func(modMetadata, "MEM_FORMAT_ENCODING", memFormat),
		pickle.Func(modShard, "MEM_FORMAT_ENCODING", memFormat),
		pickle.Func("torch", "Size", torchSize),
		pickle.Func("torch.serialization", "_get_layout", func(args pickle.Tuple) (any, error) {
			if len(args) != 1 || args[0] != "torch.strided" {
				return nil, fmt.Errorf("tensor layout %v: only torch.strided tensors are supported", args)
			}
			return strided{}, nil
		}),
		pickle.OrderedDict(),
	)
	a.Add(torchzip.DTypeGlobals()...)
	for _, m := range []string{"pathlib", "pathlib._local"} {
		for _, n := range []string{"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"} {
			a.Add(pickle.Func(m, n, pathParts))
		}
	}
	return a
}()

// memFormat is the memory-format enum, REDUCE(cls, (int,)).
func memFormat(args pickle.Tuple) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("memory format enum called with %d arguments", len(args))
	}
	n, ok := args[0].(int64)
	if !ok {
		return nil, fmt.Errorf("memory format enum of a %s", pickle.TypeName(args[0]))
	}
	return n, nil
}

// torchSize is torch.Size((d0, d1, …)); it rebuilds to []int64.
func torchSize(args pickle.Tuple) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("torch.Size called with %d arguments, want 1", len(args))
	}
	t, ok := args[0].(pickle.Tuple)
	if !ok {
		return nil, fmt.Errorf("torch.Size of a %s, want a tuple", pickle.TypeName(args[0]))
	}
	if len(t) > maxDims {
		return nil, fmt.Errorf("torch.Size of %d dimensions, at most %d supported", len(t), maxDims)
	}
	dims := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("torch.Size element %d is a %s, want a non-negative int", i, pickle.TypeName(x))
		}
		dims[i] = n
	}
	return dims, nil
}

// pathParts is a pathlib path rebuilt from its parts; the value (the
// saving machine's checkpoint_id) is informational only.
func pathParts(args pickle.Tuple) (any, error) {
	parts := make([]string, len(args))
	for i, a := range args {
		s, ok := a.(string)
		if !ok {
			return nil, fmt.Errorf("path part %d is a %s", i, pickle.TypeName(a))
		}
		parts[i] = s
	}
	return strings.Join(parts, "/"), nil
}

// ParseMetadata decodes a .metadata pickle. name is the file, for errors.
func ParseMetadata(data []byte, name string) (*Metadata, error) {
	v, err := pickle.Unpickle(data, &pickle.Config{Globals: allowlist})
	if err != nil {
		h := ""
		if fe := (*pickle.ForbiddenGlobalError)(nil); errors.As(err, &fe) && fe.Global.Name == "_HFStorageInfo" {
			h = "; this is a Hugging Face storage-layout checkpoint, not a FileSystemWriter DCP directory"
		}
		return nil, fmt.Errorf("%s: %w%s", name, err, h)
	}
	d := &decoder{name: name}
	m := d.metadata(v)
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// decoder turns the unpickled object graph into Metadata, keeping the
// first error (with the path of the offending field).
type decoder struct {
	name string
	err  error
}

func (d *decoder) fail(path, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s: %s", ckpt.ErrCorrupt, d.name, path, fmt.Sprintf(format, args...))
	}
}

// object checks that v is an instance of one of the classes (module,
// name pairs flattened) and returns it.
func (d *decoder) object(v any, path string, classes ...string) *pickle.Object {
	o, ok := v.(*pickle.Object)
	if ok {
		for i := 0; i+1 < len(classes); i += 2 {
			if o.Class.Is(classes[i], classes[i+1]) {
				return o
			}
		}
	}
	d.fail(path, "found a %s, want %s", pickle.TypeName(v), classes[len(classes)-1])
	return nil
}

// attr returns a field of a dataclass instance filled by BUILD(dict).
func (d *decoder) attr(o *pickle.Object, path, field string, required bool) (any, bool) {
	if o == nil || d.err != nil {
		return nil, false
	}
	st, ok := o.State.(*pickle.Dict)
	if !ok {
		d.fail(path, "%s state is a %s, want a dict of fields", o.Class, pickle.TypeName(o.State))
		return nil, false
	}
	v, ok := st.Get(field)
	if !ok && required {
		d.fail(path, "%s has no field %q", o.Class, field)
	}
	return v, ok
}

func (d *decoder) dict(v any, path string) *pickle.Dict {
	m, ok := v.(*pickle.Dict)
	if !ok {
		d.fail(path, "found a %s, want a dict", pickle.TypeName(v))
	}
	return m
}

func (d *decoder) str(v any, path string) string {
	s, ok := v.(string)
	if !ok {
		d.fail(path, "found a %s, want a str", pickle.TypeName(v))
	}
	return s
}

func (d *decoder) nonNegInt(v any, path string) int64 {
	n, ok := v.(int64)
	if !ok || n < 0 {
		d.fail(path, "found %s, want a non-negative int", describe(v))
	}
	return n
}

func (d *decoder) dims(v any, path string) []int64 {
	s, ok := v.([]int64)
	if !ok {
		d.fail(path, "found a %s, want a torch.Size", pickle.TypeName(v))
	}
	return s
}

func (d *decoder) metadata(v any) *Metadata {
	root := d.object(v, "root", modMetadata, "Metadata")
	m := &Metadata{Items: map[ItemKey]Item{}}
	sdm, _ := d.attr(root, "Metadata", "state_dict_metadata", true)
	entries := d.dict(sdm, "state_dict_metadata")
	if d.err != nil {
		return nil
	}
	for _, e := range entries.Entries() {
		key := d.str(e.Key, "state_dict_metadata key")
		path := fmt.Sprintf("state_dict_metadata[%q]", key)
		o := d.object(e.Value, path, modMetadata, "BytesStorageMetadata", modMetadata, "TensorStorageMetadata")
		if d.err != nil {
			return nil
		}
		if o.Class.Name == "BytesStorageMetadata" {
			m.Entries = append(m.Entries, Entry{Key: key})
			continue
		}
		m.Entries = append(m.Entries, Entry{Key: key, Tensor: d.tensor(o, path)})
	}
	if sd, ok := d.attr(root, "Metadata", "storage_data", true); ok {
		d.storageData(sd, m)
	}
	if pd, ok := d.attr(root, "Metadata", "planner_data", false); ok && d.err == nil {
		m.PlannerData, m.PlannerNote = plannerData(pd)
	} else {
		m.PlannerNote = "the metadata has no planner_data"
	}
	if ver, ok := d.attr(root, "Metadata", "version", false); ok && ver != nil {
		m.Version = d.str(ver, "version")
	}
	if d.err != nil {
		return nil
	}
	return m
}

func (d *decoder) tensor(o *pickle.Object, path string) *TensorMeta {
	t := &TensorMeta{}
	props, _ := d.attr(o, path, "properties", true)
	po := d.object(props, path+".properties", modShard, "TensorProperties", modMetadata, "TensorProperties")
	if d.err != nil {
		return nil
	}
	// TensorProperties.__getstate__ gives a tuple (dtype, layout,
	// requires_grad, memory_format, pin_memory); newer torch may append
	// fields, older may have pickled the __dict__.
	var dt, layout any
	switch st := po.State.(type) {
	case pickle.Tuple:
		if len(st) < 5 {
			d.fail(path+".properties", "state tuple has %d elements, want at least 5", len(st))
			return nil
		}
		dt, layout = st[0], st[1]
	case *pickle.Dict:
		dt, _ = st.Get("dtype")
		layout, _ = st.Get("layout")
	default:
		d.fail(path+".properties", "state is a %s", pickle.TypeName(po.State))
		return nil
	}
	var ok bool
	if t.DType, ok = torchzip.DTypeOf(dt); !ok {
		d.fail(path+".properties.dtype", "found %s, want a torch dtype", describe(dt))
	}
	if _, ok := layout.(strided); !ok && d.err == nil {
		d.fail(path+".properties.layout", "found %s, want torch.strided", describe(layout))
	}
	size, _ := d.attr(o, path, "size", true)
	t.Size = d.dims(size, path+".size")
	chunks, _ := d.attr(o, path, "chunks", true)
	l, ok := chunks.(*pickle.List)
	if !ok {
		d.fail(path+".chunks", "found a %s, want a list", pickle.TypeName(chunks))
		return nil
	}
	for i, c := range l.Items {
		cp := fmt.Sprintf("%s.chunks[%d]", path, i)
		co := d.object(c, cp, modMetadata, "ChunkStorageMetadata")
		off, _ := d.attr(co, cp, "offsets", true)
		sz, _ := d.attr(co, cp, "sizes", true)
		ch := ChunkMeta{Offsets: d.dims(off, cp+".offsets"), Sizes: d.dims(sz, cp+".sizes")}
		if d.err != nil {
			return nil
		}
		if len(ch.Offsets) != len(t.Size) || len(ch.Sizes) != len(t.Size) {
			d.fail(cp, "offsets %v and sizes %v for a tensor of shape %v", ch.Offsets, ch.Sizes, t.Size)
			return nil
		}
		t.Chunks = append(t.Chunks, ch)
	}
	return t
}

func (d *decoder) storageData(v any, m *Metadata) {
	sd := d.dict(v, "storage_data")
	if d.err != nil {
		return
	}
	for i, e := range sd.Entries() {
		path := fmt.Sprintf("storage_data entry %d", i)
		ko := d.object(e.Key, path+" key", modMetadata, "MetadataIndex")
		fqnV, _ := d.attr(ko, path, "fqn", true)
		fqn := d.str(fqnV, path+".fqn")
		var key ItemKey
		if off, ok := d.attr(ko, path, "offset", false); ok && off != nil {
			key = KeyOf(fqn, d.dims(off, path+".offset"))
		} else {
			key = KeyOf(fqn, nil)
		}
		path = fmt.Sprintf("storage_data[%q @ %s]", fqn, key.Offsets)
		so := d.object(e.Value, path, modFS, "_StorageInfo")
		rp, _ := d.attr(so, path, "relative_path", true)
		ov, _ := d.attr(so, path, "offset", true)
		lv, _ := d.attr(so, path, "length", true)
		it := Item{
			RelativePath: d.str(rp, path+".relative_path"),
			Offset:       d.nonNegInt(ov, path+".offset"),
			Length:       d.nonNegInt(lv, path+".length"),
		}
		if tv, ok := d.attr(so, path, "transform_descriptors", false); ok && tv != nil {
			l, ok := tv.(*pickle.List)
			if !ok {
				d.fail(path+".transform_descriptors", "found a %s, want a list", pickle.TypeName(tv))
				return
			}
			for j, x := range l.Items {
				it.Transforms = append(it.Transforms, d.str(x, fmt.Sprintf("%s.transform_descriptors[%d]", path, j)))
			}
		}
		if d.err != nil {
			return
		}
		if _, dup := m.Items[key]; dup {
			d.fail(path, "listed twice")
			return
		}
		m.Items[key] = it
	}
}

// plannerData decodes DefaultSavePlanner's planner_data, a dict from key
// to the tuple of path elements (str, or int for list indices).
func plannerData(v any) (map[string][]any, string) {
	if v == nil {
		return nil, "planner_data is None"
	}
	d, ok := v.(*pickle.Dict)
	if !ok {
		return nil, fmt.Sprintf("planner_data is a %s, not the default planner's dict", pickle.TypeName(v))
	}
	out := make(map[string][]any, d.Len())
	for _, e := range d.Entries() {
		k, ok := e.Key.(string)
		t, ok2 := e.Value.(pickle.Tuple)
		if !ok || !ok2 || len(t) == 0 {
			return nil, fmt.Sprintf("planner_data maps %s to a %s, not a path tuple", describe(e.Key), pickle.TypeName(e.Value))
		}
		path := make([]any, len(t))
		for i, x := range t {
			switch x := x.(type) {
			case string, int64:
				path[i] = x
			default:
				return nil, fmt.Sprintf("planner_data path of %q has a %s element", k, pickle.TypeName(x))
			}
		}
		out[k] = path
	}
	return out, ""
}

// describe names a value in a message without printing it whole.
func describe(v any) string {
	if _, ok := v.(strided); ok {
		return "torch.strided"
	}
	return pickle.Describe(v)
}
