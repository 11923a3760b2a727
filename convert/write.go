package convert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/mem"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// tmpMarker is part of every temporary directory's name: a directory
// containing it is never a finished output.
const tmpMarker = ".ckptgate-tmp-"

// checkOut refuses outputs that would clobber inputs or existing data.
func checkOut(out, source, base string, force bool) error {
	absOut, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	realOut := resolve(absOut)
	for _, in := range []struct{ what, path string }{{"source", source}, {"base", base}} {
		absIn, err := filepath.Abs(in.path)
		if err != nil {
			return err
		}
		realIn := resolve(absIn)
		if within(realOut, realIn) {
			return exit.BadInputError(fmt.Errorf("--out %s is inside the %s %s", out, in.what, in.path))
		}
		if within(realIn, realOut) {
			return exit.BadInputError(fmt.Errorf("--out %s contains the %s %s", out, in.what, in.path))
		}
	}
	st, err := os.Lstat(out)
	switch {
	case err == nil && !force:
		return exit.BadInputError(fmt.Errorf("--out %s already exists; pass --force to replace it", out))
	case err == nil && !st.IsDir():
		return exit.BadInputError(fmt.Errorf("--out %s exists and is not a directory", out))
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return err
	}
	return nil
}

// resolve follows symlinks of the longest existing prefix of p.
func resolve(p string) string {
	rest := ""
	for {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return filepath.Join(p, rest)
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// removeStaleTemps deletes temporary directories beside out left by runs
// whose process no longer exists (a SIGKILLed conversion).
func removeStaleTemps(out string) []string {
	pattern := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+tmpMarker+"*")
	matches, _ := filepath.Glob(pattern)
	var notes []string
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), "."+filepath.Base(out)+tmpMarker)
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			if os.RemoveAll(m) == nil {
				notes = append(notes, fmt.Sprintf("removed %s, left by an interrupted run", m))
			}
		}
	}
	return notes
}

// memoryNeed estimates the conversion's peak memory: each worker's read and
// cast buffers, plus, for compressed items, the largest decoded chunks the
// workers may hold at once.
func (p *Plan) memoryNeed(opts Options) int64 {
	jobs := int64(opts.Jobs)
	if jobs <= 0 {
		jobs = int64(runtime.GOMAXPROCS(0))
	}
	buf := int64(opts.BufSize)
	if buf <= 0 {
		buf = ckpt.DefaultBufSize
	}
	var resident []int64
	for _, t := range p.Tensors {
		for _, c := range t.Src.Chunks {
			if c.Resident > 0 {
				resident = append(resident, c.Resident)
			}
		}
	}
	sort.Slice(resident, func(i, j int) bool { return resident[i] > resident[j] })
	need := jobs * 3 * buf // read buffer + a cast buffer up to twice its size
	for i := 0; i < len(resident) && int64(i) < jobs; i++ {
		need += resident[i]
	}
	return need + 64<<20 // the runtime, metadata and headers
}

// checkMemory refuses a run whose estimated peak memory exceeds what is
// available.
func checkMemory(need, avail int64) error {
	if avail > 0 && need > avail {
		return exit.BadInputError(fmt.Errorf("not enough memory: the conversion needs about %s (compressed items are decoded whole), %s is available; lower --jobs",
			humanBytes(need), humanBytes(avail)))
	}
	return nil
}

// preflight checks that the output's filesystem has room for the result.
func preflight(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil // unknown filesystem: the writes will tell
	}
	avail := int64(st.Bavail) * int64(st.Bsize)
	if avail < need {
		return exit.BadInputError(fmt.Errorf("not enough disk space in %s: the output needs %s, %s is free", dir, humanBytes(need), humanBytes(avail)))
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%d bytes", n)
}

type workItem struct {
	t     *Planned
	chunk *ckpt.Chunk
	part  ckpt.Part
	// parts collects the results of all parts of the chunk, for its CRC.
	parts *chunkParts
	file  *os.File
	at    int64 // file offset of the tensor's first byte
}

// partBytes bounds the part of a chunk one worker copies, so that a huge
// chunk (an embedding saved by two ranks, a whole tensor in a .pt) is spread
// over the cores instead of ending the run on one.
const defaultPartBytes = 64 << 20

// chunkParts gathers the part results of one chunk; the worker that
// finishes the last part checks the chunk's CRC.
type chunkParts struct {
	mu      sync.Mutex
	results []ckpt.PartResult
	left    int
}

// done records a part; it returns the results when it was the last one.
func (cp *chunkParts) done(r ckpt.PartResult) []ckpt.PartResult {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.results = append(cp.results, r)
	cp.left--
	if cp.left == 0 {
		return cp.results
	}
	return nil
}

// Write writes the plan into out atomically: everything goes into a
// temporary directory beside out, which is renamed over out only when every
// byte is written, synced and its size checked.
func (p *Plan) Write(ctx context.Context, out string, opts Options) (res *Result, err error) {
	if err := checkOut(out, p.Source.Path, p.Base, opts.Force); err != nil {
		return nil, err
	}
	parent := filepath.Dir(out)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, exit.BadInputError(err)
	}
	res = &Result{Out: out, Tensors: len(p.Tensors), Bytes: p.TotalBytes,
		SrcLayout: p.SrcLayout.String(), BaseLayout: p.BaseLayout.String()}
	res.Notes = removeStaleTemps(out)
	if !opts.SkipPreflight {
		if err := preflight(parent, p.TotalBytes+sideFilesSize(p.Base, p.SideFiles)); err != nil {
			return nil, err
		}
		if err := checkMemory(p.memoryNeed(opts), mem.Available()); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(out)+tmpMarker+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := opts.stage(ctx, "tmpdir"); err != nil {
		return nil, err
	}
	outType := p.OutDType()
	res.DType = "mixed"
	if outType != dtype.Invalid {
		res.DType = outType.TorchName()
	}
	notes, err := copySideFiles(tmp, p.Base, p.SideFiles, outType)
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, notes...)

	if err := opts.stage(ctx, "side-files"); err != nil {
		return nil, err
	}
	files, items, err := p.createShards(tmp, opts.PartBytes)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	if err := opts.stage(ctx, "allocated"); err != nil {
		return nil, err
	}
	if err := p.copyAll(ctx, items, opts); err != nil {
		return nil, err
	}
	if err := opts.stage(ctx, "copied"); err != nil {
		return nil, err
	}
	for i, f := range files {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("syncing %s: %w", f.Name(), err)
		}
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if want := p.Shards[i].Layout.Size(); st.Size() != want {
			return nil, fmt.Errorf("%s is %d bytes after writing, want %d", f.Name(), st.Size(), want)
		}
		res.Files = append(res.Files, p.Shards[i].Name)
	}
	if len(p.Shards) > 1 {
		tp := int64(-1)
		if p.WriteTotalParams {
			tp = p.TotalParams
		}
		ix, err := indexJSON(p.Shards, tp)
		if err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(tmp, safetensors.IndexName), ix); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, safetensors.IndexName)
	}
	if err := syncDir(tmp); err != nil {
		return nil, err
	}
	if err := opts.stage(ctx, "synced"); err != nil {
		return nil, err
	}
	if err := publish(tmp, out); err != nil {
		return nil, err
	}
	return res, nil
}

func sideFilesSize(base string, files []string) int64 {
	var n int64
	for _, f := range files {
		if st, err := os.Stat(filepath.Join(base, f)); err == nil {
			n += st.Size()
		}
	}
	return n
}

// createShards creates every shard file with its header, allocated to full
// size, and lists the chunk copies to make, ordered by destination offset.
func (p *Plan) createShards(dir string, partBytes int64) ([]*os.File, []workItem, error) {
	if partBytes <= 0 {
		partBytes = defaultPartBytes
	}
	byName := map[string]*Planned{}
	for i := range p.Tensors {
		byName[p.Tensors[i].Out.Name] = &p.Tensors[i]
	}
	var files []*os.File
	var items []workItem
	for _, sh := range p.Shards {
		path := filepath.Join(dir, sh.Name)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return files, nil, err
		}
		files = append(files, f)
		size := sh.Layout.Size()
		if err := allocate(f, size); err != nil {
			return files, nil, fmt.Errorf("allocating %d bytes for %s: %w", size, path, err)
		}
		if _, err := f.WriteAt(sh.Layout.Header, 0); err != nil {
			return files, nil, fmt.Errorf("writing %s: %w", path, err)
		}
		for _, ti := range sh.Layout.Tensors {
			pt := byName[ti.Name]
			at := sh.Layout.DataStart() + ti.Begin
			for ci := range pt.Src.Chunks {
				c := &pt.Src.Chunks[ci]
				if c.Volume() == 0 {
					continue
				}
				parts := ckpt.SplitChunk(c, max(partBytes/int64(pt.Src.DType.Size()), 1))
				group := &chunkParts{left: len(parts)}
				for _, part := range parts {
					items = append(items, workItem{t: pt, chunk: c, part: part, parts: group, file: f, at: at})
				}
			}
		}
	}
	return files, items, nil
}

// allocate reserves the file's blocks so that a full disk fails now, not
// half-way; filesystems without fallocate get a sparse file.
func allocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		return f.Truncate(size)
	}
	return err
}

// copyAll streams every chunk into place with a bounded number of workers,
// each holding one read and one cast buffer.
func (p *Plan) copyAll(ctx context.Context, items []workItem, opts Options) error {
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	bufSize := opts.BufSize
	if bufSize <= 0 {
		bufSize = ckpt.DefaultBufSize
	}
	// Big parts first so that the tail of the run is not one worker
	// copying a large one alone.
	sort.SliceStable(items, func(i, j int) bool {
		return items[i].part.Hi-items[i].part.Lo > items[j].part.Hi-items[j].part.Lo
	})
	var done atomic.Int64
	total := p.TotalBytes
	g, ctx := errgroup.WithContext(ctx)
	next := make(chan workItem)
	var nanMu sync.Mutex
	nans := map[string]int{}
	for w := 0; w < jobs; w++ {
		g.Go(func() error {
			rbuf := make([]byte, bufSize)
			var wbuf []byte
			for it := range next {
				if err := ctx.Err(); err != nil {
					return err
				}
				srcT, outT := it.t.Src.DType, it.t.Out.DType
				osize := int64(outT.Size())
				n := 0
				res, err := ckpt.WalkPart(it.t.Src, it.chunk, it.part, rbuf, func(dst int64, src []byte) error {
					b := src
					if srcT != outT {
						need := len(src) / srcT.Size() * outT.Size()
						if cap(wbuf) < need {
							wbuf = make([]byte, need)
						}
						k, err := dtype.Convert(wbuf[:need], outT, src, srcT)
						if err != nil {
							return fmt.Errorf("tensor %s: %w", it.t.Src.Name, err)
						}
						n += k
						b = wbuf[:need]
					}
					if _, err := it.file.WriteAt(b, it.at+dst*osize); err != nil {
						return fmt.Errorf("writing %s: %w", it.file.Name(), err)
					}
					v := done.Add(int64(len(b)))
					if opts.Progress != nil {
						opts.Progress(v, total)
					}
					return ctx.Err()
				})
				if err != nil {
					return err
				}
				if all := it.parts.done(res); all != nil {
					if err := ckpt.CheckParts(it.t.Src, it.chunk, all, rbuf); err != nil {
						return err
					}
				}
				if n > 0 {
					nanMu.Lock()
					nans[it.t.Out.Name] += n
					nanMu.Unlock()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(next)
		for _, it := range items {
			select {
			case next <- it:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	for name, n := range nans {
		p.Notes = append(p.Notes, fmt.Sprintf("warning: tensor %s has %d NaN values; cast to the canonical NaN", name, n))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// publish renames tmp to out. An existing out (--force) is first moved
// aside, so that at every instant out is either the old complete directory
// or the new one.
func publish(tmp, out string) error {
	var old string
	if _, err := os.Lstat(out); err == nil {
		old = tmp + "-old"
		if err := os.Rename(out, old); err != nil {
			return fmt.Errorf("moving the existing %s aside: %w", out, err)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		if old != "" {
			os.Rename(old, out)
		}
		return fmt.Errorf("renaming %s to %s: %w", tmp, out, err)
	}
	if err := syncDir(filepath.Dir(out)); err != nil {
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}
