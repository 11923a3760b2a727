//go:build !ollama

package verify

// OllamaChecks are the Ollama deployment checks (ollama.*). They need cgo
// and Ollama's ggml backend, so they exist only in builds with the build tag
// "ollama" (see ollama.go); in this build the list is empty and nothing of
// Ollama is linked.
var OllamaChecks []*Check
