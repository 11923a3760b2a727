// Command ckptgate converts FSDP checkpoints of Llama 3.2 Vision (Mllama) into
// Hugging Face directories and proves them right before they ship.
//
// Exit codes: 0 success, 1 a check failed, 2 bad input or usage, 3 internal
// error.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

func init() {
	exit.Register(ckpt.ErrCorrupt, safetensors.ErrInvalid, safetensors.ErrNoWeights)
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "ckptgate",
		Short: "Convert FSDP checkpoints of Llama 3.2 Vision to Hugging Face and prove them right",
		Long: `ckptgate converts FSDP checkpoints (DCP directories and torch.save files) of
Llama 3.2 Vision (Mllama) into Hugging Face directories, verifies them against
the base model and the source, smoke-tests them with a reference forward pass,
and reports to people and CI.

Exit codes: 0 ok, 1 a check failed, 2 bad input or usage, 3 internal error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return exit.BadInputError(err)
	})
	// Profiles for performance work (issue: performance at real scale).
	var cpuProfile string
	var stopProfile func()
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile to this file")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return exit.BadInputError(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		return nil
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if stopProfile != nil {
			stopProfile()
		}
	}
	for _, add := range commands {
		root.AddCommand(add())
	}
	return root
}

// commands are registered by the per-command files' init functions, so that
// each command lives in one file.
var commands []func() *cobra.Command

func register(f func() *cobra.Command) { commands = append(commands, f) }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns its exit code; a panic
// anywhere is an internal error (3), never a crash.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "ckptgate: internal error: %v\n%s", r, debug.Stack())
			code = exit.Internal
		}
	}()
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err != nil && !errors.Is(err, exit.ErrCheckFailed) {
		fmt.Fprintf(stderr, "ckptgate: %v\n", err)
	}
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		return exit.BadInput
	}
	return exit.Code(err)
}

// usageArgs wraps a positional-argument validator so that its errors are
// usage errors (exit 2).
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return exit.BadInputError(v(cmd, args))
	}
}
