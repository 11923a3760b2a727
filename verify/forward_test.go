package verify

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/reports"
)

// fixtures are the dev fixtures, for the tests inside the package.
const fixtures = "../goldens/mllama-tiny-dev"

// fwdConvert converts a fixture run with the project's converter.
func fwdConvert(t *testing.T, run string, d dtype.DType) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), run)
	if _, err := convert.Run(context.Background(), filepath.Join(fixtures, "runs", run), filepath.Join(fixtures, "base"), out,
		convert.Options{DType: d, SkipPreflight: true}); err != nil {
		t.Fatal(err)
	}
	return out
}

// fwdVerify runs the forward checks; source, when not empty, is a fixture
// run opened with the converter's readers.
func fwdVerify(t *testing.T, in *Inputs, source string) *reports.Report {
	t.Helper()
	if source != "" {
		src, err := convert.OpenSource(filepath.Join(fixtures, "runs", source))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		in.Source, in.SourcePath = src, source
	}
	r, err := Run(context.Background(), in, ForwardChecks)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fwdStatuses maps "id subject" to the status of each forward finding.
func fwdStatuses(r *reports.Report) map[string]reports.Status {
	m := map[string]reports.Status{}
	for _, c := range r.Checks {
		m[c.ID+" "+c.Subject] = c.Status
	}
	return m
}

func fwdExpect(t *testing.T, r *reports.Report, want map[string]reports.Status) {
	t.Helper()
	got := fwdStatuses(r)
	for k, w := range want {
		if got[k] != w {
			msg := ""
			for _, c := range r.Checks {
				if c.ID+" "+c.Subject == k {
					msg = c.Message
				}
			}
			t.Errorf("%s: %q (%s), want %q", k, got[k], msg, w)
		}
	}
}

// TestForwardOnFsdp1 verifies the fp32 conversion of runs/fsdp1, the weights
// the forward goldens were computed on: every forward check passes, the
// goldens within 1e-4 relative RMS, and source and model give identical
// logits (the bf16 run upcast exactly).
func TestForwardOnFsdp1(t *testing.T) {
	model := fwdConvert(t, "fsdp1", dtype.F32)
	r := fwdVerify(t, &Inputs{Model: model, Base: filepath.Join(fixtures, "base"), Golden: fixtures}, "fsdp1")
	fwdExpect(t, r, map[string]reports.Status{
		"forward.sanity text": reports.StatusPass, "forward.sanity image": reports.StatusPass,
		"forward.source text": reports.StatusPass, "forward.source image": reports.StatusPass,
		"forward.golden text_user": reports.StatusPass, "forward.golden image_user": reports.StatusPass,
		"forward.base text": reports.StatusPass, "forward.base image": reports.StatusPass,
	})
	for _, c := range r.Checks {
		if c.ID == "forward.source" && !strings.Contains(c.Message, "identical") {
			t.Errorf("forward.source %s: %s, want identical logits", c.Subject, c.Message)
		}
		if c.Status != reports.StatusPass {
			t.Errorf("%s %s: %s: %s", c.ID, c.Subject, c.Status, c.Message)
		}
	}
}

// TestForwardCastAndWrongRun: the bf16 conversion of the fp32 run fsdp2
// stays within the source bound but is not identical, and it is not the
// model the goldens were made on; a conversion of another run (freeze) given
// with fsdp1 as its source fails forward.source.
func TestForwardCastAndWrongRun(t *testing.T) {
	cast := fwdVerify(t, &Inputs{Model: fwdConvert(t, "fsdp2", dtype.BF16), Golden: fixtures}, "fsdp2")
	for _, c := range cast.Checks {
		if c.ID == "forward.source" && (c.Status == reports.StatusFail || strings.Contains(c.Message, "identical")) {
			t.Errorf("fsdp2 bf16: forward.source %s: %s: %s, want a small non-zero KL", c.Subject, c.Status, c.Message)
		}
		t.Logf("fsdp2 bf16: %s %s: %s: %s", c.ID, c.Subject, c.Status, c.Message)
	}
	fwdExpect(t, cast, map[string]reports.Status{
		"forward.golden text_user": reports.StatusFail, "forward.golden image_user": reports.StatusFail,
	})
	wrong := fwdVerify(t, &Inputs{Model: fwdConvert(t, "freeze", dtype.BF16)}, "fsdp1")
	fwdExpect(t, wrong, map[string]reports.Status{
		"forward.source image": reports.StatusFail,
	})
}

// TestForwardBaseUnchanged: verifying the base against itself warns that
// nothing moved.
func TestForwardBaseUnchanged(t *testing.T) {
	base := filepath.Join(fixtures, "base")
	r := fwdVerify(t, &Inputs{Model: base, Base: base}, "")
	fwdExpect(t, r, map[string]reports.Status{
		"forward.base ": reports.StatusWarn, "forward.base text": reports.StatusPass, "forward.base image": reports.StatusPass,
	})
}

// fwdZeroTensor overwrites a tensor's bytes with zeros in place.
func fwdZeroTensor(t *testing.T, dir, name string) {
	t.Helper()
	path := filepath.Join(dir, "model.safetensors")
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ti, ok := f.Tensor(name)
	off := f.Header.DataStart() + ti.Begin
	f.Close()
	if !ok {
		t.Fatalf("no tensor %s", name)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteAt(make([]byte, ti.NumBytes()), off); err != nil {
		t.Fatal(err)
	}
}

// TestForwardDegenerate: a model whose lm_head was zeroed has constant
// logits, which forward.sanity and forward.base fail.
func TestForwardDegenerate(t *testing.T) {
	model := dcptest.CopyRun(t, filepath.Join(fixtures, "base"))
	fwdZeroTensor(t, model, "language_model.lm_head.weight")
	r := fwdVerify(t, &Inputs{Model: model, Base: filepath.Join(fixtures, "base")}, "")
	fwdExpect(t, r, map[string]reports.Status{
		"forward.sanity text": reports.StatusFail, "forward.sanity image": reports.StatusFail,
		"forward.base text": reports.StatusFail, "forward.base image": reports.StatusFail,
	})
}

// TestForwardGoldenFiles: a golden file that does not parse fails its entry
// naming the file, and a missing one is skipped, while the intact entry
// still passes.
func TestForwardGoldenFiles(t *testing.T) {
	golden := t.TempDir()
	for _, name := range []string{"goldens.json", "golden-text_user.safetensors"} {
		b, err := os.ReadFile(filepath.Join(fixtures, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(golden, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	model := fwdConvert(t, "fsdp1", dtype.BF16)
	r := fwdVerify(t, &Inputs{Model: model, Golden: golden}, "")
	fwdExpect(t, r, map[string]reports.Status{
		"forward.golden text_user": reports.StatusPass, "forward.golden image_user": reports.StatusSkip,
	})
	b, err := os.ReadFile(filepath.Join(fixtures, "golden-image_user.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(golden, "golden-image_user.safetensors")
	if err := os.WriteFile(bad, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	r = fwdVerify(t, &Inputs{Model: model, Golden: golden}, "")
	fwdExpect(t, r, map[string]reports.Status{"forward.golden image_user": reports.StatusFail})
	for _, c := range r.Checks {
		if c.ID == "forward.golden" && c.Subject == "image_user" && !strings.Contains(c.Message, "golden-image_user.safetensors") {
			t.Errorf("failure does not name the file: %s", c.Message)
		}
	}
}
