package torchzip

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// ptVariant writes the fixture .pt with data.pkl replaced by wrap(its
// pickle body), where body is torch's data.pkl without PROTO and STOP: an
// expression leaving the state dict on the stack. The storages and other
// records stay torch's.
func ptVariant(t *testing.T, wrap func(body string) string) string {
	t.Helper()
	orig, err := os.ReadFile(runs + "full/mllama-tiny-1.pt")
	if err != nil {
		t.Fatal(err)
	}
	a := openBytes(t, orig)
	pkl := record(t, a, "data.pkl")
	if !bytes.HasPrefix(pkl, []byte("\x80\x02")) || pkl[len(pkl)-1] != '.' {
		t.Fatal("unexpected data.pkl framing")
	}
	body := string(pkl[2 : len(pkl)-1])
	p := filepath.Join(t.TempDir(), "variant.pt")
	if err := os.WriteFile(p, rezip(t, orig, map[string][]byte{"data.pkl": []byte("\x80\x02" + wrap(body) + ".")}, zip.Store), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// u is a BINUNICODE string opcode.
func u(s string) string {
	return "X" + string([]byte{byte(len(s)), byte(len(s) >> 8), 0, 0}) + s
}

// firstTensor is BINGET of the memo entry torch's pickler gave the first
// tensor of the .pt (model.vision_model.class_embedding, BINPUT 18).
const firstTensor = "h\x12"

func TestOpenPTVariants(t *testing.T) {
	tests := []struct {
		name  string
		wrap  func(body string) string
		names []string // names that must be present
		notes []string
		err   string
	}{
		{"as saved", func(b string) string { return b }, []string{"model.vision_model.class_embedding", "lm_head.weight"}, nil, ""},
		{"{model: sd}", func(b string) string { return "}(" + u("model") + b + "u" },
			[]string{"lm_head.weight"}, []string{`the state dict is the top-level entry "model"`}, ""},
		{"{state_dict: sd, epoch: 1}", func(b string) string { return "}(" + u("state_dict") + b + u("epoch") + "K\x01u" },
			[]string{"lm_head.weight"}, []string{`top-level entry "state_dict"; the other 1 top-level entries are ignored`}, ""},
		{"non-tensor entries", func(b string) string { return b + u("step") + "K\x05s" + u("lr") + "G?\xf0\x00\x00\x00\x00\x00\x00s" },
			nil, []string{"ignored 2 non-tensor entries: step, lr"}, ""},
		{"wrapper infixes", func(b string) string {
			return b + u("_fsdp_wrapped_module.model._checkpoint_wrapped_module.extra._orig_mod.weight") + firstTensor + "s"
		}, []string{"model.extra.weight"}, nil, ""},
		{"duplicate after cleaning", func(b string) string {
			return b + u("_orig_mod.model.vision_model.class_embedding") + firstTensor + "s"
		},
			nil, nil, `keys "model.vision_model.class_embedding" and "_orig_mod.model.vision_model.class_embedding" both name tensor`},
		{"flat param", func(b string) string { return b + u("_fsdp_wrapped_module._flat_param") + firstTensor + "s" },
			nil, nil, "LOCAL_STATE_DICT"},
		{"two candidate dicts", func(b string) string { return "}(" + u("model") + b + u("ema") + b + "u" },
			nil, nil, "several top-level entries hold tensors (ema, model)"},
		{"no tensors", func(string) string { return "}(" + u("epoch") + "K\x01u" }, nil, nil, "no tensors in the top-level dict"},
		{"a list", func(b string) string { return "]" }, nil, nil, "holds a list, not a state dict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ptVariant(t, tt.wrap)
			c, err := OpenPT(p)
			if tt.err != "" {
				if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), tt.err) || !strings.Contains(fmt.Sprint(err), p) {
					t.Fatalf("got %v, want an ErrCorrupt naming %s and containing %q", err, p, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			names := map[string]bool{}
			for _, ct := range c.Tensors {
				names[ct.Name] = true
			}
			for _, n := range tt.names {
				if !names[n] {
					t.Errorf("no tensor %q", n)
				}
			}
			notes := strings.Join(c.Notes, "\n")
			for _, n := range tt.notes {
				if !strings.Contains(notes, n) {
					t.Errorf("notes %q lack %q", notes, n)
				}
			}
			if len(tt.notes) == 0 && len(c.Notes) != 0 {
				t.Errorf("unexpected notes %q", c.Notes)
			}
		})
	}
}

// TestOpenPTOfAnItem: a DCP item saved as a file is a bare tensor, not a
// state dict.
func TestOpenPTOfAnItem(t *testing.T) {
	p := filepath.Join(t.TempDir(), "item.pt")
	if err := os.WriteFile(p, itemGate.bytes(t), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenPT(p)
	if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(err.Error(), "holds a tensor, not a state dict") {
		t.Errorf("got %v", err)
	}
}
