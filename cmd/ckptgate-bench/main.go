// Command ckptgate-bench measures ckptgate convert and verify on a
// synthetic 11B-shaped DCP checkpoint (internal/dcp/synth) and compares
// them, in the same run and on the same files, with what the disk allows:
// a plain copy of the checkpoint's bytes for convert, a plain read of the
// bytes verify reads for verify. Peak RSS of each ckptgate process is read
// from the kernel's rusage. Run it from the repository root (make bench):
//
//	go run ./cmd/ckptgate-bench -size 2GB -world 8
//	go run ./cmd/ckptgate-bench -sizes 3GB,6GB,12GB -jobs 2 -repeat 1
//
// Generated data is removed at the end unless -keep.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/internal/dcp/synth"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

// options are the command line.
type options struct {
	sizes    []int64
	world    int
	sharding synth.Sharding
	dt       dtype.DType
	dir      string
	keep     bool
	jobs     []int
	repeat   int
	cache    string
	profile  string
	jsonOut  string
	template string
	verify   bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ckptgate-bench: %v\n", err)
		return 2
	}
	b, err := newBench(ctx, o, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "ckptgate-bench: %v\n", err)
		return 1
	}
	defer b.cleanup()
	if err := b.runAll(ctx); err != nil {
		fmt.Fprintf(stderr, "ckptgate-bench: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("ckptgate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size := fs.String("size", "2GB", "target checkpoint size (11B widths, fewer layers; at least the ~2.9 GB of one layer of each kind)")
	sizes := fs.String("sizes", "", "comma-separated sizes to measure one after the other (overrides -size), e.g. 3GB,6GB,12GB")
	world := fs.Int("world", 8, "ranks that \"saved\" the checkpoint")
	sharding := fs.String("sharding", "fsdp1", "fsdp1 (torch.chunk, llama-recipes) or fsdp2 (DTensor Shard(0), empty chunks)")
	dt := fs.String("dtype", "bf16", "source dtype: bf16 or fp32 (the base is always bf16)")
	dir := fs.String("dir", filepath.Join("out", "bench"), "where to generate the data (needs about 3× the size free)")
	keep := fs.Bool("keep", false, "keep the generated data and binary")
	jobs := fs.String("jobs", "", "comma-separated --jobs values for ckptgate (default 1,2,all cores)")
	repeat := fs.Int("repeat", 3, "measurements of each step")
	cache := fs.String("cache", "auto", "page cache before each step: drop (sync + /proc/sys/vm/drop_caches), evict (fadvise DONTNEED on the bench's files), warm (pre-read the step's inputs), auto (drop if writable, else evict)")
	profile := fs.String("cpuprofile", "", "directory for CPU profiles of each ckptgate run")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	template := fs.String("template", filepath.Join("goldens", "mllama-tiny-dev", "base"), "directory whose side files (tokenizer, templates, processor) the base gets")
	doVerify := fs.Bool("verify", true, "measure verify --source too")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	o := &options{world: *world, dir: *dir, keep: *keep, repeat: *repeat, cache: *cache, profile: *profile,
		jsonOut: *jsonOut, template: *template, verify: *doVerify}
	list := *size
	if *sizes != "" {
		list = *sizes
	}
	for _, s := range strings.Split(list, ",") {
		n, err := convert.ParseSize(s)
		if err != nil {
			return nil, fmt.Errorf("-size: %w", err)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.world < 1 || o.world > 4096 {
		return nil, fmt.Errorf("-world %d: want 1 to 4096", o.world)
	}
	switch *sharding {
	case "fsdp1":
		o.sharding = synth.FSDP1
	case "fsdp2":
		o.sharding = synth.FSDP2
	default:
		return nil, fmt.Errorf("-sharding %q: want fsdp1 or fsdp2", *sharding)
	}
	var ok bool
	if o.dt, ok = dtype.ParseFlag(*dt); !ok || (o.dt != dtype.BF16 && o.dt != dtype.F32) {
		return nil, fmt.Errorf("-dtype %q: want bf16 or fp32", *dt)
	}
	if o.repeat < 1 {
		return nil, fmt.Errorf("-repeat %d: want at least 1", o.repeat)
	}
	if !slices.Contains([]string{"auto", "drop", "evict", "warm"}, o.cache) {
		return nil, fmt.Errorf("-cache %q: want auto, drop, evict or warm", o.cache)
	}
	js := *jobs
	if js == "" {
		js = fmt.Sprintf("1,2,%d", runtime.NumCPU())
	}
	for _, s := range strings.Split(js, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-jobs %q: want positive integers", js)
		}
		if !slices.Contains(o.jobs, n) {
			o.jobs = append(o.jobs, n)
		}
	}
	return o, nil
}
