package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/reports"
	"github.com/ckptgate/ckptgate/verify"
)

func init() { register(newVerifyCmd) }

// verifyFlags are shared by verify and gate.
type verifyFlags struct {
	policy, manifest, manifestOut, golden, reportDir string
	forward                                          string
	jobs                                             int
}

// add registers the flags; withJobs is false where the command has a
// --jobs of its own (gate shares convert's).
func (f *verifyFlags) add(cmd *cobra.Command, withJobs bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.policy, "policy", "full-finetune", "policy preset (full-finetune, freeze-llm) or YAML file")
	fl.StringVar(&f.manifest, "manifest", "", "checksum manifest to compare with (a ckptgate manifest, or ref-manifests.json#key)")
	fl.StringVar(&f.manifestOut, "manifest-out", "", "write the model's checksum manifest here")
	fl.StringVar(&f.golden, "golden", "", "golden directory to compare with (recorded goldens or the dev fixtures)")
	fl.StringVar(&f.reportDir, "report-dir", "", "write report.json (and the other renderings) into this directory")
	fl.StringVar(&f.forward, "forward", "auto", "forward-pass checks: auto (when the model's float32 weights fit in min(4 GiB, a third of free memory)), on, off")
	if withJobs {
		fl.IntVar(&f.jobs, "jobs", 0, "parallel workers (default: all cores)")
	}
}

func (f *verifyFlags) inputs(model, base, source string) (*verify.Inputs, error) {
	if model == "" {
		return nil, exit.BadInputError(fmt.Errorf("--model is required"))
	}
	switch f.forward {
	case "auto", "on", "off":
	default:
		return nil, exit.BadInputError(fmt.Errorf("--forward %q: want auto, on or off", f.forward))
	}
	pol, err := verify.LoadPolicy(f.policy)
	if err != nil {
		return nil, err
	}
	in := &verify.Inputs{Model: model, Base: base, SourcePath: source, Golden: f.golden, Manifest: f.manifest,
		ManifestOut: f.manifestOut, Policy: pol, Jobs: f.jobs, Forward: f.forward}
	if source != "" {
		c, err := convert.OpenSource(source)
		if err != nil {
			return nil, err
		}
		in.Source = c
	}
	return in, nil
}

func newVerifyCmd() *cobra.Command {
	var f verifyFlags
	var model, base, source string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove a converted directory right against the base model and the source",
		Long: `Verify a Hugging Face Mllama directory against the base model it was fine-tuned from and,
with --source, against the training checkpoint it was converted from. Every tensor is read once.

Exit codes: 0 no check failed (warnings allowed), 1 a check failed, 2 bad input, 3 internal error.
The checks are listed in docs/checks.md.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := f.inputs(model, base, source)
			if err != nil {
				return err
			}
			defer in.Source.Close()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			r, runErr := verify.Run(ctx, in, verify.All())
			if r == nil {
				return runErr
			}
			stampToolchain(r)
			if err := emitReport(cmd.OutOrStdout(), r, f.reportDir, asJSON); err != nil {
				return err
			}
			if runErr != nil {
				return runErr
			}
			if r.Failed() {
				return fmt.Errorf("%w: verify", exit.ErrCheckFailed)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&model, "model", "", "converted model directory (required)")
	fl.StringVar(&base, "base", "", "base model directory")
	fl.StringVar(&source, "source", "", "source checkpoint (DCP directory or .pt) the model was converted from")
	fl.BoolVar(&asJSON, "json", false, "print report.json to stdout instead of a summary")
	f.add(cmd, true)
	return cmd
}

// emitReport prints the report and writes its renderings.
func emitReport(w io.Writer, r *reports.Report, dir string, asJSON bool) error {
	if dir != "" {
		if err := reports.WriteAll(r, dir); err != nil {
			return err
		}
	}
	if asJSON {
		return r.WriteJSON(w)
	}
	printSummary(w, r)
	if dir != "" {
		fmt.Fprintf(w, "reports written to %s\n", dir)
	}
	return nil
}

func printSummary(w io.Writer, r *reports.Report) {
	c := r.Counts()
	fmt.Fprintf(w, "%s: %s — %d pass, %d warn, %d fail, %d skip\n", r.Command, verdictWord(r), c[reports.StatusPass], c[reports.StatusWarn], c[reports.StatusFail], c[reports.StatusSkip])
	for _, ch := range r.Sorted() {
		if ch.Status != reports.StatusFail && ch.Status != reports.StatusWarn {
			continue
		}
		subj := ""
		if ch.Subject != "" {
			subj = " " + ch.Subject
		}
		fmt.Fprintf(w, "  %-4s %s%s: %s\n", ch.Status, ch.ID, subj, firstLine(ch.Message))
	}
}

func verdictWord(r *reports.Report) string {
	if r.Failed() {
		return "FAIL"
	}
	return "PASS"
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " …"
		}
	}
	return s
}
