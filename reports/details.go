package reports

// The Details shapes below are the ones the renderers know how to plot. A
// check that produces one of them sets Details to MustDetails(value).

// TensorDrift is one tensor's distance from the base (tensors.drift).
type TensorDrift struct {
	Name string `json:"name"`
	// Layer is the decoder or vision layer index the tensor belongs to, -1
	// for tensors outside the layer stacks.
	Layer int    `json:"layer"`
	Group string `json:"group"` // "text", "vision", "vision-global", "projector"
	// RelL2 and NormRatio are -1 where undefined (an all-zero base tensor):
	// JSON cannot carry Inf.
	RelL2        float64 `json:"rel_l2"`
	MaxAbs       float64 `json:"max_abs"`
	ChangedFrac  float64 `json:"changed_frac"`
	NormRatio    float64 `json:"norm_ratio"`
	NaN          int64   `json:"nan,omitempty"`
	Inf          int64   `json:"inf,omitempty"`
	NearestOther string  `json:"nearest_other,omitempty"`
}

// DriftDetails is the Details of the tensors.drift summary finding.
type DriftDetails struct {
	Tensors []TensorDrift `json:"tensors"`
}

// TensorError is one tensor's difference from the source
// (tensors.source_exact).
type TensorError struct {
	Name      string  `json:"name"`
	Differing int64   `json:"differing"`
	MaxULP    int64   `json:"max_ulp"`
	MaxRelErr float64 `json:"max_rel_err"`
	// RelErrHist counts elements by relative error of the cast against the
	// exact source value, in decades: [0] exact, [k] in [1e-(10-k+1), 1e-(10-k)).
	RelErrHist []int64 `json:"rel_err_hist,omitempty"`
}

// SourceDetails is the Details of the tensors.source_exact summary finding.
type SourceDetails struct {
	Cast    string        `json:"cast"` // "none", "F32->BF16", …
	Tensors []TensorError `json:"tensors"`
}

// LogitsDetails compares two last-position logit vectors (forward.*).
type LogitsDetails struct {
	Prompt     string    `json:"prompt"`
	ALabel     string    `json:"a_label"`
	BLabel     string    `json:"b_label"`
	TopIDsA    []int     `json:"top_ids_a"`
	TopIDsB    []int     `json:"top_ids_b"`
	TopLogitsA []float64 `json:"top_logits_a"`
	TopLogitsB []float64 `json:"top_logits_b"`
	KL         float64   `json:"kl"`
	RelRMS     float64   `json:"rel_rms"`
	// Sample holds paired logits (a, b) for a scatter plot, at most a few
	// thousand points.
	Sample [][2]float64 `json:"sample,omitempty"`
}
