package torchzip_test

import (
	"testing"

	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/torchzip"
)

// TestOpenPTManifest opens the FULL_STATE_DICT .pt that torch.save wrote,
// streams every tensor with ckpt.WalkChunk and compares it with the
// reference conversion's manifest.
func TestOpenPTManifest(t *testing.T) {
	c, err := torchzip.OpenPT(dcptest.Run(t, "full") + "/mllama-tiny-1.pt")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Format != "torch.save" || len(c.Tensors) != 100 || len(c.Notes) != 0 {
		t.Errorf("format %q, %d tensors, notes %q", c.Format, len(c.Tensors), c.Notes)
	}
	dcptest.CheckManifest(t, c, "full-bf16")
}
