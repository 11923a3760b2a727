//go:build ollama

package ollamacheck

import (
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/ollama/ollama/ml"
	"github.com/ollama/ollama/model"
)

// Unbound is a tensor field of Ollama's model that stayed nil after loading.
type Unbound struct {
	// Field is the Go path of the field, e.g.
	// TextModel.Transformer.Layers[1].CrossAttention.QueryNorm.Weight; a
	// nil pointer to a whole module is reported once, at the pointer.
	Field string
	// Name is the GGUF name Ollama looked up for it (from the gguf tags).
	Name string
	// Optional is true where Ollama's forward pass checks for nil (see
	// optionalFields); any other nil field is dereferenced on the first
	// forward and panics.
	Optional bool
}

// Binding is how the tensors of a GGUF bound to the fields of Ollama's
// loaded model.
type Binding struct {
	// Bound maps each GGUF tensor name the model bound to the Go field
	// that holds it.
	Bound map[string]string
	// Unbound are the nil tensor fields, required ones first.
	Unbound []Unbound
	// Orphans are GGUF tensors no field bound: the model never reads them.
	Orphans []string
}

// Required returns the unbound fields that are not optional.
func (b *Binding) Required() []Unbound {
	var out []Unbound
	for _, u := range b.Unbound {
		if !u.Optional {
			out = append(out, u)
		}
	}
	return out
}

// optionalFields are the tensor fields Ollama's mllama forward pass guards
// with a nil check (v0.17.4): biases of nn.Linear and nn.Conv2D
// (ml/nn/linear.go, convolution.go), the local vision layers' gates
// (model/models/mllama/model_vision.go) and the RoPE factors
// (ml/nn/rope.WithFactors ignores nil). Hugging Face's Mllama has no biases
// on the text and vision attention projections, the text MLP or the patch
// embedding, and no gates on local vision layers; a missing rope_freqs.weight
// is reported as a missing tensor, not as a crash.
var optionalFields = regexp.MustCompile(`(\.Bias|VisionModel\.Transformer\.Layers\[\d+\]\.(AttentionGate|MLPGate)|\.SelfAttention\.RopeFactors)$`)

// BindingOf walks the loaded model m and compares what its fields bound
// with the tensors of gguf.
func BindingOf(m model.Model, gguf *GGUF) *Binding {
	b := &Binding{Bound: map[string]string{}}
	v := reflect.ValueOf(m)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	walk(v, "", nil, b)
	inGGUF := map[string]bool{}
	for _, t := range gguf.Tensors {
		inGGUF[t.Name] = true
	}
	bound := map[string]bool{}
	for name := range b.Bound {
		bound[name] = true
		// The ggml backend copies rope_freqs.weight into every layer as
		// blk.N.rope_freqs.weight (ml/backend/ggml/ggml.go).
		if rest, ok := cutLayerPrefix(name); ok && inGGUF[rest] {
			bound[rest] = true
		}
	}
	for _, t := range gguf.Tensors {
		if !bound[t.Name] {
			b.Orphans = append(b.Orphans, t.Name)
		}
	}
	sort.Strings(b.Orphans)
	sort.SliceStable(b.Unbound, func(i, j int) bool { return !b.Unbound[i].Optional && b.Unbound[j].Optional })
	return b
}

func cutLayerPrefix(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return "", false
	}
	i := strings.IndexByte(rest, '.')
	if i <= 0 {
		return "", false
	}
	if _, err := strconv.Atoi(rest[:i]); err != nil {
		return "", false
	}
	return rest[i+1:], true
}

var tensorType = reflect.TypeOf((*ml.Tensor)(nil)).Elem()

// walk visits the tensor fields under v. tags are the gguf tag names on the
// way down, as Ollama's populateFields joins them.
func walk(v reflect.Value, path string, tags []string, b *Binding) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		ft := f.Type
		fpath := f.Name
		if path != "" {
			fpath = path + "." + f.Name
		}
		ftags := tags
		if tag := f.Tag.Get("gguf"); tag != "" {
			ftags = append(append([]string(nil), tags...), strings.Split(tag, ",")[0])
		}
		switch {
		case ft == tensorType:
			if fv.IsNil() {
				b.Unbound = append(b.Unbound, Unbound{Field: fpath, Name: strings.Join(ftags, "."), Optional: optionalFields.MatchString(fpath)})
				continue
			}
			b.Bound[tensorName(fv.Interface().(ml.Tensor), strings.Join(ftags, "."))] = fpath
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct && holdsTensors(ft.Elem(), 0):
			if fv.IsNil() {
				// populateFields leaves a module nil when none of its
				// tensors exist.
				b.Unbound = append(b.Unbound, Unbound{Field: fpath, Name: strings.Join(ftags, ".") + ".*", Optional: optionalFields.MatchString(fpath)})
				continue
			}
			walk(fv.Elem(), fpath, ftags, b)
		case ft.Kind() == reflect.Struct && holdsTensors(ft, 0):
			walk(fv, fpath, ftags, b)
		case ft.Kind() == reflect.Slice:
			for j := range fv.Len() {
				walkElem(fv.Index(j), fmt.Sprintf("%s[%d]", fpath, j), append(append([]string(nil), ftags...), strconv.Itoa(j)), b)
			}
		}
	}
}

func walkElem(v reflect.Value, path string, tags []string, b *Binding) {
	if v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			b.Unbound = append(b.Unbound, Unbound{Field: path, Name: strings.Join(tags, ".") + ".*"})
			return
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.Struct {
		walk(v, path, tags, b)
	}
}

// holdsTensors reports whether struct type t has a tensor field at any depth
// (slices and interfaces count, since decoder layers live behind them).
func holdsTensors(t reflect.Type, depth int) bool {
	if depth > 8 {
		return false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		switch {
		case ft == tensorType, ft.Kind() == reflect.Interface && f.Type.Kind() == reflect.Slice:
			return true
		case ft.Kind() == reflect.Struct && holdsTensors(ft, depth+1):
			return true
		}
	}
	return false
}

// tensorName is the name the backend gave a bound tensor; ggml tensors
// carry it in their slog value.
func tensorName(t ml.Tensor, fallback string) string {
	if lv, ok := t.(slog.LogValuer); ok {
		for _, a := range lv.LogValue().Group() {
			if a.Key == "name" {
				return a.Value.String()
			}
		}
	}
	return fallback
}
