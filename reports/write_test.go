package reports

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWriteAll(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "reports")
	summary := filepath.Join(t.TempDir(), "step_summary.md")
	if err := os.WriteFile(summary, []byte("earlier step\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(StepSummaryEnv, summary)
	r := failingReport(t)
	for range 2 {
		if err := WriteAll(r, dir); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{"report.html", "report.json", "report.junit.xml", "report.md"}
	if !slices.Equal(names, want) {
		t.Errorf("directory holds %v, want %v (no temporary files)", names, want)
	}
	for _, f := range Formats {
		got, err := os.ReadFile(filepath.Join(dir, f.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, render(t, r, f)) {
			t.Errorf("%s differs from the %s rendering", f.FileName(), f)
		}
	}
	md := string(render(t, r, FormatMarkdown))
	got, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "earlier step\n"+md+md {
		t.Errorf("step summary is not the earlier content plus the Markdown once per WriteAll:\n%s", got)
	}
}

// TestWriteAllKeepsOldFileOnError: a rendering that fails leaves the
// previous file as it was and no temporary file behind.
func TestWriteAllKeepsOldFileOnError(t *testing.T) {
	t.Setenv(StepSummaryEnv, "")
	dir := t.TempDir()
	old := filepath.Join(dir, JSONFile)
	if err := os.WriteFile(old, []byte("previous run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := New("verify")
	r.Add(Check{ID: "tensors.drift", Status: StatusPass, Message: "m", Details: json.RawMessage(`{"truncated":`)})
	err := WriteAll(r, dir)
	if err == nil || !strings.Contains(err.Error(), old) {
		t.Fatalf("error %v, want one naming %s", err, old)
	}
	if b, _ := os.ReadFile(old); string(b) != "previous run\n" {
		t.Errorf("report.json now holds %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the old report.json", len(ents))
	}
}

func TestWriteAllIntoAFile(t *testing.T) {
	t.Setenv(StepSummaryEnv, "")
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	err := WriteAll(New("verify"), file)
	if err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("error %v, want one naming %s", err, file)
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
		ok   bool
	}{
		{"json", FormatJSON, true}, {"junit", FormatJUnit, true}, {"md", FormatMarkdown, true}, {"html", FormatHTML, true},
		{"markdown", "", false}, {"", "", false}, {"HTML", "", false},
	} {
		got, err := ParseFormat(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseFormat(%q) = %q, %v", tc.in, got, err)
		}
	}
	if err := New("x").Render(new(strings.Builder), "pdf"); err == nil {
		t.Error("Render accepted format pdf")
	}
}
