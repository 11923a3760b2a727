package atomicfile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A real side file of the fixtures, as the bytes to write.
const fixture = "../../goldens/mllama-tiny-dev/base/config.json"

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteBytes(t *testing.T) {
	want, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	for range 2 { // creates, then replaces
		if err := WriteBytes(path, want); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("wrote %d bytes that differ from the %d given", len(got), len(want))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"config.json"}) {
		t.Errorf("directory holds %v, want only config.json", names)
	}
}

// A write that fails halfway leaves the old file as it was, no temporary
// file, and an error that names the file and keeps the cause.
func TestWriteFailureKeepsOldFile(t *testing.T) {
	half, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	half = half[:len(half)/2]
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte("previous run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("render failed")
	err = Write(path, func(w io.Writer) error {
		if _, err := w.Write(half); err != nil {
			return err
		}
		return cause
	})
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v, want one naming %s and wrapping %v", err, path, cause)
	}
	if b, _ := os.ReadFile(path); string(b) != "previous run\n" {
		t.Errorf("the old file now holds %q", b)
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"config.json"}) {
		t.Errorf("directory holds %v, want only the old config.json", names)
	}
}

func TestWriteMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent", "config.json")
	err := WriteBytes(path, []byte("{}"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v, want fs.ErrNotExist naming %s", err, path)
	}
}
