package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/internal/atomicfile"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/reports"
)

func init() { register(newReportCmd) }

func newReportCmd() *cobra.Command {
	var in, format, out string
	cmd := &cobra.Command{
		Use:   "report --in report.json --format md|junit|html|json [--out FILE]",
		Short: "Render a report.json as Markdown, JUnit XML, HTML or JSON",
		Long: `report renders a report.json written by verify or gate in another format:
md (GitHub-flavoured Markdown, for a step summary or a comment), junit (JUnit
XML for CI test tabs), html (one self-contained page with plots) or json.
It writes to standard output, or atomically to --out.

The input must validate against the report schema (v1); anything else is bad
input (exit 2). Rendering a failing report is not itself a failure: the exit
code is 0 once the rendering is written.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" {
				return exit.BadInputError(fmt.Errorf("report: --in is required"))
			}
			f, err := reports.ParseFormat(format)
			if err != nil {
				return exit.BadInputError(fmt.Errorf("report: --format: %w", err))
			}
			r, err := reports.ReadFile(in)
			if err != nil {
				return exit.BadInputError(fmt.Errorf("report: %w", err))
			}
			if out == "" {
				return r.Render(cmd.OutOrStdout(), f)
			}
			return atomicfile.Write(out, func(w io.Writer) error { return r.Render(w, f) })
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "report.json to render (required)")
	cmd.Flags().StringVar(&format, "format", string(reports.FormatMarkdown), "md, junit, html or json")
	cmd.Flags().StringVar(&out, "out", "", "file to write (default: standard output)")
	return cmd
}
