package reports

import (
	"bytes"
	"encoding/xml"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// requireTool returns the path of an external tool, skipping the test when
// it is absent unless CKPTGATE_REQUIRE_TOOLS=1 (as in CI).
func requireTool(t *testing.T, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		if os.Getenv("CKPTGATE_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is required (CKPTGATE_REQUIRE_TOOLS=1): %v", path, err)
		}
		t.Skipf("%s not found: %v", path, err)
	}
	return p
}

func render(t *testing.T, r *Report, f Format) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := r.Render(&buf, f); err != nil {
		t.Fatalf("render %s: %v", f, err)
	}
	return buf.Bytes()
}

var cases = []struct {
	name   string
	report func(testing.TB) *Report
	failed bool
}{
	{"pass", passingReport, false},
	{"fail", failingReport, true},
}

func TestGoldenFiles(t *testing.T) {
	for _, tc := range cases {
		for _, f := range []Format{FormatMarkdown, FormatJUnit} {
			t.Run(tc.name+"/"+string(f), func(t *testing.T) {
				got := render(t, tc.report(t), f)
				path := filepath.Join("testdata", tc.name+"."+strings.TrimPrefix(f.FileName(), "report."))
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./reports -update to create it)", err)
				}
				if d := cmp.Diff(string(want), string(got)); d != "" {
					t.Errorf("%s is stale (-want +got; go test ./reports -update rewrites it):\n%s", path, d)
				}
			})
		}
	}
}

func TestMarkdown(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.report(t)
			md := string(render(t, r, FormatMarkdown))
			lines := strings.Split(md, "\n")
			wantTop := "## ✅ ckptgate gate: PASS"
			if tc.failed {
				wantTop = "## ❌ ckptgate gate: FAIL"
			}
			if lines[0] != wantTop {
				t.Errorf("first line %q, want %q", lines[0], wantTop)
			}
			// Rows in the findings table: failures, then warnings, passes
			// and skips; four cells each whatever the messages hold.
			rank := map[string]int{"❌": 0, "⚠️": 1, "✅": 2, "⏭️": 3}
			var rows []string
			for _, l := range lines {
				if f := strings.Fields(l); len(f) > 1 && f[0] == "|" {
					if _, ok := rank[f[1]]; ok {
						rows = append(rows, l)
					}
				}
			}
			if len(rows) != len(r.Checks) {
				t.Fatalf("%d finding rows, want %d:\n%s", len(rows), len(r.Checks), md)
			}
			last := 0
			for _, row := range rows {
				k := rank[strings.Fields(row)[1]]
				if k < last {
					t.Errorf("row out of order (failures first): %s", row)
				}
				last = k
				if n := len(unescapedPipe.FindAllString(row, -1)); n != 5 {
					t.Errorf("row has %d cell separators, want 5: %s", n, row)
				}
			}
		})
	}
}

var unescapedPipe = regexp.MustCompile(`(^|[^\\])\|`)

type xmlSuites struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Suites   []struct {
		Tests      int `xml:"tests,attr"`
		Failures   int `xml:"failures,attr"`
		Skipped    int `xml:"skipped,attr"`
		Properties []struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		} `xml:"properties>property"`
		Cases []struct {
			Name      string `xml:"name,attr"`
			Classname string `xml:"classname,attr"`
			Failure   *struct {
				Message string `xml:"message,attr"`
				Body    string `xml:",chardata"`
			} `xml:"failure"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			SystemOut string `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func TestJUnit(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.report(t)
			b := render(t, r, FormatJUnit)
			var doc xmlSuites
			if err := xml.Unmarshal(b, &doc); err != nil {
				t.Fatalf("not XML: %v", err)
			}
			if len(doc.Suites) != 1 {
				t.Fatalf("%d testsuites, want 1", len(doc.Suites))
			}
			s := doc.Suites[0]
			counts := r.Counts()
			if s.Tests != len(r.Checks) || s.Failures != counts[StatusFail] || s.Skipped != counts[StatusSkip] ||
				doc.Tests != len(r.Checks) || doc.Failures != counts[StatusFail] {
				t.Errorf("counts tests=%d failures=%d skipped=%d (suites %d/%d), want %d/%d/%d",
					s.Tests, s.Failures, s.Skipped, doc.Tests, doc.Failures, len(r.Checks), counts[StatusFail], counts[StatusSkip])
			}
			props := map[string]string{}
			for _, p := range s.Properties {
				props[p.Name] = p.Value
			}
			for k, want := range map[string]string{
				"input.model": r.Inputs["model"], "input.base": r.Inputs["base"], "input.source": r.Inputs["source"],
				"toolchain.transformers": "5.17.0", "toolchain.go": "go1.27.3", "timing.smoke": "2.125",
			} {
				if props[k] != want {
					t.Errorf("property %s = %q, want %q", k, props[k], want)
				}
			}
			if len(s.Cases) != len(r.Checks) {
				t.Fatalf("%d testcases, want %d", len(s.Cases), len(r.Checks))
			}
			for i, c := range r.Checks {
				jc := s.Cases[i]
				family, _, _ := strings.Cut(c.ID, ".")
				wantName := strings.TrimSpace(c.ID + " " + c.Subject)
				if jc.Classname != family || jc.Name != wantName {
					t.Errorf("testcase %d: classname %q name %q, want %q %q", i, jc.Classname, jc.Name, family, wantName)
				}
				switch c.Status {
				case StatusFail:
					if jc.Failure == nil || jc.Failure.Body != c.Message || jc.Failure.Message == "" {
						t.Errorf("%s: failure %+v, want the message %q", wantName, jc.Failure, c.Message)
					}
				case StatusSkip:
					if jc.Skipped == nil || jc.Skipped.Message != c.Message {
						t.Errorf("%s: skipped %+v, want message %q", wantName, jc.Skipped, c.Message)
					}
				case StatusWarn:
					if jc.Failure != nil || jc.Skipped != nil || jc.SystemOut != "warning: "+c.Message {
						t.Errorf("%s: a warning must pass with system-out %q; got failure %v skipped %v out %q",
							wantName, "warning: "+c.Message, jc.Failure, jc.Skipped, jc.SystemOut)
					}
				case StatusPass:
					if jc.Failure != nil || jc.Skipped != nil {
						t.Errorf("%s: a pass must have neither failure nor skipped", wantName)
					}
				}
			}
		})
	}
}

// TestJUnitSchema validates the JUnit against testdata/junit.xsd with
// xmllint, including a report whose strings hold what XML cannot.
func TestJUnitSchema(t *testing.T) {
	xmllint := requireTool(t, "xmllint")
	hostile := New("verify")
	hostile.Inputs["model"] = "dir\x00with\x1bcontrol\"'<>&"
	hostile.Timings["verify"] = -1 // clamped: JUnit times are non-negative
	hostile.Add(
		Check{ID: "x.y", Status: StatusFail, Subject: "]]><!--", Message: "line1\nline2 \xff\xfe invalid UTF-8 \ufffe"},
		Check{ID: "x.z", Status: "mystery", Message: "unknown status"},
		Check{ID: "x.w", Status: StatusSkip, Message: strings.Repeat("long ", 1000)},
	)
	reps := map[string]*Report{"pass": passingReport(t), "fail": failingReport(t), "hostile": hostile, "empty": New("")}
	dir := t.TempDir()
	for name, r := range reps {
		path := filepath.Join(dir, name+".xml")
		if err := os.WriteFile(path, render(t, r, FormatJUnit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(xmllint, "--noout", "--schema", "testdata/junit.xsd", path).CombinedOutput()
		if err != nil {
			t.Errorf("%s: xmllint: %v\n%s", name, err, out)
		}
	}
	// The schema is not vacuous: a testcase without a name is refused.
	bad := filepath.Join(dir, "bad.xml")
	os.WriteFile(bad, []byte(`<testsuites><testsuite name="s" tests="1"><testcase classname="c"/></testsuite></testsuites>`), 0o644)
	if out, err := exec.Command(xmllint, "--noout", "--schema", "testdata/junit.xsd", bad).CombinedOutput(); err == nil {
		t.Errorf("xmllint accepted a testcase without a name:\n%s", out)
	}
}
