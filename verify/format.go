package verify

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// FormatChecks are the safetensors.* and index.* families.
var FormatChecks = []*Check{SafetensorsHeader, SafetensorsLayout, IndexWeightMap, IndexTotalSize, IndexShards}

var shardName = regexp.MustCompile(`^model(-\d{5}-of-\d{5})?\.safetensors$`)

// weightFiles lists the safetensors files of the model directory: those in
// the index (when there is one) and any model*.safetensors on disk.
func weightFiles(dir string) []string {
	seen := map[string]bool{}
	if ix, err := safetensors.ReadIndex(filepath.Join(dir, safetensors.IndexName)); err == nil {
		for _, f := range ix.WeightMap {
			if f == filepath.Base(f) {
				seen[f] = true
			}
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if shardName.MatchString(e.Name()) {
			seen[e.Name()] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// SafetensorsHeader applies the reference parser's rules to every file.
var SafetensorsHeader = &Check{
	ID: "safetensors.header",
	Doc: `Every weight file passes every rule of the reference safetensors parser.
The 8-byte header length is within 100,000,000 and the file; the header is UTF-8 JSON with no duplicate
names; dtypes are known; shapes are non-negative integers; data offsets are contiguous from 0 with no gap or
overlap; each tensor's byte size equals its shape times its element size; the file length is exactly
8 + header + data. Fails per file, naming the rule and the tensor.`,
	Run: func(p *Pass) error {
		files := weightFiles(p.Model)
		if len(files) == 0 {
			p.Failf("", "no weight files in %s", p.Model)
		}
		for _, f := range files {
			path := filepath.Join(p.Model, f)
			fh, err := os.Open(path)
			if err != nil {
				p.Failf(f, "%v", err)
				continue
			}
			st, _ := fh.Stat()
			h, err := safetensors.ReadHeader(fh, st.Size(), f)
			fh.Close()
			var he *safetensors.HeaderError
			switch {
			case errors.As(err, &he):
				p.Report("fail", f, err.Error(), map[string]string{"rule": string(he.Rule), "tensor": he.Tensor})
			case err != nil:
				p.Failf(f, "%v", err)
			default:
				p.Passf(f, "%d tensors, header %d bytes, data %d bytes", len(h.Tensors), h.HeaderLen, h.DataLen())
			}
		}
		return nil
	},
}

// SafetensorsLayout compares the bytes of each header with save_pretrained's.
var SafetensorsLayout = &Check{
	ID: "safetensors.layout",
	Doc: `Each weight file is laid out byte for byte as safetensors' writer (save_pretrained) lays it out.
__metadata__ is {"format":"pt"} (transformers refuses other formats for PyTorch weights), tensors are ordered
by dtype then name with contiguous data, the JSON is compact and padded to 8 bytes. A file that differs only
in layout still loads: that is a warning; a missing or wrong "format" is a failure.`,
	Run: func(p *Pass) error {
		for _, f := range weightFiles(p.Model) {
			sf, err := safetensors.Open(filepath.Join(p.Model, f))
			if err != nil {
				p.Skipf(f, "unreadable (see safetensors.header)")
				continue
			}
			h := sf.Header
			if h.Metadata["format"] != "pt" {
				p.Failf(f, `__metadata__ is %v, want {"format":"pt"}`, h.Metadata)
				sf.Close()
				continue
			}
			var es []safetensors.Entry
			for _, t := range h.Tensors {
				es = append(es, safetensors.Entry{Name: t.Name, DType: t.DType, Shape: t.Shape})
			}
			l, err := safetensors.NewLayout(h.Metadata, es)
			raw := make([]byte, h.DataStart())
			_, rerr := sf.ReaderAt().ReadAt(raw, 0)
			sf.Close()
			if err != nil || rerr != nil {
				p.Warnf(f, "cannot re-lay out the header: %v %v", err, rerr)
				continue
			}
			if bytes.Equal(l.Header, raw) {
				p.Passf(f, "byte-identical to save_pretrained's layout")
			} else {
				p.Warnf(f, "loads, but the header is not laid out as save_pretrained writes it (order, spacing or padding)")
			}
		}
		return nil
	},
}

func loadIndex(p *Pass) (*safetensors.Index, bool) {
	path := filepath.Join(p.Model, safetensors.IndexName)
	if !exists(p.Model, safetensors.IndexName) {
		p.Skipf("", "single-file model: no %s", safetensors.IndexName)
		return nil, false
	}
	ix, err := safetensors.ReadIndex(path)
	if err != nil {
		p.Failf(safetensors.IndexName, "%v", err)
		return nil, false
	}
	return ix, true
}

// headerTensors maps every tensor found in the weight files to its file.
func headerTensors(dir string) (map[string][]string, map[string]int64) {
	where := map[string][]string{}
	sizes := map[string]int64{}
	for _, f := range weightFiles(dir) {
		sf, err := safetensors.Open(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		for _, t := range sf.Header.Tensors {
			where[t.Name] = append(where[t.Name], f)
			sizes[t.Name] = t.NumBytes()
		}
		sf.Close()
	}
	return where, sizes
}

// IndexWeightMap checks the index against the shards' headers.
var IndexWeightMap = &Check{
	ID: "index.weight_map",
	Doc: `model.safetensors.index.json's weight_map is complete and exact.
Every tensor of every shard is listed once, mapped to the shard that holds it; no entry names a tensor that
no shard holds or a shard that does not exist; no tensor is in two shards. Skipped for single-file models.`,
	Run: func(p *Pass) error {
		ix, ok := loadIndex(p)
		if !ok {
			return nil
		}
		where, _ := headerTensors(p.Model)
		var problems []string
		names := slices.Sorted(maps.Keys(ix.WeightMap))
		for _, n := range names {
			f := ix.WeightMap[n]
			got := where[n]
			switch {
			case len(got) == 0:
				problems = append(problems, fmt.Sprintf("%s → %s, but no shard holds it", n, f))
			case len(got) > 1:
				problems = append(problems, fmt.Sprintf("%s is in %s", n, strings.Join(got, " and ")))
			case got[0] != f:
				problems = append(problems, fmt.Sprintf("%s → %s, but it is in %s", n, f, got[0]))
			}
		}
		var unlisted []string
		for n, fs := range where {
			if _, ok := ix.WeightMap[n]; !ok {
				unlisted = append(unlisted, n+" (in "+fs[0]+")")
			}
		}
		sort.Strings(unlisted)
		for _, u := range unlisted {
			problems = append(problems, "not in the index: "+u)
		}
		if len(problems) > 0 {
			p.Failf(safetensors.IndexName, "%d problem(s): %s", len(problems), strings.Join(limitList(problems, 20), "; "))
		} else {
			p.Passf(safetensors.IndexName, "%d tensors, each mapped to the shard that holds it", len(names))
		}
		return nil
	},
}

// IndexTotalSize checks metadata.total_size.
var IndexTotalSize = &Check{
	ID: "index.total_size",
	Doc: `metadata.total_size equals the sum of the tensors' byte sizes (data only, no headers).
Skipped for single-file models.`,
	Run: func(p *Pass) error {
		ix, ok := loadIndex(p)
		if !ok {
			return nil
		}
		_, sizes := headerTensors(p.Model)
		var sum int64
		for _, s := range sizes {
			sum += s
		}
		ts, ok := ix.TotalSize()
		switch {
		case !ok:
			p.Failf(safetensors.IndexName, "metadata.total_size is missing or not an integer")
		case ts != sum:
			p.Failf(safetensors.IndexName, "metadata.total_size is %d, the tensors hold %d bytes", ts, sum)
		default:
			p.Passf(safetensors.IndexName, "total_size %d matches the tensors", ts)
		}
		return nil
	},
}

// IndexShards checks for stray or missing shard files.
var IndexShards = &Check{
	ID: "index.shards",
	Doc: `The shard files on disk are exactly those the index names, with save_pretrained's names.
A model-XXXXX-of-YYYYY.safetensors file the index does not name (a stale shard of an earlier save), a
model.safetensors beside an index, or names whose count disagrees with YYYYY fail. Skipped for single-file
models.`,
	Run: func(p *Pass) error {
		ix, ok := loadIndex(p)
		if !ok {
			return nil
		}
		named := map[string]bool{}
		for _, f := range ix.WeightMap {
			named[f] = true
		}
		var stray []string
		ents, _ := os.ReadDir(p.Model)
		for _, e := range ents {
			if shardName.MatchString(e.Name()) && !named[e.Name()] {
				stray = append(stray, e.Name())
			}
		}
		var bad []string
		n := len(named)
		for f := range named {
			var i, of int
			if _, err := fmt.Sscanf(f, "model-%05d-of-%05d.safetensors", &i, &of); err != nil || of != n || i < 1 || i > n {
				bad = append(bad, f)
			}
		}
		sort.Strings(bad)
		switch {
		case len(stray) > 0:
			p.Failf(p.Model, "shard files not in the index (stale?): %s", strings.Join(stray, ", "))
		case len(bad) > 0:
			p.Failf(p.Model, "shard names do not follow model-XXXXX-of-%05d.safetensors: %s", n, strings.Join(bad, ", "))
		default:
			p.Passf(p.Model, "%d shard(s), all named by the index", n)
		}
		return nil
	},
}

func limitList(l []string, n int) []string {
	if len(l) <= n {
		return l
	}
	return append(append([]string(nil), l[:n]...), fmt.Sprintf("… %d more", len(l)-n))
}
