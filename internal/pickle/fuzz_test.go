package pickle

import (
	"errors"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// fixtureGlobals are every global the fixtures' pickles name
// (testdata/cpython.json), so that fuzzing reaches NEWOBJ, REDUCE and
// BUILD paths and not only the allowlist refusal.
var fixtureGlobals = []string{
	"collections|OrderedDict", "pathlib|PosixPath",
	"torch._tensor|_rebuild_from_type_v2", "torch._utils|_rebuild_tensor_v2",
	"torch.distributed.checkpoint.filesystem|_StorageInfo",
	"torch.distributed.checkpoint.metadata|BytesStorageMetadata",
	"torch.distributed.checkpoint.metadata|ChunkStorageMetadata",
	"torch.distributed.checkpoint.metadata|Metadata",
	"torch.distributed.checkpoint.metadata|MetadataIndex",
	"torch.distributed.checkpoint.metadata|StorageMeta",
	"torch.distributed.checkpoint.metadata|TensorProperties",
	"torch.distributed.checkpoint.metadata|TensorStorageMetadata",
	"torch.distributed.checkpoint.metadata|_MEM_FORMAT_ENCODING",
	"torch.serialization|_get_layout",
	"torch|BFloat16Storage", "torch|FloatStorage", "torch|Size", "torch|Tensor", "torch|bfloat16", "torch|float32",
}

// FuzzUnpickle: whatever the bytes, Unpickle returns a value or an error
// that matches ckpt.ErrCorrupt; it never panics, and its result can be
// walked (cycles included).
func FuzzUnpickle(f *testing.F) {
	for _, data := range fixturePickles(f) {
		f.Add(data)
	}
	cfg := recordingConfig(fixtureGlobals)
	cfg.Limits = Limits{MaxInput: 1 << 22, MaxString: 1 << 20, MaxObjects: 1 << 20, MaxMemo: 1 << 20, MaxStack: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Unpickle(data, cfg)
		if err != nil {
			if !errors.Is(err, ckpt.ErrCorrupt) {
				t.Fatalf("error does not match ckpt.ErrCorrupt: %v", err)
			}
			return
		}
		walk(v, map[any]bool{}, 0)
	})
}

// walk visits every value once; mutable containers can form cycles.
func walk(v any, seen map[any]bool, depth int) {
	if depth > 10000 {
		return
	}
	switch v := v.(type) {
	case Tuple:
		// Tuples are shared through the memo too; without this a DAG of
		// tuples takes exponential time to walk.
		if len(v) == 0 || seen[&v[0]] {
			return
		}
		seen[&v[0]] = true
		for _, x := range v {
			walk(x, seen, depth+1)
		}
	case *List:
		if seen[v] {
			return
		}
		seen[v] = true
		for _, x := range v.Items {
			walk(x, seen, depth+1)
		}
	case *Dict:
		if seen[v] {
			return
		}
		seen[v] = true
		for _, e := range v.Entries() {
			walk(e.Key, seen, depth+1)
			walk(e.Value, seen, depth+1)
			_, _ = v.Get(e.Key)
		}
		walk(v.State, seen, depth+1)
	case *Set:
		if seen[v] {
			return
		}
		seen[v] = true
		for _, x := range v.Items {
			walk(x, seen, depth+1)
		}
	case *Object:
		if seen[v] {
			return
		}
		seen[v] = true
		_ = TypeName(v)
		walk(v.Args, seen, depth+1)
		walk(v.State, seen, depth+1)
	case persistent:
		walk(v.pid, seen, depth+1)
	}
}
