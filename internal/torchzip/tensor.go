package torchzip

import (
	"fmt"
	"io"
	"strings"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/pickle"
)

// maxDims bounds a tensor's rank; torch supports far fewer in practice.
const maxDims = 64

// Storage is one data/<key> record: the bytes of a storage that one or
// more tensors view.
type Storage struct {
	Key   string
	DType dtype.DType
	// Record locates the bytes in the archive.
	Record Record
	// untyped marks an UntypedStorage reference, whose numel counts bytes
	// and whose dtype comes from _rebuild_tensor_v3.
	untyped bool
}

// Tensor is a tensor as data.pkl rebuilds it: a strided view of a storage.
type Tensor struct {
	DType dtype.DType
	// Offset is the storage offset in elements.
	Offset       int64
	Size, Stride []int64
	Storage      *Storage
	archive      *Archive
}

// View returns the tensor as a ckpt.View reading the archive's bytes. Each
// call returns a new View; they share only the archive's io.ReaderAt.
func (t *Tensor) View() *ckpt.View {
	rec := t.Storage.Record
	return &ckpt.View{
		R:          io.NewSectionReader(t.archive.r, rec.Offset, rec.Size),
		StorageLen: rec.Size,
		DType:      t.DType,
		BigEndian:  t.archive.BigEndian,
		Offset:     t.Offset,
		Size:       append([]int64(nil), t.Size...),
		Stride:     append([]int64(nil), t.Stride...),
		CRC32:      rec.CRC32,
		// A writer with CRC computation disabled leaves 0; an empty
		// record's CRC is 0 anyway.
		HasCRC: rec.CRC32 != 0 || rec.Size == 0,
		Where:  t.archive.where + ", " + rec.Name,
	}
}

// storageDTypes maps torch's typed storage classes to their dtype.
var storageDTypes = map[string]dtype.DType{
	"FloatStorage":         dtype.F32,
	"DoubleStorage":        dtype.F64,
	"HalfStorage":          dtype.F16,
	"BFloat16Storage":      dtype.BF16,
	"LongStorage":          dtype.I64,
	"IntStorage":           dtype.I32,
	"ShortStorage":         dtype.I16,
	"CharStorage":          dtype.I8,
	"ByteStorage":          dtype.U8,
	"BoolStorage":          dtype.Bool,
	"ComplexFloatStorage":  dtype.C64,
	"ComplexDoubleStorage": dtype.C128,
}

// torchDTypes are the dtype globals (torch.<name>) a pickle may name.
var torchDTypes = []dtype.DType{
	dtype.F32, dtype.F16, dtype.BF16, dtype.F64, dtype.I8, dtype.U8, dtype.I16, dtype.I32, dtype.I64, dtype.Bool,
	dtype.C64, dtype.C128, dtype.U16, dtype.U32, dtype.U64,
	dtype.F8E4M3, dtype.F8E5M2, dtype.F8E4M3FNUZ, dtype.F8E5M2FNUZ, dtype.F8E8M0,
}

// DTypeOf returns the dtype a torch.<name> dtype global stands for.
func DTypeOf(v any) (dtype.DType, bool) {
	c, ok := v.(*pickle.Class)
	if !ok || c.Module != "torch" || c.Call != nil || c.New != nil {
		return dtype.Invalid, false
	}
	return dtype.ParseTorch(c.Name)
}

// DTypeGlobals returns the allowlist entries of the torch dtypes, shared by
// the DCP metadata reader.
func DTypeGlobals() []*pickle.Class {
	var cs []*pickle.Class
	for _, d := range torchDTypes {
		cs = append(cs, pickle.Value("torch", d.TorchName()))
	}
	return cs
}

// loader holds the state of one data.pkl interpretation.
type loader struct {
	a        *Archive
	storages map[string]*Storage
}

// allowlist is the set of globals a data.pkl may name.
func (l *loader) allowlist() pickle.Allowlist {
	a := pickle.NewAllowlist(
		pickle.OrderedDict(),
		pickle.Value("torch", "Tensor"),
		pickle.Value("torch.nn.parameter", "Parameter"),
		pickle.Value("torch.storage", "UntypedStorage"),
		pickle.Value("torch", "UntypedStorage"),
		pickle.Func("torch", "Size", rebuildSize),
		pickle.Func("torch._utils", "_rebuild_tensor_v2", l.rebuildV2),
		pickle.Func("torch._utils", "_rebuild_tensor_v3", l.rebuildV3),
		pickle.Func("torch._utils", "_rebuild_parameter", rebuildParameter),
		pickle.Func("torch._utils", "_rebuild_parameter_with_state", rebuildParameter),
		pickle.Func("torch._tensor", "_rebuild_from_type_v2", rebuildFromType),
	)
	a.Add(DTypeGlobals()...)
	for name := range storageDTypes {
		a.Add(pickle.Value("torch", name))
	}
	return a
}

// persistentLoad resolves ("storage", storage_type, key, location, numel).
func (l *loader) persistentLoad(pid any) (any, error) {
	t, ok := pid.(pickle.Tuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("%w: persistent id is a %s, want a 5-tuple (\"storage\", type, key, location, numel)", ErrFormat, describe(pid))
	}
	if s, _ := t[0].(string); s != "storage" {
		return nil, fmt.Errorf("%w: persistent id of kind %s, want \"storage\"", ErrFormat, describe(t[0]))
	}
	cls, ok := t[1].(*pickle.Class)
	if !ok {
		return nil, fmt.Errorf("%w: storage type is a %s", ErrFormat, describe(t[1]))
	}
	key, ok := t[2].(string)
	if !ok || key == "" {
		return nil, fmt.Errorf("%w: storage key is %s, want a non-empty str", ErrFormat, describe(t[2]))
	}
	if _, ok := t[3].(string); !ok {
		return nil, fmt.Errorf("%w: storage %s: location is a %s, want a str", ErrFormat, key, describe(t[3]))
	}
	numel, ok := t[4].(int64)
	if !ok || numel < 0 {
		return nil, fmt.Errorf("%w: storage %s: numel is %s, want a non-negative int", ErrFormat, key, describe(t[4]))
	}
	s := &Storage{Key: key}
	esize := int64(1)
	if cls.Name == "UntypedStorage" {
		s.untyped = true
	} else if d, ok := storageDTypes[cls.Name]; ok && cls.Module == "torch" {
		s.DType = d
		esize = int64(d.Size())
	} else {
		return nil, fmt.Errorf("%w: storage %s has type %s, not a storage class", ErrFormat, key, cls)
	}
	rec, err := l.a.Record("data/" + key)
	if err != nil {
		return nil, err
	}
	if _, err := ckpt.CheckedVolume([]int64{numel}, int(esize)); err != nil || numel*esize != rec.Size {
		return nil, fmt.Errorf("%w: storage %s (%s) declares %d elements of %d bytes, but record %s holds %d bytes",
			ErrFormat, key, cls, numel, esize, rec.Name, rec.Size)
	}
	s.Record = rec
	if prev, ok := l.storages[key]; ok {
		if prev.DType != s.DType || prev.untyped != s.untyped {
			return nil, fmt.Errorf("%w: storage %s referenced as %s and as %s", ErrFormat, key, prev.DType, s.DType)
		}
		return prev, nil
	}
	if l.storages == nil {
		l.storages = map[string]*Storage{}
	}
	l.storages[key] = s
	return s, nil
}

func rebuildSize(args pickle.Tuple) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("torch.Size called with %d arguments, want 1", len(args))
	}
	dims, err := ints(args[0], "torch.Size argument")
	if err != nil {
		return nil, err
	}
	return sizeTuple(dims), nil
}

// sizeTuple is what torch.Size(...) rebuilds to: the dims as a tuple of ints.
func sizeTuple(dims []int64) pickle.Tuple {
	t := make(pickle.Tuple, len(dims))
	for i, d := range dims {
		t[i] = d
	}
	return t
}

// rebuildV2 is torch._utils._rebuild_tensor_v2(storage, storage_offset,
// size, stride, requires_grad, backward_hooks[, metadata]).
func (l *loader) rebuildV2(args pickle.Tuple) (any, error) {
	if len(args) != 6 && len(args) != 7 {
		return nil, fmt.Errorf("_rebuild_tensor_v2 called with %d arguments, want 6 or 7", len(args))
	}
	s, ok := args[0].(*Storage)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor_v2: storage argument is a %s", describe(args[0]))
	}
	if s.untyped {
		return nil, fmt.Errorf("_rebuild_tensor_v2 of an UntypedStorage (%s): the dtype is unknown", s.Key)
	}
	var meta any
	if len(args) == 7 {
		meta = args[6]
	}
	return l.tensor(s, s.DType, args[1:6], meta)
}

// rebuildV3 is torch._utils._rebuild_tensor_v3(storage, storage_offset,
// size, stride, requires_grad, backward_hooks, dtype[, metadata]), used for
// the dtypes typed storages cannot express.
func (l *loader) rebuildV3(args pickle.Tuple) (any, error) {
	if len(args) != 7 && len(args) != 8 {
		return nil, fmt.Errorf("_rebuild_tensor_v3 called with %d arguments, want 7 or 8", len(args))
	}
	s, ok := args[0].(*Storage)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor_v3: storage argument is a %s", describe(args[0]))
	}
	d, ok := DTypeOf(args[6])
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor_v3: dtype argument is a %s", describe(args[6]))
	}
	if s.DType != dtype.Invalid && s.DType != d {
		// Typed storages have one dtype; torch.save refuses two dtypes
		// viewing one untyped storage.
		return nil, fmt.Errorf("_rebuild_tensor_v3: %s tensor on %s storage %s", d, s.DType, s.Key)
	}
	if s.untyped && s.Record.Size%int64(d.Size()) != 0 {
		return nil, fmt.Errorf("_rebuild_tensor_v3: storage %s of %d bytes is not a whole number of %s elements", s.Key, s.Record.Size, d)
	}
	var meta any
	if len(args) == 8 {
		meta = args[7]
	}
	return l.tensor(s, d, args[1:6], meta)
}

// tensor validates (storage_offset, size, stride, requires_grad,
// backward_hooks) and the optional metadata, and builds the Tensor.
func (l *loader) tensor(s *Storage, d dtype.DType, args pickle.Tuple, meta any) (*Tensor, error) {
	offset, ok := args[0].(int64)
	if !ok || offset < 0 {
		return nil, fmt.Errorf("tensor on storage %s: storage offset is %s, want a non-negative int", s.Key, describe(args[0]))
	}
	size, err := ints(args[1], "size")
	if err != nil {
		return nil, fmt.Errorf("tensor on storage %s: %v", s.Key, err)
	}
	stride, err := ints(args[2], "stride")
	if err != nil {
		return nil, fmt.Errorf("tensor on storage %s: %v", s.Key, err)
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("tensor on storage %s: size %v and stride %v differ in length", s.Key, size, stride)
	}
	if _, ok := args[3].(bool); !ok {
		return nil, fmt.Errorf("tensor on storage %s: requires_grad is a %s, want a bool", s.Key, describe(args[3]))
	}
	if _, ok := args[4].(*pickle.Dict); !ok && args[4] != nil {
		return nil, fmt.Errorf("tensor on storage %s: backward_hooks is a %s, want an OrderedDict", s.Key, describe(args[4]))
	}
	if err := checkMetadata(meta); err != nil {
		return nil, fmt.Errorf("tensor on storage %s: %v", s.Key, err)
	}
	n, err := ckpt.CheckedVolume(size, d.Size())
	if err != nil {
		return nil, fmt.Errorf("tensor on storage %s: %v", s.Key, err)
	}
	// The last element must lie inside the storage (torch checks the same
	// in set_); checked arithmetic, since every number is input.
	if n > 0 {
		last := offset
		for i := range size {
			if stride[i] < 0 {
				return nil, fmt.Errorf("tensor on storage %s: negative stride %v", s.Key, stride)
			}
			step, err := ckpt.CheckedVolume([]int64{size[i] - 1, stride[i]}, 0)
			if err != nil || last > (1<<62)-step {
				return nil, fmt.Errorf("tensor on storage %s: size %v with stride %v overflows", s.Key, size, stride)
			}
			last += step
		}
		elems := s.Record.Size / int64(d.Size())
		if last >= elems {
			return nil, fmt.Errorf("tensor on storage %s: offset %d, size %v, stride %v reach element %d of a storage of %d %s elements",
				s.Key, offset, size, stride, last, elems, d)
		}
		// More elements than the storage holds means elements alias
		// (an expand()ed view): never a saved weight, and reading it
		// would turn a small file into arbitrarily much output.
		if n > elems {
			return nil, fmt.Errorf("tensor on storage %s: %d elements (size %v, stride %v) view a storage of only %d; expanded views are not supported",
				s.Key, n, size, stride, elems)
		}
	}
	if s.untyped {
		s.DType = d
	}
	return &Tensor{DType: d, Offset: offset, Size: size, Stride: stride, Storage: s, archive: l.a}, nil
}

// checkMetadata refuses the tensor metadata flags that change what the
// stored bytes mean (lazy conjugation and negation).
func checkMetadata(meta any) error {
	if meta == nil {
		return nil
	}
	d, ok := meta.(*pickle.Dict)
	if !ok {
		return fmt.Errorf("tensor metadata is a %s, want a dict", describe(meta))
	}
	for _, e := range d.Entries() {
		if on, _ := e.Value.(bool); on {
			return fmt.Errorf("tensor metadata sets %s, which ckptgate does not apply", describe(e.Key))
		}
	}
	return nil
}

// rebuildParameter is torch._utils._rebuild_parameter(tensor,
// requires_grad, backward_hooks) and _rebuild_parameter_with_state (one
// more argument, the Python attributes, ignored): an nn.Parameter is its
// tensor for ckptgate.
func rebuildParameter(args pickle.Tuple) (any, error) {
	if len(args) != 3 && len(args) != 4 {
		return nil, fmt.Errorf("_rebuild_parameter called with %d arguments, want 3 or 4", len(args))
	}
	t, ok := args[0].(*Tensor)
	if !ok {
		return nil, fmt.Errorf("_rebuild_parameter of a %s", describe(args[0]))
	}
	return t, nil
}

// rebuildFromType is torch._tensor._rebuild_from_type_v2(func, new_type,
// args, state): func(*args) retyped as new_type, with state set as
// attributes. Only plain tensors and parameters are accepted as new_type;
// func must be one of the allowlisted rebuild functions.
func rebuildFromType(args pickle.Tuple) (any, error) {
	if len(args) != 4 {
		return nil, fmt.Errorf("_rebuild_from_type_v2 called with %d arguments, want 4", len(args))
	}
	fn, ok := args[0].(*pickle.Class)
	if !ok || fn.Call == nil || fn.Module != "torch._utils" {
		return nil, fmt.Errorf("_rebuild_from_type_v2 with function %s", describe(args[0]))
	}
	nt, ok := args[1].(*pickle.Class)
	if !ok || !(nt.Is("torch", "Tensor") || nt.Is("torch.nn.parameter", "Parameter")) {
		return nil, fmt.Errorf("_rebuild_from_type_v2 to type %s; only torch.Tensor and torch.nn.parameter.Parameter are converted", describe(args[1]))
	}
	fargs, ok := args[2].(pickle.Tuple)
	if !ok {
		return nil, fmt.Errorf("_rebuild_from_type_v2: arguments are a %s, want a tuple", describe(args[2]))
	}
	v, err := fn.Call(fargs)
	if err != nil {
		return nil, err
	}
	if _, ok := v.(*Tensor); !ok {
		return nil, fmt.Errorf("_rebuild_from_type_v2: %s returned a %s", fn, describe(v))
	}
	return v, nil
}

// ints decodes a tuple of non-negative ints (a size or stride).
func ints(v any, what string) ([]int64, error) {
	t, ok := v.(pickle.Tuple)
	if !ok {
		return nil, fmt.Errorf("%s is a %s, want a tuple of ints", what, describe(v))
	}
	if len(t) > maxDims {
		return nil, fmt.Errorf("%s has %d dimensions, at most %d supported", what, len(t), maxDims)
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("%s element %d is %s, want a non-negative int", what, i, describe(x))
		}
		out[i] = n
	}
	return out, nil
}

// describe names a value for an error message without printing it whole.
func describe(v any) string {
	switch v := v.(type) {
	case *Tensor:
		return "tensor"
	case *Storage:
		return "storage " + v.Key
	}
	return pickle.Describe(v)
}

// hints explain refused globals that mean "a per-rank sharded save" or
// "not plain weights".
func hint(g pickle.Global) string {
	n := g.String()
	switch {
	case strings.Contains(n, "DTensor"), strings.Contains(n, "ShardedTensor"), strings.Contains(n, "_shard."),
		n == "torch._utils._rebuild_wrapper_subclass", strings.HasPrefix(n, "torch.distributed."):
		return "; this is a per-rank sharded save (DTensor/ShardedTensor), not a full state dict: merge it with the tool that wrote it, or save with FULL_STATE_DICT or DCP"
	case strings.HasPrefix(n, "torch._utils._rebuild_"):
		return "; quantized, sparse, nested, meta and numpy-backed tensors are not model weights ckptgate converts"
	}
	return ""
}
