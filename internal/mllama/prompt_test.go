package mllama

import (
	"errors"
	"image"
	"slices"
	"sync"
	"testing"

	"github.com/ardanlabs/jinja"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/vision"
)

func goldenConversation(tb testing.TB, name string) jinja.Value {
	tb.Helper()
	v, err := chat.DecodeJSON(loadGoldens(tb).Templates[name].Messages)
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

// forwardPrompts are the conversations of the forward goldens and the
// fixture image each shows, if any.
var forwardPrompts = []struct{ name, image string }{
	{"text_user", ""},
	{"image_user", "images/landscape_800x600.png"},
}

// prepareGolden prepares a goldens.json conversation, with its fixture
// image if any, through base/'s processor on the goldens' date.
func prepareGolden(tb testing.TB, name, imagePath string) *Prepared {
	tb.Helper()
	var imgs []image.Image
	if imagePath != "" {
		img, err := vision.DecodeFile(fixtures + imagePath)
		if err != nil {
			tb.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	p, err := baseProcessor(tb).Prepare(goldenConversation(tb, name), imgs, "27 Nov 2026")
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return p
}

// TestPrepareMatchesProcessor renders, tokenizes and preprocesses the two
// forward-golden conversations from base/ (the same template, tokenizer and
// processor config as ref/fsdp1-fp32) and compares every model input with
// what transformers' MllamaProcessor built.
func TestPrepareMatchesProcessor(t *testing.T) {
	gold := loadForwardGoldens(t)
	for _, tc := range forwardPrompts {
		got := prepareGolden(t, tc.name, tc.image)
		if want := gold[tc.name].Rendered; got.Text != want {
			t.Errorf("%s: rendered\n%q\nwant\n%q", tc.name, got.Text, want)
		}
		if !slices.Equal(got.Prompt.IDs, gold[tc.name].InputIDs) {
			t.Errorf("%s: ids %v, want %v", tc.name, got.Prompt.IDs, gold[tc.name].InputIDs)
		}
		want := goldenPrompt(t, tc.name)
		if len(got.Prompt.Images) != len(want.Images) {
			t.Fatalf("%s: %d images, want %d", tc.name, len(got.Prompt.Images), len(want.Images))
		}
		for i, g := range got.Prompt.Images {
			w := want.Images[i]
			if g.AspectRatioID != w.AspectRatioID || !slices.Equal(g.AspectRatioMask, w.AspectRatioMask) {
				t.Errorf("%s: image %d: aspect ratio id %d mask %v, want %d %v", tc.name, i, g.AspectRatioID, g.AspectRatioMask, w.AspectRatioID, w.AspectRatioMask)
			}
			// vision's own bound against the processor's pixels.
			if d, at := vision.MaxAbsDiff(g.PixelValues, w.PixelValues); d > 0.02 {
				t.Errorf("%s: image %d: pixel %d differs by %g", tc.name, i, at, d)
			}
		}
		if !slices.Equal(flatten(got.Prompt.CrossAttentionMask), flatten(want.CrossAttentionMask)) {
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
