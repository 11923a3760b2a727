package reports

import (
	"encoding/xml"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// The JUnit XML below follows the structure CI test tabs read (the
// Jenkins/Ant schema, which GitHub test-report actions and GitLab also
// accept): one testsuite, one testcase per finding, classname = check family.

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string           `xml:"name,attr"`
	Tests      int              `xml:"tests,attr"`
	Failures   int              `xml:"failures,attr"`
	Errors     int              `xml:"errors,attr"`
	Skipped    int              `xml:"skipped,attr"`
	Time       string           `xml:"time,attr"`
	Properties *junitProperties `xml:"properties"`
	Cases      []junitCase      `xml:"testcase"`
}

// junitProperties is a pointer in junitSuite because the schema forbids an
// empty properties element.
type junitProperties struct {
	Property []junitProperty `xml:"property"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Skipped   *junitMessage `xml:"skipped"`
	Failure   *junitMessage `xml:"failure"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Body    string `xml:",chardata"`
}

// maxJUnitAttr bounds the message attribute; the element body carries the
// whole message.
const maxJUnitAttr = 1000

// WriteJUnit writes the report as JUnit XML: one testcase per finding
// (classname the check family, name the ID and subject), failures with their
// messages, skips as skipped, warnings as passing testcases whose system-out
// says so, and the inputs, toolchain and timings as properties.
func (r *Report) WriteJUnit(w io.Writer) error {
	counts := r.Counts()
	total := 0.0
	for _, k := range slices.Sorted(maps.Keys(r.Timings)) { // a fixed order: the same sum every time
		total += r.Timings[k]
	}
	suiteName := "ckptgate"
	if r.Command != "" {
		suiteName += " " + r.Command
	}
	suite := junitSuite{
		Name:       suiteName,
		Tests:      len(r.Checks),
		Skipped:    counts[StatusSkip],
		Time:       junitTime(total),
		Properties: r.junitProperties(),
		Cases:      make([]junitCase, 0, len(r.Checks)),
	}
	// Failures are counted from the cases: an unknown status fails too.
	for _, c := range r.Checks {
		jc := junitCaseOf(c)
		if jc.Failure != nil {
			suite.Failures++
		}
		suite.Cases = append(suite.Cases, jc)
	}
	doc := junitSuites{
		Name:     suiteName,
		Tests:    suite.Tests,
		Failures: suite.Failures,
		Time:     suite.Time,
		Suites:   []junitSuite{suite},
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("junit: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func junitCaseOf(c Check) junitCase {
	family, _, _ := strings.Cut(c.ID, ".")
	name := c.ID
	if c.Subject != "" {
		name += " " + c.Subject
	}
	jc := junitCase{Name: name, Classname: family, Time: "0"}
	switch c.Status {
	case StatusFail:
		jc.Failure = &junitMessage{Message: attr(c.Message), Type: c.ID, Body: c.Message}
	case StatusSkip:
		jc.Skipped = &junitMessage{Message: attr(c.Message)}
	case StatusWarn:
		jc.SystemOut = "warning: " + c.Message
	case StatusPass:
		jc.SystemOut = c.Message
	default:
		// A status this version does not know is reported, not hidden.
		jc.Failure = &junitMessage{Message: attr(c.Message), Type: "unknown status " + string(c.Status), Body: c.Message}
	}
	return jc
}

func (r *Report) junitProperties() *junitProperties {
	var ps []junitProperty
	add := func(k, v string) {
		if v != "" {
			ps = append(ps, junitProperty{Name: k, Value: v})
		}
	}
	add("command", r.Command)
	for _, k := range slices.Sorted(maps.Keys(r.Inputs)) {
		add("input."+k, r.Inputs[k])
	}
	add("toolchain.ckptgate", r.Toolchain.Ckptgate)
	add("toolchain.go", r.Toolchain.Go)
	add("toolchain.transformers", r.Toolchain.Transformers)
	add("toolchain.torch", r.Toolchain.Torch)
	for _, k := range slices.Sorted(maps.Keys(r.Timings)) {
		add("timing."+k, junitTime(r.Timings[k]))
	}
	if len(ps) == 0 {
		return nil
	}
	return &junitProperties{Property: ps}
}

// junitTime formats seconds as the schema's non-negative decimal.
func junitTime(s float64) string {
	if !(s >= 0) || s > 1e12 {
		s = 0
	}
	return fmt.Sprintf("%.3f", s)
}

// attr shortens a message to one line for an XML attribute.
func attr(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return truncate(s, maxJUnitAttr)
}

// truncate shortens s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos] + "…"
		}
		i++
	}
	return s
}
