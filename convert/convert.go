// Package convert turns a training checkpoint (DCP directory or torch.save
// file) into a Hugging Face Mllama directory laid out exactly as
// save_pretrained writes it, streaming every tensor once in bounded memory and
// publishing the result atomically.
//
// The pipeline is read (OpenSource) → plan (NewPlan: names, shapes, dtypes,
// shards, side files) → write (Plan.Write: temporary directory, positioned
// writes, rename).
package convert

import (
	"context"
	"time"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// Options control a conversion.
type Options struct {
	// DType is the output dtype; dtype.Invalid means "auto": each tensor
	// takes the base's dtype.
	DType dtype.DType
	// MaxShardSize in bytes; 0 means DefaultMaxShardSize.
	MaxShardSize int64
	// Jobs is the number of parallel copy workers (0: GOMAXPROCS).
	Jobs int
	// Force replaces an existing output directory.
	Force bool
	// BufSize is the per-worker read size (0: ckpt.DefaultBufSize).
	BufSize int
	// PartBytes bounds the part of a chunk one worker copies (0: 64 MiB).
	PartBytes int64
	// Progress, when set, is called with bytes written so far and the
	// total, from several goroutines.
	Progress func(done, total int64)
	// SkipPreflight disables the free-space check (tests).
	SkipPreflight bool
	// Stage, when set, is called as Write passes each of the Stages, with
	// the run's context; crash-safety tests use it to kill or interrupt a
	// conversion at a known point.
	Stage func(ctx context.Context, stage string)
}

// Stages are the points Write passes, in order: the temporary directory
// exists; side files are written; shard files are created and allocated;
// all tensor data is written; everything is synced (next: the rename).
var Stages = []string{"tmpdir", "side-files", "allocated", "copied", "synced"}

// stage reports a stage and returns the context's error, so that an
// interrupt between stages stops the run there.
func (o *Options) stage(ctx context.Context, name string) error {
	if o.Stage != nil {
		o.Stage(ctx, name)
	}
	return ctx.Err()
}

// Result describes a finished conversion.
type Result struct {
	Out        string
	Files      []string
	Tensors    int
	Bytes      int64
	DType      string
	SrcLayout  string
	BaseLayout string
	Notes      []string
	Duration   time.Duration
}

// Run converts source into out using base's names, dtypes and side files.
func Run(ctx context.Context, source, base, out string, opts Options) (*Result, error) {
	start := time.Now()
	src, err := OpenSource(source)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	plan, err := NewPlan(src, base, opts)
	if err != nil {
		return nil, err
	}
	res, err := plan.Write(ctx, out, opts)
	if err != nil {
		return nil, err
	}
	res.Notes = append(append(append([]string(nil), src.Notes...), plan.Notes...), res.Notes...)
	res.Duration = time.Since(start)
	return res, nil
}
