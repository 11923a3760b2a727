package verify

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/reports"
)

// TensorChecks is the tensors.* family.
var TensorChecks = []*Check{TensorsKeys, TensorsShape, TensorsDType, TensorsChecksum, TensorsSourceExact, TensorsDrift, TensorsFrozen}

func needScan(p *Pass) bool {
	if p.Scan == nil {
		p.Skipf("", "weights unreadable: %v", p.WeightsErr)
		return false
	}
	return true
}

// TensorsKeys compares tensor names with the base, layout-aware.
var TensorsKeys = &Check{
	ID: "tensors.keys",
	Doc: `The model has exactly the base's tensors, in the base's key layout.
Names are compared layout-independently (legacy language_model.model.* / vision_model.* and 4.52+/5.x
model.language_model.* / lm_head.weight name the same tensors); a model in one layout and a base in the
other is a failure that names both; so are names that are not Mllama tensors, duplicates across layouts,
and tensors missing or extra against the base.`,
	Requires: []Input{NeedBase},
	Run: func(p *Pass) error {
		if !needScan(p) {
			return nil
		}
		s := p.Scan
		if p.BaseWeights == nil {
			p.Skipf("", "base weights unreadable: %v", p.BaseWeightsErr)
			return nil
		}
		ok := true
		if len(s.Unknown) > 0 {
			ok = false
			p.Failf("", "%d names are not Mllama tensors: %s", len(s.Unknown), strings.Join(limitList(s.Unknown, 12), ", "))
		}
		if s.ModelLayout != s.BaseLayout && s.ModelLayout != mllama.LayoutUnknown && s.BaseLayout != mllama.LayoutUnknown {
			ok = false
			p.Failf("", "the model is in the %s layout, the base in the %s layout", s.ModelLayout, s.BaseLayout)
		}
		if len(s.BaseOnly) > 0 {
			ok = false
			p.Failf("", "%d base tensors are missing: %s", len(s.BaseOnly), strings.Join(limitList(s.BaseOnly, 12), ", "))
		}
		var extra []string
		for _, t := range s.Tensors {
			if !t.HasBase {
				if _, _, inBase := p.BaseWeights.Info(mllama.ToLayout(t.Legacy, s.BaseLayout)); !inBase {
					extra = append(extra, t.Name)
				}
			}
		}
		if len(extra) > 0 {
			ok = false
			p.Failf("", "%d tensors the base does not have: %s", len(extra), strings.Join(limitList(extra, 12), ", "))
		}
		if ok {
			p.Passf("", "%d tensors, the base's names in the base's layout (%s)", len(s.Tensors), s.ModelLayout)
		}
		return nil
	},
}

// TensorsShape compares shapes with the base.
var TensorsShape = &Check{
	ID:       "tensors.shape",
	Doc:      "Every tensor has the shape of the base's tensor of the same name.\nFails per tensor, naming both shapes.",
	Requires: []Input{NeedBase},
	Run: func(p *Pass) error {
		if !needScan(p) || p.BaseWeights == nil {
			return nil
		}
		bad := 0
		for _, t := range p.Scan.Tensors {
			bn := mllama.ToLayout(t.Legacy, p.Scan.BaseLayout)
			bt, _, ok := p.BaseWeights.Info(bn)
			if !ok {
				continue
			}
			if !slices.Equal(bt.Shape, t.Shape) {
				bad++
				p.Failf(t.Name, "shape %v, base %v", t.Shape, bt.Shape)
			}
		}
		if bad == 0 {
			p.Passf("", "all %d shapes equal the base's", len(p.Scan.Tensors))
		}
		return nil
	},
}

// TensorsDType checks element types.
var TensorsDType = &Check{
	ID: "tensors.dtype",
	Doc: `Tensors are floating point, in one dtype (unless the base mixes dtypes), and that dtype is the base's.
A uniform dtype other than the base's (an fp32 output of a bf16 base) is a warning: it loads, but doubles the
size, which is how the Python converters silently ship fp32. Mixed dtypes where the base has one, or
non-floating weights, fail.`,
	Requires: []Input{NeedBase},
	Run: func(p *Pass) error {
		if !needScan(p) {
			return nil
		}
		count := map[string]int{}
		baseCount := map[string]int{}
		for _, t := range p.Scan.Tensors {
			if !t.DType.IsFloat() {
				p.Failf(t.Name, "dtype %v is not floating point", t.DType)
			}
			count[t.DType.String()]++
			if t.HasBase {
				baseCount[t.BaseDType.String()]++
			}
		}
		switch {
		case len(count) > 1 && len(baseCount) <= 1:
			p.Failf("", "mixed dtypes (%s), the base is uniformly %s", countList(count), strings.Join(keys(baseCount), ""))
		case len(count) == 1 && len(baseCount) == 1 && keys(count)[0] != keys(baseCount)[0]:
			p.Warnf("", "all tensors are %s, the base's are %s", keys(count)[0], keys(baseCount)[0])
		default:
			p.Passf("", "%s, as the base", countList(count))
		}
		return nil
	},
}

// countList renders {"BF16": 100} as "100 BF16".
func countList(m map[string]int) string {
	var parts []string
	for _, k := range keys(m) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// keys lists m's keys, sorted.
func keys(m map[string]int) []string { return slices.Sorted(maps.Keys(m)) }

// TensorsChecksum reports and compares per-tensor checksums.
var TensorsChecksum = &Check{
	ID: "tensors.checksum",
	Doc: `Per-tensor sha256 checksums (over dtype-native little-endian bytes, row-major), layout-independent.
Written with --manifest-out; with --manifest (a ckptgate manifest, or ref-manifests.json#key) every tensor
must match in dtype, shape and sha256.`,
	Run: func(p *Pass) error {
		if !needScan(p) {
			return nil
		}
		if p.Manifest == "" {
			p.Passf("", "%d tensors hashed (no --manifest to compare with)", len(p.Scan.Tensors))
			return nil
		}
		m, err := LoadManifest(p.Manifest)
		if err != nil {
			p.Failf(p.Manifest, "%v", err)
			return nil
		}
		bad := 0
		for _, t := range p.Scan.Tensors {
			e, ok := m.Tensors[t.Legacy]
			switch {
			case !ok:
				bad++
				p.Failf(t.Name, "not in the manifest")
			case e.DType != t.DType.String() || !slices.Equal(e.Shape, t.Shape):
				bad++
				p.Failf(t.Name, "%v %v, manifest %s %v", t.DType, t.Shape, e.DType, e.Shape)
			case e.SHA256 != t.SHA256:
				bad++
				p.Failf(t.Name, "sha256 %s, manifest %s", t.SHA256, e.SHA256)
			}
		}
		for n := range m.Tensors {
			if p.Scan.Get(n) == nil {
				bad++
				p.Failf(n, "in the manifest, not in the model")
			}
		}
		if bad == 0 {
			p.Passf(p.Manifest, "all %d tensors match the manifest", len(p.Scan.Tensors))
		}
		return nil
	},
}

// TensorsSourceExact compares the model with the source checkpoint.
var TensorsSourceExact = &Check{
	ID: "tensors.source_exact",
	Doc: `Every tensor is bit-identical to the source, or to the exact round-to-nearest-even cast of it.
The cast is torch's (NaN compared by class). On failure, per tensor: the count of differing elements, the
largest distance in units in the last place, and the largest relative error. Source tensors missing from
the model fail too.`,
	Requires: []Input{NeedSource},
	Run: func(p *Pass) error {
		if !needScan(p) {
			return nil
		}
		s := p.Scan
		if s.SourceError != "" {
			p.Failf(p.SourcePath, "source names cannot be mapped: %s", s.SourceError)
			return nil
		}
		for _, leg := range s.SourceOnly {
			p.Failf(leg, "in the source, not in the model")
		}
		det := reports.SourceDetails{}
		casts := map[string]bool{}
		bad, compared := 0, 0
		for _, t := range s.Tensors {
			if !t.HasSource {
				p.Failf(t.Name, "no source tensor with this name and shape")
				bad++
				continue
			}
			compared++
			casts[t.SourceDType.String()+"->"+t.DType.String()] = true
			det.Tensors = append(det.Tensors, reports.TensorError{Name: t.Name, Differing: t.Differing, MaxULP: t.MaxULP,
				MaxRelErr: t.MaxRelErr, RelErrHist: t.RelErrHist})
			if t.Differing > 0 {
				bad++
				p.Report(reports.StatusFail, t.Name, fmt.Sprintf("%d of %d elements differ from the exact %v→%v cast of the source (max %d ulp, max relative error %.3g)",
					t.Differing, volume(t.Shape), t.SourceDType, t.DType, t.MaxULP, t.MaxRelErr), nil)
			}
		}
		det.Cast = strings.Join(keys(boolKeys(casts)), ", ")
		status := reports.StatusPass
		msg := fmt.Sprintf("all %d tensors are the exact cast of the source (%s)", compared, det.Cast)
		if bad > 0 {
			status = reports.StatusFail
			msg = fmt.Sprintf("%d of %d tensors differ from the source", bad, len(s.Tensors))
		}
		p.Report(status, "", msg, det)
		return nil
	},
}

func boolKeys(m map[string]bool) map[string]int {
	out := map[string]int{}
	for k := range m {
		out[k] = 1
	}
	return out
}

// layerOf extracts the layer index and group of a legacy name for plots.
func layerOf(leg string) (int, string) {
	group := "text"
	switch {
	case strings.HasPrefix(leg, "vision_model."):
		group = "vision"
	case strings.HasPrefix(leg, "multi_modal_projector."):
		group = "projector"
	}
	parts := strings.Split(leg, ".")
	for i, s := range parts {
		if s == "layers" && i+1 < len(parts) {
			if n, err := strconv.Atoi(parts[i+1]); err == nil {
				if group == "vision" && strings.Contains(leg, "global_transformer") {
					group = "vision-global"
				}
				return n, group
			}
		}
	}
	return -1, group
}

// TensorsDrift measures each tensor's distance from the base.
var TensorsDrift = &Check{
	ID: "tensors.drift",
	Doc: `Each tensor's distance from the base separates a fine-tune from a broken or swapped tensor.
Reported per tensor: relative L2 distance, max |Δ|, fraction of changed elements, norm ratio. Fails: NaN or
Inf values; a tensor zeroed where the base was not; a norm changed by more than the policy's max_norm_ratio
(default 100×) either way; a tensor much closer (swap_margin, default 0.5×) to another same-shaped base tensor
than to its own (a swap or a mis-mapped name — both are named); relative L2 above the policy's max_rel_l2 when
set. Plain drift magnitudes are only reported: legitimate fine-tunes span a wide range.`,
	Requires: []Input{NeedBase},
	Run:      runDrift,
}

func runDrift(p *Pass) error {
	if !needScan(p) {
		return nil
	}
	th := p.Policy.Thresholds
	det := reports.DriftDetails{}
	byShape := map[string][]*TensorScan{}
	for _, t := range p.Scan.Tensors {
		if t.HasBase {
			k := fmt.Sprint(t.Shape)
			byShape[k] = append(byShape[k], t)
		}
	}
	bad := 0
	for _, t := range p.Scan.Tensors {
		layer, group := layerOf(t.Legacy)
		d := reports.TensorDrift{Name: t.Name, Layer: layer, Group: group, NaN: t.NaN, Inf: t.Inf}
		if t.NaN > 0 || t.Inf > 0 {
			bad++
			p.Failf(t.Name, "%d NaN and %d Inf values", t.NaN, t.Inf)
		}
		if !t.HasBase {
			det.Tensors = append(det.Tensors, d)
			continue
		}
		d.RelL2, d.MaxAbs, d.ChangedFrac, d.NormRatio = finite(t.RelL2()), t.MaxAbsDiff, t.ChangedFrac(), finite(t.NormRatio())
		switch {
		case t.AllZero && !t.BaseAllZero:
			bad++
			p.Failf(t.Name, "all zero; the base's is not")
		case t.BaseSq > 0 && (t.NormRatio() > th.MaxNormRatio || t.NormRatio() < 1/th.MaxNormRatio):
			bad++
			p.Failf(t.Name, "norm changed %.3g× from the base (policy allows %g×)", t.NormRatio(), th.MaxNormRatio)
		case th.MaxRelL2 > 0 && t.RelL2() > th.MaxRelL2:
			bad++
			p.Failf(t.Name, "relative L2 distance %.3g from the base exceeds the policy's %g", t.RelL2(), th.MaxRelL2)
		}
		if other, ratio := nearestOther(t, byShape[fmt.Sprint(t.Shape)]); other != nil && ratio < th.SwapMargin {
			bad++
			d.NearestOther = other.Name
			p.Failf(t.Name, "%.2g× closer to the base's %s than to its own base tensor: swapped or mis-mapped", 1/ratio, other.Name)
		}
		det.Tensors = append(det.Tensors, d)
	}
	status := reports.StatusPass
	msg := fmt.Sprintf("%d tensors compared with the base; median relative L2 %.3g", len(det.Tensors), medianRelL2(det.Tensors))
	if bad > 0 {
		status = reports.StatusFail
		msg = fmt.Sprintf("%d drift failure(s); %s", bad, msg)
	}
	p.Report(status, "", msg, det)
	return nil
}

func finite(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return -1
	}
	return x
}

func medianRelL2(ds []reports.TensorDrift) float64 {
	var v []float64
	for _, d := range ds {
		if d.RelL2 >= 0 {
			v = append(v, d.RelL2)
		}
	}
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// nearestOther finds the same-shaped base tensor closest to t's sample and
// returns the ratio of that distance to t's distance from its own base.
func nearestOther(t *TensorScan, same []*TensorScan) (*TensorScan, float64) {
	own := sampleDist(t.sample, t.baseSample)
	if own == 0 || len(t.sample) < 2 {
		return nil, math.Inf(1)
	}
	var best *TensorScan
	bestD := math.Inf(1)
	for _, o := range same {
		if o == t || len(o.baseSample) != len(t.sample) {
			continue
		}
		if d := sampleDist(t.sample, o.baseSample); d < bestD {
			best, bestD = o, d
		}
	}
	if best == nil {
		return nil, math.Inf(1)
	}
	return best, bestD / own
}

func sampleDist(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		if math.IsNaN(d) || math.IsInf(d, 0) {
			continue
		}
		s += d * d
	}
	return math.Sqrt(s)
}

// TensorsFrozen checks the policy's frozen set.
var TensorsFrozen = &Check{
	ID: "tensors.frozen",
	Doc: `Tensors the policy freezes are bit-identical to the base; trained tensors moved.
With freeze-llm (llama-recipes freeze_LLM_only) the language model except its cross-attention layers — and
embeddings, final norm and lm_head — must equal the base bit for bit (fails otherwise). A tensor the policy
trains that equals the base is a warning (it did not learn: a frozen layer where none was meant, or a
checkpoint of the base).`,
	Requires: []Input{NeedBase},
	Run: func(p *Pass) error {
		if !needScan(p) {
			return nil
		}
		var cross []int
		if p.Config != nil {
			cross = p.Config.Text.CrossAttentionLayers
		}
		m, err := p.Policy.Matcher(cross)
		if err != nil {
			return err
		}
		var frozenOK, frozenBad int
		var untouched []string
		for _, t := range p.Scan.Tensors {
			if !t.HasBase {
				continue
			}
			if m.Frozen(t.Legacy) {
				if t.IdenticalToBase {
					frozenOK++
				} else {
					frozenBad++
					p.Failf(t.Name, "frozen by policy %s, but %d elements differ from the base (max |Δ| %.3g)", p.Policy.Name, t.Changed, t.MaxAbsDiff)
				}
			} else if t.IdenticalToBase {
				untouched = append(untouched, t.Name)
			}
		}
		if len(untouched) > 0 {
			p.Warnf("", "%d trained tensors are identical to the base: %s", len(untouched), strings.Join(limitList(untouched, 12), ", "))
		}
		if frozenBad == 0 {
			p.Passf("", "policy %s: %d frozen tensors identical to the base", p.Policy.Name, frozenOK)
		}
		return nil
	},
}
