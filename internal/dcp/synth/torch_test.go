package synth_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dcp"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dcp/synth"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/pickle"
)

// fixtureValues are the tensors of a fixture checkpoint, as torch saved
// them, served as synth.Values.
type fixtureValues struct {
	dt   dtype.DType
	data [][]byte
}

func (v *fixtureValues) DType() dtype.DType { return v.dt }

func (v *fixtureValues) Fill(dst []byte, i int, first int64) {
	copy(dst, v.data[i][first*int64(v.dt.Size()):])
}

// fromFixture reads a fixture run's tensors: their names (after the group),
// shapes and bytes, in the order its .metadata lists them.
func fromFixture(t *testing.T, c *ckpt.Checkpoint) ([]synth.Tensor, *fixtureValues) {
	t.Helper()
	var ts []synth.Tensor
	vals := &fixtureValues{}
	for _, tt := range c.Tensors {
		b, err := dcptest.TensorBytes(tt)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, synth.Tensor{Name: tt.Name, Shape: tt.Shape})
		vals.dt = tt.DType
		vals.data = append(vals.data, b)
	}
	return ts, vals
}

// storageMeta returns the checkpoint_id path and save_id a fixture's
// .metadata recorded.
func storageMeta(t *testing.T, dir string) (string, string) {
	t.Helper()
	root, err := dcptest.DecodeMetadata(filepath.Join(dir, ".metadata"))
	if err != nil {
		t.Fatal(err)
	}
	smv, _ := root.Attr("storage_meta")
	sm := smv.(*pickle.Object)
	idv, _ := sm.Attr("checkpoint_id")
	var parts []string
	for _, p := range idv.(*pickle.Object).Args {
		parts = append(parts, p.(string))
	}
	path := strings.Join(parts, "/")
	if len(parts) > 0 && parts[0] == "/" {
		path = "/" + strings.Join(parts[1:], "/")
	}
	sid, _ := sm.Attr("save_id")
	return path, sid.(string)
}

func parseMetadata(t *testing.T, dir string) *dcp.Metadata {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ".metadata"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := dcp.ParseMetadata(b, dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readRange(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("%s: reading %d bytes at %d: %v", path, n, off, err)
	}
	return b
}

// TestWriteDCPMatchesTorch rewrites the fixtures' DCP checkpoints (made by
// torch 2.11 FSDP) from their own tensors and compares the result with
// what torch wrote: every chunk archive byte for byte, the file each lands
// in and its place there, the metadata's entries, planner data and items,
// and the .metadata pickle's bytes (where torch's order is deterministic).
func TestWriteDCPMatchesTorch(t *testing.T) {
	tests := []struct {
		run  string
		spec synth.Spec
		// bytesItems: torch also saved non-tensor items (train_state),
		// which shift the tensor items of some files.
		bytesItems bool
		// from and upTo bound the bytes of .metadata that must equal
		// torch's; upTo is the last mention of a string in torch's file
		// ("": the whole file). Where torch's order is not deterministic
		// (rank 2's two files' results are gathered in thread completion
		// order) or it saved more (train_state, which also moves the end
		// of the first frame, whose header is skipped), less is compared.
		from int
		upTo string
	}{
		{"fsdp1", synth.Spec{World: 4, Sharding: synth.FSDP1, ThreadCount: 2, Group: "model"}, false, 0, "__1_1.distcp"},
		{"legacy", synth.Spec{World: 2, Sharding: synth.FSDP1, ThreadCount: 1, Group: "model"}, false, 0, ""},
		{"fsdp2", synth.Spec{World: 3, Sharding: synth.FSDP2, ThreadCount: 1}, true, 11, "train_state"},
	}
	for _, tc := range tests {
		t.Run(tc.run, func(t *testing.T) {
			fix := dcptest.Run(t, tc.run)
			c, err := dcp.Open(fix)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			spec := tc.spec
			var vals *fixtureValues
			spec.Tensors, vals = fromFixture(t, c)
			spec.CheckpointID, spec.SaveID = storageMeta(t, fix)
			out := t.TempDir()
			if _, err := synth.WriteDCP(context.Background(), out, spec, vals); err != nil {
				t.Fatal(err)
			}
			want, got := parseMetadata(t, fix), parseMetadata(t, out)
			var wantEntries []dcp.Entry
			for _, e := range want.Entries {
				if e.Tensor != nil {
					wantEntries = append(wantEntries, e)
				}
			}
			if diff := cmp.Diff(wantEntries, got.Entries); diff != "" {
				t.Errorf("state_dict_metadata differs from torch's (-torch +synth):\n%s", diff)
			}
			for k := range want.PlannerData {
				if !strings.HasPrefix(k, "train_state.") {
					continue
				}
				delete(want.PlannerData, k)
			}
			if diff := cmp.Diff(want.PlannerData, got.PlannerData); diff != "" {
				t.Errorf("planner_data differs from torch's (-torch +synth):\n%s", diff)
			}
			if got.Version != want.Version {
				t.Errorf("version %q, torch wrote %q", got.Version, want.Version)
			}
			compareItems(t, fix, out, want, got, tc.bytesItems)
			if !tc.bytesItems {
				compareFiles(t, fix, out)
			}
			wb, _ := os.ReadFile(filepath.Join(fix, ".metadata"))
			gb, _ := os.ReadFile(filepath.Join(out, ".metadata"))
			n := len(wb)
			if tc.upTo != "" {
				// Up to the SHORT_BINUNICODE opcode and length of the
				// first key torch has and synth does not.
				n = bytes.Index(wb, []byte(tc.upTo)) - 2
				if tc.upTo != "train_state" {
					n = bytes.LastIndex(wb, []byte(tc.upTo)) + len(tc.upTo)
				}
			}
			if n <= tc.from || len(gb) < n || !bytes.Equal(wb[tc.from:n], gb[tc.from:n]) {
				at := tc.from + firstDiff(wb[tc.from:], gb[tc.from:])
				t.Errorf(".metadata: first difference from torch's at byte %d (of %d; bytes %d to %d must be equal): torch % x, synth % x",
					at, len(wb), tc.from, n, wb[at:min(at+16, len(wb))], gb[at:min(at+16, len(gb))])
			}
			if tc.upTo == "" && len(gb) != len(wb) {
				t.Errorf(".metadata is %d bytes, torch's %d", len(gb), len(wb))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// compareItems checks every tensor item: same file, same bytes, and the
// same order of items within the file; with no bytes items beside them,
// also the same offsets.
func compareItems(t *testing.T, fix, out string, want, got *dcp.Metadata, bytesItems bool) {
	t.Helper()
	type placed struct {
		key dcp.ItemKey
		off int64
	}
	order := func(m *dcp.Metadata) map[string][]dcp.ItemKey {
		byFile := map[string][]placed{}
		for k, it := range m.Items {
			if k.HasOffsets {
				byFile[it.RelativePath] = append(byFile[it.RelativePath], placed{k, it.Offset})
			}
		}
		out := map[string][]dcp.ItemKey{}
		for f, ps := range byFile {
			slices.SortFunc(ps, func(a, b placed) int { return int(a.off - b.off) })
			for _, p := range ps {
				out[f] = append(out[f], p.key)
			}
		}
		return out
	}
	if diff := cmp.Diff(order(want), order(got)); diff != "" {
		t.Errorf("items per file, in file order, differ from torch's (-torch +synth):\n%s", diff)
	}
	n := 0
	for k, w := range want.Items {
		if !k.HasOffsets {
			continue
		}
		g, ok := got.Items[k]
		if !ok {
			t.Errorf("no item for %s at [%s]", k.FQN, k.Offsets)
			continue
		}
		if g.RelativePath != w.RelativePath || g.Length != w.Length || (!bytesItems && g.Offset != w.Offset) {
			t.Errorf("%s at [%s]: item %s %d+%d, torch wrote %s %d+%d", k.FQN, k.Offsets, g.RelativePath, g.Offset, g.Length, w.RelativePath, w.Offset, w.Length)
			continue
		}
		wb := readRange(t, filepath.Join(fix, w.RelativePath), w.Offset, w.Length)
		gb := readRange(t, filepath.Join(out, g.RelativePath), g.Offset, g.Length)
		if !bytes.Equal(wb, gb) {
			at := firstDiff(wb, gb)
			t.Errorf("%s at [%s]: archive differs from torch's at byte %d of %d: torch % x, synth % x",
				k.FQN, k.Offsets, at, len(wb), wb[at:min(at+16, len(wb))], gb[at:min(at+16, len(gb))])
		}
		n++
	}
	if n == 0 {
		t.Error("no tensor items compared")
	}
}

// compareFiles checks that the data files are the same set, byte for byte.
func compareFiles(t *testing.T, fix, out string) {
	t.Helper()
	list := func(dir string) []string {
		m, _ := filepath.Glob(filepath.Join(dir, "*.distcp"))
		for i := range m {
			m[i] = filepath.Base(m[i])
		}
		return m
	}
	wf, gf := list(fix), list(out)
	if !slices.Equal(wf, gf) {
		t.Fatalf("data files %v, torch wrote %v", gf, wf)
	}
	for _, f := range wf {
		wb, _ := os.ReadFile(filepath.Join(fix, f))
		gb, _ := os.ReadFile(filepath.Join(out, f))
		if !bytes.Equal(wb, gb) {
			t.Errorf("%s differs from torch's at byte %d (%d and %d bytes)", f, firstDiff(wb, gb), len(gb), len(wb))
		}
	}
}
