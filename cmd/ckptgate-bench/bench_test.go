package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dcp/synth"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-sizes", "3GB,6GB", "-world", "4", "-sharding", "fsdp2", "-dtype", "fp32", "-jobs", "2,1,2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.sizes, []int64{3e9, 6e9}) || o.world != 4 || o.sharding != synth.FSDP2 || o.dt != dtype.F32 || !slices.Equal(o.jobs, []int{2, 1}) {
		t.Errorf("parsed %+v", o)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-size", "lots"}, "-size"},
		{[]string{"-world", "0"}, "-world 0"},
		{[]string{"-sharding", "zero3"}, "-sharding"},
		{[]string{"-dtype", "fp16"}, "-dtype"},
		{[]string{"-jobs", "0"}, "-jobs"},
		{[]string{"-repeat", "0"}, "-repeat"},
		{[]string{"-cache", "hot"}, "-cache"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		if _, err := parseFlags(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q): %v, want an error about %s", tc.args, err, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		v    []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{4, 1}, 2.5}, {[]float64{5, 1, 3}, 3}} {
		if got := median(tc.v); got != tc.want {
			t.Errorf("median(%v) = %g, want %g", tc.v, got, tc.want)
		}
	}
}

// TestCopyDir checks the copy baseline on a fixture checkpoint: the same
// files, byte for byte.
func TestCopyDir(t *testing.T) {
	src := filepath.Join("..", "..", "goldens", "mllama-tiny-dev", "runs", "fsdp1")
	dst := filepath.Join(t.TempDir(), "copy")
	if _, err := copyDir(src, dst); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		want, _ := os.ReadFile(filepath.Join(src, e.Name()))
		got, err := os.ReadFile(filepath.Join(dst, e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: copy differs (%v)", e.Name(), err)
		}
	}
	n, err := dirBytes(dst)
	if m, _ := dirBytes(src); err != nil || n != m {
		t.Errorf("copy has %d bytes, source %d (%v)", n, m, err)
	}
}
