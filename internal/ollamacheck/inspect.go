//go:build ollama

package ollamacheck

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ckptgate/ckptgate/internal/mllama"
)

// Conversion is what one presentation of the directory turned into.
type Conversion struct {
	// View is "as-is" or "legacy view".
	View     string   `json:"view"`
	Rewrites []string `json:"rewrites,omitempty"`
	Hidden   []string `json:"hidden,omitempty"`
	// Error is the converter's or loader's error, empty when it worked.
	Error string `json:"error,omitempty"`
	// Tensors counts the GGUF's tensors; Types counts them by type.
	Tensors int            `json:"tensors"`
	Types   map[string]int `json:"types,omitempty"`
	// FreqBase is mllama.rope.freq_base (0 when absent); RopeFreqs whether
	// rope_freqs.weight exists.
	FreqBase  float64 `json:"freq_base"`
	RopeFreqs bool    `json:"rope_freqs"`
	// Missing are expected tensors absent from the GGUF, Unexpected GGUF
	// tensors that are not expected, BadShapes shape mismatches.
	Missing    []string `json:"missing,omitempty"`
	Unexpected []string `json:"unexpected,omitempty"`
	BadShapes  []string `json:"bad_shapes,omitempty"`
	// RawGates are gates stored without the tanh the model expects.
	RawGates []string `json:"raw_gates,omitempty"`
	// Orphans and RequiredUnbound come from loading the GGUF (Binding).
	Orphans         []string `json:"orphans,omitempty"`
	RequiredUnbound []string `json:"required_unbound,omitempty"`
	// Text is the first text prompt's logits against the reference, when
	// the GGUF was safe to run; ForwardError says why it was not run or
	// how it failed.
	Text         *Distance `json:"text,omitempty"`
	ForwardError string    `json:"forward_error,omitempty"`

	// Path is the GGUF file and GGUF its decoded directory (nil when the
	// conversion failed).
	Path string `json:"-"`
	GGUF *GGUF  `json:"-"`
}

// Runnable reports whether the GGUF converted, its tensors have the shapes
// the config implies, and every field Ollama's forward pass dereferences is
// bound: only then can a forward pass be built without a nil dereference or
// a ggml abort. Missing optional tensors (rope_freqs.weight) still run.
func (c *Conversion) Runnable() bool {
	return c.Error == "" && c.GGUF != nil && len(c.BadShapes) == 0 && len(c.RequiredUnbound) == 0
}

// viewName labels a presentation in findings.
func viewName(o ViewOptions) string {
	switch o {
	case ViewOptions{}:
		return "as-is"
	case LegacyView:
		return "legacy view"
	}
	return fmt.Sprintf("view %+v", o)
}

// ConvertView presents dir through a View with options o, converts it with
// Ollama's converter to the GGUF at path and inspects the result: the
// tensor set and shapes against what the config implies, the gates' values,
// and how the tensors bind in Ollama's loaded model. It runs no forward
// pass. An error means dir itself cannot be read; what Ollama does wrong is
// in the Conversion.
func ConvertView(dir string, o ViewOptions, path string, threads int) (*Conversion, error) {
	cfg, err := mllama.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	exp, err := ExpectedTensors(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	src, err := OpenSource(dir)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	v, err := OpenView(dir, o)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	c := &Conversion{View: viewName(o), Rewrites: v.Rewrites, Hidden: v.Hidden, Types: map[string]int{}, Path: path}
	// The converter reshapes q/k projections by the config's head counts
	// in goroutines a recover cannot reach; it only sees weights whose
	// shapes agree with the config.
	for _, e := range exp {
		if e.Source == "" {
			continue
		}
		if shape, ok := src.Shape(e.Source); ok && !slices.Equal(shape, e.Shape) {
			c.BadShapes = append(c.BadShapes, fmt.Sprintf("%s: shape %v, config implies %v", e.Source, shape, e.Shape))
		}
	}
	if len(c.BadShapes) > 0 {
		c.Error = fmt.Sprintf("%d tensors have shapes the config does not imply (%s); Ollama's converter was not run", len(c.BadShapes), list(c.BadShapes, 4))
		return c, nil
	}
	if err := Convert(v, path); err != nil {
		c.Error = "ollama's converter failed: " + err.Error()
		return c, nil
	}
	g, err := ReadGGUF(path)
	if err != nil {
		c.Error = "ollama's GGUF decoder cannot read the converter's output: " + err.Error()
		return c, nil
	}
	c.GGUF = g
	c.Tensors = len(g.Tensors)
	for _, t := range g.Tensors {
		c.Types[typeName(t.Kind)]++
	}
	c.FreqBase = float64(g.KV.Float("rope.freq_base"))
	_, c.RopeFreqs = g.Tensor("rope_freqs.weight")
	compareExpected(c, exp, src)
	e, err := OpenEngine(path, CacheF16, threads)
	if err != nil {
		c.Error = err.Error()
		return c, nil
	}
	defer e.Close()
	b := e.Binding(g)
	c.Orphans = b.Orphans
	for _, u := range b.Required() {
		c.RequiredUnbound = append(c.RequiredUnbound, fmt.Sprintf("%s (%s)", u.Field, u.Name))
	}
	return c, nil
}

// compareExpected fills Missing, Unexpected, BadShapes and RawGates.
func compareExpected(c *Conversion, exp []Expected, src *Source) {
	g := c.GGUF
	byName := map[string]Expected{}
	for _, e := range exp {
		byName[e.GGUF] = e
		t, ok := g.Tensor(e.GGUF)
		if !ok {
			c.Missing = append(c.Missing, e.GGUF)
			continue
		}
		if !sameReversed(t.Shape, e.Shape) {
			c.BadShapes = append(c.BadShapes, fmt.Sprintf("%s: GGUF shape %v, config implies %v (reversed in GGUF)", e.GGUF, t.Shape, e.Shape))
			continue
		}
		if e.Transform == Tanh || e.Transform == OneMinusTanh {
			if raw, ok := gateIsRaw(src, g, e.GGUF, e); ok && raw {
				c.RawGates = append(c.RawGates, e.GGUF)
			}
		}
	}
	for _, t := range g.Tensors {
		if _, ok := byName[t.Name]; ok {
			continue
		}
		c.Unexpected = append(c.Unexpected, t.Name)
		// 4.52+ names keep a "model." in front of what should be the GGUF
		// name; the converter then skips the vision-gate tanh.
		if e, ok := byName[strings.TrimPrefix(t.Name, "model.")]; ok && (e.Transform == Tanh || e.Transform == OneMinusTanh) {
			if raw, ok := gateIsRaw(src, g, t.Name, e); ok && raw {
				c.RawGates = append(c.RawGates, t.Name)
			}
		}
	}
}

// gateIsRaw reports whether the one-element gate name holds the source value
// untransformed (and not its transform).
func gateIsRaw(src *Source, g *GGUF, name string, e Expected) (raw, ok bool) {
	got, err := g.ReadFloat32(name)
	if err != nil || len(got) != 1 {
		return false, false
	}
	orig, _, err := src.ReadFloat32(e.Source)
	if err != nil || len(orig) != 1 {
		return false, false
	}
	want, err := rebuild(src, e)
	if err != nil {
		return false, false
	}
	return got[0] == orig[0] && got[0] != want[0], true
}

func sameReversed(gguf []uint64, hf []int64) bool {
	if len(gguf) != len(hf) {
		return false
	}
	for i := range hf {
		if hf[i] < 0 || gguf[len(gguf)-1-i] != uint64(hf[i]) {
			return false
		}
	}
	return true
}

func typeName(kind uint32) string {
	switch kind {
	case kindF32:
		return "F32"
	case kindF16:
		return "F16"
	case kindBF16:
		return "BF16"
	}
	return fmt.Sprintf("type %d", kind)
}
