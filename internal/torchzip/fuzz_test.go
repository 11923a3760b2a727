package torchzip

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/pickle"
)

// FuzzOpenItem: any bytes given as a torch.save archive either fail with
// an error matching ckpt.ErrCorrupt, or load; every tensor they hold then
// streams through ckpt.WalkChunk (bounds, CRC) without a panic. Seeds are
// real DCP items sliced from the fixtures' .distcp files and the .pt.
func FuzzOpenItem(f *testing.F) {
	for _, it := range []itemRef{itemProjector, itemPatch, itemGate, itemEmpty} {
		f.Add(it.bytes(f))
	}
	pt, err := os.ReadFile(runs + "full/mllama-tiny-1.pt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pt)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Open(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			corrupt(t, err)
			return
		}
		v, err := a.Load()
		if err != nil {
			corrupt(t, err)
			return
		}
		var tensors []*Tensor
		switch v := v.(type) {
		case *Tensor:
			tensors = append(tensors, v)
		case *pickle.Dict:
			for _, e := range v.Entries() {
				if tn, ok := e.Value.(*Tensor); ok {
					tensors = append(tensors, tn)
				}
			}
		}
		buf := make([]byte, 4096)
		for _, tn := range tensors {
			ct := wholeTensor("fuzz", tn)
			if err := ckpt.WalkChunk(ct, &ct.Chunks[0], buf, func(int64, []byte) error { return nil }); err != nil {
				corrupt(t, err)
			}
		}
	})
}

func corrupt(t *testing.T, err error) {
	if !errors.Is(err, ckpt.ErrCorrupt) {
		t.Fatalf("error does not match ckpt.ErrCorrupt: %v", err)
	}
}
