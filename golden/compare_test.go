package golden

import (
	"math"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/reports"
)

// Each kind of change to a real recording lands in its category: the
// committed recording is compared with a copy changed in one place.
func TestCompareCategories(t *testing.T) {
	const (
		tensor = "language_model.model.layers.0.mlp.up_proj.weight"
		srcT   = "model.language_model.layers.0.mlp.up_proj.weight"
	)
	scale := func(s *Stats, f float64) {
		for i := range s.Sample {
			s.Sample[i] *= Num(f)
		}
		s.L2 *= Num(f)
	}
	cases := []struct {
		name    string
		change  func(g *Golden)
		key     string
		status  reports.Status
		message string
	}{
		{"tensor re-rounded", func(g *Golden) {
			w := g.Weights.Tensors[tensor]
			w.SHA256 = "0"
			scale(w.Stats, 1+1.0/1024)
		}, "golden.tensors " + tensor, reports.StatusWarn, "within tolerance"},
		{"tensor moved", func(g *Golden) {
			w := g.Weights.Tensors[tensor]
			w.SHA256 = "0"
			scale(w.Stats, 1.01)
		}, "golden.tensors " + tensor, reports.StatusFail, "beyond tolerance: sampled values 0.01 relative RMS"},
		{"tensor turned NaN", func(g *Golden) {
			w := g.Weights.Tensors[tensor]
			w.SHA256, w.Stats.NaN = "0", 1
		}, "golden.tensors " + tensor, reports.StatusFail, "1 NaN"},
		{"tensor cast", func(g *Golden) { g.Weights.Tensors[tensor].DType = "F32" }, "golden.tensors " + tensor, reports.StatusFail, "F32 [20 8] (golden: BF16 [20 8])"},
		{"tensor gone", func(g *Golden) { delete(g.Weights.Tensors, tensor) }, "golden.tensors tensor names", reports.StatusFail, "1 tensors of the golden are missing (" + tensor + ")"},
		{"layout", func(g *Golden) { g.Weights.Layout = "new" }, "golden.tensors layout", reports.StatusFail, "new layout (golden: legacy)"},
		{"shards", func(g *Golden) { g.Weights.Files = []string{"a", "b"} }, "golden.tensors tensors", reports.StatusPass, "weight files a, b (golden: model.safetensors)"},
		{"source renamed", func(g *Golden) {
			g.Source.Tensors["model."+srcT] = g.Source.Tensors[srcT]
			delete(g.Source.Tensors, srcT)
		}, "golden.source source tensor names", reports.StatusFail, "1 source tensors of the golden are missing"},
		{"source resharded", func(g *Golden) { g.Source.Tensors[srcT].Chunks = 2 }, "golden.source source tensors", reports.StatusPass, "1 tensors are saved in a different number of chunks"},
		{"dcp version", func(g *Golden) { g.Source.DCP.Version = "" }, "golden.source source tensors", reports.StatusPass, "DCP metadata version none (golden: 1.0.0)"},
		{"config", func(g *Golden) { g.Config.Content["image_token_index"] = 7.0 }, "golden.config config.json", reports.StatusFail, "image_token_index: 128256 vs 7"},
		{"config form", func(g *Golden) { g.Config.Forms = map[string]string{"dtype": "torch_dtype"} }, "golden.config config.json", reports.StatusPass, "dtype: torch_dtype (golden: none)"},
		{"template", func(g *Golden) { g.ChatTemplate["processor"].SHA256 = "0" }, "golden.chat_template processor", reports.StatusFail, "differs from the golden's"},
		{"tokenizer", func(g *Golden) { g.Tokenizer.Named["eos_token"] = "<|end_of_text|>" }, "golden.tokenizer tokenizer.json", reports.StatusFail, `eos_token is "<|end_of_text|>" (golden: "<|eot_id|>")`},
		{"render", func(g *Golden) { *g.Renders["text_user"].Text += " " }, "golden.renders text_user", reports.StatusFail, "first difference at byte"},
		{"encoding", func(g *Golden) { g.Encodings[0].IDs[1]++ }, `golden.encodings "Hello world!"`, reports.StatusFail, "first difference at position 1"},
		{"pixels within", func(g *Golden) {
			p := g.Preprocess[promptImage]
			p.PixelSHA256, p.Sample[3] = "0", p.Sample[3]+0.01
		}, "golden.preprocess " + promptImage, reports.StatusWarn, "within tolerance: pixel_values differ; sampled pixels by up to 0.01"},
		{"pixels beyond", func(g *Golden) {
			p := g.Preprocess[promptImage]
			p.PixelSHA256, p.Means[1][2] = "0", p.Means[1][2]+0.01
		}, "golden.preprocess " + promptImage, reports.StatusFail, "means by up to 0.01 (bound 0.005)"},
		{"tiles", func(g *Golden) { g.Preprocess[promptImage].AspectRatioID = 1 }, "golden.preprocess " + promptImage, reports.StatusFail, "aspect_ratio_id 1"},
		{"logits within", func(g *Golden) {
			f := g.Forward["text_user"]
			f.LogitsSHA256 = "0"
			for i := range f.TopLogits {
				f.TopLogits[i] *= 1 + 1e-6
			}
		}, "golden.forward text_user", reports.StatusWarn, "within tolerance: logits 1e-06 relative RMS"},
		{"logits beyond", func(g *Golden) {
			f := g.Forward["text_user"]
			f.LogitsSHA256 = "0"
			for i := range f.TopLogits {
				f.TopLogits[i] *= 1 + 1e-3
			}
		}, "golden.forward text_user", reports.StatusFail, "beyond tolerance: logits 0.001 relative RMS"},
		{"top-5", func(g *Golden) {
			f := g.Forward["image_user"]
			f.LogitsSHA256 = "0"
			f.TopIDs[3], f.TopIDs[4] = f.TopIDs[4], f.TopIDs[3]
		}, "golden.forward image_user", reports.StatusFail, "top-5 ids differ"},
		{"greedy", func(g *Golden) { g.Forward["image_user"].Generated[5] = 1 }, "golden.forward image_user", reports.StatusFail, "greedy tokens differ"},
		{"prompt", func(g *Golden) { g.Forward["image_user"].InputIDs[2] = 1 }, "golden.forward image_user", reports.StatusFail, "tokenizes differently"},
		{"weights unreadable", func(g *Golden) {
			g.Weights = nil
			g.Missing = map[string]string{ItemTensors: "no model.safetensors"}
		}, "golden.tensors weights", reports.StatusFail, "could not be read: no model.safetensors"},
	}
	want := committed(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := committed(t)
			tc.change(got)
			fs := Compare(want, got, DefaultTolerances)
			f, ok := byKey(fs)[tc.key]
			if !ok {
				t.Fatalf("no finding %q", tc.key)
			}
			if f.Status != tc.status || !strings.Contains(f.Message, tc.message) {
				t.Errorf("%s: %s %q, want %s containing %q", tc.key, f.Status, f.Message, tc.status, tc.message)
			}
			// Nothing else moves.
			for _, o := range fs {
				if o.ID+" "+o.Subject != tc.key && o.Status != reports.StatusPass && !(o.ID == "golden.tensors" && tc.name == "tensor gone") &&
					!(o.ID == "golden.source" && tc.name == "source renamed") {
					t.Errorf("also %s %s: %s %s", o.ID, o.Subject, o.Status, o.Message)
				}
			}
		})
	}
}

func TestTensorChange(t *testing.T) {
	s := func(l2 float64, v ...float64) *Stats {
		st := &Stats{L2: Num(l2)}
		for _, x := range v {
			st.Sample = append(st.Sample, Num(x))
		}
		return st
	}
	for _, tc := range []struct {
		name   string
		w, g   *Stats
		within bool
		why    string
	}{
		{"equal", s(1, 1, 2), s(1, 1, 2), true, ""},
		{"zero golden", s(0, 0, 0), s(0, 0, 1e-30), false, ""},
		{"nan both", s(1, math.NaN(), 1), s(1, math.NaN(), 1), true, ""},
		{"nan one", s(1, math.NaN(), 1), s(1, 1, 1), false, ""},
		{"lengths", s(1, 1), s(1, 1, 1), false, "2 sampled values, the golden 1"},
		{"integer", nil, nil, false, "not a floating-point tensor"},
	} {
		_, _, within, why := tensorChange(tc.w, tc.g, DefaultTolerances.TensorRel)
		if within != tc.within || !strings.Contains(why, tc.why) {
			t.Errorf("%s: within %v (%q), want %v (%q)", tc.name, within, why, tc.within, tc.why)
		}
	}
}
