package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/exit"
)

func init() { register(newConvertCmd) }

// convertFlags are shared by convert and gate.
type convertFlags struct {
	source, base, out string
	dtype             string
	maxShard          string
	jobs              int
	force, quiet      bool
}

func (f *convertFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.source, "source", "", "DCP checkpoint directory or torch.save .pt file (required)")
	fl.StringVar(&f.base, "base", "", "base model directory (default: model_name from train_params.yaml when it names a local directory)")
	fl.StringVar(&f.out, "out", "", "output directory (required; must not exist unless --force)")
	fl.StringVar(&f.dtype, "dtype", "auto", "output dtype: auto (the base's), bf16, fp16 or fp32")
	fl.StringVar(&f.maxShard, "max-shard-size", "5GB", "largest shard, decimal units as in transformers (5GB is transformers 4.x's and the Hub's default; transformers 5.x defaults to 50GB)")
	fl.IntVar(&f.jobs, "jobs", 0, "parallel copy workers (default: all cores)")
	fl.BoolVar(&f.force, "force", false, "replace an existing --out directory")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress bar")
}

// stageHook is passed to conversions as Options.Stage; only the
// crash-safety tests set it.
var stageHook func(ctx context.Context, stage string)

// options validates the flags and resolves the base.
func (f *convertFlags) options() (convert.Options, error) {
	var o convert.Options
	if f.source == "" || f.out == "" {
		return o, exit.BadInputError(fmt.Errorf("--source and --out are required"))
	}
	if f.dtype != "auto" {
		d, ok := dtype.ParseFlag(f.dtype)
		if !ok {
			return o, exit.BadInputError(fmt.Errorf("--dtype %q: want auto, bf16, fp16 or fp32", f.dtype))
		}
		o.DType = d
	}
	n, err := convert.ParseSize(f.maxShard)
	if err != nil {
		return o, exit.BadInputError(fmt.Errorf("--max-shard-size: %w", err))
	}
	o.MaxShardSize = n
	if f.jobs < 0 {
		return o, exit.BadInputError(fmt.Errorf("--jobs %d: want a positive number", f.jobs))
	}
	o.Jobs = f.jobs
	o.Force = f.force
	o.Stage = stageHook
	if f.base == "" {
		b, err := convert.BaseFromTrainParams(f.source)
		if err != nil {
			return o, err
		}
		f.base = b
	}
	return o, nil
}

// progress returns a progress callback drawing a bar on stderr when it is a
// terminal, and a function to finish it.
func progress(stderr io.Writer, quiet bool) (func(done, total int64), func()) {
	fd, ok := stderr.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(fd.Fd())) {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	return func(done, total int64) {
			if bar == nil {
				bar = progressbar.DefaultBytes(total, "converting")
			}
			_ = bar.Set64(done)
		}, func() {
			if bar != nil {
				_ = bar.Finish()
			}
		}
}

// signalContext is cancelled on SIGINT/SIGTERM so that conversions remove
// their temporary directory before exiting.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func newConvertCmd() *cobra.Command {
	var f convertFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "convert",
		Short: "Convert an FSDP checkpoint into a Hugging Face directory",
		Long: `Convert a DCP checkpoint directory (FSDP1 SHARDED_STATE_DICT, FSDP2 state dicts)
or a FULL_STATE_DICT torch.save file into a Hugging Face directory laid out as
save_pretrained writes it: sharded safetensors in the base model's key layout,
every side file of the base, config.json's dtype field set to the output dtype.

Nothing is unpickled beyond an allowlist of torch's own classes; every tensor
is streamed once; the output appears atomically (a temporary directory beside
--out is renamed at the end).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.options()
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			var finish func()
			opts.Progress, finish = progress(cmd.ErrOrStderr(), f.quiet)
			res, err := convert.Run(ctx, f.source, f.base, f.out, opts)
			finish()
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printResult(cmd.OutOrStdout(), res)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func printResult(w io.Writer, r *convert.Result) {
	fmt.Fprintf(w, "wrote %s: %d tensors, %d bytes (%s) in %d file(s), %.2fs\n", r.Out, r.Tensors, r.Bytes, r.DType, len(r.Files), r.Duration.Seconds())
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}
