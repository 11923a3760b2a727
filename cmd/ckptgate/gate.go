package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/reports"
	"github.com/ckptgate/ckptgate/verify"
)

func init() { register(newGateCmd) }

func newGateCmd() *cobra.Command {
	var cf convertFlags
	var vf verifyFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "gate",
		Short: "Convert, verify against the source, smoke-test and report, with one exit code",
		Long: `gate is the release gate: it converts --source into --out (as convert does), verifies the
result against --base and the source (every check, the forward pass included), and writes
report.json, report.junit.xml, report.md and report.html into --report-dir (and the Markdown
to $GITHUB_STEP_SUMMARY when set).

Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 bad input or usage
(the conversion was refused), 3 internal error.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := cf.options()
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			var finish func()
			opts.Progress, finish = progress(cmd.ErrOrStderr(), cf.quiet)
			t0 := time.Now()
			res, convErr := convert.Run(ctx, cf.source, cf.base, cf.out, opts)
			finish()
			convSecs := time.Since(t0).Seconds()
			if convErr != nil {
				// The report still says what happened, for CI to show.
				r := reports.New("gate")
				r.Inputs["source"], r.Inputs["base"], r.Inputs["out"] = cf.source, cf.base, cf.out
				r.Add(reports.Check{ID: "convert.run", Status: reports.StatusFail, Subject: cf.source, Message: convErr.Error()})
				r.Timings["convert"] = convSecs
				stampToolchain(r)
				if err := emitReport(cmd.OutOrStdout(), r, vf.reportDir, asJSON); err != nil {
					return errors.Join(convErr, err)
				}
				return convErr
			}
			vf.jobs = cf.jobs
			in, err := vf.inputs(cf.out, cf.base, cf.source)
			if err != nil {
				return err
			}
			defer in.Source.Close()
			r, runErr := verify.Run(ctx, in, verify.All())
			if r == nil {
				return runErr
			}
			r.Command = "gate"
			r.Inputs["out"] = cf.out
			r.Timings["convert"] = convSecs
			msg := fmt.Sprintf("%d tensors, %d bytes (%s) in %d file(s)", res.Tensors, res.Bytes, res.DType, len(res.Files))
			for _, n := range res.Notes {
				msg += "\nnote: " + n
			}
			r.Checks = append([]reports.Check{{ID: "convert.run", Status: reports.StatusPass, Subject: res.Out, Message: msg}}, r.Checks...)
			stampToolchain(r)
			if err := emitReport(cmd.OutOrStdout(), r, vf.reportDir, asJSON); err != nil {
				return err
			}
			if runErr != nil {
				return runErr
			}
			if r.Failed() {
				return fmt.Errorf("%w: gate", exit.ErrCheckFailed)
			}
			return nil
		},
	}
	cf.add(cmd)
	vf.add(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print report.json to stdout instead of a summary")
	return cmd
}

func stampToolchain(r *reports.Report) {
	r.Toolchain.Ckptgate = ckptgateVersion()
	r.Toolchain.Go = goVersion()
}
