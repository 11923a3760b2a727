package synth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dcp"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dcp/synth"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/reports"
	"github.com/ckptgate/ckptgate/verify"
)

// tinyConfig is the fixtures' model (real vocabulary, tiny widths).
func tinyConfig(t *testing.T) *mllama.Config {
	t.Helper()
	cfg, err := mllama.LoadConfig(filepath.Join(dcptest.Fixtures(t), "base", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTensorsInStateDictOrder checks the tensor list against what torch
// saved for the fixture model: the same keys (under llama-recipes' "model"
// group) in the same order, with the same shapes.
func TestTensorsInStateDictOrder(t *testing.T) {
	ts, err := synth.Tensors(tinyConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := dcp.Open(dcptest.Run(t, "fsdp1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	type named struct {
		Name  string
		Shape []int64
	}
	var got, want []named
	for _, x := range ts {
		got = append(got, named{x.Name, x.Shape})
		if leg := dcptest.LegacyName(x.Name); leg != x.Legacy {
			t.Errorf("%s: legacy name %s, want %s", x.Name, x.Legacy, leg)
		}
	}
	for _, x := range c.Tensors {
		want = append(want, named{x.Name, x.Shape})
	}
	if !slices.EqualFunc(got, want, func(a, b named) bool { return a.Name == b.Name && slices.Equal(a.Shape, b.Shape) }) {
		t.Errorf("tensors differ from the fixture's state dict:\n got %v\nwant %v", got, want)
	}
}

// TestConfig11B checks the 11B sizes against the totals that instantiating
// the real model gives (checkpoint-formats.md §8.2), and the scaling.
func TestConfig11B(t *testing.T) {
	cfg := synth.Config11B()
	ts, err := synth.Tensors(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var params int64
	for _, x := range ts {
		params += x.NumElements()
	}
	if len(ts) != 906 || params != 10_670_220_835 {
		t.Errorf("11B: %d tensors, %d parameters; want 906 and 10,670,220,835", len(ts), params)
	}
	if n, _ := synth.ModelBytes(cfg, 2); n != 21_340_441_670 {
		t.Errorf("11B in bf16 is %d bytes, want 21,340,441,670", n)
	}
	tests := []struct {
		target       int64
		wantMaxBytes int64 // the result is at most this
		text, vision int
	}{
		{22e9, 21_340_441_670, 40, 32},
		{2e9, 3e9, 1, 1}, // below the embeddings' size: the smallest model
		{8e9, 8e9, 0, 0},
	}
	for _, tc := range tests {
		c, err := synth.ForSize(cfg, tc.target, 2)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := synth.ModelBytes(c, 2)
		if n > tc.wantMaxBytes || (tc.text != 0 && (c.Text.NumHiddenLayers != tc.text || c.Vision.NumHiddenLayers != tc.vision)) {
			t.Errorf("ForSize(%d): %d bytes, %d text and %d vision layers", tc.target, n, c.Text.NumHiddenLayers, c.Vision.NumHiddenLayers)
		}
		// Shapes stay 11B-shaped: every tensor of the scaled model has
		// the shape of the 11B tensor of the same name.
		full, _ := mllama.ExpectedShapes(cfg)
		scaled, err := mllama.ExpectedShapes(c)
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range scaled {
			if !slices.Equal(full[name], s) {
				t.Errorf("ForSize(%d): %s has shape %v, the 11B has %v", tc.target, name, s, full[name])
			}
		}
		for _, idx := range c.Vision.IntermediateLayersIndices {
			if idx >= c.Vision.NumHiddenLayers {
				t.Errorf("ForSize(%d): intermediate layer %d of %d", tc.target, idx, c.Vision.NumHiddenLayers)
			}
		}
	}
}

// TestRoundTrip writes synthetic checkpoints in each sharding and reads
// them back with the real reader: every tensor streams to exactly the
// generated values.
func TestRoundTrip(t *testing.T) {
	cfg := tinyConfig(t)
	ts, err := synth.Tensors(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sharding synth.Sharding
		world    int
		threads  int
		dt       dtype.DType
		// gateChunks is how many chunks a [1] gate gets.
		gateChunks int
	}{
		{synth.FSDP1, 3, 2, dtype.BF16, 1},
		{synth.FSDP2, 5, 1, dtype.BF16, 2}, // [0]/[1] and one deduplicated empty [1]/[0]
		{synth.FSDP2, 2, 3, dtype.F32, 2},
		{synth.FSDP1, 1, 1, dtype.F32, 1},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%v-w%d-t%d-%v", tc.sharding, tc.world, tc.threads, tc.dt), func(t *testing.T) {
			g, err := synth.NewGen(ts, synth.Tuned, tc.dt, 1)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			w, err := synth.WriteDCP(context.Background(), dir, synth.Spec{Tensors: ts, World: tc.world, Sharding: tc.sharding,
				ThreadCount: tc.threads, Group: "model", BufSize: 4096}, g)
			if err != nil {
				t.Fatal(err)
			}
			if len(w.Files) != tc.world*tc.threads {
				t.Errorf("%d data files, want %d", len(w.Files), tc.world*tc.threads)
			}
			c, err := dcp.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if len(c.Tensors) != len(ts) {
				t.Fatalf("read %d tensors, wrote %d", len(c.Tensors), len(ts))
			}
			for i, x := range c.Tensors {
				if x.Name != ts[i].Name || x.DType != tc.dt || !slices.Equal(x.Shape, ts[i].Shape) {
					t.Errorf("tensor %d is %s %v %v, wrote %s %v %v", i, x.Name, x.DType, x.Shape, ts[i].Name, tc.dt, ts[i].Shape)
					continue
				}
				b, err := dcptest.TensorBytes(x)
				if err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(b)
				if got, want := hex.EncodeToString(sum[:]), g.SHA256(i); got != want {
					t.Errorf("%s: read sha256 %s, generated %s", x.Name, got, want)
				}
				if x.Name == "model.vision_model.gated_positional_embedding.gate" && len(x.Chunks) != tc.gateChunks {
					t.Errorf("%s has %d chunks, want %d", x.Name, len(x.Chunks), tc.gateChunks)
				}
			}
		})
	}
}

// TestConvertAndVerify converts a synthetic FSDP2 checkpoint against a
// synthetic base and checks that the output holds exactly the generated
// fine-tuned values, and that ckptgate verify's checks of weights, format,
// side files and config pass it against the base and the source.
func TestConvertAndVerify(t *testing.T) {
	cfg := tinyConfig(t)
	ts, err := synth.Tensors(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	base, src := filepath.Join(dir, "base"), filepath.Join(dir, "src")
	bg, _ := synth.NewGen(ts, synth.Base, dtype.BF16, 7)
	if err := synth.WriteBase(ctx, base, synth.BaseSpec{Config: cfg, Tensors: ts, Template: filepath.Join(dcptest.Fixtures(t), "base")}, bg); err != nil {
		t.Fatal(err)
	}
	tg, _ := synth.NewGen(ts, synth.Tuned, dtype.BF16, 7)
	if _, err := synth.WriteDCP(ctx, src, synth.Spec{Tensors: ts, World: 3, Sharding: synth.FSDP2, Group: "model"}, tg); err != nil {
		t.Fatal(err)
	}
	written, err := mllama.LoadConfig(filepath.Join(base, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ws, _ := mllama.ExpectedShapes(written)
	cs, _ := mllama.ExpectedShapes(cfg)
	if len(ws) != len(cs) {
		t.Errorf("the written config.json implies %d tensors, the config %d", len(ws), len(cs))
	}
	out := filepath.Join(dir, "out")
	// A small shard size makes several output files.
	if _, err := convert.Run(ctx, src, base, out, convert.Options{MaxShardSize: 1 << 20, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	for _, check := range []struct {
		dir string
		g   *synth.Gen
	}{{base, bg}, {out, tg}} {
		d, err := safetensors.OpenDir(check.dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Names()) != len(ts) {
			t.Errorf("%s has %d tensors, want %d", check.dir, len(d.Names()), len(ts))
		}
		for i, x := range ts {
			b, _, err := d.ReadBytes(x.Legacy)
			if err != nil {
				t.Errorf("%s: %v", check.dir, err)
				continue
			}
			sum := sha256.Sum256(b)
			if got, want := hex.EncodeToString(sum[:]), check.g.SHA256(i); got != want {
				t.Errorf("%s: %s has sha256 %s, generated %s", check.dir, x.Legacy, got, want)
			}
		}
		d.Close()
	}
	sc, err := convert.OpenSource(src)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// The checks of the weights, their format, the side files and the
	// config; the forward pass of random weights would be uniform.
	var checks []*verify.Check
	for _, fam := range [][]*verify.Check{verify.FileChecks, verify.FormatChecks, verify.TensorChecks, verify.ConfigChecks} {
		checks = append(checks, fam...)
	}
	r, err := verify.Run(ctx, &verify.Inputs{Model: out, Base: base, SourcePath: src, Source: sc}, checks)
	if err != nil {
		t.Fatal(err)
	}
	passed := map[string]bool{}
	for _, c := range r.Checks {
		if c.Status == reports.StatusFail {
			t.Errorf("verify: %s %s: %s", c.ID, c.Subject, c.Message)
		}
		if c.Status == reports.StatusPass {
			passed[c.ID] = true
		}
	}
	for _, id := range []string{"tensors.checksum", "tensors.source_exact", "tensors.drift", "config.shapes"} {
		if !passed[id] {
			t.Errorf("verify: %s did not pass", id)
		}
	}
}

// TestWriteDCPRefusesBadSpecs checks that specs the writer cannot lay out
// are refused with a message naming the problem, before anything is
// written.
func TestWriteDCPRefusesBadSpecs(t *testing.T) {
	one := []synth.Tensor{{Name: "w", Shape: []int64{4, 4}}}
	tests := []struct {
		name string
		spec synth.Spec
		want string
	}{
		{"no ranks", synth.Spec{Tensors: one}, "world size 0"},
		{"too many ranks", synth.Spec{Tensors: one, World: 1 << 20}, "world size"},
		{"no tensors", synth.Spec{World: 2}, "no tensors"},
		{"repeated name", synth.Spec{World: 2, Tensors: append(one, one...)}, `"w" is empty or repeated`},
		{"negative size", synth.Spec{World: 2, Tensors: []synth.Tensor{{Name: "w", Shape: []int64{-1}}}}, "negative size"},
		{"overflowing size", synth.Spec{World: 2, Tensors: []synth.Tensor{{Name: "w", Shape: []int64{1 << 40, 1 << 40}}}}, "overflows"},
		{"negative threads", synth.Spec{World: 2, ThreadCount: -1, Tensors: one}, "thread count"},
	}
	g, _ := synth.NewGen(one, synth.Base, dtype.BF16, 1)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ckpt")
			_, err := synth.WriteDCP(context.Background(), dir, tc.spec, g)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WriteDCP: %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s was created", dir)
			}
		})
	}
}
