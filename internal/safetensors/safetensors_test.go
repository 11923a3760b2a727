package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const fixtures = "../../goldens/mllama-tiny-dev"

// Files written by the real safetensors 0.8.0 writer must be reproduced byte
// for byte by NewLayout from their own tensor list.
func TestLayoutMatchesRustWriter(t *testing.T) {
	for _, p := range []string{
		"base/model.safetensors",
		"base-hub/model-00001-of-00002.safetensors",
		"base-hub/model-00002-of-00002.safetensors",
		"golden-text_user.safetensors",
	} {
		t.Run(p, func(t *testing.T) {
			path := filepath.Join(fixtures, p)
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var es []Entry
			for _, ti := range f.Header.Tensors {
				es = append(es, Entry{Name: ti.Name, DType: ti.DType, Shape: ti.Shape})
			}
			l, err := NewLayout(f.Header.Metadata, es)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(l.Header, raw[:len(l.Header)]) {
				t.Fatalf("header differs:\n got %q\nwant %q", l.Header[:min(200, len(l.Header))], raw[:min(200, len(raw))])
			}
			if l.Size() != int64(len(raw)) {
				t.Errorf("size %d, file %d", l.Size(), len(raw))
			}
		})
	}
}

func TestOpenDirSharded(t *testing.T) {
	d, err := OpenDir(filepath.Join(fixtures, "base-hub"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := OpenDir(filepath.Join(fixtures, "base"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := len(d.Names()), len(s.Names()); got != want || got != 100 {
		t.Fatalf("names: sharded %d, single %d, want 100", got, want)
	}
	for _, n := range s.Names() {
		a, _, err := s.ReadBytes(n)
		if err != nil {
			t.Fatal(err)
		}
		b, _, err := d.ReadBytes(n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between base and base-hub", n)
		}
	}
	if ts, ok := d.Index.TotalSize(); !ok || ts != 4235394 {
		t.Errorf("total_size = %d, %v", ts, ok)
	}
}

func header(js string) []byte {
	b := make([]byte, 8, 8+len(js))
	binary.LittleEndian.PutUint64(b, uint64(len(js)))
	return append(b, js...)
}

func TestHeaderRules(t *testing.T) {
	cases := []struct {
		name string
		file []byte
		rule Rule
	}{
		{"short", []byte{1, 2, 3}, RuleHeaderSize},
		{"huge header length", func() []byte { b := make([]byte, 16); binary.LittleEndian.PutUint64(b, 1<<40); return b }(), RuleHeaderSize},
		{"header past end", func() []byte { b := header(`{}`); binary.LittleEndian.PutUint64(b, 50); return b }(), RuleHeaderSize},
		{"not utf8", header("{\"\xff\":1}"), RuleUTF8},
		{"not json", header(`{"a":`), RuleJSON},
		{"array", header(`[]`), RuleJSON},
		{"duplicate", append(header(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`), 0, 0), RuleDuplicate},
		{"dtype", append(header(`{"a":{"dtype":"F13","shape":[1],"data_offsets":[0,1]}}`), 0), RuleDType},
		{"negative shape", append(header(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}`), 0), RuleShape},
		{"size", append(header(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`), 0, 0, 0, 0), RuleSize},
		{"gap", append(header(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`), 0, 0), RuleOffsets},
		{"overlap", append(header(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`), 0, 0, 0), RuleOffsets},
		{"truncated data", header(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`), RuleLength},
		{"trailing data", append(header(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`), 0, 0), RuleLength},
		{"metadata", header(`{"__metadata__":{"a":1}}`), RuleMetadata},
		{"unknown field", append(header(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}`), 0), RuleJSON},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(c.file), int64(len(c.file)), "x.safetensors")
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("err = %v, want a HeaderError", err)
			}
			if he.Rule != c.rule {
				t.Errorf("rule = %s, want %s (%v)", he.Rule, c.rule, err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Error("error does not wrap ErrInvalid")
			}
		})
	}
	ok := append(header(`{"__metadata__":{"format":"pt"},"b":{"dtype":"U8","shape":[],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}, "e":{"dtype":"F32","shape":[0,3],"data_offsets":[2,2]}}  `), 7, 8)
	h, err := ReadHeader(bytes.NewReader(ok), int64(len(ok)), "ok")
	if err != nil {
		t.Fatal(err)
	}
	if h.Tensors[0].Name != "a" || h.Tensors[1].Name != "b" || h.Metadata["format"] != "pt" {
		t.Errorf("parsed %+v", h)
	}
}

func FuzzReadHeader(f *testing.F) {
	for _, p := range []string{"base/model.safetensors", "golden-image_user.safetensors"} {
		raw, err := os.ReadFile(filepath.Join(fixtures, p))
		if err != nil {
			f.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(raw)
		f.Add(raw[:8+n])
	}
	f.Add(header(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b), int64(len(b)), "fuzz")
		if err != nil {
			return
		}
		var at int64
		for _, ti := range h.Tensors {
			if ti.Begin != at || ti.End < ti.Begin {
				t.Fatalf("accepted bad offsets %+v", ti)
			}
			at = ti.End
		}
		if 8+h.HeaderLen+at != int64(len(b)) {
			t.Fatalf("accepted wrong length")
		}
	})
}

// A header length that the file cannot hold is refused before anything of
// that size is allocated.
func TestHugeHeaderClaimAllocatesNothing(t *testing.T) {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint64(b, MaxHeaderSize-8)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ReadHeader(bytes.NewReader(b), int64(len(b)), "claim")
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("accepted")
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 64<<10 {
		t.Errorf("allocated %d bytes for a refused header", d)
	}
}

// File.ReadBytes and ReadFloat32 give the tensors torch wrote: the bytes of
// every base tensor hash to the reference manifest's sha256, and the logits
// and input ids of a forward golden are those goldens.json records.
func TestFileReadTensors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixtures, "ref-manifests.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifests struct {
		Manifests map[string]map[string]struct {
			SHA256 string `json:"sha256"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &manifests); err != nil {
		t.Fatal(err)
	}
	base, err := Open(filepath.Join(fixtures, "base", SingleName))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	want := manifests.Manifests["base"]
	if len(want) != len(base.Header.Tensors) || len(want) == 0 {
		t.Fatalf("manifest has %d tensors, the file %d", len(want), len(base.Header.Tensors))
	}
	for name, w := range want {
		b, _, err := base.ReadBytes(name)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != w.SHA256 {
			t.Errorf("%s: sha256 %x, manifest %s", name, sum, w.SHA256)
		}
	}

	raw, err = os.ReadFile(filepath.Join(fixtures, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var goldens struct {
		Forward map[string]struct {
			InputIDs  []int64   `json:"input_ids"`
			TopIDs    []int     `json:"top_ids"`
			TopLogits []float64 `json:"top_logits"`
		} `json:"forward"`
	}
	if err := json.Unmarshal(raw, &goldens); err != nil {
		t.Fatal(err)
	}
	g := goldens.Forward["text_user"]
	f, err := Open(filepath.Join(fixtures, "golden-text_user.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	logits, shape, err := f.ReadFloat32("last_logits")
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 1 || shape[0] != 128256 || len(logits) != 128256 {
		t.Fatalf("last_logits: shape %v, %d values; want [128256]", shape, len(logits))
	}
	for i, id := range g.TopIDs {
		// goldens.json rounds to 6 decimals.
		if d := math.Abs(float64(logits[id]) - g.TopLogits[i]); d > 1e-5 {
			t.Errorf("last_logits[%d] = %v, goldens.json top_logits[%d] = %v", id, logits[id], i, g.TopLogits[i])
		}
	}
	b, info, err := f.ReadBytes("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, info.NumElements())
	for i := range ids {
		ids[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	if !slices.Equal(ids, g.InputIDs) {
		t.Errorf("input_ids %v, goldens.json %v", ids, g.InputIDs)
	}

	path := filepath.Join(fixtures, "golden-text_user.safetensors")
	if _, _, err := f.ReadFloat32("pixel_values"); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"pixel_values"`) {
		t.Errorf("reading an absent tensor: error %v, want one naming %s and \"pixel_values\"", err, path)
	}
}
