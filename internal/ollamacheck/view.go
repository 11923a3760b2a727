//go:build ollama

package ollamacheck

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// maxSideFile bounds the JSON and template files a View reads into memory.
// The largest real one, Llama 3.2's tokenizer.json, is about 9 MB.
const maxSideFile = 256 << 20

// ViewOptions choose how a View reshapes a directory for Ollama's converter.
// The zero value presents the directory as it is on disk.
type ViewOptions struct {
	// LegacyNames renames transformers 4.52+/5.x tensor names
	// (model.language_model.*, lm_head.weight, model.vision_model.*,
	// model.multi_modal_projector.*) to the Hub layout, the only one the
	// converter maps (ollama-as-a-library.md §2.5). Only safetensors headers
	// change; data offsets are relative to the data section.
	LegacyNames bool
	// LegacyRope copies a transformers 5 text_config.rope_parameters into
	// rope_theta and rope_scaling, the only keys the converter reads (§2.4).
	LegacyRope bool
	// CarryTemplate copies chat_template.jinja (or chat_template.json) into
	// tokenizer_config.json's chat_template, the only place the converter
	// looks (§2.2).
	CarryTemplate bool
}

// LegacyView is the presentation §8 of ollama-as-a-library.md recommends.
var LegacyView = ViewOptions{LegacyNames: true, LegacyRope: true, CarryTemplate: true}

// View is an fs.FS over a Hugging Face Mllama directory as Ollama's converter
// should see it. It serves only what the converter reads: the JSON side files
// and the safetensors weights, every one of them validated first so that the
// converter never meets a malformed header.
type View struct {
	// Dir is the directory presented.
	Dir string
	// Options are the reshaping applied.
	Options ViewOptions
	// Config is the directory's config.json as found on disk.
	Config *mllama.Config
	// Layout is the tensor-name layout of the directory's weights.
	Layout mllama.Layout
	// Rewrites says, one line each, what the View changed.
	Rewrites []string
	// Hidden lists root files the View does not serve although the converter
	// would read them (stray *.safetensors beside an index, pickled weights).
	Hidden []string

	files map[string]*viewFile
	open  []*safetensors.File
}

type viewFile struct {
	name string
	size int64
	at   io.ReaderAt
}

// OpenView validates dir and returns the View of it that o asks for. Close it
// when done.
func OpenView(dir string, o ViewOptions) (*View, error) {
	cfgBytes, err := boundedio.ReadFile(filepath.Join(dir, "config.json"), maxSideFile)
	if err != nil {
		return nil, err
	}
	cfg, err := mllama.ParseConfig(cfgBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	v := &View{Dir: dir, Options: o, Config: cfg, files: map[string]*viewFile{}}
	ok := false
	defer func() {
		if !ok {
			v.Close()
		}
	}()
	if o.LegacyRope {
		cfgBytes, err = v.legacyRope(cfgBytes)
		if err != nil {
			return nil, err
		}
	}
	v.addBytes("config.json", cfgBytes)
	if err := v.addSideFiles(); err != nil {
		return nil, err
	}
	if err := v.addWeights(); err != nil {
		return nil, err
	}
	ok = true
	return v, nil
}

// Close releases the weight files.
func (v *View) Close() error {
	var first error
	for _, f := range v.open {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	v.open = nil
	return first
}

func (v *View) addBytes(name string, b []byte) {
	v.files[name] = &viewFile{name: name, size: int64(len(b)), at: bytes.NewReader(b)}
}

// legacyRope rewrites text_config.rope_parameters into rope_theta and
// rope_scaling, leaving every other key as it was.
func (v *View) legacyRope(cfg []byte) ([]byte, error) {
	var root map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(v.Dir, "config.json"), err)
	}
	var text map[string]json.RawMessage
	if err := json.Unmarshal(root["text_config"], &text); err != nil || text == nil {
		return cfg, nil
	}
	rp, has := text["rope_parameters"]
	if !has {
		return cfg, nil
	}
	var params map[string]json.RawMessage
	if err := json.Unmarshal(rp, &params); err != nil {
		return nil, fmt.Errorf("%s: text_config.rope_parameters is not an object: %w", filepath.Join(v.Dir, "config.json"), err)
	}
	var changed []string
	if theta, ok := params["rope_theta"]; ok {
		if _, set := text["rope_theta"]; !set {
			text["rope_theta"] = theta
			changed = append(changed, "rope_theta "+string(theta))
		}
	}
	if _, set := text["rope_scaling"]; !set {
		scaling := map[string]json.RawMessage{}
		for k, val := range params {
			if k != "rope_theta" {
				scaling[k] = val
			}
		}
		if rt, ok := scaling["rope_type"]; ok && string(rt) != `"default"` {
			b, err := json.Marshal(scaling)
			if err != nil {
				return nil, err
			}
			text["rope_scaling"] = b
			changed = append(changed, "rope_scaling "+string(b))
		}
	}
	if len(changed) == 0 {
		return cfg, nil
	}
	tb, err := json.Marshal(text)
	if err != nil {
		return nil, err
	}
	root["text_config"] = tb
	out, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, err
	}
	v.Rewrites = append(v.Rewrites, "config.json: text_config.rope_parameters (transformers 5) copied to "+strings.Join(changed, " and "))
	return out, nil
}

// addSideFiles serves the tokenizer and generation files the converter reads.
func (v *View) addSideFiles() error {
	for _, name := range []string{"tokenizer.json", "tokenizer.model", "generation_config.json"} {
		b, err := boundedio.ReadFile(filepath.Join(v.Dir, name), maxSideFile)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		v.addBytes(name, b)
	}
	tc, err := boundedio.ReadFile(filepath.Join(v.Dir, "tokenizer_config.json"), maxSideFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if v.Options.CarryTemplate {
		tc, err = v.carryTemplate(tc)
		if err != nil {
			return err
		}
	}
	v.addBytes("tokenizer_config.json", tc)
	return nil
}

// carryTemplate puts the directory's chat template into tokenizer_config.json
// when that file has none: transformers 4.52+ saves it to chat_template.jinja
// (processors to chat_template.json) and drops it from tokenizer_config.json.
func (v *View) carryTemplate(tc []byte) ([]byte, error) {
	var root map[string]json.RawMessage
	if err := json.Unmarshal(tc, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(v.Dir, "tokenizer_config.json"), err)
	}
	if _, has := root["chat_template"]; has {
		return tc, nil
	}
	tmpl, from, err := readTemplate(v.Dir)
	if err != nil || from == "" {
		return tc, err
	}
	b, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	root["chat_template"] = b
	out, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, err
	}
	v.Rewrites = append(v.Rewrites, "tokenizer_config.json: chat_template copied from "+from)
	return out, nil
}

// readTemplate returns the chat template the directory keeps outside
// tokenizer_config.json and the file it came from ("" when there is none).
// chat_template.jinja wins, as it does for transformers 5's tokenizer.
func readTemplate(dir string) (string, string, error) {
	b, err := boundedio.ReadFile(filepath.Join(dir, "chat_template.jinja"), maxSideFile)
	if err == nil {
		return string(b), "chat_template.jinja", nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", "", err
	}
	b, err = boundedio.ReadFile(filepath.Join(dir, "chat_template.json"), maxSideFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	var ct struct {
		ChatTemplate *string `json:"chat_template"`
	}
	if err := json.Unmarshal(b, &ct); err != nil || ct.ChatTemplate == nil {
		return "", "", fmt.Errorf("%s: no chat_template string", filepath.Join(dir, "chat_template.json"))
	}
	return *ct.ChatTemplate, "chat_template.json", nil
}

// addWeights serves the safetensors files. As-is, that is every root
// *.safetensors (the converter globs them all and ignores the index); the
// legacy view serves only the files the index names, or model.safetensors.
func (v *View) addWeights() error {
	entries, err := os.ReadDir(v.Dir)
	if err != nil {
		return err
	}
	var all []string
	for _, e := range entries {
		n := e.Name()
		switch {
		case e.Type().IsRegular() && strings.HasSuffix(n, ".safetensors"):
			all = append(all, n)
		case strings.HasSuffix(n, ".bin") || strings.HasSuffix(n, ".pth"):
			// The converter would fall back to pickled weights when no
			// safetensors exist; ckptgate never feeds it pickles.
			v.Hidden = append(v.Hidden, n)
		}
	}
	serve := all
	if v.Options.LegacyNames {
		d, err := safetensors.OpenDir(v.Dir)
		if err != nil {
			return err
		}
		d.Close()
		serve = nil
		for n := range d.Files {
			serve = append(serve, n)
		}
		for _, n := range all {
			if _, ok := d.Files[n]; !ok {
				v.Hidden = append(v.Hidden, n)
			}
		}
	}
	if len(serve) == 0 {
		return fmt.Errorf("%s: %w", v.Dir, safetensors.ErrNoWeights)
	}
	sort.Strings(serve)
	renamed := 0
	for _, n := range serve {
		r, err := v.addSafetensors(n)
		if err != nil {
			return err
		}
		renamed += r
	}
	if renamed > 0 {
		v.Rewrites = append(v.Rewrites, fmt.Sprintf("safetensors headers: %d tensor names mapped from the %v layout to the Hub layout", renamed, mllama.LayoutNew))
	}
	return nil
}

// addSafetensors validates one weights file and serves it, with renamed
// header entries when asked. It returns how many names it renamed.
func (v *View) addSafetensors(name string) (int, error) {
	p := filepath.Join(v.Dir, name)
	f, err := safetensors.Open(p)
	if err != nil {
		return 0, err
	}
	v.open = append(v.open, f)
	h := f.Header
	for _, t := range h.Tensors {
		if lay, _ := mllama.ClassifyName(t.Name); lay != mllama.LayoutUnknown && v.Layout == mllama.LayoutUnknown {
			v.Layout = lay
		}
	}
	// ReadHeader checked that the file is exactly 8 + header + data bytes.
	size := h.DataStart() + h.DataLen()
	if !v.Options.LegacyNames {
		v.files[name] = &viewFile{name: name, size: size, at: f.ReaderAt()}
		return 0, nil
	}
	entries := make(map[string]any, len(h.Tensors)+1)
	if h.Metadata != nil {
		entries["__metadata__"] = h.Metadata
	}
	renamed := 0
	for _, t := range h.Tensors {
		lay, legacy := mllama.ClassifyName(t.Name)
		if lay == mllama.LayoutNew {
			renamed++
		}
		if _, dup := entries[legacy]; dup {
			return 0, fmt.Errorf("%s: tensors %q and another name both map to %q", p, t.Name, legacy)
		}
		entries[legacy] = map[string]any{
			"dtype":        t.DType.String(),
			"shape":        t.Shape,
			"data_offsets": []int64{t.Begin, t.End},
		}
	}
	if renamed == 0 {
		v.files[name] = &viewFile{name: name, size: size, at: f.ReaderAt()}
		return 0, nil
	}
	hdr, err := json.Marshal(entries)
	if err != nil {
		return 0, err
	}
	// Pad with spaces to 8 bytes, as safetensors writers do.
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	head := make([]byte, 8, 8+len(hdr))
	binary.LittleEndian.PutUint64(head, uint64(len(hdr)))
	head = append(head, hdr...)
	data := io.NewSectionReader(f.ReaderAt(), h.DataStart(), h.DataLen())
	v.files[name] = &viewFile{name: name, size: int64(len(head)) + h.DataLen(), at: &concatReaderAt{head: head, tail: data}}
	return renamed, nil
}

// concatReaderAt reads head followed by tail.
type concatReaderAt struct {
	head []byte
	tail io.ReaderAt
}

func (c *concatReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	if off < int64(len(c.head)) {
		n = copy(p, c.head[off:])
		if n == len(p) {
			return n, nil
		}
	}
	m, err := c.tail.ReadAt(p[n:], off+int64(n)-int64(len(c.head)))
	return n + m, err
}

// Open implements fs.FS.
func (v *View) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return &viewDir{v: v}, nil
	}
	vf, ok := v.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &openFile{vf: vf, SectionReader: io.NewSectionReader(vf.at, 0, vf.size)}, nil
}

// ReadDir implements fs.ReadDirFS for the root, which is all there is.
func (v *View) ReadDir(name string) ([]fs.DirEntry, error) {
	if name != "." {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	out := make([]fs.DirEntry, 0, len(v.files))
	for _, vf := range v.files {
		out = append(out, fs.FileInfoToDirEntry(fileInfo{vf}))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// Names lists the files the View serves.
func (v *View) Names() []string {
	return slices.Sorted(maps.Keys(v.files))
}

type openFile struct {
	vf *viewFile
	*io.SectionReader
}

func (f *openFile) Stat() (fs.FileInfo, error) { return fileInfo{f.vf}, nil }
func (f *openFile) Close() error               { return nil }

type fileInfo struct{ vf *viewFile }

func (i fileInfo) Name() string       { return path.Base(i.vf.name) }
func (i fileInfo) Size() int64        { return i.vf.size }
func (i fileInfo) Mode() fs.FileMode  { return 0o444 }
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }

type viewDir struct {
	v    *View
	read int
}

func (d *viewDir) Stat() (fs.FileInfo, error) { return dirInfo{}, nil }
func (d *viewDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: ".", Err: errors.New("is a directory")}
}
func (d *viewDir) Close() error { return nil }
func (d *viewDir) ReadDir(n int) ([]fs.DirEntry, error) {
	es, _ := d.v.ReadDir(".")
	es = es[min(d.read, len(es)):]
	if n > 0 {
		if len(es) == 0 {
			return nil, io.EOF
		}
		es = es[:min(n, len(es))]
	}
	d.read += len(es)
	return es, nil
}

type dirInfo struct{}

func (dirInfo) Name() string       { return "." }
func (dirInfo) Size() int64        { return 0 }
func (dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (dirInfo) ModTime() time.Time { return time.Time{} }
func (dirInfo) IsDir() bool        { return true }
func (dirInfo) Sys() any           { return nil }
