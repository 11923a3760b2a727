package golden

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/reports"
)

// The fixtures: run 1 of the generator (the dev fixtures, made by torch and
// transformers), the lean outputs of run 2, and the committed recording of
// ckptgate's conversion of run 1's fsdp1 checkpoint.
const (
	fixtures      = "../goldens/mllama-tiny-dev"
	run2Dir       = "../goldens/mllama-tiny-dev-run2"
	recordedFsdp1 = "../goldens/recorded/fsdp1"
	promptImage   = "landscape_800x600.png"
)

var tmpRoot string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "golden-test-")
	if err != nil {
		panic(err)
	}
	tmpRoot = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// memo computes a value once for the whole test binary.
type memo[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (m *memo[T]) get(t *testing.T, f func() (T, error)) T {
	t.Helper()
	m.once.Do(func() { m.v, m.err = f() })
	if m.err != nil {
		t.Fatal(m.err)
	}
	return m.v
}

var fsdp1Conv memo[string]

// fsdp1Model is ckptgate's conversion of run 1's runs/fsdp1 with the default
// options (the base's dtype, bf16): what recorded/fsdp1 was recorded from.
func fsdp1Model(t *testing.T) string {
	return fsdp1Conv.get(t, func() (string, error) {
		out := filepath.Join(tmpRoot, "fsdp1")
		_, err := convert.Run(context.Background(), filepath.Join(fixtures, "runs", "fsdp1"), filepath.Join(fixtures, "base"), out,
			convert.Options{DType: dtype.Invalid, SkipPreflight: true})
		return out, err
	})
}

var run2Src memo[string]

// run2Source is run 2's fsdp1 checkpoint: its .distcp files are byte for byte
// run 1's (files.json says so), its .metadata is its own.
func run2Source(t *testing.T) string {
	return run2Src.get(t, func() (string, error) {
		dir := filepath.Join(tmpRoot, "run2-fsdp1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		var rows []struct {
			Path string `json:"path"`
			Same string `json:"same_as_previous_run"`
		}
		b, err := os.ReadFile(filepath.Join(run2Dir, "files.json"))
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(b, &rows); err != nil {
			return "", err
		}
		for _, r := range rows {
			name, ok := strings.CutPrefix(r.Path, "runs/fsdp1/")
			if !ok {
				continue
			}
			from := filepath.Join(run2Dir, r.Path)
			if r.Same != "" {
				from = filepath.Join(fixtures, r.Same)
			}
			if err := copyFile(from, filepath.Join(dir, name)); err != nil {
				return "", err
			}
		}
		return dir, nil
	})
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyDir copies a flat directory.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func fixtureImages(t *testing.T) []string {
	t.Helper()
	imgs, err := filepath.Glob(filepath.Join(fixtures, "images", "*"))
	if err != nil || len(imgs) == 0 {
		t.Fatalf("no fixture images: %v", err)
	}
	sort.Strings(imgs)
	return imgs
}

var baseRec memo[*Golden]

// baseRecording records the base (transformers 5.17's save) with the fixture
// images.
func baseRecording(t *testing.T) *Golden {
	return baseRec.get(t, func() (*Golden, error) {
		return Record(context.Background(), Options{Model: filepath.Join(fixtures, "base"), Images: fixtureImages(t), PromptImage: promptImage})
	})
}

var fsdp1Rec memo[*Golden]

// fsdp1Recording records the fsdp1 conversion with its source.
func fsdp1Recording(t *testing.T) *Golden {
	model := fsdp1Model(t)
	return fsdp1Rec.get(t, func() (*Golden, error) {
		src, err := convert.OpenSource(filepath.Join(fixtures, "runs", "fsdp1"))
		if err != nil {
			return nil, err
		}
		defer src.Close()
		return Record(context.Background(), Options{Model: model, Source: src, Images: fixtureImages(t), PromptImage: promptImage})
	})
}

// committed parses the committed recording afresh (callers may change it).
func committed(t *testing.T) *Golden {
	t.Helper()
	g, err := Load(recordedFsdp1)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// byKey indexes findings by ID and subject.
func byKey(fs []reports.Check) map[string]reports.Check {
	m := map[string]reports.Check{}
	for _, f := range fs {
		m[f.ID+" "+f.Subject] = f
	}
	return m
}

// readJSON decodes a fixture file.
func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
