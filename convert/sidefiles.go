package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/dtype"
)

// SideFiles are the non-weight files of a Mllama directory that are copied
// from the base in whatever form it has them (transformers 4.x and 5.x write
// different sets; see chat-template-and-preprocessing.md §1).
var SideFiles = []string{
	"config.json",
	"generation_config.json",
	"tokenizer.json",
	"tokenizer_config.json",
	"special_tokens_map.json",
	"added_tokens.json",
	"chat_template.jinja",
	"chat_template.json",
	"preprocessor_config.json",
	"processor_config.json",
}

var weightFile = regexp.MustCompile(`^model(-\d{5}-of-\d{5})?\.safetensors$|^model\.safetensors\.index\.json$`)

// sideFilePlan lists the base's side files to copy and the files left out.
func sideFilePlan(base string) (copy []string, skipped []string, err error) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, s := range SideFiles {
		known[s] = true
	}
	for _, e := range ents {
		n := e.Name()
		switch {
		case weightFile.MatchString(n):
		case known[n] || (strings.HasPrefix(n, "chat_template") && strings.HasSuffix(n, ".jinja")):
			if !e.Type().IsRegular() {
				return nil, nil, fmt.Errorf("%s: side file %s is not a regular file", base, n)
			}
			copy = append(copy, n)
		default:
			skipped = append(skipped, n)
		}
	}
	sort.Strings(copy)
	return copy, skipped, nil
}

// setConfigDType rewrites the top-level dtype field of a config.json ("dtype"
// in transformers ≥ 4.56, "torch_dtype" before) to d, leaving every other
// byte as it was. A config without the field is returned unchanged with
// changed == false.
func setConfigDType(cfg []byte, d dtype.DType) (out []byte, key string, changed bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(cfg))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, "", false, fmt.Errorf("config.json is not a JSON object")
	}
	type span struct{ start, end int64 }
	found := map[string]span{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, "", false, err
		}
		k, _ := kt.(string)
		start := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, "", false, err
		}
		end := dec.InputOffset()
		if k == "dtype" || k == "torch_dtype" {
			if len(raw) == 0 || raw[0] != '"' {
				continue
			}
			found[k] = span{start, end}
		}
	}
	key = "dtype"
	sp, ok := found["dtype"]
	if !ok {
		key = "torch_dtype"
		if sp, ok = found["torch_dtype"]; !ok {
			return cfg, "", false, nil
		}
	}
	// The span starts after the key token (at the colon or whitespace); find
	// the value's opening quote.
	seg := cfg[sp.start:sp.end]
	q := bytes.IndexByte(seg, '"')
	if q < 0 {
		return nil, "", false, fmt.Errorf("config.json: cannot locate the %s value", key)
	}
	var b bytes.Buffer
	b.Write(cfg[:sp.start+int64(q)])
	fmt.Fprintf(&b, "%q", d.TorchName())
	b.Write(cfg[sp.end:])
	return b.Bytes(), key, true, nil
}

// copyFile copies src to dst and syncs it.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeFileFrom(dst, in)
}

func writeFileFrom(dst string, r io.Reader) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("syncing %s: %w", dst, err)
	}
	return out.Close()
}

func writeFile(dst string, b []byte) error { return writeFileFrom(dst, bytes.NewReader(b)) }

// copySideFiles writes the base's side files into dir, with config.json's
// dtype field set to out (dtype.Invalid: config.json unchanged, for mixed
// outputs).
func copySideFiles(dir, base string, files []string, out dtype.DType) (notes []string, err error) {
	for _, f := range files {
		src := filepath.Join(base, f)
		if f != "config.json" || out == dtype.Invalid {
			if err := copyFile(filepath.Join(dir, f), src); err != nil {
				return nil, err
			}
			continue
		}
		cfg, err := boundedio.ReadFile(src, boundedio.JSONLimit)
		if err != nil {
			return nil, err
		}
		nc, key, changed, err := setConfigDType(cfg, out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if !changed {
			notes = append(notes, fmt.Sprintf("%s has no dtype field; copied unchanged", src))
		} else if !bytes.Equal(nc, cfg) {
			notes = append(notes, fmt.Sprintf("config.json: %s set to %q", key, out.TorchName()))
		}
		if err := writeFile(filepath.Join(dir, f), nc); err != nil {
			return nil, err
		}
	}
	return notes, nil
}
