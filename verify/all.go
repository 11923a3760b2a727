package verify

// All returns every check, in report order: files, weights format, tensors,
// config, then the families that need more than the weights.
func All() []*Check {
	var all []*Check
	for _, fam := range [][]*Check{FileChecks, FormatChecks, TensorChecks, ConfigChecks, PreprocessChecks} {
		all = append(all, fam...)
	}
	return all
}
