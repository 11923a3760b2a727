package chat

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pythonRefs are outputs of Python itself (testdata/make-python-refs.py):
// the fixture template rendered by Jinja2 3.1.6 set up as transformers 5.17
// sets it up, on the spec's cases A–X and a few more; datetime.strftime; and
// bytes.decode("utf-8", "replace").
type pythonRefs struct {
	Renders []struct {
		Name      string          `json:"name"`
		Messages  json.RawMessage `json:"messages"`
		Kwargs    json.RawMessage `json:"kwargs"`
		Rendered  *string         `json:"rendered"`
		Error     string          `json:"error"`
		ErrorType string          `json:"error_type"`
	} `json:"renders"`
	Strftime []struct {
		Time   string `json:"time"`
		Format string `json:"format"`
		Out    string `json:"out"`
	} `json:"strftime"`
	UTF8 []struct {
		Hex  string `json:"hex"`
		Text string `json:"text"`
	} `json:"utf8"`
}

func loadPythonRefs(t *testing.T) *pythonRefs {
	t.Helper()
	b, err := os.ReadFile("testdata/python-refs.json")
	if err != nil {
		t.Fatal(err)
	}
	var p pythonRefs
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestPythonRenders covers what goldens.json does not: tools in the system
// message, custom_tools, string tool arguments, empty tools, list content
// printed as a Python repr, roles passed through, numbers in tojson, and
// the TypeErrors Python raises on non-iterable content and null tool_calls.
func TestPythonRenders(t *testing.T) {
	refs := loadPythonRefs(t)
	if len(refs.Renders) < 25 {
		t.Fatalf("python-refs.json has %d renders", len(refs.Renders))
	}
	tpl, err := Compile(baseTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	special := map[string]string{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>"}
	// The generator's fixed clock for strftime_now.
	now := func() time.Time { return time.Date(2026, 11, 27, 9, 5, 3, 123456000, time.UTC) }
	for _, c := range refs.Renders {
		t.Run(c.Name, func(t *testing.T) {
			req, err := TemplateCase{Messages: c.Messages, Kwargs: c.Kwargs}.Request(special)
			if err != nil {
				t.Fatal(err)
			}
			req.Now = now
			got, err := tpl.Render(req)
			if c.Rendered == nil {
				var te *TemplateError
				if !errors.As(err, &te) || te.Type != c.ErrorType || te.Message != c.Error {
					t.Fatalf("got %q, %v; want %s %q", got, err, c.ErrorType, c.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(*c.Rendered, got); diff != "" {
				t.Errorf("(-python +got):\n%s", diff)
			}
		})
	}
}

func TestStrftime(t *testing.T) {
	refs := loadPythonRefs(t)
	for _, c := range refs.Strftime {
		tm, err := time.Parse("2006-01-02T15:04:05.999999", c.Time)
		if err != nil {
			t.Fatal(err)
		}
		if got := Strftime(tm, c.Format); got != c.Out {
			t.Errorf("Strftime(%s, %q) = %q, Python %q", c.Time, c.Format, got, c.Out)
		}
	}
}

// TestLossyUTF8 compares the replacement of malformed UTF-8 with Python's
// errors="replace" (maximal subparts, as Rust's from_utf8_lossy).
func TestLossyUTF8(t *testing.T) {
	refs := loadPythonRefs(t)
	for _, c := range refs.UTF8 {
		b, err := hex.DecodeString(c.Hex)
		if err != nil {
			t.Fatal(err)
		}
		if got := lossyUTF8(b); got != c.Text {
			t.Errorf("%s: %q, Python %q", c.Hex, got, c.Text)
		}
	}
}
