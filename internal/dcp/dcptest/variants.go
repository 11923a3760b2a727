package dcptest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"

	"github.com/klauspost/compress/zstd"

	"github.com/ckptgate/ckptgate/internal/pickle"
)

var dataFileRE = regexp.MustCompile(`^__([0-9]+)_[0-9]+\.distcp$`)

// indexFields reads a recorded MetadataIndex: its fqn and, for tensor
// items, its offsets.
func indexFields(k any) (fqn string, offsets []int64, ok bool) {
	o, isObj := k.(*pickle.Object)
	if !isObj {
		return "", nil, false
	}
	f, _ := o.Attr("fqn")
	fqn, ok = f.(string)
	off, _ := o.Attr("offset")
	offsets, _ = sizeDims(off)
	return fqn, offsets, ok
}

func itemFile(info any) string {
	o, _ := info.(*pickle.Object)
	if o == nil {
		return ""
	}
	p, _ := o.Attr("relative_path")
	s, _ := p.(string)
	return s
}

// SplitRankLocal rewrites a fixture run the way dcp.save(...,
// use_collectives=False) (torch 2.11) lays a checkpoint out: no .metadata,
// one __R.metadata per rank with only the items in that rank's files.
// Tensors saved whole (one chunk) are listed by every rank, as replicated
// tensors are when no rank deduplicates them; all point at the one item
// the fixture has.
func SplitRankLocal(dir string) error {
	p := filepath.Join(dir, ".metadata")
	root, err := DecodeMetadata(p)
	if err != nil {
		return err
	}
	sdm, err := dictField(root, "state_dict_metadata")
	if err != nil {
		return err
	}
	sd, err := dictField(root, "storage_data")
	if err != nil {
		return err
	}
	pd, err := dictField(root, "planner_data")
	if err != nil {
		return err
	}
	// rank of each item, by fqn and offsets.
	rankOf := map[string]int{}
	ranks := map[int]bool{}
	for _, e := range sd.Entries() {
		fqn, off, ok := indexFields(e.Key)
		sm := dataFileRE.FindStringSubmatch(itemFile(e.Value))
		if !ok || sm == nil {
			return fmt.Errorf("%s: storage_data entry %v is not a plain rank item", p, e.Key)
		}
		r, _ := strconv.Atoi(sm[1])
		rankOf[fmt.Sprint(fqn, off)] = r
		ranks[r] = true
	}
	var rankList []int
	for r := range ranks {
		rankList = append(rankList, r)
	}
	sort.Ints(rankList)
	for _, r := range rankList {
		rsdm, rsd, rpd := pickle.NewDict(), pickle.NewDict(), pickle.NewDict()
		for _, e := range sdm.Entries() {
			key := e.Key.(string)
			tsm := e.Value.(*pickle.Object)
			if tsm.Class.Name == "BytesStorageMetadata" {
				if rankOf[fmt.Sprint(key, []int64(nil))] == r {
					if err := rsdm.Set(key, tsm); err != nil {
						return err
					}
				}
				continue
			}
			cv, _ := tsm.Attr("chunks")
			chunks := cv.(*pickle.List)
			var mine []any
			for _, c := range chunks.Items {
				off, _ := c.(*pickle.Object).Attr("offsets")
				dims, _ := sizeDims(off)
				owner, has := rankOf[fmt.Sprint(key, dims)]
				if len(chunks.Items) == 1 || !has || owner == r {
					mine = append(mine, c)
				}
			}
			if len(mine) == 0 {
				continue
			}
			st := pickle.NewDict()
			for _, f := range tsm.State.(*pickle.Dict).Entries() {
				if err := st.Set(f.Key, f.Value); err != nil {
					return err
				}
			}
			if err := st.Set("chunks", &pickle.List{Items: mine}); err != nil {
				return err
			}
			if err := rsdm.Set(key, &pickle.Object{Class: tsm.Class, Args: tsm.Args, NewObj: tsm.NewObj, State: st}); err != nil {
				return err
			}
		}
		for _, e := range sd.Entries() {
			fqn, off, _ := indexFields(e.Key)
			if _, listed := rsdm.Get(fqn); listed && (rankOf[fmt.Sprint(fqn, off)] == r || wholeTensor(sdm, fqn)) {
				if err := rsd.Set(e.Key, e.Value); err != nil {
					return err
				}
			}
		}
		for _, e := range rsdm.Entries() {
			v, _ := pd.Get(e.Key)
			if err := rpd.Set(e.Key, v); err != nil {
				return err
			}
		}
		st := pickle.NewDict()
		for _, f := range root.State.(*pickle.Dict).Entries() {
			v := f.Value
			switch f.Key {
			case "state_dict_metadata":
				v = rsdm
			case "storage_data":
				v = rsd
			case "planner_data":
				v = rpd
			}
			if err := st.Set(f.Key, v); err != nil {
				return err
			}
		}
		b, err := Encode(&pickle.Object{Class: root.Class, Args: root.Args, NewObj: root.NewObj, State: st})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("__%d.metadata", r)), b, 0o644); err != nil {
			return err
		}
	}
	return os.Remove(p)
}

// wholeTensor reports whether key is saved as a single chunk.
func wholeTensor(sdm *pickle.Dict, key string) bool {
	v, _ := sdm.Get(key)
	tsm, ok := v.(*pickle.Object)
	if !ok || tsm.Class.Name != "TensorStorageMetadata" {
		return false
	}
	cv, _ := tsm.Attr("chunks")
	chunks, ok := cv.(*pickle.List)
	return ok && len(chunks.Items) == 1
}

// CompressItems rewrites every data file of a fixture run with each item
// zstd-compressed, and records the transform descriptor "stream.zstd/1"
// for every item, as FileSystemWriter(_extensions=[ZStandard()]) does.
func CompressItems(dir string) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return err
	}
	defer enc.Close()
	return EditMetadata(dir, func(root *pickle.Object) error {
		sd, err := dictField(root, "storage_data")
		if err != nil {
			return err
		}
		type ref struct {
			info      *pickle.Object
			off, size int64
		}
		byFile := map[string][]ref{}
		for _, e := range sd.Entries() {
			info := e.Value.(*pickle.Object)
			o, _ := info.Attr("offset")
			l, _ := info.Attr("length")
			byFile[itemFile(info)] = append(byFile[itemFile(info)], ref{info, o.(int64), l.(int64)})
		}
		for f, refs := range byFile {
			p := filepath.Join(dir, f)
			old, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			slices.SortFunc(refs, func(a, b ref) int { return int(a.off - b.off) })
			var out []byte
			for _, r := range refs {
				z := enc.EncodeAll(old[r.off:r.off+r.size], nil)
				if err := setField(r.info, "offset", int64(len(out))); err != nil {
					return err
				}
				if err := setField(r.info, "length", int64(len(z))); err != nil {
					return err
				}
				if err := setField(r.info, "transform_descriptors", &pickle.List{Items: []any{"stream.zstd/1"}}); err != nil {
					return err
				}
				out = append(out, z...)
			}
			if err := os.WriteFile(p, out, 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}
