package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

const fx = "../goldens/mllama-tiny-dev"

type manifestEntry struct {
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
	SHA256 string  `json:"sha256"`
}

func loadManifests(t testing.TB) map[string]map[string]manifestEntry {
	b, err := os.ReadFile(filepath.Join(fx, "ref-manifests.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Manifests map[string]map[string]manifestEntry `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Manifests
}

// runs are the fixture checkpoints: four DCP directories and the
// FULL_STATE_DICT file, all made by real torch 2.11 FSDP.
var runs = map[string]string{
	"fsdp1":  "runs/fsdp1",
	"fsdp2":  "runs/fsdp2",
	"freeze": "runs/freeze",
	"legacy": "runs/legacy",
	"full":   "runs/full/mllama-tiny-1.pt",
}

// manifestOf hashes every tensor of a converted directory the way
// ref-manifests.json does: sha256 of the raw little-endian bytes.
func manifestOf(t testing.TB, dir string) map[string]manifestEntry {
	d, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out := map[string]manifestEntry{}
	for _, n := range d.Names() {
		b, ti, err := d.ReadBytes(n)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		out[n] = manifestEntry{DType: ti.DType.String(), Shape: ti.Shape, SHA256: hex.EncodeToString(s[:])}
	}
	return out
}

// Every run converted at every dtype must equal, tensor for tensor, what
// Hugging Face's reference procedure (from_pretrained + load + save_pretrained)
// wrote for it.
func TestConvertMatchesReferenceManifests(t *testing.T) {
	manifests := loadManifests(t)
	for run, src := range runs {
		for _, dt := range []struct {
			flag string
			d    dtype.DType
			ref  string
		}{{"auto", dtype.Invalid, "bf16"}, {"bf16", dtype.BF16, "bf16"}, {"fp32", dtype.F32, "fp32"}} {
			t.Run(run+"-"+dt.flag, func(t *testing.T) {
				t.Parallel()
				out := filepath.Join(t.TempDir(), "out")
				res, err := Run(context.Background(), filepath.Join(fx, src), filepath.Join(fx, "base"), out, Options{DType: dt.d, SkipPreflight: true})
				if err != nil {
					t.Fatal(err)
				}
				want := manifests[run+"-"+dt.ref]
				got := manifestOf(t, out)
				if len(got) != len(want) || len(want) != 100 {
					t.Fatalf("%d tensors, reference has %d", len(got), len(want))
				}
				for n, w := range want {
					g, ok := got[n]
					if !ok {
						t.Errorf("%s missing", n)
						continue
					}
					if !reflect.DeepEqual(g, w) {
						t.Errorf("%s: got %+v, reference %+v", n, g, w)
					}
				}
				checkSideFiles(t, out, filepath.Join(fx, "base"), dt.ref)
				if res.Tensors != 100 || len(res.Files) != 1 {
					t.Errorf("result %+v", res)
				}
			})
		}
	}
}

// checkSideFiles asserts that transformers would find everything it loads:
// each side file of the base, byte-identical except config.json, whose dtype
// alone changed.
func checkSideFiles(t *testing.T, out, base, ref string) {
	t.Helper()
	files, _, err := sideFilePlan(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 6 {
		t.Fatalf("base side files: %v", files)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Errorf("side file %s: %v", f, err)
			continue
		}
		want, _ := os.ReadFile(filepath.Join(base, f))
		if f != "config.json" {
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the base", f)
			}
			continue
		}
		var g, w map[string]any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(want, &w)
		wantDType := map[string]string{"bf16": "bfloat16", "fp32": "float32"}[ref]
		if g["dtype"] != wantDType {
			t.Errorf("config dtype %v, want %s", g["dtype"], wantDType)
		}
		g["dtype"], w["dtype"] = nil, nil
		if !reflect.DeepEqual(g, w) {
			t.Errorf("config.json changed beyond its dtype")
		}
		cfg, err := mllama.ParseConfig(got)
		if err != nil || cfg.DType.TorchName() != wantDType {
			t.Errorf("config does not parse back: %v", err)
		}
	}
}

// legacy and full trained with the same seeds and world size: their
// conversions must be identical, although one is a DCP directory in the
// legacy module layout and the other a torch.save file in the 5.x layout.
func TestLegacyAndFullConvertIdentically(t *testing.T) {
	a := filepath.Join(t.TempDir(), "a")
	b := filepath.Join(t.TempDir(), "b")
	for _, c := range [][2]string{{runs["legacy"], a}, {runs["full"], b}} {
		if _, err := Run(context.Background(), filepath.Join(fx, c[0]), filepath.Join(fx, "base"), c[1], Options{SkipPreflight: true}); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := os.ReadFile(filepath.Join(a, "model.safetensors"))
	y, _ := os.ReadFile(filepath.Join(b, "model.safetensors"))
	if !bytes.Equal(x, y) {
		t.Error("legacy and full conversions differ")
	}
}

// fp16 has no reference manifest; every element must be the round-to-nearest
// of the fp32 reference value (checked against the fp32 conversion, which
// does match its manifest).
func TestConvertFP16IsRoundedFP32(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(fx, runs["fsdp2"]) // fp32 training: the cast is lossy
	for _, c := range []struct {
		d   dtype.DType
		out string
	}{{dtype.F16, "h"}, {dtype.F32, "f"}} {
		if _, err := Run(context.Background(), src, filepath.Join(fx, "base"), filepath.Join(dir, c.out), Options{DType: c.d, SkipPreflight: true}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := safetensors.OpenDir(filepath.Join(dir, "h"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f, err := safetensors.OpenDir(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checked := 0
	for _, n := range f.Names() {
		hb, ht, _ := h.ReadBytes(n)
		fb, _, _ := f.ReadBytes(n)
		if ht.DType != dtype.F16 {
			t.Fatalf("%s is %v", n, ht.DType)
		}
		for i := 0; i < len(fb)/4; i++ {
			x := math.Float32frombits(binary.LittleEndian.Uint32(fb[4*i:]))
			got := dtype.F32FromF16(binary.LittleEndian.Uint16(hb[2*i:]))
			// Neighbouring halves: the result must be no farther from x than
			// half the spacing of halves around it.
			ulp := halfULP(got)
			if math.Abs(float64(got)-float64(x)) > ulp/2+1e-12 {
				t.Fatalf("%s[%d]: %v rounded to %v", n, i, x, got)
			}
			checked++
		}
	}
	if checked < 2_000_000 {
		t.Errorf("checked only %d elements", checked)
	}
}

func halfULP(h float32) float64 {
	a := math.Abs(float64(h))
	if a < 6.103515625e-05 { // subnormal range
		return math.Ldexp(1, -24)
	}
	_, e := math.Frexp(a)
	return math.Ldexp(1, e-11)
}

// base-hub is a 4.45-era directory: two shards with an index, and other side
// files. The output follows it (legacy names, its side files), and a small
// --max-shard-size produces shards and an index the way save_pretrained does.
func TestConvertWithHubBaseAndShards(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	res, err := Run(context.Background(), filepath.Join(fx, runs["fsdp1"]), filepath.Join(fx, "base-hub"), out, Options{MaxShardSize: 1_000_000, SkipPreflight: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	// lm_head and embed_tokens (2 MB each) exceed 1 MB and get a shard
	// each; the other 98 tensors fit in one.
	want := []string{"chat_template.json", "config.json", "generation_config.json",
		"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
		"model.safetensors.index.json", "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("files %v\nwant %v (result %v)", names, want, res.Files)
	}
	got := manifestOf(t, out)
	ref := loadManifests(t)["fsdp1-bf16"]
	for n, w := range ref {
		if !reflect.DeepEqual(got[n], w) {
			t.Errorf("%s differs from the reference", n)
		}
	}
	ix, err := safetensors.ReadIndex(filepath.Join(out, safetensors.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	if ts, ok := ix.TotalSize(); !ok || ts != 4235394 {
		t.Errorf("total_size %d", ts)
	}
	if _, ok := ix.Metadata["total_parameters"]; ok {
		t.Error("a 4.x base got a 5.x index")
	}
	raw, _ := os.ReadFile(filepath.Join(out, "config.json"))
	var cfg map[string]any
	json.Unmarshal(raw, &cfg)
	if cfg["torch_dtype"] != "bfloat16" || cfg["dtype"] != nil {
		t.Errorf("4.x config dtype fields: torch_dtype=%v dtype=%v", cfg["torch_dtype"], cfg["dtype"])
	}
}

// A second conversion to the same --out is refused without --force and
// replaces the directory with it.
func TestOutputRules(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	src := filepath.Join(fx, runs["full"])
	base := filepath.Join(fx, "base")
	if _, err := Run(context.Background(), src, base, out, Options{SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), src, base, out, Options{SkipPreflight: true}); err == nil {
		t.Fatal("existing --out accepted without --force")
	}
	if _, err := Run(context.Background(), src, base, out, Options{Force: true, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), filepath.Join(fx, runs["fsdp1"]), base, filepath.Join(fx, runs["fsdp1"], "out"), Options{SkipPreflight: true}); err == nil {
		t.Fatal("--out inside the source accepted")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("leftovers beside the output: %v", ents)
	}
}

// Valid variants of the fsdp1 run that torch 2.11 can also write — zstd
// compressed items (FileSystemWriter(_extensions=[ZStandard()])) and
// rank-local metadata (dcp.save(use_collectives=False)) — convert to exactly
// the reference, and compressed items count in the memory estimate.
func TestConvertDCPVariants(t *testing.T) {
	ref := loadManifests(t)["fsdp1-bf16"]
	for name, apply := range map[string]func(string) error{
		"zstd":       dcptest.CompressItems,
		"rank-local": dcptest.SplitRankLocal,
	} {
		t.Run(name, func(t *testing.T) {
			src := dcptest.CopyRun(t, filepath.Join(fx, runs["fsdp1"]))
			if err := apply(src); err != nil {
				t.Fatal(err)
			}
			c, err := OpenSource(src)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := NewPlan(c, filepath.Join(fx, "base"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			base := p.memoryNeed(Options{Jobs: 2, BufSize: 1 << 20})
			if name == "zstd" && base < 2*3*(1<<20)+64<<20+2*(2052096/4) {
				t.Errorf("memory estimate %d ignores decoded items", base)
			}
			out := filepath.Join(t.TempDir(), "out")
			if _, err := p.Write(context.Background(), out, Options{SkipPreflight: true}); err != nil {
				t.Fatal(err)
			}
			got := manifestOf(t, out)
			for n, w := range ref {
				if !reflect.DeepEqual(got[n], w) {
					t.Errorf("%s differs from the reference", n)
				}
			}
		})
	}
}

// Chunks cut into parts copied by different workers give the same bytes, and
// a damaged storage is still caught by the CRC combined from the parts.
func TestConvertInParts(t *testing.T) {
	ref := loadManifests(t)["fsdp1-fp32"]
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Run(context.Background(), filepath.Join(fx, runs["fsdp1"]), filepath.Join(fx, "base"), out,
		Options{DType: dtype.F32, PartBytes: 1000, Jobs: 3, BufSize: 300, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	got := manifestOf(t, out)
	for n, w := range ref {
		if !reflect.DeepEqual(got[n], w) {
			t.Errorf("%s differs from the reference", n)
		}
	}
	src := dcptest.CopyRun(t, filepath.Join(fx, runs["fsdp1"]))
	for _, c := range dcptest.Corruptions {
		if c.Name == "crc-mismatch" {
			if err := c.Apply(src); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err := Run(context.Background(), src, filepath.Join(fx, "base"), filepath.Join(t.TempDir(), "bad"), Options{PartBytes: 1000, SkipPreflight: true})
	if err == nil || !strings.Contains(err.Error(), "CRC-32") {
		t.Errorf("damaged storage converted in parts: %v", err)
	}
}
