package dcp

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// FuzzMetadata: a mutated .metadata beside the real data files of the run
// it came from never makes the reader panic: ParseMetadata and Open fail
// only with errors matching ckpt.ErrCorrupt, and the chunks of a
// checkpoint they accept stream (opened, bounds and CRC checked) without a
// panic.
// Seeds are the fixtures' real .metadata files.
func FuzzMetadata(f *testing.F) {
	runs := []string{"fsdp1", "fsdp2", "freeze", "legacy"}
	seeds := make([][]byte, len(runs))
	dirs := make([]string, len(runs))
	for i, run := range runs {
		src := filepath.Join("../../goldens/mllama-tiny-dev/runs", run)
		b, err := os.ReadFile(filepath.Join(src, ".metadata"))
		if err != nil {
			f.Fatal(err)
		}
		seeds[i] = b
		f.Add(b)
		// One copy of the run's data files per fuzzing process; each
		// input only rewrites .metadata.
		dirs[i] = filepath.Join(f.TempDir(), run)
		if err := os.CopyFS(dirs[i], os.DirFS(src)); err != nil {
			f.Fatal(err)
		}
	}
	buf := make([]byte, 1<<16)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMetadata(data, ".metadata")
		if err != nil {
			corrupt(t, err)
			return
		}
		for _, e := range m.Entries {
			for _, c := range chunksOf(e) {
				if len(c.Offsets) != len(e.Tensor.Size) || len(c.Sizes) != len(e.Tensor.Size) {
					t.Fatalf("%s: chunk %v/%v for shape %v accepted", e.Key, c.Offsets, c.Sizes, e.Tensor.Size)
				}
			}
		}
		dir := dirs[closest(data, seeds)]
		if err := os.WriteFile(filepath.Join(dir, ".metadata"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Open(dir)
		if err != nil {
			corrupt(t, err)
			return
		}
		defer c.Close()
		// Streaming every tensor of every accepted input would make
		// fuzzing I/O bound; a tenth of them, varying with the input,
		// still reaches every item over a run.
		for k, tn := range c.Tensors {
			if k%10 != len(data)%10 {
				continue
			}
			for i := range tn.Chunks {
				if err := ckpt.WalkChunk(tn, &tn.Chunks[i], buf, func(int64, []byte) error { return nil }); err != nil {
					corrupt(t, err)
				}
			}
		}
	})
}

func chunksOf(e Entry) []ChunkMeta {
	if e.Tensor == nil {
		return nil
	}
	return e.Tensor.Chunks
}

// closest is the seed sharing the longest prefix with data.
func closest(data []byte, seeds [][]byte) int {
	best, bestN := 0, -1
	for i, s := range seeds {
		n := 0
		for n < len(s) && n < len(data) && s[n] == data[n] {
			n++
		}
		if n > bestN {
			best, bestN = i, n
		}
	}
	return best
}

func corrupt(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ckpt.ErrCorrupt) {
		t.Fatalf("error does not match ckpt.ErrCorrupt: %v", err)
	}
}
