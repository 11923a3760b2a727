//go:build ollama

// Package ollamacheck checks that a converted Llama 3.2 Vision (Mllama)
// directory deploys in Ollama: it converts the directory to GGUF with
// Ollama's own converter (github.com/ollama/ollama/convert, v0.17.4), loads the
// GGUF in Ollama's Mllama engine on the CPU backend, runs the smoke prompts,
// and compares the outputs with a Reference. Every known way in which Ollama
// departs from Hugging Face transformers is detected and named
// (shared/docs/ollama-as-a-library.md §6 numbers them D1–D15), never hidden.
//
// The package needs cgo (gcc and g++): Ollama's ggml backend is compiled from
// the module's C and C++ sources. It is therefore built only with the build
// tag "ollama"; without the tag nothing of Ollama is linked into ckptgate.
//
// Two presentations of the directory go through the converter. The directory
// as it is on disk shows what `ollama create` would make of it; transformers
// 4.52+ tensor names and transformers 5 rope_parameters configs break that
// conversion, and the findings say how. A legacy-shaped View (config rewritten
// to rope_theta/rope_scaling, safetensors headers renamed to the Hub layout,
// chat template carried into tokenizer_config.json) is what the rest of the
// checks run on, so that a fixable presentation problem does not hide the
// numerical findings.
package ollamacheck
