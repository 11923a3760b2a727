package golden

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// What a recording holds agrees with what torch and transformers computed
// for the same inputs (the fixtures' manifests and goldens), so that a
// recording is a record of the model, not of ckptgate's mistakes.

type refManifests struct {
	Manifests map[string]map[string]struct {
		DType  string  `json:"dtype"`
		Shape  []int64 `json:"shape"`
		SHA256 string  `json:"sha256"`
	} `json:"manifests"`
}

func TestTensorsMatchTorchManifests(t *testing.T) {
	var ref refManifests
	readJSON(t, filepath.Join(fixtures, "ref-manifests.json"), &ref)
	for _, tc := range []struct {
		name     string
		g        *Golden
		manifest string
	}{
		{"base", baseRecording(t), "base"},
		// The default conversion of a bf16 run is what HF's reference
		// procedure writes at bf16.
		{"fsdp1", fsdp1Recording(t), "fsdp1-bf16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ref.Manifests[tc.manifest]
			if tc.g.Weights == nil || len(tc.g.Weights.Tensors) != len(m) || len(m) == 0 {
				t.Fatalf("recorded weights %v, manifest %d tensors", tc.g.Weights != nil, len(m))
			}
			if tc.g.Weights.Layout != "legacy" {
				t.Errorf("layout %s, want legacy (save_pretrained's)", tc.g.Weights.Layout)
			}
			for name, want := range m {
				got := tc.g.Weights.Tensors[name]
				if got == nil || got.SHA256 != want.SHA256 || got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) {
					t.Errorf("%s: recorded %+v, torch %+v", name, got, want)
				}
			}
		})
	}
}

// The source is recorded as stored: fsdp1 trained in bf16, so its stored
// tensors are exactly what HF's bf16 reference conversion writes.
func TestSourceMatchesTorchManifest(t *testing.T) {
	var ref refManifests
	readJSON(t, filepath.Join(fixtures, "ref-manifests.json"), &ref)
	s := fsdp1Recording(t).Source
	if s == nil || s.Format != "dcp" || s.Layout != "new" || s.DCP == nil || s.DCP.Version != "1.0.0" || s.DCP.Entries != 100 {
		t.Fatalf("source: %+v", s)
	}
	names := make([]string, 0, len(s.Tensors))
	for n := range s.Tensors {
		names = append(names, n)
	}
	mp, err := mllama.MapNames(names)
	if err != nil {
		t.Fatal(err)
	}
	m := ref.Manifests["fsdp1-bf16"]
	for _, n := range names {
		got, want := s.Tensors[n], m[mp.Legacy[n]]
		// World size 4: a tensor of fewer rows than ranks is saved in fewer
		// chunks.
		if got.SHA256 != want.SHA256 || got.DType != "BF16" || got.Chunks < 1 || got.Chunks > 4 {
			t.Errorf("%s (%s): recorded %s %s %d chunks, torch %s", n, mp.Legacy[n], got.SHA256, got.DType, got.Chunks, want.SHA256)
		}
	}
}

type hfGoldens struct {
	Templates map[string]struct {
		Rendered  *string `json:"rendered"`
		InputIDs  []int   `json:"input_ids"`
		Error     string  `json:"error"`
		ErrorType string  `json:"error_type"`
	} `json:"templates"`
	Tokenizer []struct {
		Text       string `json:"text"`
		IDs        []int  `json:"ids"`
		IDsWithBOS []int  `json:"ids_with_bos"`
		Decoded    string `json:"decoded"`
	} `json:"tokenizer"`
	Forward map[string]struct {
		InputIDs  []int     `json:"input_ids"`
		TopIDs    []int     `json:"top_ids"`
		TopLogits []float64 `json:"top_logits"`
		Generated []int     `json:"generated"`
		Top256    *struct {
			TopIDs    []int     `json:"top_ids"`
			TopLogits []float64 `json:"top_logits"`
			Stats     struct {
				LogSumExp float64 `json:"logsumexp"`
				Entropy   float64 `json:"entropy_nats"`
			} `json:"stats"`
		} `json:"last_logits_top256"`
	} `json:"forward"`
}

func TestRendersAndEncodingsMatchTransformers(t *testing.T) {
	var hf hfGoldens
	readJSON(t, filepath.Join(fixtures, "goldens.json"), &hf)
	g := baseRecording(t)
	if len(g.Renders) != len(hf.Templates) || len(hf.Templates) == 0 {
		t.Fatalf("%d renders, transformers made %d", len(g.Renders), len(hf.Templates))
	}
	for name, want := range hf.Templates {
		got := g.Renders[name]
		switch {
		case got == nil:
			t.Errorf("%s: not rendered", name)
		case want.Rendered == nil:
			if got.ErrorType != want.ErrorType || got.Error != want.Error {
				t.Errorf("%s: %s %q, transformers raised %s %q", name, got.ErrorType, got.Error, want.ErrorType, want.Error)
			}
		case got.Text == nil || *got.Text != *want.Rendered || !slices.Equal(got.IDs, want.InputIDs):
			t.Errorf("%s: render or ids differ from transformers'", name)
		}
	}
	if len(g.Encodings) != len(hf.Tokenizer) {
		t.Fatalf("%d encodings, transformers made %d", len(g.Encodings), len(hf.Tokenizer))
	}
	for i, want := range hf.Tokenizer {
		got := g.Encodings[i]
		if got.Text != want.Text || !slices.Equal(got.IDs, want.IDs) || !slices.Equal(got.IDsWithBOS, want.IDsWithBOS) || got.Decoded != want.Decoded {
			t.Errorf("%q: recorded %+v, transformers %+v", want.Text, got, want)
		}
	}
}

// The forward record agrees with transformers on the same weights: the dev
// goldens (top 10 and greedy tokens of ref/fsdp1-fp32, whose values are the
// bf16 run's exactly) and run 2's lean top-256 record of the same logits.
func TestForwardMatchesTransformers(t *testing.T) {
	var run1, run2 hfGoldens
	readJSON(t, filepath.Join(fixtures, "goldens.json"), &run1)
	readJSON(t, filepath.Join(run2Dir, "goldens.json"), &run2)
	g := fsdp1Recording(t)
	for _, name := range []string{"text_user", "image_user"} {
		t.Run(name, func(t *testing.T) {
			got, want, lean := g.Forward[name], run1.Forward[name], run2.Forward[name].Top256
			if got == nil || lean == nil {
				t.Fatalf("recorded %v, run 2's top-256 record %v", got != nil, lean != nil)
			}
			if !slices.Equal(got.InputIDs, want.InputIDs) || !slices.Equal(got.Generated, want.Generated) || !slices.Equal(got.TopIDs[:5], want.TopIDs[:5]) {
				t.Errorf("ids %v, greedy %v, top-5 %v; transformers %v, %v, %v", got.InputIDs, got.Generated, got.TopIDs[:5], want.InputIDs, want.Generated, want.TopIDs[:5])
			}
			if len(got.logits) != 128256 {
				t.Fatalf("%d logits", len(got.logits))
			}
			var d2, w2 float64
			for i, id := range lean.TopIDs {
				d := float64(got.logits[id]) - lean.TopLogits[i]
				d2 += d * d
				w2 += lean.TopLogits[i] * lean.TopLogits[i]
			}
			if rel := math.Sqrt(d2 / w2); !(rel <= DefaultTolerances.LogitsRelRMS) {
				t.Errorf("logits on transformers' top 256 ids: %.3g relative RMS, bound %g", rel, DefaultTolerances.LogitsRelRMS)
			}
			if d := math.Abs(float64(got.Stats.LogSumExp) - lean.Stats.LogSumExp); d > 1e-4 {
				t.Errorf("logsumexp %v, transformers %v", got.Stats.LogSumExp, lean.Stats.LogSumExp)
			}
			if d := math.Abs(float64(got.Stats.Entropy) - lean.Stats.Entropy); d > 1e-4 {
				t.Errorf("entropy %v, transformers %v", got.Stats.Entropy, lean.Stats.Entropy)
			}
		})
	}
}

func TestPreprocessMatchesTransformers(t *testing.T) {
	ref, err := vision.LoadGoldens(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	g := baseRecording(t)
	n := 0
	for _, e := range ref.Entries {
		if e.Config != "mllama-tiny" {
			continue
		}
		n++
		got := g.Preprocess[filepath.Base(e.Image)]
		if got == nil {
			t.Errorf("%s: not recorded", e.Image)
			continue
		}
		if got.AspectRatioID != e.AspectRatioID || got.NumTiles != e.NumTiles || !slices.Equal(got.AspectRatioMask, e.AspectRatioMask) {
			t.Errorf("%s: aspect ratio %d, %d tiles, mask %v; transformers %d, %d, %v", e.Image, got.AspectRatioID, got.NumTiles, got.AspectRatioMask,
				e.AspectRatioID, e.NumTiles, e.AspectRatioMask)
		}
		if len(got.Means) != len(e.TileChannelMeans) {
			t.Errorf("%s: %d tiles of means, transformers %d", e.Image, len(got.Means), len(e.TileChannelMeans))
			continue
		}
		for ti := range got.Means {
			for c := range got.Means[ti] {
				if d := math.Abs(float64(got.Means[ti][c]) - e.TileChannelMeans[ti][c]); d > vision.MeanTolerance {
					t.Errorf("%s tile %d channel %d: mean %v, transformers %v", e.Image, ti, c, got.Means[ti][c], e.TileChannelMeans[ti][c])
				}
			}
		}
	}
	if n != 9 || len(g.Preprocess) != 9 {
		t.Errorf("%d goldens for the tiny config, %d recorded", n, len(g.Preprocess))
	}
}
