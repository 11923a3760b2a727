package torchzip

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/pickle"
)

// OpenPT opens a FULL_STATE_DICT .pt file written by torch.save. The
// checkpoint's tensors are the state dict's tensors in the file's order,
// each one chunk covering the whole tensor. Non-tensor values are skipped
// with a note; a single top-level dict wrapping the state dict ({"model":
// sd}, {"state_dict": sd}) is unwrapped with a note; FSDP wrapper infixes
// (_fsdp_wrapped_module., _checkpoint_wrapped_module.) and torch.compile's
// _orig_mod. are removed from names. Per-rank LOCAL_STATE_DICT files
// (_flat_param keys) and sharded saves (DTensor, ShardedTensor) are
// refused.
func OpenPT(path string) (*ckpt.Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	c, err := openPT(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	c.Closer = f
	return c, nil
}

func openPT(f *os.File, path string) (*ckpt.Checkpoint, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrFormat, path)
	}
	a, err := Open(f, st.Size(), path)
	if err != nil {
		return nil, err
	}
	root, err := a.Load()
	if err != nil {
		return nil, err
	}
	c := &ckpt.Checkpoint{Format: "torch.save", Path: path}
	sd, err := stateDict(root, path, c)
	if err != nil {
		return nil, err
	}
	var skipped, noCRC []string
	byName := map[string]string{}
	for _, e := range sd.Entries() {
		key, ok := e.Key.(string)
		if !ok {
			skipped = append(skipped, describe(e.Key))
			continue
		}
		t, ok := e.Value.(*Tensor)
		if !ok {
			skipped = append(skipped, key)
			continue
		}
		if strings.HasSuffix(key, "_flat_param") {
			return nil, fmt.Errorf("%w: %s: key %q is an FSDP flat parameter: this is a LOCAL_STATE_DICT save, whose flattened shards cannot be split back into tensors; save with SHARDED_STATE_DICT (DCP) or FULL_STATE_DICT",
				ckpt.ErrCorrupt, path, key)
		}
		name := CleanName(key)
		if prev, dup := byName[name]; dup {
			return nil, fmt.Errorf("%w: %s: keys %q and %q both name tensor %q once wrapper prefixes are removed", ckpt.ErrCorrupt, path, prev, key, name)
		}
		byName[name] = key
		if t.Storage.Record.CRC32 == 0 && t.Storage.Record.Size != 0 {
			noCRC = append(noCRC, t.Storage.Record.Name)
		}
		c.Tensors = append(c.Tensors, wholeTensor(name, t))
	}
	if len(c.Tensors) == 0 {
		return nil, fmt.Errorf("%w: %s: the state dict holds no tensors", ckpt.ErrCorrupt, path)
	}
	if len(skipped) > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%s: ignored %d non-tensor entries: %s", path, len(skipped), list(skipped)))
	}
	if len(noCRC) > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%s: %d storage records have no CRC-32 (the writer disabled it), so their bytes are not verified: %s", path, len(noCRC), list(noCRC)))
	}
	return c, nil
}

// stateDict finds the state dict in the pickle's root value: the root dict
// itself when it holds tensors, else the one dict value of the root that
// does.
func stateDict(root any, path string, c *ckpt.Checkpoint) (*pickle.Dict, error) {
	d, ok := root.(*pickle.Dict)
	if !ok {
		return nil, fmt.Errorf("%w: %s holds a %s, not a state dict", ckpt.ErrCorrupt, path, describe(root))
	}
	if holdsTensors(d) {
		return d, nil
	}
	var keys []string
	var inner *pickle.Dict
	for _, e := range d.Entries() {
		if sub, ok := e.Value.(*pickle.Dict); ok && holdsTensors(sub) {
			keys = append(keys, fmt.Sprint(e.Key))
			inner = sub
		}
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("%w: %s: no tensors in the top-level dict or in any dict inside it", ckpt.ErrCorrupt, path)
	case 1:
		note := fmt.Sprintf("%s: the state dict is the top-level entry %q", path, keys[0])
		if d.Len() > 1 {
			note += fmt.Sprintf("; the other %d top-level entries are ignored", d.Len()-1)
		}
		c.Notes = append(c.Notes, note)
		return inner, nil
	}
	sort.Strings(keys)
	return nil, fmt.Errorf("%w: %s: several top-level entries hold tensors (%s); ckptgate cannot tell which is the model", ckpt.ErrCorrupt, path, strings.Join(keys, ", "))
}

func holdsTensors(d *pickle.Dict) bool {
	for _, e := range d.Entries() {
		if _, ok := e.Value.(*Tensor); ok {
			return true
		}
	}
	return false
}

// wholeTensor is a checkpoint tensor with a single chunk: t itself.
func wholeTensor(name string, t *Tensor) *ckpt.Tensor {
	return &ckpt.Tensor{
		Name:  name,
		DType: t.DType,
		Shape: append([]int64(nil), t.Size...),
		Chunks: []ckpt.Chunk{{
			Offsets: make([]int64, len(t.Size)),
			Sizes:   append([]int64(nil), t.Size...),
			Open:    func() (*ckpt.View, error) { return t.View(), nil },
			Where:   t.archive.where + ", " + t.Storage.Record.Name,
		}},
	}
}

// wrapperInfixes are inserted into parameter names by FSDP1's module
// wrapper, activation checkpointing and torch.compile; torch removes them
// with str.replace (clean_tensor_name), and so does CleanName.
var wrapperInfixes = []string{"_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."}

// CleanName removes every occurrence of the wrapper infixes from a key.
func CleanName(key string) string {
	for _, w := range wrapperInfixes {
		key = strings.ReplaceAll(key, w, "")
	}
	return key
}

// list joins names for a note, eliding after a few.
func list(names []string) string {
	const show = 8
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:show], ", ") + fmt.Sprintf(", … (%d more)", len(names)-show)
}
