package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// readTensor reads one tensor of a safetensors file.
func readTensor(t *testing.T, path, name string) ([]byte, safetensors.TensorInfo) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, info, err := f.ReadBytes(name)
	if err != nil {
		t.Fatal(err)
	}
	return b, info
}

// TestPreprocessCommandGolden: the image and processor of the forward
// golden give, through the command, HF's pixel_values byte for byte and its
// aspect-ratio id and mask.
func TestPreprocessCommandGolden(t *testing.T) {
	out := filepath.Join(t.TempDir(), "pv.safetensors")
	stdout, stderr, code := runCLI(t, "preprocess", "--model", filepath.Join(fixtures, "base"),
		"--image", filepath.Join(fixtures, "images", "landscape_800x600.png"), "--out", out, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var o preprocessOutput
	if err := json.Unmarshal([]byte(stdout), &o); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if o.AspectRatioID != 6 || o.NumTiles != 4 || len(o.AspectRatioMask) != 4 || o.Out != out {
		t.Errorf("output %+v", o)
	}
	got, info := readTensor(t, out, "pixel_values")
	want, _ := readTensor(t, filepath.Join(fixtures, "golden-image_user.safetensors"), "pixel_values")
	shape := info.Shape
	if len(shape) != 4 || shape[0] != 4 || shape[1] != 3 || shape[2] != 56 || shape[3] != 56 {
		t.Errorf("shape %v", shape)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pixel_values differ from golden-image_user.safetensors")
	}
}

func TestPreprocessCommandErrors(t *testing.T) {
	base := filepath.Join(fixtures, "base")
	img := filepath.Join(fixtures, "images", "tiny_50x30.png")
	notImage := filepath.Join(fixtures, "FIXTURES.md")
	noConfig := filepath.Join(fixtures, "ref")
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
			_, stderr, code := runCLI(t, append([]string{"preprocess"}, tc.args...)...)
			if code != exit.BadInput || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d naming %q", code, stderr, exit.BadInput, tc.want)
			}
		})
	}
}
