package dcp

import (
	"errors"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// TestItemNames: relative_path must be a bare file name; DCP never writes
// anything else (checkpoint-formats §11 item 45).
func TestItemNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "../__0_0.distcp", "/etc/passwd", "sub/__0_0.distcp", `..\__0_0.distcp`, "a\x00b"} {
		r := &reader{dir: "ckpt", metaPath: "ckpt/.metadata", m: &Metadata{Items: map[ItemKey]Item{
			KeyOf("w", []int64{0}):    {RelativePath: "__0_0.distcp"},
			KeyOf("w", []int64{4}):    {RelativePath: name},
			KeyOf("extra", []int64{}): {RelativePath: "__1_0.distcp"},
			KeyOf("bytes.item", nil):  {RelativePath: "__1_0.distcp"},
		}}}
		err := r.checkItemNames()
		if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(err.Error(), "ckpt/.metadata: storage_data names files that are not plain names") {
			t.Errorf("%q: got %v", name, err)
		}
	}
	r := &reader{dir: "ckpt", metaPath: "ckpt/.metadata", m: &Metadata{Items: map[ItemKey]Item{
		KeyOf("w", []int64{0}): {RelativePath: "__0_0.distcp"},
		KeyOf("w", []int64{4}): {RelativePath: "model-weights.bin"},
	}}}
	if err := r.checkItemNames(); err != nil {
		t.Errorf("plain names refused: %v", err)
	}
}
