package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// DefaultMaxShardSize is transformers 4.x's and the Hub's default (5GB,
// decimal). transformers 5.x defaults to 50GB, which writes an 11B model as
// one file.
const DefaultMaxShardSize = 5_000_000_000

// ParseSize parses a shard size the way huggingface_hub does: an integer
// number of bytes or a number with a decimal (KB, MB, GB, TB) or binary (KiB,
// MiB, GiB, TiB) unit.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return !unicode.IsDigit(r) && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	}
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}[unit]
	f, err := strconv.ParseFloat(num, 64)
	if mult == 0 || err != nil || f <= 0 {
		return 0, fmt.Errorf("shard size %q: want a positive number of bytes with an optional unit (KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s)
	}
	v := f * mult
	if v < 1 || v > 1<<62 {
		return 0, fmt.Errorf("shard size %q is out of range", s)
	}
	return int64(v), nil
}

// naturalLess orders names as transformers 5.x's dot_natural_key does before
// splitting into shards: dot-separated parts, all-digit parts numerically and
// before text parts, text parts by string order.
func naturalLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, y := pa[i], pb[i]
		if x == y {
			continue
		}
		nx, ex := strconv.ParseUint(x, 10, 64)
		ny, ey := strconv.ParseUint(y, 10, 64)
		dx, dy := ex == nil && isDigits(x), ey == nil && isDigits(y)
		switch {
		case dx && dy:
			if nx != ny {
				return nx < ny
			}
			return x < y
		case dx:
			return true
		case dy:
			return false
		}
		return x < y
	}
	return len(pa) < len(pb)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// shardPlan is one output file.
type shardPlan struct {
	Name    string
	Entries []safetensors.Entry
	Layout  *safetensors.Layout
}

// splitShards splits entries (already in save order) the way
// huggingface_hub's split_state_dict_into_shards does: a tensor larger than
// max goes alone into its own shard (appended before the shard being filled),
// otherwise a new shard starts when the next tensor would overflow the
// current one.
func splitShards(entries []safetensors.Entry, max int64) [][]safetensors.Entry {
	var shards [][]safetensors.Entry
	var cur []safetensors.Entry
	var curSize int64
	for _, e := range entries {
		n := e.NumBytes()
		if n > max {
			shards = append(shards, []safetensors.Entry{e})
			continue
		}
		if len(cur) > 0 && curSize+n > max {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, e)
		curSize += n
	}
	if len(cur) > 0 {
		shards = append(shards, cur)
	}
	return shards
}

// planShards orders entries, splits them and names the files as
// save_pretrained does: model.safetensors for one shard, otherwise
// model-00001-of-0000N.safetensors.
func planShards(entries []safetensors.Entry, max int64) ([]shardPlan, error) {
	es := append([]safetensors.Entry(nil), entries...)
	sort.SliceStable(es, func(i, j int) bool { return naturalLess(es[i].Name, es[j].Name) })
	groups := splitShards(es, max)
	plans := make([]shardPlan, len(groups))
	for i, g := range groups {
		name := safetensors.SingleName
		if len(groups) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(groups))
		}
		l, err := safetensors.NewLayout(map[string]string{"format": "pt"}, g)
		if err != nil {
			return nil, err
		}
		plans[i] = shardPlan{Name: name, Entries: g, Layout: l}
	}
	return plans, nil
}

// indexJSON renders model.safetensors.index.json as transformers does:
// json.dumps(index, indent=2, sort_keys=True) + "\n". totalParams < 0 leaves
// out metadata.total_parameters (transformers 4.x form).
func indexJSON(plans []shardPlan, totalParams int64) ([]byte, error) {
	wm := map[string]string{}
	var total int64
	for _, p := range plans {
		for _, e := range p.Entries {
			wm[e.Name] = p.Name
			total += e.NumBytes()
		}
	}
	md := map[string]int64{"total_size": total}
	if totalParams >= 0 {
		md["total_parameters"] = totalParams
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"metadata": md, "weight_map": wm}); err != nil {
		return nil, err
	}
	return asciiEscape(buf.Bytes()), nil
}

// asciiEscape rewrites non-ASCII runes as \uXXXX escapes (json.dumps'
// ensure_ascii default); the input is JSON so this only touches strings.
func asciiEscape(b []byte) []byte {
	var out bytes.Buffer
	for _, r := range string(b) {
		if r < 0x80 {
			out.WriteRune(r)
			continue
		}
		if r > 0xFFFF {
			r -= 0x10000
			fmt.Fprintf(&out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
			continue
		}
		fmt.Fprintf(&out, `\u%04x`, r)
	}
	return out.Bytes()
}
