package mllama

import (
	"fmt"
	"sort"
	"strings"
)

// Layout is a naming scheme for Mllama tensors.
type Layout int

// The two layouts transformers has used.
const (
	// LayoutUnknown: the name belongs to neither layout.
	LayoutUnknown Layout = iota
	// LayoutLegacy is the module tree of transformers 4.45–4.51 and the
	// on-disk layout of the Hub checkpoints and of save_pretrained in every
	// version: language_model.model.*, language_model.lm_head.weight,
	// vision_model.*, multi_modal_projector.*.
	LayoutLegacy
	// LayoutNew is the module tree of 4.52+ and 5.x: model.language_model.*,
	// lm_head.weight, model.vision_model.*, model.multi_modal_projector.*.
	LayoutNew
)

func (l Layout) String() string {
	switch l {
	case LayoutLegacy:
		return "legacy (language_model.model.*, vision_model.*)"
	case LayoutNew:
		return "4.52+/5.x (model.language_model.*, lm_head.weight)"
	}
	return "unknown"
}

// prefix pairs: legacy, new. lm_head is a whole name, the rest prefixes.
var layoutPairs = [][2]string{
	{"language_model.lm_head.weight", "lm_head.weight"},
	{"language_model.model.", "model.language_model."},
	{"vision_model.", "model.vision_model."},
	{"multi_modal_projector.", "model.multi_modal_projector."},
}

// ClassifyName returns the layout a name is in and its legacy form.
func ClassifyName(name string) (Layout, string) {
	for _, p := range layoutPairs {
		leg, nw := p[0], p[1]
		if strings.HasSuffix(leg, ".") {
			if rest, ok := strings.CutPrefix(name, leg); ok && rest != "" {
				return LayoutLegacy, name
			}
			if rest, ok := strings.CutPrefix(name, nw); ok && rest != "" {
				return LayoutNew, leg + rest
			}
			continue
		}
		if name == leg {
			return LayoutLegacy, name
		}
		if name == nw {
			return LayoutNew, leg
		}
	}
	return LayoutUnknown, name
}

// ToLayout renames a legacy name into layout l.
func ToLayout(legacy string, l Layout) string {
	if l != LayoutNew {
		return legacy
	}
	for _, p := range layoutPairs {
		leg, nw := p[0], p[1]
		if strings.HasSuffix(leg, ".") {
			if rest, ok := strings.CutPrefix(legacy, leg); ok {
				return nw + rest
			}
		} else if legacy == leg {
			return nw
		}
	}
	return legacy
}

// wrapperInfixes are module wrappers whose names torch's own state-dict hooks
// remove; they survive in hand-rolled dumps (checkpoint-formats.md §7).
var wrapperInfixes = []string{"_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."}

// CleanWrappers removes every wrapper infix from a name.
func CleanWrappers(name string) string {
	for _, w := range wrapperInfixes {
		name = strings.ReplaceAll(name, w, "")
	}
	return name
}

// NameError lists names that cannot be mapped, grouped by problem.
type NameError struct {
	Unknown    []string
	Duplicate  []string
	Mixed      bool
	LegacyEx   string
	NewEx      string
	Foreign    string // a hint when the names belong to another tool's scheme
	Suggestion string
}

func (e *NameError) Error() string {
	var b strings.Builder
	if e.Foreign != "" {
		fmt.Fprintf(&b, "%s", e.Foreign)
	}
	if e.Mixed {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "names mix the legacy layout (e.g. %q) and the 4.52+/5.x layout (e.g. %q)", e.LegacyEx, e.NewEx)
	}
	list := func(what string, names []string) {
		if len(names) == 0 {
			return
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		const max = 12
		shown := names
		if len(shown) > max {
			shown = shown[:max]
		}
		fmt.Fprintf(&b, "%d %s: %s", len(names), what, strings.Join(shown, ", "))
		if len(names) > max {
			fmt.Fprintf(&b, ", … (%d more)", len(names)-max)
		}
	}
	list("names that are not Mllama tensors", e.Unknown)
	list("names that map to the same tensor", e.Duplicate)
	if e.Suggestion != "" {
		b.WriteString(" (" + e.Suggestion + ")")
	}
	return b.String()
}

// Mapping is the result of MapNames.
type Mapping struct {
	// Layout of the input names.
	Layout Layout
	// Legacy maps each input name to its legacy name.
	Legacy map[string]string
	// Dropped are known non-persistent buffers removed from the input.
	Dropped []string
}

// nonPersistent are buffers some dumps include that the model does not save.
func nonPersistent(name string) bool {
	return strings.HasSuffix(name, "rotary_emb.inv_freq") || strings.HasSuffix(name, "rotary_emb.original_inv_freq")
}

// MapNames maps checkpoint names (after group removal) to legacy names. It
// removes wrapper infixes, recognises both layouts, strips a leading DDP
// "module." when that makes every name a Mllama name, and refuses unknown,
// duplicate or mixed names, listing them.
func MapNames(names []string) (*Mapping, error) {
	if m, err := mapNames(names, false); err == nil {
		return m, nil
	} else if allPrefixed(names, "module.") {
		if m2, err2 := mapNames(names, true); err2 == nil {
			return m2, nil
		}
		return nil, err
	} else {
		return nil, err
	}
}

func allPrefixed(names []string, p string) bool {
	for _, n := range names {
		if !strings.HasPrefix(n, p) {
			return false
		}
	}
	return len(names) > 0
}

func mapNames(names []string, stripModule bool) (*Mapping, error) {
	m := &Mapping{Legacy: map[string]string{}}
	e := &NameError{}
	seen := map[string]string{}
	var nLegacy, nNew int
	for _, n := range names {
		c := CleanWrappers(n)
		if stripModule {
			c = strings.TrimPrefix(c, "module.")
		}
		if nonPersistent(c) {
			m.Dropped = append(m.Dropped, n)
			continue
		}
		lay, leg := ClassifyName(c)
		if isAdapterOrFlat(c) {
			lay = LayoutUnknown
		}
		switch lay {
		case LayoutLegacy:
			nLegacy++
			if e.LegacyEx == "" {
				e.LegacyEx = n
			}
		case LayoutNew:
			nNew++
			if e.NewEx == "" {
				e.NewEx = n
			}
		default:
			e.Unknown = append(e.Unknown, n)
			continue
		}
		if prev, dup := seen[leg]; dup {
			e.Duplicate = append(e.Duplicate, prev+" and "+n+" → "+leg)
			continue
		}
		seen[leg] = n
		m.Legacy[n] = leg
	}
	e.Mixed = nLegacy > 0 && nNew > 0
	switch {
	case nLegacy > 0 && nNew == 0:
		m.Layout = LayoutLegacy
	case nNew > 0 && nLegacy == 0:
		m.Layout = LayoutNew
	}
	if len(e.Unknown) > 0 {
		sort.Strings(e.Unknown)
		e.Foreign, e.Suggestion = foreignHint(e.Unknown)
	}
	if len(e.Unknown) > 0 || len(e.Duplicate) > 0 || e.Mixed || len(m.Legacy) == 0 {
		if len(m.Legacy) == 0 && len(e.Unknown) == 0 {
			e.Foreign = "no model tensors found"
		}
		return nil, e
	}
	return m, nil
}

// isAdapterOrFlat spots names that look like Mllama names but hold PEFT
// adapter pieces or FSDP flat parameters.
func isAdapterOrFlat(n string) bool {
	for _, s := range []string{".lora_A.", ".lora_B.", ".base_layer.", "_flat_param", ".lora_embedding_"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// foreignHint recognises names from schemes ckptgate does not convert.
func foreignHint(unknown []string) (string, string) {
	for _, n := range unknown {
		switch {
		case strings.Contains(n, "_flat_param"):
			return "this is a LOCAL_STATE_DICT (flattened FSDP parameters), which cannot be split back into tensors",
				"save with SHARDED_STATE_DICT or FULL_STATE_DICT"
		case strings.Contains(n, ".lora_A.") || strings.Contains(n, ".lora_B.") || strings.Contains(n, ".base_layer."):
			return "this is a PEFT/LoRA checkpoint; merge the adapter into the base first", "merging is out of scope"
		case strings.HasPrefix(n, "decoder.") || strings.HasPrefix(n, "encoder.clip."):
			return "these are torchtune's native Llama 3.2 Vision names", "convert with torchtune's llama3_vision_tune_to_hf first"
		case strings.HasPrefix(n, "tok_embeddings.") || strings.Contains(n, ".attention.wq."):
			return "these are Meta/torchtitan native names, not Hugging Face names", "convert with the owning tool first"
		}
	}
	return "", ""
}
