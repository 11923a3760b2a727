//go:build ollama

package ollamacheck

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

// The dev fixtures: real torch FSDP checkpoints and transformers' answers.
const (
	fixtures = "../../goldens/mllama-tiny-dev"
	base     = fixtures + "/base"
)

var tmpRoot string

func TestMain(m *testing.M) {
	// Ollama logs model loading at INFO through slog's default logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	dir, err := os.MkdirTemp("", "ollamacheck-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fsdp1Dir is the fsdp1 fine-tune converted to a Hugging Face directory at
// float32 by ckptgate's converter: the model transformers computed the
// forward goldens on (ref/fsdp1-fp32, which the repository does not hold).
var fsdp1Dir = sync.OnceValues(func() (string, error) {
	out := filepath.Join(tmpRoot, "fsdp1-fp32")
	_, err := convert.Run(context.Background(), fixtures+"/runs/fsdp1", base, out, convert.Options{DType: dtype.F32, SkipPreflight: true})
	return out, err
})

// fullRun is one Run over fsdp1Dir with the fixtures' goldens, its GGUFs kept
// in WorkDir for the tests that look further.
type fullRun struct {
	dir, work string
	goldens   *Goldens
	res       *Result
}

var theRun = sync.OnceValues(func() (*fullRun, error) {
	dir, err := fsdp1Dir()
	if err != nil {
		return nil, err
	}
	g, err := LoadGoldens(fixtures)
	if err != nil {
		return nil, err
	}
	work := filepath.Join(tmpRoot, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		return nil, err
	}
	eng, err := NewEngineReference(dir, 1)
	if err != nil {
		return nil, err
	}
	res, err := Run(Options{Model: dir, Goldens: g, Engine: eng, WorkDir: work})
	return &fullRun{dir: dir, work: work, goldens: g, res: res}, err
})

func mustRun(t *testing.T) *fullRun {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the fixture through Ollama (about 30 s)")
	}
	r, err := theRun()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// findings returns the findings of one check.
func (r *fullRun) findings(id string) []string {
	var out []string
	for _, c := range r.res.Checks {
		if c.ID == id {
			out = append(out, fmt.Sprintf("[%s] %s: %s", c.Status, c.Subject, c.Message))
		}
	}
	return out
}
