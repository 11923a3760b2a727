package verify_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/reports"
	"github.com/ckptgate/ckptgate/verify"
)

const fx = "../goldens/mllama-tiny-dev"

var runs = map[string]string{
	"fsdp1":  "runs/fsdp1",
	"fsdp2":  "runs/fsdp2",
	"freeze": "runs/freeze",
	"legacy": "runs/legacy",
	"full":   "runs/full/mllama-tiny-1.pt",
}

var (
	convMu    sync.Mutex
	converted = map[string]string{}
	convRoot  string
)

// convertRun converts a fixture run once per test binary and returns the
// directory; tests that tamper copy it first.
func convertRun(t *testing.T, run string, d dtype.DType) string {
	t.Helper()
	convMu.Lock()
	defer convMu.Unlock()
	key := run + "/" + d.String()
	if dir, ok := converted[key]; ok {
		return dir
	}
	if convRoot == "" {
		var err error
		if convRoot, err = os.MkdirTemp("", "ckptgate-verify-test-"); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(convRoot, run+"-"+d.String())
	if _, err := convert.Run(context.Background(), filepath.Join(fx, runs[run]), filepath.Join(fx, "base"), out, convert.Options{DType: d, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	converted[key] = out
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if convRoot != "" {
		os.RemoveAll(convRoot)
	}
	os.Exit(code)
}

func runVerify(t *testing.T, in *verify.Inputs) *reports.Report {
	t.Helper()
	if in.Base == "" {
		in.Base = filepath.Join(fx, "base")
	}
	if in.Forward == "" {
		// The forward.* family has its own tests (forward_test.go); here
		// it would only repeat the same passes for every conversion.
		in.Forward = "off"
	}
	if in.Policy == nil {
		p, err := verify.LoadPolicy("")
		if err != nil {
			t.Fatal(err)
		}
		in.Policy = p
	}
	r, err := verify.Run(context.Background(), in, verify.All())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func openSource(t *testing.T, run string) *verify.Inputs {
	src, err := convert.OpenSource(filepath.Join(fx, runs[run]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return &verify.Inputs{SourcePath: runs[run], Source: src}
}

func failures(r *reports.Report) []string {
	var out []string
	for _, c := range r.Checks {
		if c.Status == reports.StatusFail {
			out = append(out, c.ID+" "+c.Subject+": "+c.Message)
		}
	}
	return out
}

func failedIDs(r *reports.Report) map[string]bool {
	m := map[string]bool{}
	for _, c := range r.Checks {
		if c.Status == reports.StatusFail {
			m[c.ID] = true
		}
	}
	return m
}

// Every conversion of the fixtures verifies clean against its source, at
// both precisions; the freeze run needs the freeze-llm policy, and its
// frozen tensors are exactly those ref-manifests.json lists as identical to
// the base.
func TestVerifyPassesOnConversions(t *testing.T) {
	for run := range runs {
		for _, d := range []dtype.DType{dtype.BF16, dtype.F32} {
			t.Run(run+"-"+d.String(), func(t *testing.T) {
				in := openSource(t, run)
				in.Model = convertRun(t, run, d)
				if run == "freeze" {
					p, _ := verify.LoadPolicy("freeze-llm")
					in.Policy = p
				}
				in.Manifest = filepath.Join(fx, "ref-manifests.json") + "#" + run + "-" + map[dtype.DType]string{dtype.BF16: "bf16", dtype.F32: "fp32"}[d]
				r := runVerify(t, in)
				if f := failures(r); len(f) > 0 {
					t.Fatalf("failures:\n%s", strings.Join(f, "\n"))
				}
				if run == "freeze" {
					checkFrozenSet(t, r)
				}
			})
		}
	}
}

func checkFrozenSet(t *testing.T, r *reports.Report) {
	b, err := os.ReadFile(filepath.Join(fx, "ref-manifests.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Identical map[string][]string `json:"identical_to_base"`
	}
	json.Unmarshal(b, &m)
	want := m.Identical["freeze"]
	sort.Strings(want)
	var msg string
	for _, c := range r.Checks {
		if c.ID == "tensors.frozen" && c.Status == reports.StatusPass {
			msg = c.Message
		}
	}
	if !strings.Contains(msg, "21 frozen tensors identical") || len(want) != 21 {
		t.Errorf("tensors.frozen: %q; reference lists %d identical tensors", msg, len(want))
	}
}

// tamper applies one corruption to a copy of a converted fsdp1 directory and
// names the check that must fail.
type tamper struct {
	name   string
	check  string
	policy string
	run    string
	apply  func(t *testing.T, dir string)
}

// readTensor reads a tensor of dir/model.safetensors and its offset in the
// file.
func readTensor(t *testing.T, dir, name string) ([]byte, int64) {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, ti, err := f.ReadBytes(name)
	if err != nil {
		t.Fatal(err)
	}
	return b, f.Header.DataStart() + ti.Begin
}

func writeAt(t *testing.T, path string, b []byte, off int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestTamperedOutputsFail(t *testing.T) {
	cases := []tamper{
		{name: "one element changed", check: "tensors.source_exact", apply: func(t *testing.T, dir string) {
			b, off := readTensor(t, dir, "vision_model.transformer.layers.0.mlp.fc1.weight")
			v := binary.LittleEndian.Uint16(b[20:])
			binary.LittleEndian.PutUint16(b[20:], v+1)
			writeAt(t, filepath.Join(dir, "model.safetensors"), b[20:22], off+20)
		}},
		{name: "two same-shaped tensors swapped", check: "tensors.drift", apply: func(t *testing.T, dir string) {
			a, aoff := readTensor(t, dir, "language_model.model.layers.0.mlp.gate_proj.weight")
			b, boff := readTensor(t, dir, "language_model.model.layers.2.mlp.gate_proj.weight")
			writeAt(t, filepath.Join(dir, "model.safetensors"), b, aoff)
			writeAt(t, filepath.Join(dir, "model.safetensors"), a, boff)
		}},
		{name: "frozen tensor changed", check: "tensors.frozen", policy: "freeze-llm", run: "freeze", apply: func(t *testing.T, dir string) {
			b, off := readTensor(t, dir, "language_model.model.layers.0.self_attn.q_proj.weight")
			b[0] ^= 1
			writeAt(t, filepath.Join(dir, "model.safetensors"), b[:1], off)
		}},
		{name: "processor config missing", check: "files.required", apply: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "processor_config.json"))
		}},
		{name: "chat template edited", check: "files.side_equal", apply: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "chat_template.jinja")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), "Cutting Knowledge Date", "Knowledge Cutoff", 1)), 0o644)
		}},
		{name: "overlapping offsets", check: "safetensors.header", apply: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			raw, _ := os.ReadFile(p)
			n := binary.LittleEndian.Uint64(raw)
			h := string(raw[8 : 8+n])
			// Shift the second tensor's start back by two bytes, same width.
			h = strings.Replace(h, `"data_offsets":[2052096,4104320]`, `"data_offsets":[2052094,4104320]`, 1)
			copy(raw[8:], h)
			os.WriteFile(p, raw, 0o644)
		}},
		{name: "config cross layers disagree", check: "config.cross_attention_layers", apply: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "config.json")
			var m map[string]any
			b, _ := os.ReadFile(p)
			json.Unmarshal(b, &m)
			m["text_config"].(map[string]any)["cross_attention_layers"] = []int{1, 2}
			b, _ = json.MarshalIndent(m, "", "  ")
			os.WriteFile(p, b, 0o644)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := c.run
			if run == "" {
				run = "fsdp1"
			}
			in := openSource(t, run)
			in.Model = dcptest.CopyRun(t, convertRun(t, run, dtype.BF16))
			c.apply(t, in.Model)
			if c.policy != "" {
				p, _ := verify.LoadPolicy(c.policy)
				in.Policy = p
			}
			r := runVerify(t, in)
			if !failedIDs(r)[c.check] {
				t.Fatalf("%s did not fail; failures:\n%s", c.check, strings.Join(failures(r), "\n"))
			}
			if !r.Failed() {
				t.Error("verdict is not fail")
			}
		})
	}
}

// An index entry pointing to the wrong shard fails index.weight_map.
func TestTamperedIndexFails(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sharded")
	if _, err := convert.Run(context.Background(), filepath.Join(fx, runs["fsdp1"]), filepath.Join(fx, "base"), out, convert.Options{MaxShardSize: 1_000_000, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	in := openSource(t, "fsdp1")
	in.Model = out
	if f := failures(runVerify(t, in)); len(f) > 0 {
		t.Fatalf("clean sharded conversion fails:\n%s", strings.Join(f, "\n"))
	}
	p := filepath.Join(out, safetensors.IndexName)
	b, _ := os.ReadFile(p)
	var ix map[string]any
	json.Unmarshal(b, &ix)
	wm := ix["weight_map"].(map[string]any)
	const name = "language_model.model.norm.weight"
	wrong := "model-00001-of-00006.safetensors"
	if wm[name] == wrong {
		wrong = "model-00002-of-00006.safetensors"
	}
	wm[name] = wrong
	b, _ = json.MarshalIndent(ix, "", "  ")
	os.WriteFile(p, b, 0o644)
	r := runVerify(t, in)
	if !failedIDs(r)["index.weight_map"] {
		t.Fatalf("index.weight_map did not fail:\n%s", strings.Join(failures(r), "\n"))
	}
}
