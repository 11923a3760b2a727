//go:build ollama

package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/verify"
)

func init() { register(newOllamaCheckCmd) }

func newOllamaCheckCmd() *cobra.Command {
	var model, golden, reportDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ollama-check",
		Short: "Check that a converted directory deploys in Ollama (built with -tags ollama)",
		Long: `Convert a Hugging Face Mllama directory to GGUF with Ollama's own converter (v0.17.4), load it
in Ollama's Mllama engine on the CPU, run the goldens' smoke prompts (text and image) and report how
far Ollama's outputs are from the reference, naming every known way Ollama departs from transformers.

The directory goes through the converter twice: as it is on disk (what ollama create sees; transformers
4.52+ tensor names and transformers 5 rope_parameters configs break it) and through a legacy-shaped view
(Hub names, rope_theta/rope_scaling, chat template in tokenizer_config.json), on which the numerical
checks run.

Exit codes: 0 no check failed (warnings allowed), 1 a check failed, 2 bad input, 3 internal error.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || golden == "" {
				return exit.BadInputError(fmt.Errorf("--model and --golden are required"))
			}
			// Ollama's loader reports every model load at INFO through
			// slog's default logger; ckptgate's report says what matters.
			slog.SetLogLoggerLevel(slog.LevelWarn)
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			in := &verify.Inputs{Model: model, Golden: golden}
			r, runErr := verify.Run(ctx, in, verify.OllamaChecks)
			if r == nil {
				return runErr
			}
			r.Command = "ollama-check"
			r.Toolchain.Ckptgate = ckptgateVersion()
			r.Toolchain.Go = goVersion()
			if err := emitReport(cmd.OutOrStdout(), r, reportDir, asJSON); err != nil {
				return err
			}
			if runErr != nil {
				return runErr
			}
			if r.Failed() {
				return fmt.Errorf("%w: ollama-check", exit.ErrCheckFailed)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&model, "model", "", "Hugging Face model directory to check (required)")
	fl.StringVar(&golden, "golden", "", "goldens directory with the smoke prompts and transformers' outputs (required)")
	fl.StringVar(&reportDir, "report-dir", "", "write report.json (and the other renderings) into this directory")
	fl.BoolVar(&asJSON, "json", false, "print report.json to stdout instead of a summary")
	return cmd
}
