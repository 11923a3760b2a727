package verify_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/verify"
)

// TestScanStopsOnSourceDamage damages the source in ways only streaming
// its data reveals (the scan reads it ahead of the statistics, in another
// goroutine) and checks that verify fails with the reader's error, at
// every --jobs.
func TestScanStopsOnSourceDamage(t *testing.T) {
	model := convertRun(t, "fsdp1", dtype.BF16)
	tried := 0
	for _, c := range dcptest.Corruptions {
		if c.Name != "crc-mismatch" && c.Name != "dtype-mismatch" && c.Name != "shape-mismatch" {
			continue
		}
		for _, jobs := range []int{1, 3} {
			dir := dcptest.CopyRun(t, dcptest.Run(t, "fsdp1"))
			if err := c.Apply(dir); err != nil {
				t.Fatal(err)
			}
			src, err := convert.OpenSource(dir)
			if err != nil {
				t.Fatalf("%s: the damage should show only when streaming, but opening failed: %v", c.Name, err)
			}
			in := openSourceInputs(src, dir)
			in.Model, in.Jobs = model, jobs
			_, err = verify.Run(context.Background(), in, verify.All())
			src.Close()
			tried++
			if err == nil || !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(err.Error(), c.Want) {
				t.Errorf("%s, jobs %d: verify returned %v, want a corrupt-checkpoint error containing %q", c.Name, jobs, err, c.Want)
			}
		}
	}
	if tried != 6 {
		t.Errorf("tried %d damaged sources, want 3 kinds × 2 job counts", tried)
	}
}

func openSourceInputs(src *ckpt.Checkpoint, path string) *verify.Inputs {
	p, _ := verify.LoadPolicy("")
	return &verify.Inputs{Base: filepath.Join(fx, "base"), SourcePath: path, Source: src, Policy: p}
}
