package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/reports"
)

// golden record, then golden compare of the same model (clean, exit 0) and
// of the same weights in the transformers 4.45 layout (exit 1: its
// tokenizer_config.json sets padding_side and model_input_names), with the
// report in every rendering.
func TestGoldenRecordAndCompare(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "rec")
	base := filepath.Join(fixtures, "base")
	out, stderr, code := runCLI(t, "golden", "record", "--model", base, "--images", filepath.Join(fixtures, "images"),
		"--prompt-image", "landscape_800x600.png", "--out", rec)
	if code != 0 || !strings.Contains(out, "100 tensors") || !strings.Contains(out, "9 images, 2 forward prompts") {
		t.Fatalf("record: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := runCLI(t, "golden", "record", "--model", base, "--out", rec); code != 2 || !strings.Contains(stderr, "--force") {
		t.Errorf("recording over a recording without --force: exit %d, %q", code, stderr)
	}

	out, stderr, code = runCLI(t, "golden", "compare", "--golden", rec, "--model", base, "--json")
	if code != 0 {
		t.Fatalf("compare with itself: exit %d\n%s%s", code, out, stderr)
	}
	var r reports.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Schema != reports.Schema || r.Command != "golden compare" || r.Inputs["golden"] != rec {
		t.Errorf("report header: %+v", r)
	}
	for _, c := range r.Checks {
		want := reports.StatusPass
		if c.ID == "golden.source" {
			want = reports.StatusSkip // recorded without --source
		}
		if c.Status != want || !strings.HasPrefix(c.ID, "golden.") {
			t.Errorf("%s %s: %s %s", c.ID, c.Subject, c.Status, c.Message)
		}
	}

	reportDir := filepath.Join(dir, "report")
	out, stderr, code = runCLI(t, "golden", "compare", "--golden", rec, "--model", filepath.Join(fixtures, "base-hub"), "--report-dir", reportDir)
	if code != 1 || !strings.Contains(out, "fail golden.tokenizer_config") {
		t.Errorf("compare with base-hub: exit %d, want 1\n%s%s", code, out, stderr)
	}
	for _, f := range []string{"report.json", "report.md", "report.junit.xml", "report.html"} {
		if _, err := os.Stat(filepath.Join(reportDir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, err := os.ReadFile(filepath.Join(reportDir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "golden.config") || !strings.Contains(string(md), "torch\\_dtype") {
		t.Errorf("report.md lacks the config finding and its form note:\n%s", md)
	}
}

func TestGoldenUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"golden", "record", "--out", dir}, "--model and --out are required"},
		{[]string{"golden", "record", "--model", filepath.Join(fixtures, "base")}, "--model and --out are required"},
		{[]string{"golden", "record", "--model", filepath.Join(dir, "absent"), "--out", filepath.Join(dir, "o")}, "no such file"},
		{[]string{"golden", "record", "--model", filepath.Join(fixtures, "base"), "--images", filepath.Join(dir, "absent.png"), "--out", filepath.Join(dir, "o")}, "--images"},
		{[]string{"golden", "record", "--model", filepath.Join(fixtures, "base"), "--images", filepath.Join(fixtures, "base"), "--out", filepath.Join(dir, "o")}, "holds no .png"},
		{[]string{"golden", "compare", "--model", filepath.Join(fixtures, "base")}, "--golden and --model are required"},
		{[]string{"golden", "compare", "--golden", fixtures, "--model", filepath.Join(fixtures, "base")}, "not a recorded golden directory"},
		{[]string{"golden", "compare", "--golden", "../../goldens/recorded/fsdp1", "--model", filepath.Join(fixtures, "base"), "--source", filepath.Join(dir, "absent")}, "source"},
		{[]string{"golden", "extra"}, ""},
	} {
		_, stderr, code := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.says) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.says)
		}
	}
}
