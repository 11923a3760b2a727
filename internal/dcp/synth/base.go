package synth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// BaseSpec describes a base Hugging Face directory to write.
type BaseSpec struct {
	// Config gives the sizes written into config.json and the image
	// processor's tile geometry.
	Config *mllama.Config
	// Tensors are the weights, written under their legacy names.
	Tensors []Tensor
	// Template is a Mllama directory whose side files are copied (its
	// config.json and processor config rewritten with Config's sizes, its
	// weights ignored).
	Template string
	// Jobs bounds the tensors written at once (0: GOMAXPROCS).
	Jobs int
}

// WriteBase writes a base model directory into dir (created if needed):
// the template's side files, config.json with the spec's sizes and vals'
// dtype, and one model.safetensors (transformers 5.x's default for models
// under 50GB) laid out byte for byte as the Rust writer lays it out, holding
// vals under the tensors' legacy names. The weights file is fsynced.
func WriteBase(ctx context.Context, dir string, spec BaseSpec, vals Values) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(spec.Template)
	if err != nil {
		return fmt.Errorf("synth: template: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasSuffix(n, ".safetensors") || n == safetensors.IndexName {
			continue
		}
		src, dst := filepath.Join(spec.Template, n), filepath.Join(dir, n)
		switch n {
		case "config.json":
			err = rewriteJSON(src, dst, func(m map[string]any) error { return setConfig(m, spec.Config, vals.DType().TorchName()) })
		case "processor_config.json", "preprocessor_config.json":
			err = rewriteJSON(src, dst, func(m map[string]any) error { return setTiles(m, &spec.Config.Vision) })
		default:
			err = copyFile(src, dst)
		}
		if err != nil {
			return err
		}
	}
	return writeWeights(ctx, filepath.Join(dir, safetensors.SingleName), spec, vals)
}

// rewriteJSON edits a JSON file as transformers writes them (indent 2,
// sorted keys, trailing newline), keeping number literals as they were.
func rewriteJSON(src, dst string, edit func(map[string]any) error) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("synth: %s: %w", src, err)
	}
	if err := edit(m); err != nil {
		return fmt.Errorf("synth: %s: %w", src, err)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return err
	}
	return os.WriteFile(dst, out.Bytes(), 0o644)
}

func sub(m map[string]any, key string) (map[string]any, error) {
	s, ok := m[key].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("no %s object", key)
	}
	return s, nil
}

// setConfig writes cfg's sizes into a config.json object.
func setConfig(m map[string]any, cfg *mllama.Config, dtypeName string) error {
	t, err := sub(m, "text_config")
	if err != nil {
		return err
	}
	v, err := sub(m, "vision_config")
	if err != nil {
		return err
	}
	if _, ok := m["torch_dtype"]; ok {
		m["torch_dtype"] = dtypeName
	} else {
		m["dtype"] = dtypeName
	}
	if cfg.ImageTokenIndex != 0 {
		m["image_token_index"] = cfg.ImageTokenIndex
	}
	tc, vc := &cfg.Text, &cfg.Vision
	for k, x := range map[string]any{
		"vocab_size": tc.VocabSize, "hidden_size": tc.HiddenSize, "num_hidden_layers": tc.NumHiddenLayers,
		"num_attention_heads": tc.NumAttentionHeads, "num_key_value_heads": tc.NumKeyValueHeads,
		"intermediate_size": tc.IntermediateSize, "cross_attention_layers": tc.CrossAttentionLayers,
	} {
		t[k] = x
	}
	for k, x := range map[string]any{
		"hidden_size": vc.HiddenSize, "num_hidden_layers": vc.NumHiddenLayers, "num_global_layers": vc.NumGlobalLayers,
		"attention_heads": vc.AttentionHeads, "intermediate_size": vc.IntermediateSize, "vision_output_dim": vc.VisionOutputDim,
		"image_size": vc.ImageSize, "patch_size": vc.PatchSize, "num_channels": vc.NumChannels, "max_num_tiles": vc.MaxNumTiles,
		"intermediate_layers_indices": vc.IntermediateLayersIndices, "supported_aspect_ratios": vc.SupportedAspectRatios,
	} {
		v[k] = x
	}
	return nil
}

// setTiles makes an image processor config tile images as vc expects, in
// either the 5.x processor_config.json form (nested under image_processor)
// or the 4.x preprocessor_config.json form.
func setTiles(m map[string]any, vc *mllama.VisionConfig) error {
	ip := m
	if s, err := sub(m, "image_processor"); err == nil {
		ip = s
	}
	ip["size"] = map[string]any{"height": vc.ImageSize, "width": vc.ImageSize}
	ip["max_image_tiles"] = vc.MaxNumTiles
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeWeights writes model.safetensors, tensors in parallel at their
// offsets, each streamed through one scratch buffer per worker.
func writeWeights(ctx context.Context, path string, spec BaseSpec, vals Values) error {
	d := vals.DType()
	entries := make([]safetensors.Entry, len(spec.Tensors))
	index := make(map[string]int, len(spec.Tensors))
	for i, t := range spec.Tensors {
		entries[i] = safetensors.Entry{Name: t.Legacy, DType: d, Shape: t.Shape}
		index[t.Legacy] = i
	}
	l, err := safetensors.NewLayout(map[string]string{"format": "pt"}, entries)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(l.Size()); err != nil {
		return err
	}
	if _, err := f.WriteAt(l.Header, 0); err != nil {
		return err
	}
	jobs := spec.Jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	work := make(chan safetensors.TensorInfo)
	g, ctx := errgroup.WithContext(ctx)
	for range jobs {
		g.Go(func() error {
			buf := make([]byte, 4<<20)
			esize := int64(d.Size())
			for ti := range work {
				n := ti.NumElements()
				for at := int64(0); at < n; {
					if err := ctx.Err(); err != nil {
						return err
					}
					k := min(n-at, int64(len(buf))/esize)
					b := buf[:k*esize]
					vals.Fill(b, index[ti.Name], at)
					if _, err := f.WriteAt(b, l.DataStart()+ti.Begin+at*esize); err != nil {
						return fmt.Errorf("writing %s: %w", path, err)
					}
					at += k
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for _, ti := range l.Tensors {
			select {
			case work <- ti:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return f.Close()
}
