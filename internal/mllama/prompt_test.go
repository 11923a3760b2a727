package mllama

import (
	"encoding/json"
	"errors"
	"image"
	"os"
	"sync"
	"testing"

	"github.com/ardanlabs/jinja"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/vision"
)

// conversationGoldens are goldens.json's chat conversations (messages as
// raw JSON, key order kept) and the forward goldens' rendered prompts.
type conversationGoldens struct {
	Templates map[string]struct {
		Messages json.RawMessage `json:"messages"`
	} `json:"templates"`
	Forward map[string]struct {
		Rendered string `json:"rendered"`
	} `json:"forward"`
}

func loadConversations(tb testing.TB) *conversationGoldens {
	tb.Helper()
	b, err := os.ReadFile(fixtures + "goldens.json")
	if err != nil {
		tb.Fatal(err)
	}
	var g conversationGoldens
	if err := json.Unmarshal(b, &g); err != nil {
		tb.Fatal(err)
	}
	return &g
}

func goldenConversation(tb testing.TB, name string) jinja.Value {
	tb.Helper()
	v, err := chat.DecodeJSON(loadConversations(tb).Templates[name].Messages)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

var baseProc struct {
	once sync.Once
	p    *Processor
	err  error
}

// baseProcessor loads base/'s template, tokenizer and image-processor
// config once per test binary (the tokenizer takes a while to parse).
func baseProcessor(tb testing.TB) *Processor {
	tb.Helper()
	baseProc.once.Do(func() {
		cfg, err := LoadConfig(fixtures + "base/config.json")
		if err != nil {
			baseProc.err = err
			return
		}
		baseProc.p, baseProc.err = LoadProcessor(fixtures+"base", cfg)
	})
	if baseProc.err != nil {
		tb.Fatal(baseProc.err)
	}
	return baseProc.p
}

// TestPrepareMatchesProcessor renders, tokenizes and preprocesses the two
// forward-golden conversations from base/ (the same template, tokenizer and
// processor config as ref/fsdp1-fp32) and compares every model input with
// what transformers' MllamaProcessor built.
func TestPrepareMatchesProcessor(t *testing.T) {
	proc := baseProcessor(t)
	gold := loadForwardGoldens(t)
	conv := loadConversations(t)
	for _, tc := range []struct {
		name  string
		image string
	}{{"text_user", ""}, {"image_user", "images/landscape_800x600.png"}} {
		var imgs []image.Image
		if tc.image != "" {
			img, err := vision.DecodeFile(fixtures + tc.image)
			if err != nil {
				t.Fatal(err)
			}
			imgs = append(imgs, img)
		}
		got, err := proc.Prepare(goldenConversation(t, tc.name), imgs, "27 Nov 2026")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if want := conv.Forward[tc.name].Rendered; got.Text != want {
			t.Errorf("%s: rendered\n%q\nwant\n%q", tc.name, got.Text, want)
		}
		if !intsEqual(got.Prompt.IDs, gold[tc.name].InputIDs) {
			t.Errorf("%s: ids %v, want %v", tc.name, got.Prompt.IDs, gold[tc.name].InputIDs)
		}
		want := goldenPrompt(t, tc.name)
		if len(got.Prompt.Images) != len(want.Images) {
			t.Fatalf("%s: %d images, want %d", tc.name, len(got.Prompt.Images), len(want.Images))
		}
		for i, g := range got.Prompt.Images {
			w := want.Images[i]
			if g.AspectRatioID != w.AspectRatioID || !intsEqual(g.AspectRatioMask, w.AspectRatioMask) {
				t.Errorf("%s: image %d: aspect ratio id %d mask %v, want %d %v", tc.name, i, g.AspectRatioID, g.AspectRatioMask, w.AspectRatioID, w.AspectRatioMask)
			}
			// vision's own bound against the processor's pixels.
			if d, at := vision.MaxAbsDiff(g.PixelValues, w.PixelValues); d > 0.02 {
				t.Errorf("%s: image %d: pixel %d differs by %g", tc.name, i, at, d)
			}
		}
		if !intsEqual(flatten(got.Prompt.CrossAttentionMask), flatten(want.CrossAttentionMask)) {
			t.Errorf("%s: cross-attention mask %v, want %v", tc.name, got.Prompt.CrossAttentionMask, want.CrossAttentionMask)
		}
	}
}

func flatten(m [][][]int) []int {
	var out []int
	for _, r := range m {
		for _, i := range r {
			out = append(out, i...)
		}
	}
	return out
}

func TestPrepareErrors(t *testing.T) {
	proc := baseProcessor(t)
	img := image.NewRGBA(image.Rect(0, 0, 20, 10))
	for _, tc := range []struct {
		name     string
		messages jinja.Value
		images   []image.Image
	}{
		{"image without token", goldenConversation(t, "text_user"), []image.Image{img}},
		{"token without image", goldenConversation(t, "image_user"), nil},
	} {
		if _, err := proc.Prepare(tc.messages, tc.images, ""); !errors.Is(err, ErrInput) {
			t.Errorf("%s: error %v, want ErrInput", tc.name, err)
		}
	}
}
