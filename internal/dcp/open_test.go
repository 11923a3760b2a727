package dcp_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dcp"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/pickle"
)

// TestManifests opens every DCP fixture run, streams every model tensor
// with ckpt.WalkChunk, and compares names, dtypes, shapes and sha256 with
// the manifest of the reference conversion (torch + transformers).
func TestManifests(t *testing.T) {
	for _, run := range dcptest.DCPRuns {
		t.Run(run, func(t *testing.T) {
			c, err := dcp.Open(dcptest.Run(t, run))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if len(c.Tensors) != 100 {
				t.Errorf("%d tensors, want 100", len(c.Tensors))
			}
			dcptest.CheckManifest(t, c, dcptest.ManifestFor(run))
		})
	}
}

// TestGroups checks which keys become model tensors: llama-recipes'
// "model" group is removed by planner_data (fsdp1 keys are
// model.model.language_model…, so a string-prefix rule would be wrong),
// fsdp2's top-level keys are kept, and freeze's optimizer state is
// skipped, never returned as tensors.
func TestGroups(t *testing.T) {
	tests := []struct {
		run       string
		wantNames []string
		notes     []string
	}{
		{"fsdp1", []string{"model.language_model.embed_tokens.weight", "lm_head.weight"}, nil},
		{"fsdp2", []string{"model.language_model.embed_tokens.weight", "lm_head.weight"},
			[]string{"skipped 2 non-tensor (bytes) items without reading them: train_state.step, train_state.epoch"}},
		{"freeze", []string{"model.vision_model.class_embedding"},
			[]string{`skipped tensors outside the model: group "optim" (237 tensors)`, "skipped 12 non-tensor (bytes) items"}},
		{"legacy", []string{"language_model.model.embed_tokens.weight", "language_model.lm_head.weight", "vision_model.class_embedding"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.run, func(t *testing.T) {
			c, err := dcp.Open(dcptest.Run(t, tt.run))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			names := map[string]bool{}
			for _, ts := range c.Tensors {
				names[ts.Name] = true
				if strings.HasPrefix(ts.Name, "optim") || strings.Contains(ts.Name, "exp_avg") || strings.HasPrefix(ts.Name, "model.model.") {
					t.Errorf("tensor %q is not a model FQN", ts.Name)
				}
			}
			for _, n := range tt.wantNames {
				if !names[n] {
					t.Errorf("no tensor %q", n)
				}
			}
			notes := strings.Join(c.Notes, "\n")
			for _, n := range tt.notes {
				if !strings.Contains(notes, n) {
					t.Errorf("notes %q lack %q", notes, n)
				}
			}
		})
	}
}

// TestBytesItemsNeverRead overwrites fsdp2's bytes items (train_state.*)
// with a pickle that would run os.system and with garbage: the checkpoint
// still opens and every tensor still matches, so bytes items are never
// unpickled.
func TestBytesItemsNeverRead(t *testing.T) {
	dir := dcptest.CopyRun(t, dcptest.Run(t, "fsdp2"))
	b, err := os.ReadFile(filepath.Join(dir, ".metadata"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := dcp.ParseMetadata(b, ".metadata")
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("\x80\x02cos\nsystem\nX\x02\x00\x00\x00idR.")
	n := 0
	for _, e := range m.Entries {
		if e.Tensor != nil {
			continue
		}
		it := m.Items[dcp.KeyOf(e.Key, nil)]
		f, err := os.OpenFile(filepath.Join(dir, it.RelativePath), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, it.Length)
		for i := range junk {
			junk[i] = 0xA5
		}
		copy(junk, payload)
		if _, err := f.WriteAt(junk, it.Offset); err != nil {
			t.Fatal(err)
		}
		f.Close()
		n++
	}
	if n != 2 {
		t.Fatalf("fsdp2 has %d bytes items, want 2", n)
	}
	c, err := dcp.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dcptest.CheckManifest(t, c, "fsdp2-fp32")
}

// TestCorruptions applies every dcptest corruption to every DCP fixture
// run: opening and streaming must fail with an error that matches
// ckpt.ErrCorrupt, names a file of the damaged directory, and says what
// the corruption broke.
func TestCorruptions(t *testing.T) {
	for _, run := range dcptest.DCPRuns {
		for _, cr := range dcptest.Corruptions {
			t.Run(run+"/"+cr.Name, func(t *testing.T) {
				t.Parallel()
				dir := dcptest.CopyRun(t, dcptest.Run(t, run))
				if err := cr.Apply(dir); err != nil {
					t.Fatalf("applying %s: %v", cr.Name, err)
				}
				err := openAndWalk(dir)
				if err == nil {
					t.Fatal("damaged checkpoint read without error")
				}
				if !errors.Is(err, ckpt.ErrCorrupt) {
					t.Errorf("error does not match ckpt.ErrCorrupt: %v", err)
				}
				if !strings.Contains(err.Error(), dir) {
					t.Errorf("error does not name a file in %s: %v", dir, err)
				}
				if !strings.Contains(err.Error(), cr.Want) {
					t.Errorf("error lacks %q: %v", cr.Want, err)
				}
			})
		}
	}
}

func openAndWalk(dir string) error {
	c, err := dcp.Open(dir)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, t := range c.Tensors {
		if _, err := dcptest.TensorBytes(t); err != nil {
			return err
		}
	}
	return nil
}

// TestForbiddenGlobalNamed: the refusal says which global, so that a user
// can tell an attack from an unsupported torch version.
func TestForbiddenGlobalNamed(t *testing.T) {
	dir := dcptest.CopyRun(t, dcptest.Run(t, "fsdp1"))
	if err := dcptest.EditMetadata(dir, func(root *pickle.Object) error {
		st := root.State.(*pickle.Dict)
		return st.Set("planner_data", &pickle.Object{Class: &pickle.Class{Module: "builtins", Name: "eval"}, Args: pickle.Tuple{"1"}})
	}); err != nil {
		t.Fatal(err)
	}
	_, err := dcp.Open(dir)
	if !errors.Is(err, pickle.ErrForbiddenGlobal) || !strings.Contains(err.Error(), "builtins.eval") {
		t.Fatalf("got %v", err)
	}
}

// TestRankLocal rewrites runs into the rank-local layout of
// dcp.save(use_collectives=False): merged, they give the same tensors;
// with one rank's metadata missing, coverage fails.
func TestRankLocal(t *testing.T) {
	for _, run := range []string{"fsdp1", "fsdp2"} {
		t.Run(run, func(t *testing.T) {
			dir := dcptest.CopyRun(t, dcptest.Run(t, run))
			if err := dcptest.SplitRankLocal(dir); err != nil {
				t.Fatal(err)
			}
			c, err := dcp.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			// fsdp1 saved its [1] gates whole (FSDP1 shards them into one
			// chunk), so every rank lists them; fsdp2 shards everything.
			notes := strings.Join(c.Notes, "\n")
			if !strings.Contains(notes, "merged the rank-local metadata") || strings.Contains(notes, "replicated chunks") != (run == "fsdp1") {
				t.Errorf("notes: %s", notes)
			}
			dcptest.CheckManifest(t, c, dcptest.ManifestFor(run))
			c.Close()

			if err := os.Remove(filepath.Join(dir, "__1.metadata")); err != nil {
				t.Fatal(err)
			}
			err = openAndWalk(dir)
			if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(err.Error(), "chunks cover") {
				t.Errorf("without __1.metadata: %v", err)
			}
		})
	}
}

// TestZstdItems reads runs whose items were zstd-compressed with the
// "stream.zstd/1" transform recorded.
func TestZstdItems(t *testing.T) {
	for _, run := range []string{"fsdp1", "fsdp2"} {
		t.Run(run, func(t *testing.T) {
			dir := dcptest.CopyRun(t, dcptest.Run(t, run))
			if err := dcptest.CompressItems(dir); err != nil {
				t.Fatal(err)
			}
			c, err := dcp.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dcptest.CheckManifest(t, c, dcptest.ManifestFor(run))
		})
	}
}

// TestNoPlannerData: without planner_data (custom planners), the group is
// inferred from the keys; fsdp1's model. group and fsdp2's top-level keys
// still come out right.
func TestNoPlannerData(t *testing.T) {
	for _, run := range []string{"fsdp1", "fsdp2", "legacy"} {
		t.Run(run, func(t *testing.T) {
			dir := dcptest.CopyRun(t, dcptest.Run(t, run))
			if err := dcptest.EditMetadata(dir, func(root *pickle.Object) error {
				return root.State.(*pickle.Dict).Set("planner_data", nil)
			}); err != nil {
				t.Fatal(err)
			}
			c, err := dcp.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if notes := strings.Join(c.Notes, "\n"); !strings.Contains(notes, "planner_data is None; groups were inferred") {
				t.Errorf("notes: %s", notes)
			}
			dcptest.CheckManifest(t, c, dcptest.ManifestFor(run))
		})
	}
}

// TestReencodedMetadata: writing the real .metadata back through the
// dcptest encoder changes nothing a reader sees (the encoder is what the
// corruptions use, so this guards them).
func TestReencodedMetadata(t *testing.T) {
	dir := dcptest.CopyRun(t, dcptest.Run(t, "freeze"))
	if err := dcptest.EditMetadata(dir, func(*pickle.Object) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c, err := dcp.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dcptest.CheckManifest(t, c, "freeze-bf16")
}

func TestOrphansAndSymlinks(t *testing.T) {
	dir := dcptest.CopyRun(t, dcptest.Run(t, "legacy"))
	if err := os.WriteFile(filepath.Join(dir, "__7_0.distcp"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := dcp.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if notes := strings.Join(c.Notes, "\n"); !strings.Contains(notes, "ignored 1 .distcp files the metadata does not reference") || !strings.Contains(notes, "__7_0.distcp") {
		t.Errorf("notes: %s", notes)
	}
	c.Close()

	// A data file that is a symlink out of the directory is refused, one
	// inside it is followed.
	outside := filepath.Join(t.TempDir(), "elsewhere.distcp")
	if err := os.Rename(filepath.Join(dir, "__1_0.distcp"), outside); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "__1_0.distcp")); err != nil {
		t.Fatal(err)
	}
	if _, err := dcp.Open(dir); !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(err.Error(), "outside the checkpoint directory") {
		t.Errorf("symlink out: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "__1_0.distcp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(outside, filepath.Join(dir, "real.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.bin", filepath.Join(dir, "__1_0.distcp")); err != nil {
		t.Fatal(err)
	}
	c, err = dcp.Open(dir)
	if err != nil {
		t.Fatalf("symlink inside: %v", err)
	}
	defer c.Close()
	dcptest.CheckManifest(t, c, "legacy-bf16")
}

// TestParseMetadata checks the decoded metadata against what CPython's
// unpickler reads from the same files: entry, item and planner counts,
// the version, one planner path and one item.
func TestParseMetadata(t *testing.T) {
	tests := []struct {
		run            string
		entries, bytes int
		items          int
		plannerFirst   []any
	}{
		{"fsdp1", 100, 0, 370, []any{"model", "model.vision_model.class_embedding"}},
		{"fsdp2", 102, 2, 293, []any{"model.vision_model.class_embedding"}},
		{"freeze", 349, 12, 580, []any{"model", "model.vision_model.class_embedding"}},
		{"legacy", 100, 0, 191, []any{"model", "vision_model.class_embedding"}},
	}
	for _, tt := range tests {
		t.Run(tt.run, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dcptest.Run(t, tt.run), ".metadata"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := dcp.ParseMetadata(b, ".metadata")
			if err != nil {
				t.Fatal(err)
			}
			nbytes := 0
			for _, e := range m.Entries {
				if e.Tensor == nil {
					nbytes++
				}
			}
			if len(m.Entries) != tt.entries || nbytes != tt.bytes || len(m.Items) != tt.items || m.Version != "1.0.0" {
				t.Errorf("%d entries (%d bytes), %d items, version %q; want %d (%d), %d, 1.0.0",
					len(m.Entries), nbytes, len(m.Items), m.Version, tt.entries, tt.bytes, tt.items)
			}
			first := m.Entries[0]
			if got := m.PlannerData[first.Key]; len(got) != len(tt.plannerFirst) || got[0] != tt.plannerFirst[0] || got[len(got)-1] != tt.plannerFirst[len(got)-1] {
				t.Errorf("planner_data[%s] = %v, want %v", first.Key, got, tt.plannerFirst)
			}
		})
	}
	// One item as CPython reads it: fsdp1's first storage_data entry.
	b, _ := os.ReadFile(filepath.Join(dcptest.Run(t, "fsdp1"), ".metadata"))
	m, _ := dcp.ParseMetadata(b, ".metadata")
	it, ok := m.Items[dcp.KeyOf("model.model.language_model.embed_tokens.weight", []int64{0, 0})]
	if !ok || it.RelativePath != "__0_0.distcp" || it.Offset != 0 || it.Length != 514601 || it.Transforms != nil {
		t.Errorf("embed_tokens item = %+v, %v", it, ok)
	}
}

// TestMissingFilesListed: every missing data file is named in one error.
func TestMissingFilesListed(t *testing.T) {
	dir := dcptest.CopyRun(t, dcptest.Run(t, "fsdp1"))
	for _, f := range []string{"__1_0.distcp", "__1_1.distcp", "__3_1.distcp"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := dcp.Open(dir)
	if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), "3 data files the metadata references are missing: __1_0.distcp, __1_1.distcp, __3_1.distcp") {
		t.Errorf("got %v", err)
	}
}

// TestMetadataForms rewrites a real .metadata into the forms other torch
// and Python versions write (checkpoint-formats §3.3, §11 items 19–21):
// torch ≤ 2.2's TensorProperties module, no storage_meta or version,
// Python 3.13's pathlib._local, protocol 5, and fields a newer torch may
// add. All must read to the same tensors.
func TestMetadataForms(t *testing.T) {
	const shard = "torch.distributed._shard.sharded_tensor.metadata"
	tests := []struct {
		name string
		edit func(t *testing.T, dir string)
	}{
		{"torch 2.2 TensorProperties, no storage_meta, no version", func(t *testing.T, dir string) {
			edit(t, dir, func(root *pickle.Object) error {
				st := root.State.(*pickle.Dict)
				keep := pickle.NewDict()
				for _, e := range st.Entries() {
					if e.Key == "storage_meta" || e.Key == "version" {
						continue
					}
					if err := keep.Set(e.Key, e.Value); err != nil {
						return err
					}
				}
				root.State = keep
				sdm, _ := keep.Get("state_dict_metadata")
				for _, e := range sdm.(*pickle.Dict).Entries() {
					props, ok := e.Value.(*pickle.Object).Attr("properties")
					if !ok {
						continue
					}
					po := props.(*pickle.Object)
					po.Class = &pickle.Class{Module: shard, Name: "TensorProperties"}
					mf := po.State.(pickle.Tuple)[3].(*pickle.Object)
					mf.Class = &pickle.Class{Module: shard, Name: "MEM_FORMAT_ENCODING"}
				}
				return nil
			})
		}},
		{"pathlib._local", func(t *testing.T, dir string) {
			edit(t, dir, func(root *pickle.Object) error {
				sm, _ := root.Attr("storage_meta")
				id, _ := sm.(*pickle.Object).Attr("checkpoint_id")
				id.(*pickle.Object).Class = &pickle.Class{Module: "pathlib._local", Name: "PosixPath"}
				return nil
			})
		}},
		{"newer torch fields", func(t *testing.T, dir string) {
			edit(t, dir, func(root *pickle.Object) error {
				sdm, _ := root.Attr("state_dict_metadata")
				for _, e := range sdm.(*pickle.Dict).Entries() {
					o := e.Value.(*pickle.Object)
					props, ok := o.Attr("properties")
					if !ok {
						continue
					}
					if err := o.State.(*pickle.Dict).Set("strides", &pickle.List{}); err != nil {
						return err
					}
					po := props.(*pickle.Object)
					po.State = append(po.State.(pickle.Tuple), "extra")
				}
				return root.State.(*pickle.Dict).Set("future_field", int64(1))
			})
		}},
		{"protocol 5", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ".metadata")
			b, err := os.ReadFile(p)
			if err != nil || b[0] != 0x80 || b[1] != 4 {
				t.Fatalf("not a protocol 4 pickle: %v", err)
			}
			b[1] = 5
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := dcptest.CopyRun(t, dcptest.Run(t, "fsdp1"))
			tt.edit(t, dir)
			c, err := dcp.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dcptest.CheckManifest(t, c, "fsdp1-bf16")
		})
	}
}

func edit(t *testing.T, dir string, f func(root *pickle.Object) error) {
	t.Helper()
	if err := dcptest.EditMetadata(dir, f); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentChunks opens and streams all chunks from several
// goroutines at once, as the converter does; run with -race.
func TestConcurrentChunks(t *testing.T) {
	c, err := dcp.Open(dcptest.Run(t, "fsdp2"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := dcptest.Manifest(t, "fsdp2-fp32")
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(c.Tensors); i += 8 {
				tn := c.Tensors[i]
				b, err := dcptest.TensorBytes(tn)
				if err != nil {
					t.Error(err)
					return
				}
				if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want[dcptest.LegacyName(tn.Name)].SHA256 {
					t.Errorf("%s: sha256 differs", tn.Name)
				}
			}
		}()
	}
	wg.Wait()
}

// TestZeroDimItem reads a real 0-d tensor item: freeze's AdamW step
// counter, moved into the model group through planner_data. Its box is
// empty (offsets and sizes ()), its MetadataIndex offset torch.Size([])
// rather than None, and its value the 12 steps every fixture run trained.
func TestZeroDimItem(t *testing.T) {
	const key = "optim.state.model.language_model.layers.1.cross_attn.k_norm.weight.step"
	dir := dcptest.CopyRun(t, dcptest.Run(t, "freeze"))
	edit(t, dir, func(root *pickle.Object) error {
		pd, _ := root.Attr("planner_data")
		return pd.(*pickle.Dict).Set(key, pickle.Tuple{"model", "adam_step"})
	})
	c, err := dcp.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tn := range c.Tensors {
		if tn.Name != "adam_step" {
			continue
		}
		b, err := dcptest.TensorBytes(tn)
		if err != nil {
			t.Fatal(err)
		}
		if tn.DType != dtype.F32 || len(tn.Shape) != 0 || len(b) != 4 || math.Float32frombits(binary.LittleEndian.Uint32(b)) != 12 {
			t.Errorf("adam_step: %v %v % x", tn.DType, tn.Shape, b)
		}
		return
	}
	t.Error("no tensor adam_step")
}
