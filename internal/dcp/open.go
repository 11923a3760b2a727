// Package dcp reads torch.distributed.checkpoint directories written by
// FileSystemWriter (FSDP1 SHARDED_STATE_DICT, FSDP2/DTensor state dicts):
// the .metadata pickle (or the rank-local __R.metadata files of
// use_collectives=False), and the torch.save items in the __R_I.distcp
// files, read through byte ranges. It selects the model's tensors (the
// "model" group of llama-recipes' {"model": sd}, or top-level keys), checks
// that their chunks tile each tensor exactly, and returns them as a
// ckpt.Checkpoint whose chunks are opened lazily. Bytes items, optimizer
// state and other groups are skipped without being unpickled.
package dcp

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/torchzip"
)

// maxMetadata bounds a metadata file; an 11B model's .metadata with
// optimizer state is a few MB.
const maxMetadata = 1 << 30

var (
	rankMetadataRE = regexp.MustCompile(`^__([0-9]+)\.metadata$`)
	rankTmpRE      = regexp.MustCompile(`^__([0-9]+)\.metadata\.tmp$`)
)

// Open reads the DCP checkpoint in dir. Every data file the model's items
// reference is checked up front (present, a regular file inside dir, long
// enough for its items), and every model tensor's chunks are checked to
// cover it exactly once; tensor bytes are read only when a chunk is opened.
// Close the checkpoint to release its files.
func Open(dir string) (*ckpt.Checkpoint, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	var distcp []string
	for _, e := range ents {
		names[e.Name()] = true
		if strings.HasSuffix(e.Name(), ".distcp") {
			distcp = append(distcp, e.Name())
		}
	}
	m, metaPath, notes, err := readMetadata(dir, names, len(distcp))
	if err != nil {
		return nil, err
	}
	r := &reader{dir: dir, m: m, metaPath: metaPath, pool: newFilePool(dir), notes: notes}
	c, err := r.build(distcp)
	if err != nil {
		r.pool.Close()
		return nil, err
	}
	return c, nil
}

// readMetadata finds and parses the checkpoint's metadata: .metadata, or
// else every rank-local __R.metadata merged. It returns the metadata, what
// to call it in messages, and notes.
func readMetadata(dir string, names map[string]bool, ndistcp int) (*Metadata, string, []string, error) {
	if names[".metadata"] {
		m, err := parseFile(dir, ".metadata")
		return m, filepath.Join(dir, ".metadata"), nil, err
	}
	var ranks []string
	for n := range names {
		if rankMetadataRE.MatchString(n) {
			ranks = append(ranks, n)
		}
		if sm := rankTmpRE.FindStringSubmatch(n); sm != nil && !names["__"+sm[1]+".metadata"] {
			return nil, "", nil, fmt.Errorf("%w: %s: %s exists without %s: rank %s's save did not finish; checkpoint incomplete",
				ckpt.ErrCorrupt, dir, n, "__"+sm[1]+".metadata", sm[1])
		}
	}
	if len(ranks) > 0 {
		m, notes, err := mergeRankLocal(dir, ranks)
		return m, filepath.Join(dir, "__R.metadata"), notes, err
	}
	switch {
	case names[".metadata.tmp"]:
		return nil, "", nil, fmt.Errorf("%w: %s: .metadata.tmp exists but .metadata does not: the save crashed while finishing; checkpoint incomplete", ckpt.ErrCorrupt, dir)
	case ndistcp > 0:
		return nil, "", nil, fmt.Errorf("%w: %s: %d .distcp data files but no .metadata (nor __R.metadata): checkpoint incomplete", ckpt.ErrCorrupt, dir, ndistcp)
	}
	return nil, "", nil, fmt.Errorf("%w: %s: no DCP metadata (.metadata) and no data files: checkpoint incomplete or not a DCP directory", ckpt.ErrCorrupt, dir)
}

func parseFile(dir, name string) (*Metadata, error) {
	p := filepath.Join(dir, name)
	if err := checkInside(dir, name); err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := boundedio.ReadAll(f, maxMetadata)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ckpt.ErrCorrupt, p, err)
	}
	return ParseMetadata(b, p)
}

// reader builds a Checkpoint from parsed metadata.
type reader struct {
	dir      string
	m        *Metadata
	metaPath string
	pool     *filePool
	notes    []string
}

// modelKey is a tensor entry of the model group.
type modelKey struct {
	key  string // the flattened DCP key
	name string // the FQN after the group and wrapper infixes are removed
	meta *TensorMeta
}

func (r *reader) build(distcp []string) (*ckpt.Checkpoint, error) {
	keys, err := r.selectModel()
	if err != nil {
		return nil, err
	}
	if err := r.checkItemNames(); err != nil {
		return nil, err
	}
	c := &ckpt.Checkpoint{Format: "dcp", Path: r.dir, Closer: r.pool}
	needed := map[string][]Item{} // data file → the model items in it
	for _, k := range keys {
		t := &ckpt.Tensor{Name: k.name, DType: k.meta.DType, Shape: k.meta.Size}
		for _, cm := range k.meta.Chunks {
			ch := ckpt.Chunk{
				Offsets: append([]int64(nil), cm.Offsets...),
				Sizes:   append([]int64(nil), cm.Sizes...),
				Where:   fmt.Sprintf("%s chunk at %v", k.key, cm.Offsets),
			}
			it, ok := r.m.Items[KeyOf(k.key, cm.Offsets)]
			if ch.Volume() != 0 {
				if !ok {
					return nil, fmt.Errorf("%w: %s: tensor %q: chunk at offsets %v (sizes %v) has no storage_data entry",
						ckpt.ErrCorrupt, r.metaName(), k.key, cm.Offsets, cm.Sizes)
				}
				needed[it.RelativePath] = append(needed[it.RelativePath], it)
				ch.Where = fmt.Sprintf("%s item at %d+%d (%s chunk at %v)", filepath.Join(r.dir, it.RelativePath), it.Offset, it.Length, k.key, cm.Offsets)
				if len(it.Transforms) > 0 {
					// Decoded whole by Open (see opener).
					ch.Resident = ch.Volume()*int64(k.meta.DType.Size()) + zipSlack
				}
			}
			if ok {
				ch.Open = r.opener(k, cm, it)
			} else {
				ch.Open = func() (*ckpt.View, error) {
					return nil, fmt.Errorf("%w: %s: tensor %q: the empty chunk at %v has no item", ckpt.ErrCorrupt, r.metaName(), k.key, cm.Offsets)
				}
			}
			t.Chunks = append(t.Chunks, ch)
		}
		if err := ckpt.ValidateCoverage(t); err != nil {
			return nil, fmt.Errorf("%s: %w", r.metaName(), err)
		}
		c.Tensors = append(c.Tensors, t)
	}
	if err := r.checkFiles(needed); err != nil {
		return nil, err
	}
	r.noteOrphans(distcp)
	c.Notes = r.notes
	return c, nil
}

func (r *reader) metaName() string { return r.metaPath }

// selectModel picks the model's tensor entries. The group of each key is
// the first element of its planner_data path, never a string prefix: since
// transformers 4.52 the FQNs themselves start with "model.".
func (r *reader) selectModel() ([]modelKey, error) {
	type grouped struct {
		group, fqn string
		meta       *TensorMeta
		key        string
	}
	var tensors []grouped
	var bytesKeys []string
	guessed := r.m.PlannerData == nil
	var shared string
	if guessed {
		shared = sharedModelPrefix(r.m)
	}
	for _, e := range r.m.Entries {
		if e.Tensor == nil {
			bytesKeys = append(bytesKeys, e.Key)
			continue
		}
		g := grouped{key: e.Key, meta: e.Tensor}
		if path, ok := r.m.PlannerData[e.Key]; ok {
			if len(path) == 1 {
				g.fqn = fmt.Sprint(path[0])
			} else {
				g.group = fmt.Sprint(path[0])
				parts := make([]string, len(path)-1)
				for i, p := range path[1:] {
					parts[i] = fmt.Sprint(p)
				}
				g.fqn = strings.Join(parts, ".")
			}
		} else if guessed {
			g.group, g.fqn = guessGroup(e.Key, shared)
		} else {
			return nil, fmt.Errorf("%w: %s: key %q is not in planner_data", ckpt.ErrCorrupt, r.metaName(), e.Key)
		}
		tensors = append(tensors, g)
	}
	if guessed {
		r.notes = append(r.notes, fmt.Sprintf("%s: %s; groups were inferred from key prefixes", r.metaName(), r.m.PlannerNote))
	}
	if len(bytesKeys) > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%s: skipped %d non-tensor (bytes) items without reading them: %s", r.metaName(), len(bytesKeys), brief(bytesKeys)))
	}
	counts := map[string]int{}
	for _, g := range tensors {
		counts[g.group]++
	}
	model, err := r.modelGroup(counts)
	if err != nil {
		return nil, err
	}
	var keys []modelKey
	byName := map[string]string{}
	for _, g := range tensors {
		if g.group != model {
			continue
		}
		if strings.HasSuffix(g.fqn, "_flat_param") {
			return nil, fmt.Errorf("%w: %s: key %q is an FSDP flat parameter (LOCAL_STATE_DICT), which cannot be split back into tensors",
				ckpt.ErrCorrupt, r.metaName(), g.key)
		}
		name := torchzip.CleanName(g.fqn)
		if prev, dup := byName[name]; dup {
			return nil, fmt.Errorf("%w: %s: keys %q and %q both name tensor %q once wrapper prefixes are removed", ckpt.ErrCorrupt, r.metaName(), prev, g.key, name)
		}
		byName[name] = g.key
		keys = append(keys, modelKey{key: g.key, name: name, meta: g.meta})
	}
	var others []string
	for g, n := range counts {
		if g != model {
			label := "top-level keys"
			if g != "" {
				label = "group " + strconv.Quote(g)
			}
			others = append(others, fmt.Sprintf("%s (%d tensors)", label, n))
		}
	}
	sort.Strings(others)
	if len(others) > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%s: skipped tensors outside the model: %s", r.metaName(), strings.Join(others, ", ")))
	}
	return keys, nil
}

// isOptimizer reports whether a group holds optimizer state.
func isOptimizer(group string) bool { return strings.HasPrefix(group, "optim") }

// modelGroup chooses the group holding the model: "model" (llama-recipes,
// accelerate), else top-level keys (torchtitan, get_model_state_dict
// saved bare), else the only non-optimizer group.
func (r *reader) modelGroup(counts map[string]int) (string, error) {
	if counts["model"] > 0 {
		return "model", nil
	}
	if counts[""] > 0 {
		return "", nil
	}
	var cands, optim []string
	for g := range counts {
		if isOptimizer(g) {
			optim = append(optim, g)
		} else {
			cands = append(cands, g)
		}
	}
	sort.Strings(cands)
	switch {
	case len(cands) == 1:
		r.notes = append(r.notes, fmt.Sprintf("%s: took the model from group %q, the only group that is not optimizer state", r.metaName(), cands[0]))
		return cands[0], nil
	case len(cands) > 1:
		return "", fmt.Errorf("%w: %s: tensors in groups %s and no \"model\" group; ckptgate cannot tell which is the model", ckpt.ErrCorrupt, r.metaName(), strings.Join(cands, ", "))
	case len(optim) > 0:
		return "", fmt.Errorf("%w: %s: this directory contains optimizer state, not weights (only %s tensors); point ckptgate at the model's checkpoint directory",
			ckpt.ErrCorrupt, r.metaName(), strings.Join(optim, ", "))
	}
	return "", fmt.Errorf("%w: %s: the checkpoint holds no tensors", ckpt.ErrCorrupt, r.metaName())
}

// sharedModelPrefix is "model" when, without planner_data, every
// non-optimizer tensor key starts with "model." — then the keys are
// llama-recipes' {"model": sd} group. Otherwise they are taken as
// top-level FQNs (a new-layout Mllama has lm_head.weight beside model.*).
func sharedModelPrefix(m *Metadata) string {
	n := 0
	for _, e := range m.Entries {
		if e.Tensor == nil || isOptimizer(firstComponent(e.Key)) {
			continue
		}
		if !strings.HasPrefix(e.Key, "model.") {
			return ""
		}
		n++
	}
	if n == 0 {
		return ""
	}
	return "model"
}

func guessGroup(key, shared string) (group, fqn string) {
	if first := firstComponent(key); isOptimizer(first) {
		return first, strings.TrimPrefix(key, first+".")
	}
	if shared != "" {
		return shared, strings.TrimPrefix(key, shared+".")
	}
	return "", key
}

func firstComponent(key string) string {
	first, _, _ := strings.Cut(key, ".")
	return first
}

// checkItemNames refuses any relative_path that is not a bare file name:
// DCP only ever writes __R_I.distcp names, so anything else is hostile or
// corrupt.
func (r *reader) checkItemNames() error {
	var bad []string
	seen := map[string]bool{}
	for k, it := range r.m.Items {
		p := it.RelativePath
		if seen[p] {
			continue
		}
		seen[p] = true
		if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "/\\\x00") || filepath.IsAbs(p) || filepath.VolumeName(p) != "" {
			bad = append(bad, fmt.Sprintf("%q (item of %s)", p, k.FQN))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%w: %s: storage_data names files that are not plain names inside the checkpoint directory: %s",
			ckpt.ErrCorrupt, r.metaName(), brief(bad))
	}
	return nil
}

// checkInside refuses a file that is not a regular file inside dir, or a
// symlink that resolves outside it.
func checkInside(dir, name string) error {
	p := filepath.Join(dir, name)
	st, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ckpt.ErrCorrupt, p, err)
		}
		root, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, target)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("%w: %s is a symlink to %s, outside the checkpoint directory", ckpt.ErrCorrupt, p, target)
		}
		if st, err = os.Stat(p); err != nil {
			return err
		}
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ckpt.ErrCorrupt, p)
	}
	return nil
}

// checkFiles stats every data file the model's items are in — listing all
// missing ones in one error — and checks every item's range against its
// file's size and, for untransformed items, that it starts like a
// torch.save zip (DCP's SAFETENSORS serialization does not).
func (r *reader) checkFiles(needed map[string][]Item) error {
	files := slices.Sorted(maps.Keys(needed))
	var missing []string
	sizes := map[string]int64{}
	for _, f := range files {
		if err := checkInside(r.dir, f); err != nil {
			if os.IsNotExist(err) {
				missing = append(missing, f)
				continue
			}
			return err
		}
		st, err := os.Stat(filepath.Join(r.dir, f))
		if err != nil {
			return err
		}
		sizes[f] = st.Size()
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s: %d data files the metadata references are missing: %s (a partial copy, or ranks that saved to other disks?)",
			ckpt.ErrCorrupt, r.dir, len(missing), strings.Join(missing, ", "))
	}
	for _, f := range files {
		first := int64(-1)
		var firstItem Item
		for _, it := range needed[f] {
			if it.Offset > sizes[f] || it.Length > sizes[f]-it.Offset {
				return fmt.Errorf("%w: %s: item at %d+%d extends past the end of the file (%d bytes): truncated copy?",
					ckpt.ErrCorrupt, filepath.Join(r.dir, f), it.Offset, it.Length, sizes[f])
			}
			if len(it.Transforms) == 0 && (first < 0 || it.Offset < first) {
				first, firstItem = it.Offset, it
			}
		}
		if first >= 0 {
			if err := r.sniff(f, firstItem); err != nil {
				return err
			}
		}
	}
	return nil
}

// sniff checks the start of one item.
func (r *reader) sniff(f string, it Item) error {
	head := make([]byte, min(it.Length, 512))
	if _, err := r.pool.reader(f).ReadAt(head, it.Offset); err != nil {
		return fmt.Errorf("%w: %s: reading item at %d: %v", ckpt.ErrCorrupt, filepath.Join(r.dir, f), it.Offset, err)
	}
	if err := torchzip.Sniff(head); err != nil {
		return fmt.Errorf("%s: item at %d+%d: %w (DCP's SAFETENSORS serialization format is not supported; it writes one safetensors blob per file)",
			filepath.Join(r.dir, f), it.Offset, it.Length, err)
	}
	return nil
}

// noteOrphans notes .distcp files that no item references (an earlier save
// with more ranks into the same directory).
func (r *reader) noteOrphans(distcp []string) {
	used := map[string]bool{}
	for _, it := range r.m.Items {
		used[it.RelativePath] = true
	}
	var orphans []string
	for _, f := range distcp {
		if !used[f] {
			orphans = append(orphans, f)
		}
	}
	sort.Strings(orphans)
	if len(orphans) > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%s: ignored %d .distcp files the metadata does not reference (left by an earlier save?): %s",
			r.dir, len(orphans), brief(orphans)))
	}
}

// brief joins names for a message, eliding after a few.
func brief(names []string) string {
	const show = 8
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:show], ", ") + fmt.Sprintf(", … (%d more)", len(names)-show)
}
