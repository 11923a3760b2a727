package synth

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

// Sharding is how the training run cut its parameters into chunks
// (checkpoint-formats.md §6).
type Sharding int

const (
	// FSDP1 is SHARDED_STATE_DICT: tensor.chunk(world, dim=0), so only
	// non-empty chunks exist and ranks past the last chunk hold none.
	FSDP1 Sharding = iota
	// FSDP2 is DTensor Shard(0): every rank has a chunk, of size 0 (at
	// offset dim0) where it holds nothing; identical empty chunks are
	// deduplicated to one rank.
	FSDP2
)

// String names the sharding as the bench's -sharding flag does.
func (s Sharding) String() string {
	if s == FSDP2 {
		return "fsdp2"
	}
	return "fsdp1"
}

// Spec describes a DCP checkpoint to write.
type Spec struct {
	// Tensors in state-dict order; Name is the key under Group.
	Tensors []Tensor
	// World is the number of ranks.
	World    int
	Sharding Sharding
	// ThreadCount is FileSystemWriter's thread_count: data files per rank
	// (0 means 1, the default). With one thread, torch (on GPU) writes a
	// rank's items smallest first; with more, largest first per file.
	ThreadCount int
	// Group is the top-level key of the saved dict ("model" in
	// llama-recipes' {"model": state_dict}); "" saves the keys top level.
	Group string
	// CheckpointID is the saving machine's path that storage_meta records
	// (informational); empty means the directory written.
	CheckpointID string
	// SaveID is storage_meta.save_id (a uuid4 in torch); empty means a
	// fixed one.
	SaveID string
	// Jobs bounds the data files written at once (0: GOMAXPROCS).
	Jobs int
	// BufSize is the scratch size per writer (0: 4 MiB).
	BufSize int
}

// Written summarises a written checkpoint.
type Written struct {
	// Files are the data files, in rank and file order.
	Files []string
	// Bytes is the size of the data files.
	Bytes int64
	// Items is the number of chunk archives.
	Items int
}

// item is one WriteItem: a chunk of a tensor planned on a rank.
type item struct {
	tensor         int
	offsets, sizes []int64
	index          int   // position in the tensor's chunk list (the index hint)
	globalBytes    int64 // torch's _item_size: the whole tensor's bytes
	file           int   // the rank's file number (the i of __r_i.distcp)
	offset, length int64 // where the archive went
}

func numel(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// chunksOf returns the chunk (offsets, sizes) of a tensor of the given
// shape on each rank, nil where a rank has none. 0-d and empty tensors are
// one chunk on rank 0.
func chunksOf(shape []int64, world int, sh Sharding) [][2][]int64 {
	out := make([][2][]int64, world)
	if len(shape) == 0 {
		out[0] = [2][]int64{{}, {}}
		return out
	}
	n := shape[0]
	if n == 0 {
		// Nothing to cut: one empty chunk, as a replicated tensor.
		out[0] = [2][]int64{make([]int64, len(shape)), slices.Clone(shape)}
		return out
	}
	c := (n + int64(world) - 1) / int64(world)
	for r := range world {
		start := c * int64(r)
		var size int64
		switch {
		case start < n:
			size = min(c, n-start)
		case sh == FSDP1:
			continue
		default:
			start = n
		}
		off := make([]int64, len(shape))
		sz := slices.Clone(shape)
		off[0], sz[0] = start, size
		out[r] = [2][]int64{off, sz}
	}
	return out
}

// plan returns each rank's items after deduplication, as torch's
// dedup_save_plans leaves them: an item several ranks plan (an identical
// empty FSDP2 chunk) stays on the one whose planned bytes are smallest when
// the item is first met, ranks taken in order.
func plan(spec *Spec, d dtype.DType) [][]*item {
	plans := make([][]*item, spec.World)
	type owners struct {
		ranks []int
		items []*item
	}
	var order []string
	byKey := map[string]*owners{}
	chunks := make([][][2][]int64, len(spec.Tensors))
	for ti, t := range spec.Tensors {
		chunks[ti] = chunksOf(t.Shape, spec.World, spec.Sharding)
	}
	for r := range spec.World {
		for ti, t := range spec.Tensors {
			ch := chunks[ti][r]
			if ch[0] == nil {
				continue
			}
			it := &item{tensor: ti, offsets: ch[0], sizes: ch[1], globalBytes: t.NumElements() * int64(d.Size())}
			plans[r] = append(plans[r], it)
			k := fmt.Sprint(ti, ch[0])
			o := byKey[k]
			if o == nil {
				o = &owners{}
				byKey[k] = o
				order = append(order, k)
			}
			o.ranks = append(o.ranks, r)
			o.items = append(o.items, it)
		}
	}
	planned := make([]int64, spec.World)
	drop := map[*item]bool{}
	for _, k := range order {
		o := byKey[k]
		best := 0
		for i, r := range o.ranks {
			if planned[r] < planned[o.ranks[best]] {
				best = i
			}
		}
		planned[o.ranks[best]] += max(o.items[best].globalBytes, 1)
		for i, it := range o.items {
			if i != best {
				drop[it] = true
			}
		}
	}
	for r := range plans {
		plans[r] = slices.DeleteFunc(plans[r], func(it *item) bool { return drop[it] })
	}
	return plans
}

// files splits a rank's items into its data files as FileSystemWriter
// does: largest first into the least-filled bucket, then each file in the
// order its loader yields them.
func files(items []*item, threads int) [][]*item {
	sorted := slices.Clone(items)
	slices.SortStableFunc(sorted, func(a, b *item) int { return cmp.Compare(b.globalBytes, a.globalBytes) })
	buckets := make([][]*item, threads)
	fill := make([]int64, threads)
	for _, it := range sorted {
		b := 0
		for i := range fill {
			if fill[i] < fill[b] {
				b = i
			}
		}
		buckets[b] = append(buckets[b], it)
		fill[b] += it.globalBytes
	}
	if threads == 1 {
		// One thread on a GPU machine uses the overlapping loader, which
		// stages tensors smallest first.
		slices.SortStableFunc(buckets[0], func(a, b *item) int { return cmp.Compare(a.globalBytes, b.globalBytes) })
	}
	for i, b := range buckets {
		for _, it := range b {
			it.file = i
		}
	}
	return buckets
}

// Bounds on a Spec, far above any real training run.
const (
	maxWorld   = 1 << 16
	maxThreads = 1 << 10
	maxDims    = 64
)

// validate refuses specs the writer cannot lay out.
func (s *Spec) validate() error {
	if s.World < 1 || s.World > maxWorld {
		return fmt.Errorf("synth: world size %d, want 1 to %d", s.World, maxWorld)
	}
	if s.ThreadCount < 0 || s.ThreadCount > maxThreads {
		return fmt.Errorf("synth: thread count %d, want 0 to %d", s.ThreadCount, maxThreads)
	}
	if len(s.Tensors) == 0 {
		return fmt.Errorf("synth: no tensors")
	}
	seen := map[string]bool{}
	for _, t := range s.Tensors {
		if t.Name == "" || seen[t.Name] {
			return fmt.Errorf("synth: tensor name %q is empty or repeated", t.Name)
		}
		seen[t.Name] = true
		if len(t.Shape) > maxDims {
			return fmt.Errorf("synth: tensor %s has %d dimensions, at most %d", t.Name, len(t.Shape), maxDims)
		}
		if _, err := ckpt.CheckedVolume(t.Shape, 8); err != nil {
			return fmt.Errorf("synth: tensor %s: %v", t.Name, err)
		}
	}
	return nil
}

// WriteDCP writes the checkpoint spec describes into dir (created if
// needed), taking tensor contents from vals: the data files first, each
// fsynced, then .metadata through .metadata.tmp, as torch's
// FileSystemWriter does. Memory stays at one scratch buffer per writer.
func WriteDCP(ctx context.Context, dir string, spec Spec, vals Values) (*Written, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	threads := max(spec.ThreadCount, 1)
	d := vals.DType()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	plans := plan(&spec, d)
	// Index hints and state_dict_metadata chunk order: ranks in order.
	chunkCount := make([]int, len(spec.Tensors))
	for _, p := range plans {
		for _, it := range p {
			it.index = chunkCount[it.tensor]
			chunkCount[it.tensor]++
		}
	}
	var all [][]*item
	w := &Written{}
	for r, p := range plans {
		for i, f := range files(p, threads) {
			all = append(all, f)
			w.Files = append(w.Files, fmt.Sprintf("__%d_%d.distcp", r, i))
		}
	}
	bufSize := spec.BufSize
	if bufSize <= 0 {
		bufSize = 4 << 20
	}
	bufSize = max(bufSize, 64) // room for at least one element
	jobs := spec.Jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	sizes := make([]int64, len(all))
	for fi, items := range all {
		g.Go(func() error {
			n, err := writeFile(ctx, filepath.Join(dir, w.Files[fi]), items, &spec, vals, bufSize)
			sizes[fi] = n
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, n := range sizes {
		w.Bytes += n
	}
	for _, items := range all {
		w.Items += len(items)
	}
	id := spec.CheckpointID
	if id == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		id = abs
	}
	saveID := spec.SaveID
	if saveID == "" {
		saveID = "00000000-0000-4000-8000-000000000000"
	}
	md := metadata(&spec, d, plans, id, saveID)
	tmp := filepath.Join(dir, ".metadata.tmp")
	if err := writeSynced(tmp, md); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, ".metadata")); err != nil {
		return nil, err
	}
	return w, nil
}

// writeFile writes one data file's archives back to back and fsyncs it.
func writeFile(ctx context.Context, path string, items []*item, spec *Spec, vals Values, bufSize int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, bufSize)
	var at int64
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t := &spec.Tensors[it.tensor]
		// A dim-0 box of a row-major tensor is one contiguous range.
		first := int64(0)
		if len(it.offsets) > 0 {
			first = it.offsets[0] * numel(t.Shape[1:])
		}
		n, err := writeItem(bw, vals.DType(), it.sizes, buf, func(dst []byte, k int64) {
			vals.Fill(dst, it.tensor, first+k)
		})
		if err != nil {
			return 0, fmt.Errorf("%s: tensor %s chunk at %v: %w", path, t.Name, it.offsets, err)
		}
		it.offset, it.length = at, n
		at += n
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("syncing %s: %w", path, err)
	}
	return at, f.Close()
}

func writeSynced(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// metadata builds the .metadata pickle: the object graph of torch's
// Metadata dataclass, with Python's object sharing (interned field names,
// one str per data file name, one torch.strided), pickled with protocol 4.
func metadata(spec *Spec, d dtype.DType, plans [][]*item, checkpointID, saveID string) []byte {
	mod := str("torch.distributed.checkpoint.metadata")
	glob := func(m *pyStr, name string) *pyGlobal { return &pyGlobal{m, str(name)} }
	clsMetadata := glob(mod, "Metadata")
	clsTensor := glob(mod, "TensorStorageMetadata")
	clsProps := glob(mod, "TensorProperties")
	clsChunk := glob(mod, "ChunkStorageMetadata")
	clsIndex := glob(mod, "MetadataIndex")
	clsStorageMeta := glob(mod, "StorageMeta")
	clsInfo := glob(str("torch.distributed.checkpoint.filesystem"), "_StorageInfo")
	dtypeG := glob(str("torch"), d.TorchName())
	sizeG := glob(str("torch"), "Size")
	layout := &pyReduce{fn: glob(str("torch.serialization"), "_get_layout"), args: tuple(str("torch.strided"))}
	memFormat := &pyReduce{fn: glob(mod, "_MEM_FORMAT_ENCODING"), args: tuple(int64(0))}
	fields := map[string]*pyStr{}
	field := func(name string) *pyStr {
		if s, ok := fields[name]; ok {
			return s
		}
		s := str(name)
		fields[name] = s
		return s
	}
	size := func(dims []int64) *pyReduce {
		t := &pyTuple{}
		for _, x := range dims {
			t.items = append(t.items, x)
		}
		return &pyReduce{fn: sizeG, args: tuple(t)}
	}
	obj := func(cls *pyGlobal, kv ...any) *pyObj {
		st := &pyDict{}
		for i := 0; i < len(kv); i += 2 {
			st.set(field(kv[i].(string)), kv[i+1])
		}
		return &pyObj{cls: cls, state: st}
	}
	key := func(t *Tensor) string {
		if spec.Group == "" {
			return t.Name
		}
		return spec.Group + "." + t.Name
	}

	sdm := &pyDict{}
	chunks := make([]*pyList, len(spec.Tensors))
	for _, p := range plans {
		for _, it := range p {
			t := &spec.Tensors[it.tensor]
			if chunks[it.tensor] == nil {
				chunks[it.tensor] = &pyList{}
				props := &pyObj{cls: clsProps, state: tuple(dtypeG, layout, false, memFormat, false)}
				sdm.set(str(key(t)), obj(clsTensor, "properties", props, "size", size(t.Shape), "chunks", chunks[it.tensor]))
			}
			chunks[it.tensor].items = append(chunks[it.tensor].items, obj(clsChunk, "offsets", size(it.offsets), "sizes", size(it.sizes)))
		}
	}
	// planner_data is the coordinator's flattening of its own state dict.
	planner := &pyDict{}
	group := str(spec.Group)
	for i := range spec.Tensors {
		t := &spec.Tensors[i]
		path := tuple(str(t.Name))
		if spec.Group != "" {
			path = tuple(group, str(t.Name))
		}
		planner.set(str(key(t)), path)
	}
	// storage_data: each rank's write results, file by file, each file's
	// items in the order they were written; a file's name is one str.
	storage := &pyDict{}
	for r, p := range plans {
		its := slices.Clone(p)
		slices.SortStableFunc(its, func(a, b *item) int {
			if a.file != b.file {
				return a.file - b.file
			}
			return cmp.Compare(a.offset, b.offset)
		})
		names := map[int]*pyStr{}
		for _, it := range its {
			if names[it.file] == nil {
				names[it.file] = str(fmt.Sprintf("__%d_%d.distcp", r, it.file))
			}
			t := &spec.Tensors[it.tensor]
			idx := obj(clsIndex, "fqn", str(key(t)), "index", int64(it.index), "offset", size(it.offsets))
			storage.set(idx, obj(clsInfo, "relative_path", names[it.file], "offset", it.offset, "length", it.length))
		}
	}
	var parts []any
	clean := filepath.ToSlash(filepath.Clean(checkpointID))
	if strings.HasPrefix(clean, "/") {
		parts = append(parts, str("/"))
	}
	for _, s := range strings.Split(strings.Trim(clean, "/"), "/") {
		if s != "" && s != "." {
			parts = append(parts, str(s))
		}
	}
	path := &pyReduce{fn: glob(str("pathlib"), "PosixPath"), args: tuple(parts...)}
	storageMeta := obj(clsStorageMeta, "checkpoint_id", path, "save_id", str(saveID), "load_id", nil, "modules", &pyList{})
	root := obj(clsMetadata, "state_dict_metadata", sdm, "planner_data", planner, "storage_data", storage,
		"storage_meta", storageMeta, "version", str("1.0.0"))
	return dumps(root, 4)
}
