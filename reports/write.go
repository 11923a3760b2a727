package reports

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ckptgate/ckptgate/internal/atomicfile"
)

// Format names a rendering of the report.
type Format string

// The formats.
const (
	FormatJSON     Format = "json"
	FormatJUnit    Format = "junit"
	FormatMarkdown Format = "md"
	FormatHTML     Format = "html"
)

// Formats lists every format, in the order WriteAll writes them.
var Formats = []Format{FormatJSON, FormatJUnit, FormatMarkdown, FormatHTML}

// File names WriteAll writes, by format.
const (
	JSONFile     = "report.json"
	JUnitFile    = "report.junit.xml"
	MarkdownFile = "report.md"
	HTMLFile     = "report.html"
)

// FileName returns the name WriteAll gives the format's file.
func (f Format) FileName() string {
	switch f {
	case FormatJSON:
		return JSONFile
	case FormatJUnit:
		return JUnitFile
	case FormatMarkdown:
		return MarkdownFile
	case FormatHTML:
		return HTMLFile
	}
	return ""
}

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown report format %q (want json, junit, md or html)", s)
}

// Render writes the report in format f.
func (r *Report) Render(w io.Writer, f Format) error {
	switch f {
	case FormatJSON:
		return r.WriteJSON(w)
	case FormatJUnit:
		return r.WriteJUnit(w)
	case FormatMarkdown:
		return r.WriteMarkdown(w)
	case FormatHTML:
		return r.WriteHTML(w)
	}
	return fmt.Errorf("unknown report format %q", string(f))
}

// StepSummaryEnv is the environment variable through which GitHub Actions
// names the file a step appends its Markdown summary to.
const StepSummaryEnv = "GITHUB_STEP_SUMMARY"

// WriteAll writes report.json, report.junit.xml, report.md and report.html
// into dir, creating it if needed. Each file appears complete or not at all:
// it is written beside its final name and renamed into place. When
// $GITHUB_STEP_SUMMARY is set, the Markdown is also appended to it, so that
// every command that writes reports shows up in the job's summary.
func WriteAll(r *Report, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report directory: %w", err)
	}
	for _, f := range Formats {
		path := filepath.Join(dir, f.FileName())
		if err := atomicfile.Write(path, func(w io.Writer) error { return r.Render(w, f) }); err != nil {
			return err
		}
	}
	return AppendStepSummary(r)
}

// AppendStepSummary appends the Markdown report to the file named by
// $GITHUB_STEP_SUMMARY; it does nothing when the variable is unset or empty.
func AppendStepSummary(r *Report) error {
	path := os.Getenv(StepSummaryEnv)
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", StepSummaryEnv, err)
	}
	bw := bufio.NewWriter(f)
	err = r.WriteMarkdown(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", StepSummaryEnv, path, err)
	}
	return nil
}
