package convert

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"5GB": 5e9, "50GB": 5e10, "100MB": 1e8, "1KiB": 1024, "2GiB": 2 << 30, "12345": 12345, "1.5GB": 15e8} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GB", "-1GB", "5XB", "0"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

// naturalLess must order layer indices numerically, as dot_natural_key does.
func TestNaturalLess(t *testing.T) {
	ordered := []string{
		"language_model.model.layers.2.mlp.down_proj.weight",
		"language_model.model.layers.10.mlp.down_proj.weight",
		"language_model.model.layers.10.self_attn.q_proj.weight",
		"language_model.model.norm.weight",
	}
	for i := 0; i+1 < len(ordered); i++ {
		if !naturalLess(ordered[i], ordered[i+1]) || naturalLess(ordered[i+1], ordered[i]) {
			t.Errorf("%s vs %s", ordered[i], ordered[i+1])
		}
	}
}

// The splitter follows huggingface_hub: an oversized tensor gets its own
// shard, placed before the shard being filled.
func TestSplitShards(t *testing.T) {
	e := func(n string, bytes int64) safetensors.Entry {
		return safetensors.Entry{Name: n, DType: dtype.U8, Shape: []int64{bytes}}
	}
	got := splitShards([]safetensors.Entry{e("a", 4), e("b", 4), e("big", 20), e("c", 3), e("d", 5)}, 10)
	var names []string
	for _, s := range got {
		var ns []string
		for _, x := range s {
			ns = append(ns, x.Name)
		}
		names = append(names, strings.Join(ns, "+"))
	}
	if strings.Join(names, " ") != "big a+b c+d" {
		t.Errorf("shards %v", names)
	}
}

// The index must be what json.dumps(indent=2, sort_keys=True) + "\n" writes,
// checked against base-hub's index, which follows that format but for the
// final newline.
func TestIndexJSONFormat(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(fx, "base-hub", safetensors.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := safetensors.ReadIndex(filepath.Join(fx, "base-hub", safetensors.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	plans := map[string]*shardPlan{}
	var order []string
	for name, file := range ix.WeightMap {
		if plans[file] == nil {
			plans[file] = &shardPlan{Name: file}
			order = append(order, file)
		}
		f, err := safetensors.Open(filepath.Join(fx, "base-hub", file))
		if err != nil {
			t.Fatal(err)
		}
		ti, _ := f.Tensor(name)
		f.Close()
		plans[file].Entries = append(plans[file].Entries, safetensors.Entry{Name: name, DType: ti.DType, Shape: ti.Shape})
	}
	var ps []shardPlan
	for _, f := range order {
		ps = append(ps, *plans[f])
	}
	got, err := indexJSON(ps, -1)
	if err != nil {
		t.Fatal(err)
	}
	// base-hub's index was written by hand without the final newline that
	// transformers' json.dumps(...) + "\n" adds.
	if string(got) != string(want)+"\n" {
		t.Errorf("index differs:\n%s\nwant\n%s", got[:200], want[:200])
	}
}

func TestSetConfigDType(t *testing.T) {
	in := []byte("{\n  \"architectures\": [\"X\"],\n  \"text_config\": {\"dtype\": \"float16\"},\n  \"dtype\": \"bfloat16\",\n  \"z\": 1\n}\n")
	out, key, changed, err := setConfigDType(in, dtype.F32)
	if err != nil || !changed || key != "dtype" {
		t.Fatal(key, changed, err)
	}
	want := strings.Replace(string(in), `"dtype": "bfloat16"`, `"dtype": "float32"`, 1)
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	old := []byte(`{"torch_dtype": "float32", "model_type": "mllama"}`)
	out, key, _, _ = setConfigDType(old, dtype.BF16)
	if key != "torch_dtype" || string(out) != `{"torch_dtype": "bfloat16", "model_type": "mllama"}` {
		t.Errorf("4.x form: %s %s", key, out)
	}
	none := []byte(`{"model_type": "mllama"}`)
	if out, _, changed, _ := setConfigDType(none, dtype.BF16); changed || string(out) != string(none) {
		t.Error("config without dtype changed")
	}
}

func TestPreflight(t *testing.T) {
	err := preflight(t.TempDir(), 1<<62)
	if err == nil || !strings.Contains(err.Error(), "not enough disk space") {
		t.Errorf("preflight: %v", err)
	}
	if err := preflight(t.TempDir(), 1); err != nil {
		t.Errorf("preflight of 1 byte: %v", err)
	}
	if err := checkMemory(2<<30, 1<<30); err == nil || !strings.Contains(err.Error(), "lower --jobs") {
		t.Errorf("checkMemory: %v", err)
	}

}
