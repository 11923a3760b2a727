package convert

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dcp"
	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/torchzip"
)

// maxSearchDepth bounds how far below the given path a DCP directory is
// looked for (llama-recipes nests it under the model name, e.g.
// fine-tuned-meta-llama/Llama-3.2-11B-Vision-Instruct/).
const maxSearchDepth = 3

// OpenSource opens a training checkpoint: a DCP directory (possibly nested
// below path, as llama-recipes writes it) or a torch.save file.
func OpenSource(path string) (*ckpt.Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, exit.BadInputError(fmt.Errorf("source: %w", err))
	}
	if !st.IsDir() {
		return torchzip.OpenPT(path)
	}
	root, note, err := findDCPRoot(path)
	if err != nil {
		return nil, err
	}
	c, err := dcp.Open(root)
	if err != nil {
		return nil, err
	}
	if note != "" {
		c.Notes = append([]string{note}, c.Notes...)
	}
	return c, nil
}

func isDCPDir(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		n := e.Name()
		if n == ".metadata" || n == ".metadata.tmp" || strings.HasSuffix(n, ".distcp") ||
			(strings.HasPrefix(n, "__") && strings.HasSuffix(n, ".metadata")) {
			return true
		}
	}
	return false
}

// findDCPRoot returns dir itself when it holds DCP files, else the single
// directory below it (at most maxSearchDepth levels) that does, else the
// single .pt/.bin file in it.
func findDCPRoot(dir string) (string, string, error) {
	if isDCPDir(dir) {
		return dir, "", nil
	}
	var found []string
	var ptFiles []string
	base := strings.Count(filepath.Clean(dir), string(filepath.Separator))
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		depth := strings.Count(filepath.Clean(p), string(filepath.Separator)) - base
		if d.IsDir() {
			if depth > maxSearchDepth {
				return filepath.SkipDir
			}
			if p != dir && isDCPDir(p) {
				found = append(found, p)
				return filepath.SkipDir
			}
			return nil
		}
		if depth == 1 && (strings.HasSuffix(p, ".pt") || strings.HasSuffix(p, ".bin")) && d.Type().IsRegular() {
			ptFiles = append(ptFiles, p)
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	sort.Strings(found)
	switch {
	case len(found) == 1:
		return found[0], fmt.Sprintf("found the DCP checkpoint in %s", found[0]), nil
	case len(found) > 1:
		return "", "", exit.BadInputError(fmt.Errorf("source %s: %d DCP checkpoints below it (%s); name one", dir, len(found), strings.Join(found, ", ")))
	case len(ptFiles) == 1:
		return "", "", exit.BadInputError(fmt.Errorf("source %s: no DCP checkpoint, but a torch.save file %s; pass the file itself", dir, ptFiles[0]))
	}
	return "", "", fmt.Errorf("%w: source %s: no DCP checkpoint (.metadata and __R_I.distcp files) in it or up to %d levels below", ckpt.ErrCorrupt, dir, maxSearchDepth)
}

// BaseFromTrainParams reads llama-recipes' train_params.yaml next to the
// source (the DCP directory, the .pt's directory, or one of their parents up
// to the path given) and returns model_name when it names a local directory
// holding a config.json. It never prompts.
func BaseFromTrainParams(source string) (string, error) {
	dir := source
	if st, err := os.Stat(source); err == nil && !st.IsDir() {
		dir = filepath.Dir(source)
	} else if err == nil {
		if root, _, err := findDCPRoot(source); err == nil {
			dir = root
		}
	}
	for i := 0; i <= maxSearchDepth; i++ {
		p := filepath.Join(dir, "train_params.yaml")
		if name, err := readModelName(p); err == nil {
			if st, err := os.Stat(filepath.Join(name, "config.json")); err == nil && !st.IsDir() {
				return name, nil
			}
			return "", exit.BadInputError(fmt.Errorf("no --base given, and %s names model_name %q, which is not a local model directory; pass --base", p, name))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", exit.BadInputError(fmt.Errorf("%s: %w", p, err))
		}
		if filepath.Clean(dir) == filepath.Clean(source) {
			break
		}
		dir = filepath.Dir(dir)
	}
	return "", exit.BadInputError(fmt.Errorf("no --base given and no train_params.yaml with a model_name beside %s", source))
}

// readModelName extracts model_name from a train_params.yaml. The file is
// PyYAML output whose values are all strings; only this key is read.
func readModelName(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		v, ok := strings.CutPrefix(line, "model_name:")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '\'' && v[len(v)-1] == '\'' || v[0] == '"' && v[len(v)-1] == '"') {
			v = v[1 : len(v)-1]
		}
		if v == "" {
			return "", errors.New("model_name is empty")
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no model_name")
}

// MapSource maps a checkpoint's tensors to legacy Mllama names.
func MapSource(c *ckpt.Checkpoint) (map[string]*ckpt.Tensor, *mllama.Mapping, error) {
	names := make([]string, len(c.Tensors))
	for i, t := range c.Tensors {
		names[i] = t.Name
	}
	m, err := mllama.MapNames(names)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ckpt.ErrCorrupt, c.Path, err)
	}
	out := make(map[string]*ckpt.Tensor, len(m.Legacy))
	for _, t := range c.Tensors {
		if leg, ok := m.Legacy[t.Name]; ok {
			out[leg] = t
		}
	}
	return out, m, nil
}
