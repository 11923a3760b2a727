package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
)

// Each malformed checkpoint is refused with exit 2 and a message naming the
// checkpoint, never a panic, and leaves no output directory (nor a
// temporary one) behind.
func TestConvertRefusesMalformedInput(t *testing.T) {
	base := filepath.Join(fixtures, "base")
	for _, c := range dcptest.Corruptions {
		t.Run(c.Name, func(t *testing.T) {
			src := dcptest.CopyRun(t, filepath.Join(fixtures, "runs/fsdp1"))
			if err := c.Apply(src); err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			out := filepath.Join(parent, "out")
			_, stderr, code := runCLI(t, "convert", "--source", src, "--base", base, "--out", out, "--quiet")
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, stderr)
			}
			if !strings.Contains(stderr, src) {
				t.Errorf("message does not name the checkpoint %s: %s", src, stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
				t.Errorf("panic: %s", stderr)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

func TestConvertCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	stdout, stderr, code := runCLI(t, "convert", "--source", filepath.Join(fixtures, "runs/full/mllama-tiny-1.pt"),
		"--base", filepath.Join(fixtures, "base"), "--out", out, "--dtype", "fp32")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "100 tensors") || !strings.Contains(stdout, "float32") {
		t.Errorf("summary: %s", stdout)
	}
	if _, _, code := runCLI(t, "convert", "--source", filepath.Join(fixtures, "runs/full/mllama-tiny-1.pt"),
		"--base", filepath.Join(fixtures, "base"), "--out", out); code != 2 {
		t.Errorf("existing --out: exit %d, want 2", code)
	}
	// train_params.yaml names a Hub id, not a local directory: without
	// --base the command must say so and exit 2.
	_, stderr, code = runCLI(t, "convert", "--source", filepath.Join(fixtures, "runs/fsdp1"), "--out", filepath.Join(dir, "o2"))
	if code != 2 || !strings.Contains(stderr, "meta-llama/Llama-3.2-11B-Vision-Instruct") {
		t.Errorf("no --base: exit %d, %s", code, stderr)
	}
}

// The freeze run's train_params.yaml names /models/mllama-tiny-base; when a
// local directory of that name exists it is used as the base.
func TestConvertBaseFromTrainParams(t *testing.T) {
	src := dcptest.CopyRun(t, filepath.Join(fixtures, "runs/freeze"))
	base, err := filepath.Abs(filepath.Join(fixtures, "base"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(src, "train_params.yaml")
	b, _ := os.ReadFile(p)
	b = []byte(strings.Replace(string(b), "/models/mllama-tiny-base", base, 1))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "convert", "--source", src, "--out", filepath.Join(t.TempDir(), "o"), "--quiet")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}
