//go:build ollama

package verify_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/ollamacheck"
	"github.com/ckptgate/ckptgate/reports"
	"github.com/ckptgate/ckptgate/verify"
)

// TestOllamaChecks runs the ollama.* checks through the verification runner
// on the fsdp1 fine-tune, converted at float32 (the model the goldens were
// computed on): every check reports, none errs, and the transformers 5
// config fails the as-is conversion.
func TestOllamaChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the fixture through Ollama")
	}
	model := filepath.Join(t.TempDir(), "fsdp1")
	if _, err := convert.Run(context.Background(), filepath.Join(fx, "runs/fsdp1"), filepath.Join(fx, "base"), model,
		convert.Options{DType: dtype.F32, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	if len(verify.OllamaChecks) != len(ollamacheck.Checks) {
		t.Fatalf("%d ollama checks, ollamacheck lists %d", len(verify.OllamaChecks), len(ollamacheck.Checks))
	}
	rep, err := verify.Run(context.Background(), &verify.Inputs{Model: model, Golden: fx}, verify.OllamaChecks)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range rep.Checks {
		seen[c.ID] = true
		if strings.HasPrefix(c.Message, "internal error") {
			t.Errorf("%s: %s", c.ID, c.Message)
		}
		if c.ID == ollamacheck.IDConvert && c.Subject == "as-is" && (c.Status != reports.StatusFail || !strings.Contains(c.Message, "rope_parameters")) {
			t.Errorf("as-is conversion: %s %s", c.Status, c.Message)
		}
	}
	for _, c := range ollamacheck.Checks {
		if !seen[c.ID] {
			t.Errorf("%s missing from the report", c.ID)
		}
	}
	if !rep.Failed() {
		t.Error("report passes")
	}
}

// TestOllamaChecksInputs: without --golden the checks are skipped; with an
// unreadable goldens directory the run reports bad input (exit 2).
func TestOllamaChecksInputs(t *testing.T) {
	rep, err := verify.Run(context.Background(), &verify.Inputs{Model: filepath.Join(fx, "base")}, verify.OllamaChecks)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Checks {
		if c.Status != reports.StatusSkip {
			t.Errorf("%s without goldens: %s %s", c.ID, c.Status, c.Message)
		}
	}
	_, err = verify.Run(context.Background(), &verify.Inputs{Model: filepath.Join(fx, "base"), Golden: t.TempDir()}, verify.OllamaChecks)
	if exit.Code(err) != exit.BadInput {
		t.Errorf("empty goldens directory: exit code %d (%v), want %d", exit.Code(err), err, exit.BadInput)
	}
}
