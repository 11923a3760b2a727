package reports

import (
	"os"
	"path"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type workflow struct {
	Jobs map[string]struct {
		Env   map[string]string `yaml:"env"`
		Steps []struct {
			Name string            `yaml:"name"`
			If   string            `yaml:"if"`
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestWorkflowExample keeps docs/github-workflow.yml in step with the file
// names WriteAll writes: the gate writes the reports where the publishing
// steps look for them, and those steps run when the gate fails.
func TestWorkflowExample(t *testing.T) {
	b, err := os.ReadFile("../docs/github-workflow.yml")
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatalf("docs/github-workflow.yml: %v", err)
	}
	job, ok := wf.Jobs["gate"]
	if !ok {
		t.Fatal("no gate job")
	}
	dir := job.Env["REPORTS"]
	var gate, junit, upload bool
	for _, s := range job.Steps {
		switch {
		case strings.Contains(s.Run, "ckptgate gate"):
			gate = strings.Contains(s.Run, `--report-dir "$REPORTS"`)
		case strings.HasPrefix(s.Uses, "mikepenz/action-junit-report@"):
			junit = s.With["report_paths"] == path.Join(dir, JUnitFile) &&
				strings.Contains(s.If, "always()") && strings.Contains(s.If, path.Join(dir, JUnitFile))
		case strings.HasPrefix(s.Uses, "actions/upload-artifact@") && s.With["name"] == "ckptgate-reports":
			upload = strings.TrimSuffix(s.With["path"], "/") == dir && s.If == "always()"
		}
	}
	if dir == "" || !gate || !junit || !upload {
		t.Errorf("REPORTS=%q; gate step writes there: %v; JUnit step reads %s there, always: %v; upload of the reports, always: %v",
			dir, gate, JUnitFile, junit, upload)
	}
}
