package boundedio

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A real side file of the fixtures: transformers wrote it.
const fixture = "../../goldens/mllama-tiny-dev/base/config.json"

func TestReadFile(t *testing.T) {
	want, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(want))
	for _, c := range []struct {
		name    string
		path    string
		limit   int64
		tooBig  bool
		missing bool
	}{
		{name: "exactly the limit", path: fixture, limit: size},
		{name: "under the limit", path: fixture, limit: size + 1},
		{name: "one byte over", path: fixture, limit: size - 1, tooBig: true},
		{name: "zero limit", path: fixture, limit: 0, tooBig: true},
		{name: "absent", path: filepath.Join(t.TempDir(), "config.json"), limit: size, missing: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ReadFile(c.path, c.limit)
			switch {
			case c.missing:
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("ReadFile(%s) error = %v, want fs.ErrNotExist", c.path, err)
				}
			case c.tooBig:
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("ReadFile error = %v, want ErrTooLarge", err)
				}
				// The message says which file and which limit.
				for _, s := range []string{c.path, strconv.FormatInt(c.limit, 10) + " bytes"} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %q", err, s)
					}
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("ReadFile read %d bytes that differ from the file's %d", len(got), len(want))
				}
			}
		})
	}
}

func TestReadFileDirectory(t *testing.T) {
	dir := filepath.Dir(fixture)
	_, err := ReadFile(dir, 1<<20)
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("ReadFile(directory) error = %v, want one naming %s", err, dir)
	}
	if errors.Is(err, ErrTooLarge) {
		t.Errorf("a read error reported as too large: %v", err)
	}
}

// countingReader is an endless stream that counts what was taken from it.
type countingReader struct{ n int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	r.n += int64(len(p))
	return len(p), nil
}

// An endless input is refused after limit+1 bytes, not read to the end.
func TestReadAllStopsAtLimit(t *testing.T) {
	const limit = 1 << 16
	r := &countingReader{}
	_, err := ReadAll(r, limit)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadAll(endless) error = %v, want ErrTooLarge", err)
	}
	if r.n != limit+1 {
		t.Errorf("ReadAll took %d bytes from the reader, want %d", r.n, limit+1)
	}
}

func TestReadAllReadError(t *testing.T) {
	want := errors.New("disk on fire")
	_, err := ReadAll(io.MultiReader(strings.NewReader("{}"), &failingReader{want}), 10)
	if !errors.Is(err, want) {
		t.Fatalf("ReadAll error = %v, want %v", err, want)
	}
}

type failingReader struct{ err error }

func (r *failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestReadAllNegativeLimit(t *testing.T) {
	if _, err := ReadAll(strings.NewReader(""), -1); err == nil {
		t.Fatal("ReadAll with a negative limit returned no error")
	}
}
