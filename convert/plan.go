package convert

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// Planned is one output tensor.
type Planned struct {
	Src    *ckpt.Tensor
	Legacy string
	Out    safetensors.Entry
}

// Plan is everything decided before a byte is written.
type Plan struct {
	Source     *ckpt.Checkpoint
	Base       string
	BaseLayout mllama.Layout
	SrcLayout  mllama.Layout
	Tensors    []Planned
	Shards     []shardPlan
	SideFiles  []string
	// TotalBytes is the size of all tensor data written.
	TotalBytes int64
	// TotalParams is the number of elements written.
	TotalParams int64
	// WriteTotalParams says whether the index gets metadata.total_parameters
	// (transformers 5.x writes it, 4.x does not; follow the base).
	WriteTotalParams bool
	Notes            []string
}

// baseTensor is what the base's weights say about one tensor.
type baseTensor struct {
	name  string
	dtype dtype.DType
	shape []int64
}

func readBase(base string) (map[string]baseTensor, mllama.Layout, error) {
	d, err := safetensors.OpenDir(base)
	if err != nil {
		return nil, 0, exit.BadInputError(fmt.Errorf("base %s: %w", base, err))
	}
	defer d.Close()
	out := map[string]baseTensor{}
	var layout mllama.Layout
	var unknown []string
	for _, n := range d.Names() {
		l, leg := mllama.ClassifyName(n)
		if l == mllama.LayoutUnknown {
			unknown = append(unknown, n)
			continue
		}
		if layout == 0 {
			layout = l
		} else if l != layout {
			return nil, 0, exit.BadInputError(fmt.Errorf("base %s mixes key layouts (%s and %s)", base, layout, l))
		}
		t, _, _ := d.Info(n)
		out[leg] = baseTensor{name: n, dtype: t.DType, shape: t.Shape}
	}
	if len(unknown) > 0 {
		return nil, 0, exit.BadInputError(fmt.Errorf("base %s has tensors that are not Mllama tensors: %s", base, strings.Join(unknown, ", ")))
	}
	return out, layout, nil
}

// NewPlan maps the source's tensors onto the base's names, shapes and
// layout, picks output dtypes and shards, and lists side files. It refuses
// (listing every offender) names missing from either side, shape mismatches
// and non-floating tensors.
func NewPlan(src *ckpt.Checkpoint, base string, opts Options) (*Plan, error) {
	bt, baseLayout, err := readBase(base)
	if err != nil {
		return nil, err
	}
	bySrc, mapping, err := MapSource(src)
	if err != nil {
		return nil, err
	}
	p := &Plan{Source: src, Base: base, BaseLayout: baseLayout, SrcLayout: mapping.Layout}
	for _, d := range mapping.Dropped {
		p.Notes = append(p.Notes, fmt.Sprintf("dropped non-persistent buffer %s", d))
	}
	var missing, extra, badShape, badType []string
	for leg, b := range bt {
		if _, ok := bySrc[leg]; !ok {
			missing = append(missing, b.name)
		}
	}
	legs := slices.Sorted(maps.Keys(bySrc))
	for _, leg := range legs {
		t := bySrc[leg]
		b, ok := bt[leg]
		if !ok {
			extra = append(extra, t.Name)
			continue
		}
		if !slices.Equal(t.Shape, b.shape) {
			badShape = append(badShape, fmt.Sprintf("%s: source %v, base %v", t.Name, t.Shape, b.shape))
			continue
		}
		if !t.DType.IsFloat() || t.DType.Size() < 2 {
			badType = append(badType, fmt.Sprintf("%s: %v", t.Name, t.DType))
			continue
		}
		out := b.dtype
		if opts.DType != dtype.Invalid {
			out = opts.DType
		}
		e := safetensors.Entry{Name: b.name, DType: out, Shape: b.shape}
		p.Tensors = append(p.Tensors, Planned{Src: t, Legacy: leg, Out: e})
		p.TotalBytes += e.NumBytes()
		p.TotalParams += t.NumElements()
	}
	sort.Strings(missing)
	var problems []string
	add := func(what string, l []string) {
		if len(l) > 0 {
			problems = append(problems, fmt.Sprintf("%d %s: %s", len(l), what, strings.Join(limit(l, 12), "; ")))
		}
	}
	add("base tensors missing from the source", missing)
	add("source tensors the base does not have", extra)
	add("tensors whose shape differs from the base", badShape)
	add("tensors that are not floating point", badType)
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: source %s does not match base %s: %s", ckpt.ErrCorrupt, src.Path, base, strings.Join(problems, "; "))
	}
	entries := make([]safetensors.Entry, len(p.Tensors))
	for i, t := range p.Tensors {
		entries[i] = t.Out
	}
	max := opts.MaxShardSize
	if max <= 0 {
		max = DefaultMaxShardSize
	}
	if p.Shards, err = planShards(entries, max); err != nil {
		return nil, err
	}
	copyFiles, skipped, err := sideFilePlan(base)
	if err != nil {
		return nil, exit.BadInputError(err)
	}
	p.SideFiles = copyFiles
	for _, s := range skipped {
		p.Notes = append(p.Notes, fmt.Sprintf("base file %s not copied (not a model side file)", filepath.Join(base, s)))
	}
	if cfg, err := mllama.LoadConfig(filepath.Join(base, "config.json")); err == nil {
		p.WriteTotalParams = strings.HasPrefix(cfg.TransformersVersion, "5.")
	} else {
		return nil, exit.BadInputError(fmt.Errorf("base: %w", err))
	}
	if p.SrcLayout != p.BaseLayout {
		p.Notes = append(p.Notes, fmt.Sprintf("source names are in the %s layout; written in the base's %s layout", p.SrcLayout, p.BaseLayout))
	}
	return p, nil
}

func limit(l []string, n int) []string {
	if len(l) <= n {
		return l
	}
	return append(append([]string(nil), l[:n]...), fmt.Sprintf("… (%d more)", len(l)-n))
}

// OutDType summarises the output dtypes ("bfloat16", or "mixed").
func (p *Plan) OutDType() dtype.DType {
	var d dtype.DType
	for _, t := range p.Tensors {
		if d == dtype.Invalid {
			d = t.Out.DType
		} else if d != t.Out.DType {
			return dtype.Invalid
		}
	}
	return d
}
