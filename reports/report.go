// Package reports holds the one report model every ckptgate command produces
// (report.json, schema ckptgate.report/v1) and its renderings for people and
// CI systems.
package reports

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// Schema is the value of the report's "schema" field.
const Schema = "ckptgate.report/v1"

// Status is the outcome of one check.
type Status string

// The statuses, in increasing order of severity (skip aside).
const (
	StatusPass Status = "pass"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// Check is one finding: the check that made it, what it looked at, and what
// it found. A check may report several findings with different subjects.
type Check struct {
	ID      string `json:"id"`
	Status  Status `json:"status"`
	Subject string `json:"subject,omitempty"`
	Message string `json:"message"`
	// Details is check-specific structured data (see details.go for the
	// shapes the renderers plot).
	Details json.RawMessage `json:"details,omitempty"`
}

// Toolchain records the versions that produced and checked the model.
type Toolchain struct {
	Ckptgate string `json:"ckptgate"`
	Go       string `json:"go"`
	// Transformers is the transformers_version recorded in the model's config.
	Transformers string `json:"transformers,omitempty"`
	// Torch is the torch version where the source says it (rarely known).
	Torch string `json:"torch,omitempty"`
}

// Report is the whole report.
type Report struct {
	Schema  string  `json:"schema"`
	Verdict string  `json:"verdict"` // "pass" or "fail"
	Command string  `json:"command,omitempty"`
	Checks  []Check `json:"checks"`
	// Inputs names what was checked: "model", "base", "source", "policy", "golden".
	Inputs    map[string]string `json:"inputs"`
	Toolchain Toolchain         `json:"toolchain"`
	// Timings are wall-clock seconds per phase.
	Timings map[string]float64 `json:"timings"`
}

// New returns an empty report for a command.
func New(command string) *Report {
	return &Report{Schema: Schema, Verdict: "pass", Command: command, Checks: []Check{},
		Inputs: map[string]string{}, Timings: map[string]float64{}}
}

// Add appends findings and updates the verdict.
func (r *Report) Add(cs ...Check) {
	r.Checks = append(r.Checks, cs...)
	r.Verdict = r.computeVerdict()
}

func (r *Report) computeVerdict() string {
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			return "fail"
		}
	}
	return "pass"
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return r.computeVerdict() == "fail" }

// Counts returns the number of findings per status.
func (r *Report) Counts() map[Status]int {
	m := map[Status]int{}
	for _, c := range r.Checks {
		m[c.Status]++
	}
	return m
}

// Sorted returns the checks with failures first, then warnings, passes and
// skips, stable within each status.
func (r *Report) Sorted() []Check {
	rank := map[Status]int{StatusFail: 0, StatusWarn: 1, StatusPass: 2, StatusSkip: 3}
	cs := append([]Check(nil), r.Checks...)
	sort.SliceStable(cs, func(i, j int) bool { return rank[cs[i].Status] < rank[cs[j].Status] })
	return cs
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	r.Verdict = r.computeVerdict()
	// The schema wants objects and arrays, never null.
	if r.Checks == nil {
		r.Checks = []Check{}
	}
	if r.Inputs == nil {
		r.Inputs = map[string]string{}
	}
	if r.Timings == nil {
		r.Timings = map[string]float64{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// Load reads a report.json and checks its schema field.
func Load(path string) (*Report, error) {
	b, err := boundedio.ReadFile(path, MaxReportSize)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("%s: schema %q, want %q", path, r.Schema, Schema)
	}
	return &r, nil
}

// MustDetails marshals v for Check.Details; values that cannot be marshalled
// are a programming error and become a JSON string saying so.
func MustDetails(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprintf("unmarshalable details: %v", err))
	}
	return b
}
