// Package verify proves a converted Hugging Face directory right against the
// base model it was fine-tuned from and, when given, against the source
// checkpoint and recorded goldens. Checks are values in the shape of
// golang.org/x/tools/go/analysis: a stable ID, a Doc, and a Run function that
// reports findings through a Pass.
package verify

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/reports"
)

// Input names something a check needs besides the model directory.
type Input string

// The optional inputs.
const (
	NeedBase   Input = "base"
	NeedSource Input = "source"
	NeedGolden Input = "golden"
)

// Check is one verification. IDs are stable ("family.name") and documented in
// docs/checks.md, which is generated from Doc.
type Check struct {
	ID string
	// Doc: first line a one-sentence summary, then what passes, warns and
	// fails.
	Doc      string
	Requires []Input
	Run      func(*Pass) error
}

// Family is the part of the ID before the first dot.
func (c *Check) Family() string {
	f, _, _ := strings.Cut(c.ID, ".")
	return f
}

// Summary is the first line of Doc.
func (c *Check) Summary() string {
	s, _, _ := strings.Cut(c.Doc, "\n")
	return s
}

// Inputs are what a verification run looks at.
type Inputs struct {
	// Model is the converted directory under test.
	Model string
	// Base is the base model directory.
	Base string
	// SourcePath and Source are the training checkpoint (nil when not given).
	SourcePath string
	Source     *ckpt.Checkpoint
	// Golden is a golden directory recorded by `ckptgate golden record`, or
	// the dev fixtures' goldens; empty when not given.
	Golden string
	// Manifest is a checksum manifest to compare with (optional).
	Manifest string
	// ManifestOut, when set, receives the model's manifest.
	ManifestOut string
	// Policy decides frozen sets and thresholds.
	Policy *Policy
	// Jobs bounds parallelism (0: all cores).
	Jobs int
	// Forward is "auto" (default: run the forward checks when the model's
	// float32 weights fit a modest memory budget), "on" or "off".
	Forward string
}

// Pass is what a check's Run receives.
type Pass struct {
	Check *Check
	*Inputs
	*Env
	findings []reports.Check
}

// Env is what the runner opened once for all checks.
type Env struct {
	// Weights are the model's safetensors (nil when they could not be
	// opened; WeightsErr says why).
	Weights    *safetensors.Dir
	WeightsErr error
	// BaseWeights are the base's (nil without a base or when unreadable).
	BaseWeights    *safetensors.Dir
	BaseWeightsErr error
	// Config and BaseConfig are the parsed config.json files (nil when
	// missing or invalid; ConfigErr says why for the model).
	Config, BaseConfig *mllama.Config
	ConfigErr          error
	// Scan holds the per-tensor statistics computed in the one streaming
	// pass over the weights (nil when the weights could not be opened).
	Scan *Scan

	sharedMu sync.Mutex
	shared   map[string]*sharedValue
}

type sharedValue struct {
	once sync.Once
	v    any
}

// Shared returns the value stored under key for this run, computing it
// with compute the first time. Checks of one family use it to share work
// that is too costly to repeat per check (a loaded engine and its outputs).
func (e *Env) Shared(key string, compute func() any) any {
	e.sharedMu.Lock()
	if e.shared == nil {
		e.shared = map[string]*sharedValue{}
	}
	sv, ok := e.shared[key]
	if !ok {
		sv = &sharedValue{}
		e.shared[key] = sv
	}
	e.sharedMu.Unlock()
	sv.once.Do(func() { sv.v = compute() })
	return sv.v
}

// Report records a finding.
func (p *Pass) Report(status reports.Status, subject, msg string, details any) {
	c := reports.Check{ID: p.Check.ID, Status: status, Subject: subject, Message: msg}
	if details != nil {
		if raw, ok := details.(json.RawMessage); ok {
			c.Details = raw
		} else {
			c.Details = reports.MustDetails(details)
		}
	}
	p.findings = append(p.findings, c)
}

// Passf records a passing finding.
func (p *Pass) Passf(subject, format string, a ...any) {
	p.Report(reports.StatusPass, subject, fmt.Sprintf(format, a...), nil)
}

// Warnf records a warning.
func (p *Pass) Warnf(subject, format string, a ...any) {
	p.Report(reports.StatusWarn, subject, fmt.Sprintf(format, a...), nil)
}

// Failf records a failure.
func (p *Pass) Failf(subject, format string, a ...any) {
	p.Report(reports.StatusFail, subject, fmt.Sprintf(format, a...), nil)
}

// Skipf records that the check could not run.
func (p *Pass) Skipf(subject, format string, a ...any) {
	p.Report(reports.StatusSkip, subject, fmt.Sprintf(format, a...), nil)
}

// Findings returns what the pass recorded.
func (p *Pass) Findings() []reports.Check { return p.findings }
