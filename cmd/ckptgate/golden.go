package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/golden"
	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/reports"
)

func init() { register(newGoldenCmd) }

func newGoldenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "golden",
		Short: "Record what a model holds and computes, and compare a model with a recording",
		Long: `golden makes toolchain drift visible. "golden record" writes golden.json: the model's tensors
(checksums and statistics), its side files normalised across transformers 4.x and 5.x forms, chat
template renders, tokenizer fingerprint and encodings, preprocessed images, forward outputs and,
with --source, the training checkpoint as stored. "golden compare" records a model the same way
and reports, per item, exact matches (pass), changes within tolerance (warn, with the measured
distance) and changes beyond it (fail). "verify --golden DIR" runs the same comparison.`,
		Args: usageArgs(cobra.NoArgs),
		// Runnable, so that an unknown subcommand is a usage error.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newGoldenRecordCmd(), newGoldenCompareCmd())
	return cmd
}

// imageExtensions are what --images takes from a directory.
var imageExtensions = []string{".png", ".jpg", ".jpeg", ".gif"}

// expandImages turns files and directories into image files, a directory's
// images sorted by name.
func expandImages(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, exit.BadInputError(fmt.Errorf("--images: %w", err))
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		ents, err := os.ReadDir(a)
		if err != nil {
			return nil, exit.BadInputError(fmt.Errorf("--images: %w", err))
		}
		var found []string
		for _, e := range ents {
			ext := strings.ToLower(filepath.Ext(e.Name()))
			for _, x := range imageExtensions {
				if ext == x && e.Type().IsRegular() {
					found = append(found, filepath.Join(a, e.Name()))
				}
			}
		}
		if len(found) == 0 {
			return nil, exit.BadInputError(fmt.Errorf("--images: %s holds no %s files", a, strings.Join(imageExtensions, ", ")))
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// openGoldenSource opens --source when given.
func openGoldenSource(path string) (*ckpt.Checkpoint, error) {
	if path == "" {
		return nil, nil
	}
	return convert.OpenSource(path)
}

func newGoldenRecordCmd() *cobra.Command {
	var model, source, promptImage, out string
	var images []string
	var jobs int
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "record --model DIR [--source PATH] [--images FILE|DIR]... --out DIR",
		Short: "Record a model into DIR/golden.json",
		Long: `Record what a Hugging Face Mllama directory holds and computes into --out/golden.json:

  files              every side file's name, size and SHA-256
  config, generation_config, tokenizer_config, image_processor
                     the side files' content, normalised so that the transformers 4.x and 5.x forms of
                     the same content are equal, and the form each uses
  chat_template      per transformers 5.17 loader, the template's SHA-256 and the files it comes from
  tokenizer          fingerprint, pipeline hash and named special tokens
  tensors            per tensor: dtype, shape, SHA-256, L2 norm, mean, max |x| and 32 sampled values
  source             with --source: the checkpoint's tensors as stored and its DCP metadata
  renders            the chat template rendered on the dev fixtures' 11 conversations, and their ids
  encodings          18 strings encoded and decoded
  preprocess         each --images file preprocessed with the model's image processor
  forward            the reference engine on a text and an image prompt (--prompt-image, default the
                     first image): top 256 logits, statistics and 12 greedy tokens

Image paths are stored relative to --out, so a recording committed beside its images compares from
any checkout. Items that cannot be recorded are listed under "missing" with the reason. Every tensor
is read once; the forward prompts hold the weights in float32 (an 11B model needs about 43 GB).

Exit codes: 0 recorded, 2 bad input (missing model, unreadable images, --out holds a recording
and --force is not given), 3 internal error.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || out == "" {
				return exit.BadInputError(errors.New("--model and --out are required"))
			}
			if !force && golden.IsRecorded(out) {
				return exit.BadInputError(fmt.Errorf("%s already holds %s (use --force to replace it)", out, golden.FileName))
			}
			imgs, err := expandImages(images)
			if err != nil {
				return err
			}
			src, err := openGoldenSource(source)
			if err != nil {
				return err
			}
			defer src.Close()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			g, err := golden.Record(ctx, golden.Options{Model: model, Source: src, Images: imgs, PromptImage: promptImage,
				Jobs: jobs, Version: ckptgateVersion()})
			if err != nil {
				return recordError(ctx, err)
			}
			if err := g.Write(out); err != nil {
				return err
			}
			return printRecorded(cmd, g, out, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "Hugging Face model directory (required)")
	f.StringVar(&source, "source", "", "training checkpoint the model was converted from (DCP directory or .pt)")
	f.StringSliceVar(&images, "images", nil, "image files or directories to preprocess (repeatable)")
	f.StringVar(&promptImage, "prompt-image", "", "image of the image prompt: one of --images (default the first)")
	f.StringVar(&out, "out", "", "directory for golden.json (required)")
	f.BoolVar(&force, "force", false, "replace an existing golden.json")
	f.IntVar(&jobs, "jobs", 0, "parallel workers (default: all cores)")
	f.BoolVar(&asJSON, "json", false, "print golden.json to stdout as well")
	return cmd
}

// recordError classes a recording's error: golden.Record fails only on
// inputs it cannot read or use (exit 2), unless it was interrupted.
func recordError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	return exit.BadInputError(err)
}

// printRecorded says what a recording holds.
func printRecorded(cmd *cobra.Command, g *golden.Golden, out string, asJSON bool) error {
	w := cmd.OutOrStdout()
	if asJSON {
		b, err := json.MarshalIndent(g, "", " ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	n := func(ok bool, k int) int {
		if ok {
			return k
		}
		return 0
	}
	fmt.Fprintf(w, "recorded %s: %d side files, %d tensors, %d source tensors, %d renders, %d encodings, %d images, %d forward prompts\n",
		filepath.Join(out, golden.FileName), len(g.Files), n(g.Weights != nil, lenTensors(g.Weights)), n(g.Source != nil, lenSource(g.Source)),
		len(g.Renders), len(g.Encodings), len(g.Preprocess), len(g.Forward))
	keys := slices.Sorted(maps.Keys(g.Missing))
	for _, k := range keys {
		fmt.Fprintf(w, "  not recorded: %s: %s\n", k, g.Missing[k])
	}
	return nil
}

func lenTensors(w *golden.Weights) int {
	if w == nil {
		return 0
	}
	return len(w.Tensors)
}

func lenSource(s *golden.Source) int {
	if s == nil {
		return 0
	}
	return len(s.Tensors)
}

func newGoldenCompareCmd() *cobra.Command {
	var goldenDir, model, source, reportDir string
	var jobs int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "compare --golden DIR --model DIR [--source PATH]",
		Short: "Compare a model with a recording, item by item",
		Long: `Record --model the way --golden was recorded (its images, found relative to the golden
directory, and its prompt image) and compare, per item: pass for an exact match (or equal content
in another transformers form, noted), warn for a change within tolerance with the measured distance,
fail for a change beyond it. The tolerances: tensors 2^-8 relative (sampled values and L2 norm; a
bf16 re-rounding), logits 1e-4 relative RMS on the recording's top 256 ids with equal top-5 ids and
greedy tokens, pixels 0.02 and tile/channel means 0.005. --source compares the training checkpoint
too when the recording has one.

The report has the schema and renderings of verify's (--report-dir writes report.json,
report.junit.xml, report.md and report.html).

Exit codes: 0 nothing beyond tolerance, 1 something beyond tolerance, 2 bad input (--golden is not
a recording, --model is missing), 3 internal error.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if goldenDir == "" || model == "" {
				return exit.BadInputError(errors.New("--golden and --model are required"))
			}
			want, err := golden.Load(goldenDir)
			if err != nil {
				return exit.BadInputError(err)
			}
			src, err := openGoldenSource(source)
			if err != nil {
				return err
			}
			defer src.Close()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			r := reports.New("golden compare")
			r.Inputs["golden"], r.Inputs["model"] = goldenDir, model
			if source != "" {
				r.Inputs["source"] = source
			}
			t0 := time.Now()
			got, err := golden.RecordFor(ctx, want, golden.Options{Model: model, Source: src, Jobs: jobs, Version: ckptgateVersion()})
			if err != nil {
				return recordError(ctx, err)
			}
			r.Timings["record"] = time.Since(t0).Seconds()
			r.Add(golden.Compare(want, got, golden.DefaultTolerances)...)
			stampToolchain(r)
			if got.Config != nil {
				r.Toolchain.Transformers = got.Config.Version
			}
			if err := emitReport(cmd.OutOrStdout(), r, reportDir, asJSON); err != nil {
				return err
			}
			if r.Failed() {
				return fmt.Errorf("%w: golden compare", exit.ErrCheckFailed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&goldenDir, "golden", "", "directory holding golden.json (required)")
	f.StringVar(&model, "model", "", "Hugging Face model directory to compare (required)")
	f.StringVar(&source, "source", "", "training checkpoint the model was converted from")
	f.StringVar(&reportDir, "report-dir", "", "write report.json (and the other renderings) into this directory")
	f.BoolVar(&asJSON, "json", false, "print report.json to stdout instead of a summary")
	f.IntVar(&jobs, "jobs", 0, "parallel workers (default: all cores)")
	return cmd
}
