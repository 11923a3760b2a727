package mllama

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// ErrWeights is wrapped by errors about missing or ill-shaped weights and
// configs the engine cannot run (the input's fault).
var ErrWeights = errors.New("model weights do not fit the config")

// TensorSource is where the engine reads weights from. *safetensors.Dir
// satisfies it; FromCheckpoint adapts a *ckpt.Checkpoint.
type TensorSource interface {
	// Names lists every tensor name the source holds.
	Names() []string
	// ReadFloat32 reads a floating-point tensor widened to float32, with
	// its shape.
	ReadFloat32(name string) ([]float32, []int64, error)
}

// OpenDir loads config.json and the safetensors weights of a Hugging Face
// model directory. jobs bounds the goroutines the forward pass uses (0: all
// cores).
func OpenDir(dir string, jobs int) (*Model, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	d, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	m, err := New(cfg, d, jobs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// FromCheckpoint loads a training checkpoint's tensors (as the converter's
// readers present them) into the engine, streaming every chunk into float32
// buffers. cfg is the config of the model the checkpoint fine-tunes.
func FromCheckpoint(cfg *Config, c *ckpt.Checkpoint, jobs int) (*Model, error) {
	src := checkpointSource{c: c, byName: make(map[string]*ckpt.Tensor, len(c.Tensors))}
	for _, t := range c.Tensors {
		src.byName[t.Name] = t
	}
	m, err := New(cfg, src, jobs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Path, err)
	}
	return m, nil
}

// checkpointSource reads a checkpoint's tensors through ckpt.WalkChunk.
type checkpointSource struct {
	c      *ckpt.Checkpoint
	byName map[string]*ckpt.Tensor
}

func (s checkpointSource) Names() []string {
	names := make([]string, len(s.c.Tensors))
	for i, t := range s.c.Tensors {
		names[i] = t.Name
	}
	return names
}

func (s checkpointSource) ReadFloat32(name string) ([]float32, []int64, error) {
	t, ok := s.byName[name]
	if !ok {
		return nil, nil, fmt.Errorf("no tensor %q", name)
	}
	if !t.DType.IsFloat() {
		return nil, nil, fmt.Errorf("tensor %q is %v, not a floating-point type", name, t.DType)
	}
	if err := ckpt.ValidateCoverage(t); err != nil {
		return nil, nil, err
	}
	n, err := ckpt.CheckedVolume(t.Shape, 4)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: tensor %q: %v", ckpt.ErrCorrupt, name, err)
	}
	out := make([]float32, n)
	buf := make([]byte, min(ckpt.DefaultBufSize, max(int(n)*t.DType.Size(), 64)))
	es := int64(t.DType.Size())
	for i := range t.Chunks {
		err := ckpt.WalkChunk(t, &t.Chunks[i], buf, func(at int64, src []byte) error {
			k := int64(len(src)) / es
			if at < 0 || at+k > n {
				return fmt.Errorf("%w: tensor %q: chunk run at element %d of %d overflows", ckpt.ErrCorrupt, name, at, n)
			}
			return dtype.ToFloat32(out[at:at+k], src, t.DType)
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return out, append([]int64(nil), t.Shape...), nil
}

// want is one tensor the engine needs: its legacy name, the shape the config
// implies, and where to put it.
type want struct {
	name  string
	shape []int64
	dst   *[]float32
}

// loader collects the tensors to read and reads them in parallel.
type loader struct {
	wants []want
}

func (l *loader) add(dst *[]float32, name string, shape ...int) {
	s := make([]int64, len(shape))
	for i, d := range shape {
		s[i] = int64(d)
	}
	l.wants = append(l.wants, want{name: name, shape: s, dst: dst})
}

// load maps the source's names to legacy names (either layout, wrapper infixes
// removed) and reads every wanted tensor, checking its shape.
func (l *loader) load(src TensorSource, jobs int) error {
	mp, err := MapNames(src.Names())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrWeights, err)
	}
	byLegacy := make(map[string]string, len(mp.Legacy))
	for in, leg := range mp.Legacy {
		byLegacy[leg] = in
	}
	var missing []string
	for _, w := range l.wants {
		if _, ok := byLegacy[w.name]; !ok {
			missing = append(missing, w.name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		shown := missing
		if len(shown) > 8 {
			shown = shown[:8]
		}
		return fmt.Errorf("%w: %d tensors the config needs are missing (in the legacy layout): %v", ErrWeights, len(missing), shown)
	}
	if jobs <= 0 {
		jobs = 4
	}
	errs := make([]error, len(l.wants))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(jobs, len(l.wants)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = readWant(src, byLegacy[l.wants[i].name], l.wants[i])
			}
		}()
	}
	for i := range l.wants {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func readWant(src TensorSource, name string, w want) error {
	data, shape, err := src.ReadFloat32(name)
	if err != nil {
		return err
	}
	if !slices.Equal(shape, w.shape) {
		return fmt.Errorf("%w: tensor %q has shape %v, the config implies %v", ErrWeights, name, shape, w.shape)
	}
	*w.dst = data
	return nil
}

func itoa(i int) string { return strconv.Itoa(i) }
