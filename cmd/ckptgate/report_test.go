package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/reports"
)

// reportFixture is a failing verify report with tensor names, versions and
// numbers of the mllama-tiny-dev fixtures.
func reportFixture(t *testing.T) (*reports.Report, string) {
	t.Helper()
	r := reports.New("verify")
	r.Inputs["model"] = "out/mllama-tiny-fsdp2-bf16"
	r.Inputs["base"] = "goldens/mllama-tiny-dev/base"
	r.Toolchain = reports.Toolchain{Ckptgate: "v0.1.0", Go: "go1.27.3", Transformers: "5.17.0"}
	r.Timings["verify"] = 0.5
	r.Add(
		reports.Check{ID: "tensors.keys", Status: reports.StatusPass, Message: "100 tensors, as in the base"},
		reports.Check{ID: "tensors.drift", Status: reports.StatusFail, Subject: "language_model.model.layers.0.self_attn.q_proj.weight",
			Message: "2.9× closer to the base's language_model.model.layers.0.self_attn.o_proj.weight than to its own base tensor: swapped or mis-mapped"},
		reports.Check{ID: "tensors.drift", Status: reports.StatusFail, Message: "1 drift failure(s)", Details: reports.MustDetails(reports.DriftDetails{
			Tensors: []reports.TensorDrift{
				{Name: "language_model.model.layers.0.self_attn.q_proj.weight", Layer: 0, Group: "text", RelL2: 1.555, MaxAbs: 1.32, ChangedFrac: 1, NormRatio: 1.14,
					NearestOther: "language_model.model.layers.0.self_attn.o_proj.weight"},
				{Name: "language_model.model.layers.0.mlp.up_proj.weight", Layer: 0, Group: "text", RelL2: 0.41, MaxAbs: 0.24, ChangedFrac: 1, NormRatio: 1.13},
				{Name: "vision_model.transformer.layers.1.mlp.fc1.weight", Layer: 1, Group: "vision", RelL2: 0.27, MaxAbs: 0.2, ChangedFrac: 1, NormRatio: 1.05},
			}})},
		reports.Check{ID: "config.dtype", Status: reports.StatusWarn, Subject: "config.json", Message: `field is "torch_dtype", the base uses "dtype"`},
	)
	path := filepath.Join(t.TempDir(), "report.json")
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return r, path
}

func TestReportCommandFormats(t *testing.T) {
	r, in := reportFixture(t)
	dir := t.TempDir()
	for _, f := range reports.Formats {
		t.Run(string(f), func(t *testing.T) {
			var want bytes.Buffer
			if err := r.Render(&want, f); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := runCLI(t, "report", "--in", in, "--format", string(f))
			if code != exit.OK || stdout != want.String() {
				t.Errorf("stdout: exit %d (%s), output equal to the rendering: %v", code, stderr, stdout == want.String())
			}
			out := filepath.Join(dir, f.FileName())
			stdout, stderr, code = runCLI(t, "report", "--in", in, "--format", string(f), "--out", out)
			got, err := os.ReadFile(out)
			if code != exit.OK || err != nil || string(got) != want.String() || stdout != "" {
				t.Errorf("--out: exit %d (%s), read %v, file equal to the rendering: %v, stdout %q", code, stderr, err, string(got) == want.String(), stdout)
			}
		})
	}
	// Markdown is the default, and a failing report renders with exit 0.
	stdout, _, code := runCLI(t, "report", "--in", in)
	if code != exit.OK || !strings.HasPrefix(stdout, "## ❌ ckptgate verify: FAIL") {
		t.Errorf("default format: exit %d, output starts %.40q", code, stdout)
	}
}

func TestReportCommandBadInput(t *testing.T) {
	_, in := reportFixture(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, _ := os.ReadFile(in)
	badStatus := write("status.json", strings.Replace(string(good), `"status": "warn"`, `"status": "error"`, 1))
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no --in", []string{"--format", "md"}, "--in is required"},
		{"unknown format", []string{"--in", in, "--format", "pdf"}, `unknown report format "pdf"`},
		{"positional argument", []string{in}, "unknown command"},
		{"unknown flag", []string{"--in", in, "--colour"}, "unknown flag"},
		{"missing file", []string{"--in", filepath.Join(dir, "none.json")}, "none.json"},
		{"not JSON", []string{"--in", write("text.json", "schema: v1\n")}, "text.json"},
		{"empty", []string{"--in", write("empty.json", "")}, "empty.json"},
		{"other schema", []string{"--in", write("v2.json", strings.Replace(string(good), "ckptgate.report/v1", "ckptgate.report/v2", 1))}, "/schema"},
		{"bad status", []string{"--in", badStatus}, "/checks/3/status"},
		{"a directory", []string{"--in", dir}, dir},
		{"--out in a missing directory", []string{"--in", in, "--out", filepath.Join(dir, "no", "such", "r.md")}, "r.md"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, append([]string{"report"}, tc.args...)...)
			if code != exit.BadInput {
				t.Errorf("exit %d (%s), want %d", code, stderr, exit.BadInput)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", stderr, tc.want)
			}
		})
	}
}

// TestWorkflowExampleFlags checks that the example CI workflow only uses
// flags the gate command has.
func TestWorkflowExampleFlags(t *testing.T) {
	b, err := os.ReadFile("../../docs/github-workflow.yml")
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Jobs map[string]struct {
			Steps []struct {
				Run string `yaml:"run"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	var run string
	for _, s := range wf.Jobs["gate"].Steps {
		if strings.HasPrefix(strings.TrimSpace(s.Run), "ckptgate gate") {
			run = s.Run
		}
	}
	var flags []string
	for _, f := range strings.Fields(run) {
		if name, ok := strings.CutPrefix(f, "--"); ok {
			flags = append(flags, name)
		}
	}
	if len(flags) < 3 {
		t.Fatalf("found no ckptgate gate invocation with flags in the workflow (got %q)", run)
	}
	gate, _, err := newRoot().Find([]string{"gate"})
	if err != nil || gate.Name() != "gate" {
		t.Skip("the gate command is not registered yet")
	}
	for _, f := range flags {
		if gate.Flags().Lookup(f) == nil {
			t.Errorf("docs/github-workflow.yml passes --%s, which ckptgate gate does not have", f)
		}
	}
}
