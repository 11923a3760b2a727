package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/exit"
)

// ManifestSchema identifies ckptgate's manifest files.
const ManifestSchema = "ckptgate.manifest/v1"

// ManifestEntry is one tensor's checksum: sha256 of its raw little-endian
// bytes in row-major order, nothing else — the definition ref-manifests.json
// uses, so that manifests are comparable across tools.
type ManifestEntry struct {
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
	SHA256 string  `json:"sha256"`
}

// Manifest maps layout-independent (legacy) tensor names to checksums.
type Manifest struct {
	Schema  string                   `json:"schema"`
	Tensors map[string]ManifestEntry `json:"tensors"`
}

// ManifestOf builds the manifest of a scan.
func ManifestOf(s *Scan) *Manifest {
	m := &Manifest{Schema: ManifestSchema, Tensors: map[string]ManifestEntry{}}
	for _, t := range s.Tensors {
		m.Tensors[t.Legacy] = ManifestEntry{DType: t.DType.String(), Shape: t.Shape, SHA256: t.SHA256}
	}
	return m
}

// Write writes the manifest as indented JSON (keys sorted).
func (m *Manifest) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

// LoadManifest reads a manifest. It also accepts the fixtures'
// ref-manifests.json with a "#key" suffix naming one of its manifests
// (ref-manifests.json#fsdp1-bf16); names there are legacy names too.
func LoadManifest(spec string) (*Manifest, error) {
	path, key, _ := strings.Cut(spec, "#")
	b, err := boundedio.ReadFile(path, boundedio.JSONLimit)
	if err != nil {
		return nil, exit.BadInputError(err)
	}
	if key != "" {
		var ref struct {
			Manifests map[string]map[string]ManifestEntry `json:"manifests"`
		}
		if err := json.Unmarshal(b, &ref); err != nil {
			return nil, exit.BadInputError(fmt.Errorf("%s: %w", path, err))
		}
		t, ok := ref.Manifests[key]
		if !ok {
			return nil, exit.BadInputError(fmt.Errorf("%s has no manifest %q", path, key))
		}
		return &Manifest{Schema: ManifestSchema, Tensors: t}, nil
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, exit.BadInputError(fmt.Errorf("%s: %w", path, err))
	}
	if m.Schema != ManifestSchema {
		return nil, exit.BadInputError(fmt.Errorf("%s: schema %q, want %q (or use a ref-manifests.json#key)", path, m.Schema, ManifestSchema))
	}
	return &m, nil
}
