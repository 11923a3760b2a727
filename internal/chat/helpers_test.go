package chat

import (
	"path/filepath"
	"sync"
	"testing"
)

// dev is the dev fixture made by torch 2.11 and transformers 5.17.
const dev = "../../goldens/mllama-tiny-dev"

var (
	loadOnce   sync.Once
	baseTok    *Tokenizer
	hubTok     *Tokenizer
	goldens    *Goldens
	loadFailed error
)

// fixtures loads the base tokenizers and the goldens once: tokenizer.json
// is 7 MB and parsing it dominates the package's test time.
func fixtures(t testing.TB) (*Tokenizer, *Tokenizer, *Goldens) {
	t.Helper()
	loadOnce.Do(func() {
		if baseTok, loadFailed = LoadTokenizer(filepath.Join(dev, "base")); loadFailed != nil {
			return
		}
		if hubTok, loadFailed = LoadTokenizer(filepath.Join(dev, "base-hub")); loadFailed != nil {
			return
		}
		goldens, loadFailed = LoadGoldens(filepath.Join(dev, "goldens.json"))
	})
	if loadFailed != nil {
		t.Fatal(loadFailed)
	}
	return baseTok, hubTok, goldens
}
