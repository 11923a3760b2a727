package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
)

// safetensorsCorruptions damage a copy of a real safetensors file written
// by safetensors 0.8.0 (the base's), one rule of the reference parser each.
var safetensorsCorruptions = []struct {
	name, want string
	apply      func(raw []byte) []byte
}{
	{"huge header length", "exceeds the limit", func(raw []byte) []byte {
		binary.LittleEndian.PutUint64(raw, 1<<40)
		return raw
	}},
	{"header past end of file", "runs past the end", func(raw []byte) []byte {
		binary.LittleEndian.PutUint64(raw, uint64(len(raw)))
		return raw
	}},
	{"invalid JSON", "header JSON", func(raw []byte) []byte {
		return replaceHeader(raw, `"format":"pt"`, `"format": pt"`)
	}},
	{"unknown dtype", `unknown dtype "BX16"`, func(raw []byte) []byte {
		return replaceHeader(raw, `"dtype":"BF16"`, `"dtype":"BX16"`)
	}},
	{"overlapping offsets", "overlap", func(raw []byte) []byte {
		return replaceHeader(raw, `[2052096,4104320]`, `[2052094,4104320]`)
	}},
	{"size mismatch", "needs", func(raw []byte) []byte {
		return replaceHeader(raw, `"shape":[128264,8]`, `"shape":[128263,8]`)
	}},
	{"truncated data", "header and offsets say", func(raw []byte) []byte { return raw[:len(raw)-1] }},
	{"trailing data", "header and offsets say", func(raw []byte) []byte { return append(raw, 0) }},
	{"not UTF-8", "not valid UTF-8", func(raw []byte) []byte {
		return replaceHeader(raw, `"format":"pt"`, "\"format\":\"\xff\xfe\"")
	}},
}

// replaceHeader edits the JSON header in place; old and new have the same
// length so the length prefix stays right.
func replaceHeader(raw []byte, old, new string) []byte {
	n := binary.LittleEndian.Uint64(raw)
	h := strings.Replace(string(raw[8:8+n]), old, new, 1)
	copy(raw[8:], h)
	return raw
}

// A corrupt base is bad input for convert (exit 2, the file and the rule
// named, nothing written); a corrupt converted model is what verify is for
// (exit 1, safetensors.header failing).
func TestCorruptSafetensorsCorpus(t *testing.T) {
	for _, c := range safetensorsCorruptions {
		t.Run(c.name, func(t *testing.T) {
			base := dcptest.CopyRun(t, filepath.Join(fixtures, "base"))
			p := filepath.Join(base, "model.safetensors")
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, c.apply(raw), 0o644); err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			_, stderr, code := runCLI(t, "convert", "--source", filepath.Join(fixtures, "runs/full/mllama-tiny-1.pt"),
				"--base", base, "--out", filepath.Join(parent, "out"), "--quiet")
			if code != 2 || !strings.Contains(stderr, p) || !strings.Contains(stderr, c.want) {
				t.Errorf("convert: exit %d, stderr %q (want 2, naming %s and %q)", code, stderr, p, c.want)
			}
			if l, _ := os.ReadDir(parent); len(l) != 0 {
				t.Errorf("left behind: %v", l)
			}
			stdout, stderr, code := runCLI(t, "verify", "--model", base, "--base", filepath.Join(fixtures, "base"))
			if code != 1 || !strings.Contains(stdout, "safetensors.header") {
				t.Errorf("verify: exit %d, want 1 with safetensors.header failing; stdout %s stderr %s", code, stdout, stderr)
			}
		})
	}
}
