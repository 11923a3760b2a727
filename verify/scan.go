package verify

// Scan holds the per-tensor statistics of the one streaming pass over the
// model's, the base's and the source's tensors.
type Scan struct {
}
