// Package dcptest has test helpers for packages that read the fixtures'
// training checkpoints: copying a fixture run into a temporary directory,
// corrupting the copy in named ways (Corruptions), rewriting it into other
// valid forms DCP can take (rank-local metadata, zstd-compressed items),
// and checking a checkpoint's tensors against the reference manifests that
// torch and transformers produced (CheckManifest).
package dcptest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// fixtureRel is where the fixtures live, relative to the repository root.
const fixtureRel = "goldens/mllama-tiny-dev"

// Fixtures returns the path of the fixture directory, relative to the
// test's working directory (its package directory), found by walking up
// to the repository root.
func Fixtures(tb testing.TB) string {
	tb.Helper()
	rel := "."
	for range 8 {
		p := filepath.Join(rel, fixtureRel)
		if st, err := os.Stat(filepath.Join(p, "ref-manifests.json")); err == nil && !st.IsDir() {
			return p
		}
		rel = filepath.Join(rel, "..")
	}
	tb.Fatalf("no %s above the working directory", fixtureRel)
	return ""
}

// Run returns the path of a fixture run ("fsdp1", "full", …).
func Run(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(Fixtures(tb), "runs", name)
}

// DCPRuns are the fixture runs that are DCP directories.
var DCPRuns = []string{"fsdp1", "fsdp2", "freeze", "legacy"}

// CopyRun copies the regular files of the directory src into a new
// temporary directory (removed when the test ends) and returns its path.
// The copy has src's base name, so messages read like the original's.
func CopyRun(tb testing.TB, src string) string {
	tb.Helper()
	dst := filepath.Join(tb.TempDir(), filepath.Base(src))
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		tb.Fatal(err)
	}
	return dst
}

// ManifestEntry is one tensor of ref-manifests.json.
type ManifestEntry struct {
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
	SHA256 string  `json:"sha256"`
}

// Manifest returns manifests[name] of ref-manifests.json: legacy-layout
// tensor name → entry, as the reference procedure (torch + transformers)
// wrote them.
func Manifest(tb testing.TB, name string) map[string]ManifestEntry {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(Fixtures(tb), "ref-manifests.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var doc struct {
		Manifests map[string]map[string]ManifestEntry `json:"manifests"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		tb.Fatal(err)
	}
	m, ok := doc.Manifests[name]
	if !ok {
		tb.Fatalf("ref-manifests.json has no manifest %q", name)
	}
	return m
}

// ManifestFor names the manifest a run's source tensors must match: the
// bf16 conversion for runs trained in bf16 (whose tensors are bf16 in the
// checkpoint), the fp32 one for fsdp2, which trained in fp32.
func ManifestFor(run string) string {
	if run == "fsdp2" {
		return "fsdp2-fp32"
	}
	return run + "-bf16"
}

// LegacyName maps an Mllama FQN of the transformers ≥ 4.52 module tree to
// the legacy (Hub, on-disk) layout the manifests use; legacy names are
// returned unchanged.
func LegacyName(fqn string) string {
	switch {
	case fqn == "lm_head.weight":
		return "language_model.lm_head.weight"
	case strings.HasPrefix(fqn, "model.language_model."):
		return "language_model.model." + strings.TrimPrefix(fqn, "model.language_model.")
	case strings.HasPrefix(fqn, "model.vision_model."):
		return strings.TrimPrefix(fqn, "model.")
	case strings.HasPrefix(fqn, "model.multi_modal_projector."):
		return strings.TrimPrefix(fqn, "model.")
	}
	return fqn
}

// TensorBytes streams every chunk of t with ckpt.WalkChunk into one buffer
// of the whole tensor's little-endian bytes, row-major.
func TensorBytes(t *ckpt.Tensor) ([]byte, error) {
	out := make([]byte, t.NumBytes())
	esize := int64(t.DType.Size())
	buf := make([]byte, 64<<10)
	for i := range t.Chunks {
		err := ckpt.WalkChunk(t, &t.Chunks[i], buf, func(dst int64, src []byte) error {
			copy(out[dst*esize:], src)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CheckManifest streams every tensor of c and checks that the set of
// names (mapped with LegacyName), each dtype, shape and the sha256 of the
// bytes equal manifest name of ref-manifests.json.
func CheckManifest(tb testing.TB, c *ckpt.Checkpoint, name string) {
	tb.Helper()
	want := Manifest(tb, name)
	seen := map[string]bool{}
	for _, t := range c.Tensors {
		leg := LegacyName(t.Name)
		w, ok := want[leg]
		if !ok {
			tb.Errorf("%s: tensor %q (%s) is not in manifest %s", c.Path, t.Name, leg, name)
			continue
		}
		seen[leg] = true
		if t.DType.String() != w.DType || !slices.Equal(t.Shape, w.Shape) {
			tb.Errorf("%s: %s is %v %v, manifest %s says %s %v", c.Path, t.Name, t.DType, t.Shape, name, w.DType, w.Shape)
			continue
		}
		b, err := TensorBytes(t)
		if err != nil {
			tb.Errorf("%s: %s: %v", c.Path, t.Name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != w.SHA256 {
			tb.Errorf("%s: %s: sha256 %s, manifest %s says %s", c.Path, t.Name, got, name, w.SHA256)
		}
	}
	for n := range want {
		if !seen[n] {
			tb.Errorf("%s: manifest %s has %s, the checkpoint does not", c.Path, name, n)
		}
	}
}
