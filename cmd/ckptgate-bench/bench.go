package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptgate/ckptgate/internal/dcp/synth"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

// bench holds one run's state: the binary under test and where data goes.
type bench struct {
	o       *options
	out     io.Writer
	bin     string // the freshly built ckptgate
	work    string // o.dir/<pid>: everything generated
	cache   string // the mode in effect
	machine machine
	results []*sizeResult
}

// Step names.
const (
	stepCopy      = "copy checkpoint (baseline)"
	stepConvert   = "ckptgate convert"
	stepReadOut   = "read output (baseline)"
	stepVerify    = "ckptgate verify --source --forward off"
	stepReadThree = "read model+base+source (baseline)"
)

func newBench(ctx context.Context, o *options, out io.Writer) (*bench, error) {
	b := &bench{o: o, out: out, machine: describeMachine()}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.dir, "run-")
	if err != nil {
		return nil, err
	}
	b.work = work
	b.cache = o.cache
	if b.cache == "auto" {
		b.cache = "evict"
		if f, err := os.OpenFile("/proc/sys/vm/drop_caches", os.O_WRONLY, 0); err == nil {
			f.Close()
			b.cache = "drop"
		}
	}
	b.bin = filepath.Join(work, "ckptgate")
	fmt.Fprintf(out, "building ckptgate into %s\n", b.bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "github.com/ckptgate/ckptgate/cmd/ckptgate")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		os.RemoveAll(work)
		return nil, fmt.Errorf("building ckptgate: %w", err)
	}
	return b, nil
}

func (b *bench) cleanup() {
	if b.o.keep {
		fmt.Fprintf(b.out, "kept %s\n", b.work)
		return
	}
	os.RemoveAll(b.work)
}

// sizeResult is everything measured for one checkpoint size.
type sizeResult struct {
	Target       int64     `json:"target_bytes"`
	TensorBytes  int64     `json:"tensor_bytes"`
	SourceBytes  int64     `json:"source_bytes"`
	BaseBytes    int64     `json:"base_bytes"`
	OutputBytes  int64     `json:"output_bytes"`
	Tensors      int       `json:"tensors"`
	TextLayers   int       `json:"text_layers"`
	VisionLayers int       `json:"vision_layers"`
	GlobalLayers int       `json:"global_layers"`
	Items        int       `json:"items"`
	Generate     float64   `json:"generate_seconds"`
	Steps        []*series `json:"steps"`
	Notes        []string  `json:"notes,omitempty"`
}

// series is the samples of one step at one --jobs value.
type series struct {
	Step    string    `json:"step"`
	Jobs    int       `json:"jobs"`
	Bytes   int64     `json:"bytes"`
	Seconds []float64 `json:"seconds"`
	// MaxRSS is the peak resident set of each ckptgate process, bytes.
	MaxRSS []int64 `json:"max_rss_bytes,omitempty"`
	// CPU is each ckptgate process's user+system time, seconds: unlike
	// the wall time, barely moved by other processes sharing the cores.
	CPU []float64 `json:"cpu_seconds,omitempty"`
}

func (r *sizeResult) series(step string, jobs int, n int64) *series {
	for _, s := range r.Steps {
		if s.Step == step && s.Jobs == jobs {
			return s
		}
	}
	s := &series{Step: step, Jobs: jobs, Bytes: n}
	r.Steps = append(r.Steps, s)
	return s
}

func (b *bench) runAll(ctx context.Context) error {
	fmt.Fprintf(b.out, "machine: %s\npage cache: %s\n", b.machine, cacheNote(b.cache))
	for _, size := range b.o.sizes {
		r, err := b.runSize(ctx, size)
		if err != nil {
			return err
		}
		b.results = append(b.results, r)
		printSize(b.out, r, b.o, b.cache)
	}
	if len(b.results) > 1 {
		printScaling(b.out, b.results)
	}
	if b.o.jsonOut != "" {
		doc := map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "machine": b.machine, "cache": b.cache,
			"world": b.o.world, "sharding": b.o.sharding.String(), "dtype": b.o.dt.TorchName(), "repeat": b.o.repeat, "sizes": b.results}
		buf, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(b.o.jsonOut, append(buf, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// runSize generates one checkpoint and measures every step on it.
func (b *bench) runSize(ctx context.Context, target int64) (*sizeResult, error) {
	esize := b.o.dt.Size()
	cfg, err := synth.ForSize(synth.Config11B(), target, esize)
	if err != nil {
		return nil, err
	}
	ts, err := synth.Tensors(cfg)
	if err != nil {
		return nil, err
	}
	r := &sizeResult{Target: target, Tensors: len(ts), TextLayers: cfg.Text.NumHiddenLayers,
		VisionLayers: cfg.Vision.NumHiddenLayers, GlobalLayers: cfg.Vision.NumGlobalLayers}
	if r.TensorBytes, err = synth.ModelBytes(cfg, esize); err != nil {
		return nil, err
	}
	baseBytes, err := synth.ModelBytes(cfg, 2)
	if err != nil {
		return nil, err
	}
	// Source, base and output (or the copy) are on disk at once.
	if free := freeBytes(b.work); free < r.TensorBytes+2*baseBytes+1<<30 {
		return nil, fmt.Errorf("%s has %.1f GB free; a %.1f GB checkpoint needs about %.1f GB (source, base and output)",
			b.work, gb(free), gb(r.TensorBytes), gb(r.TensorBytes+2*baseBytes+1<<30))
	}
	dir := filepath.Join(b.work, fmt.Sprintf("%.3gGB", gb(target)))
	src, base, out, cp := filepath.Join(dir, "source"), filepath.Join(dir, "base"), filepath.Join(dir, "out"), filepath.Join(dir, "copy")
	if !b.o.keep {
		defer os.RemoveAll(dir)
	}
	fmt.Fprintf(b.out, "\ngenerating %.2f GB (%d tensors: %d text, %d vision, %d global layers), world %d, %s, %s into %s\n",
		gb(r.TensorBytes), len(ts), r.TextLayers, r.VisionLayers, r.GlobalLayers, b.o.world, b.o.sharding, b.o.dt.TorchName(), dir)
	t0 := time.Now()
	tg, err := synth.NewGen(ts, synth.Tuned, b.o.dt, 1)
	if err != nil {
		return nil, err
	}
	w, err := synth.WriteDCP(ctx, src, synth.Spec{Tensors: ts, World: b.o.world, Sharding: b.o.sharding, Group: "model"}, tg)
	if err != nil {
		return nil, err
	}
	bg, err := synth.NewGen(ts, synth.Base, dtype.BF16, 1)
	if err != nil {
		return nil, err
	}
	if err := synth.WriteBase(ctx, base, synth.BaseSpec{Config: cfg, Tensors: ts, Template: b.o.template}, bg); err != nil {
		return nil, err
	}
	r.Generate = time.Since(t0).Seconds()
	r.Items = w.Items
	if r.SourceBytes, err = dirBytes(src); err != nil {
		return nil, err
	}
	if r.BaseBytes, err = dirBytes(base); err != nil {
		return nil, err
	}
	fmt.Fprintf(b.out, "generated %d data files, %d chunk archives, %.2f GB, and the base (%.2f GB) in %.0f s\n",
		len(w.Files), w.Items, gb(r.SourceBytes), gb(r.BaseBytes), r.Generate)

	for rep := 1; rep <= b.o.repeat; rep++ {
		if err := b.prepare(src); err != nil {
			return nil, err
		}
		d, err := copyDir(src, cp)
		if err != nil {
			return nil, err
		}
		r.series(stepCopy, 1, r.SourceBytes).add(sample{wall: d})
		b.progress(rep, stepCopy, 1, sample{wall: d})
		if err := os.RemoveAll(cp); err != nil {
			return nil, err
		}
		for _, j := range b.o.jobs {
			if err := b.measureJobs(ctx, r, rep, j, src, base, out); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// measureJobs runs convert, the output read, verify and its read with
// --jobs j, then removes the output.
func (b *bench) measureJobs(ctx context.Context, r *sizeResult, rep, j int, src, base, out string) error {
	// The next conversion needs the space (and must not pay for
	// replacing an existing output).
	defer os.RemoveAll(out)
	jobs := fmt.Sprint(j)
	if err := b.prepare(src, base); err != nil {
		return err
	}
	cr, err := b.tool(ctx, "convert", rep, j, "convert", "--source", src, "--base", base, "--out", out, "--jobs", jobs, "--quiet")
	if err != nil {
		return err
	}
	r.series(stepConvert, j, r.SourceBytes).add(cr)
	b.progress(rep, stepConvert, j, cr)
	if r.OutputBytes, err = dirBytes(out); err != nil {
		return err
	}
	if err := b.prepare(out); err != nil {
		return err
	}
	d, err := readDirs(out)
	if err != nil {
		return err
	}
	r.series(stepReadOut, j, r.OutputBytes).add(sample{wall: d})
	b.progress(rep, stepReadOut, j, sample{wall: d})
	if !b.o.verify {
		return nil
	}
	three := r.OutputBytes + r.BaseBytes + r.SourceBytes
	if err := b.prepare(out, base, src); err != nil {
		return err
	}
	// The forward pass is off: it holds whole models in memory (verify's
	// auto mode skips it for models this size anyway), and random weights
	// give uniform outputs.
	vr, err := b.tool(ctx, "verify", rep, j, "verify", "--model", out, "--base", base, "--source", src, "--jobs", jobs, "--forward", "off")
	if err != nil {
		return err
	}
	if vr.code != 0 {
		note := fmt.Sprintf("verify --jobs %d exited %d (a check failed): the synthetic pair should pass", j, vr.code)
		if !slices.Contains(r.Notes, note) {
			r.Notes = append(r.Notes, note)
		}
	}
	r.series(stepVerify, j, three).add(vr)
	b.progress(rep, stepVerify, j, vr)
	if err := b.prepare(out, base, src); err != nil {
		return err
	}
	if d, err = readDirs(out, base, src); err != nil {
		return err
	}
	r.series(stepReadThree, j, three).add(sample{wall: d})
	b.progress(rep, stepReadThree, j, sample{wall: d})
	return nil
}

// sample is one measured execution.
type sample struct {
	wall time.Duration
	cpu  time.Duration // ckptgate's user+system time; 0 for baselines
	rss  int64         // ckptgate's peak RSS; 0 for baselines
	code int           // ckptgate's exit code
}

func (s *series) add(r sample) {
	s.Seconds = append(s.Seconds, r.wall.Seconds())
	if r.rss > 0 {
		s.MaxRSS = append(s.MaxRSS, r.rss)
		s.CPU = append(s.CPU, r.cpu.Seconds())
	}
}

func (b *bench) progress(rep int, step string, jobs int, r sample) {
	m := ""
	if r.rss > 0 {
		m = fmt.Sprintf(", %.1f s CPU, peak RSS %.0f MB", r.cpu.Seconds(), float64(r.rss)/1e6)
	}
	fmt.Fprintf(b.out, "  run %d: %-40s jobs %-2d %7.2f s%s\n", rep, step, jobs, r.wall.Seconds(), m)
}

// tool runs the ckptgate binary and returns its wall and CPU time, peak
// RSS and exit code. Exit code 1 (a check failed) is a completed run; any
// other failure is an error carrying the tool's output.
func (b *bench) tool(ctx context.Context, name string, rep, jobs int, args ...string) (sample, error) {
	if b.o.profile != "" {
		if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
			return sample{}, err
		}
		p := filepath.Join(b.o.profile, fmt.Sprintf("%s-j%d-r%d.prof", name, jobs, rep))
		args = append([]string{"--cpuprofile", p}, args...)
	}
	cmd := exec.CommandContext(ctx, b.bin, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	ps := cmd.ProcessState
	if ps == nil {
		return sample{}, fmt.Errorf("ckptgate %s: %w", name, err)
	}
	r := sample{wall: d, cpu: ps.UserTime() + ps.SystemTime(), code: ps.ExitCode()}
	if err != nil && r.code != 1 {
		return sample{}, fmt.Errorf("ckptgate %s: %w\n%s", strings.Join(args, " "), err, tail(log.String(), 2000))
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		r.rss = ru.Maxrss * 1024 // kilobytes on Linux
	}
	return r, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// prepare puts the page cache in the state the mode promises before a
// step that reads dirs: nothing of them cached (drop, evict) or as much
// as fits (warm).
func (b *bench) prepare(dirs ...string) error {
	switch b.cache {
	case "drop":
		unix.Sync()
		return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
	case "evict":
		unix.Sync()
		return eachFile(func(path string) error { return evict(path) }, dirs...)
	case "warm":
		_, err := readDirs(dirs...)
		return err
	}
	return nil
}

func cacheNote(mode string) string {
	switch mode {
	case "drop":
		return "cold: sync and /proc/sys/vm/drop_caches before every step"
	case "evict":
		return "cold: sync and posix_fadvise(DONTNEED) on every file of the step before it (drop_caches is not writable)"
	}
	return "warm: every step's inputs are read once before it is timed, for the tool and its baseline alike (what does not fit in memory is read from disk by both)"
}

func gb(n int64) float64 { return float64(n) / 1e9 }
