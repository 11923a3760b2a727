package verify

// All returns every check, in report order: files, weights format, tensors,
// config, then the families that need more than the weights. The config
// invariant "image_token_index is the tokenizer's <|image|>" is
// template.image_token. OllamaChecks is empty unless built with the
// ollama tag.
func All() []*Check {
	var all []*Check
	for _, fam := range [][]*Check{FileChecks, FormatChecks, TensorChecks, ConfigChecks, TemplateChecks, TokenizerChecks, PreprocessChecks, ForwardChecks, GoldenChecks, OllamaChecks} {
		all = append(all, fam...)
	}
	return all
}
