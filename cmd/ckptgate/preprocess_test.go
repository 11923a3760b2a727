package main

import (
	"bytes"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

const preprocessFixtures = "../../goldens/mllama-tiny-dev"

// runPreprocess runs `ckptgate preprocess args…` and returns stdout and the
// exit code.
func runPreprocess(t *testing.T, args ...string) (string, int, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(append([]string{"preprocess"}, args...))
	err := root.Execute()
	return out.String(), exit.Code(err), err
}

func tensorBytes(t *testing.T, path, name string) ([]byte, []int64) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, ok := f.Tensor(name)
	if !ok {
		t.Fatalf("%s: no %s", path, name)
	}
	sr, err := f.Section(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(sr)
	if err != nil {
		t.Fatal(err)
	}
	return b, info.Shape
}

// TestPreprocessCommandGolden: the image and processor of the forward
// golden give, through the command, HF's pixel_values byte for byte and its
// aspect-ratio id and mask.
func TestPreprocessCommandGolden(t *testing.T) {
	out := filepath.Join(t.TempDir(), "pv.safetensors")
	stdout, code, err := runPreprocess(t, "--model", filepath.Join(preprocessFixtures, "base"),
		"--image", filepath.Join(preprocessFixtures, "images", "landscape_800x600.png"), "--out", out, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	var o preprocessOutput
	if err := json.Unmarshal([]byte(stdout), &o); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if o.AspectRatioID != 6 || o.NumTiles != 4 || len(o.AspectRatioMask) != 4 || o.Out != out {
		t.Errorf("output %+v", o)
	}
	got, shape := tensorBytes(t, out, "pixel_values")
	want, _ := tensorBytes(t, filepath.Join(preprocessFixtures, "golden-image_user.safetensors"), "pixel_values")
	if len(shape) != 4 || shape[0] != 4 || shape[1] != 3 || shape[2] != 56 || shape[3] != 56 {
		t.Errorf("shape %v", shape)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pixel_values differ from golden-image_user.safetensors")
	}
}

func TestPreprocessCommandErrors(t *testing.T) {
	base := filepath.Join(preprocessFixtures, "base")
	img := filepath.Join(preprocessFixtures, "images", "tiny_50x30.png")
	notImage := filepath.Join(preprocessFixtures, "FIXTURES.md")
	noConfig := filepath.Join(preprocessFixtures, "ref")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"not an image", []string{"--model", base, "--image", notImage}, notImage},
		{"no config", []string{"--model", noConfig, "--image", img}, noConfig},
		{"missing image", []string{"--model", base, "--image", filepath.Join(base, "nope.png")}, "nope.png"},
		{"no flags", nil, "--model and --image are required"},
		{"positional", []string{"--model", base, "--image", img, "extra"}, "extra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code, err := runPreprocess(t, tc.args...)
			if code != exit.BadInput || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("exit %d, error %v; want %d naming %q", code, err, exit.BadInput, tc.want)
			}
		})
	}
}
