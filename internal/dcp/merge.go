package dcp

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// mergeRankLocal merges the rank-local metadata files that
// dcp.save(use_collectives=False) writes instead of .metadata. Each holds
// only its rank's items and, with no cross-rank deduplication, replicated
// tensors appear in every rank with the same box: identical boxes collapse
// to one (the lowest rank's item). A key's dtype and size must agree
// across ranks. A missing rank's file shows up as a coverage gap later.
func mergeRankLocal(dir string, files []string) (*Metadata, []string, error) {
	sort.Slice(files, func(i, j int) bool { return rankOf(files[i]) < rankOf(files[j]) })
	out := &Metadata{Items: map[ItemKey]Item{}, PlannerData: map[string][]any{}}
	index := map[string]int{} // key → position in out.Entries
	collapsed := 0
	for _, f := range files {
		m, err := parseFile(dir, f)
		if err != nil {
			return nil, nil, err
		}
		where := filepath.Join(dir, f)
		if m.PlannerData == nil {
			out.PlannerData = nil
			out.PlannerNote = fmt.Sprintf("%s: %s", f, m.PlannerNote)
		}
		if out.PlannerData != nil {
			for k, p := range m.PlannerData {
				if prev, ok := out.PlannerData[k]; ok && !slices.Equal(prev, p) {
					return nil, nil, fmt.Errorf("%w: %s: planner_data of %q is %v here and %v in a lower rank's file", ckpt.ErrCorrupt, where, k, p, prev)
				}
				out.PlannerData[k] = p
			}
		}
		if out.Version == "" {
			out.Version = m.Version
		}
		for _, e := range m.Entries {
			i, seen := index[e.Key]
			if !seen {
				index[e.Key] = len(out.Entries)
				ne := Entry{Key: e.Key}
				if e.Tensor != nil {
					ne.Tensor = &TensorMeta{DType: e.Tensor.DType, Size: e.Tensor.Size}
				}
				out.Entries = append(out.Entries, ne)
				i = len(out.Entries) - 1
			}
			prev := out.Entries[i].Tensor
			switch {
			case (prev == nil) != (e.Tensor == nil):
				return nil, nil, fmt.Errorf("%w: %s: %q is a tensor in one rank's metadata and bytes in another's", ckpt.ErrCorrupt, where, e.Key)
			case prev == nil:
				continue
			case prev.DType != e.Tensor.DType || !slices.Equal(prev.Size, e.Tensor.Size):
				return nil, nil, fmt.Errorf("%w: %s: %q is %v %v here and %v %v in a lower rank's file",
					ckpt.ErrCorrupt, where, e.Key, e.Tensor.DType, e.Tensor.Size, prev.DType, prev.Size)
			}
			for _, c := range e.Tensor.Chunks {
				if slices.ContainsFunc(prev.Chunks, func(p ChunkMeta) bool {
					return slices.Equal(p.Offsets, c.Offsets) && slices.Equal(p.Sizes, c.Sizes)
				}) {
					collapsed++
					continue
				}
				prev.Chunks = append(prev.Chunks, c)
			}
		}
		for k, it := range m.Items {
			if _, ok := out.Items[k]; !ok {
				out.Items[k] = it
			}
		}
	}
	notes := []string{fmt.Sprintf("%s: no .metadata; merged the rank-local metadata of %d ranks (%s)", dir, len(files), brief(files))}
	if collapsed > 0 {
		notes = append(notes, fmt.Sprintf("%s: %d replicated chunks appear in several ranks' metadata; the lowest rank's item is read", dir, collapsed))
	}
	if out.PlannerData == nil && out.PlannerNote == "" {
		out.PlannerNote = "the rank-local metadata has no planner_data"
	}
	return out, notes, nil
}

func rankOf(name string) int {
	sm := rankMetadataRE.FindStringSubmatch(name)
	if sm == nil {
		return -1
	}
	n, err := strconv.Atoi(sm[1])
	if err != nil {
		return -1
	}
	return n
}
