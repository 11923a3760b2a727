package main

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSmoke is `ckptgate smoke` end to end on the tiny model, in
// process: the base directory's bf16 weights and tokenizer loaded, the
// golden image_user conversation rendered and tokenized, its image decoded
// and preprocessed, the forward pass and 12 greedy tokens. The issue's
// target is under a second per run.
func BenchmarkSmoke(b *testing.B) {
	_, conversations := smokeGoldens(b)
	msgs := filepath.Join(b.TempDir(), "messages.json")
	if err := os.WriteFile(msgs, conversations["image_user"], 0o644); err != nil {
		b.Fatal(err)
	}
	args := []string{"smoke", "--model", filepath.Join(fixtures, "base"), "--messages", msgs,
		"--image", filepath.Join(fixtures, "images", "landscape_800x600.png"), "--max-new-tokens", "12", "--json"}

	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	n := 0
	for b.Loop() {
		if code := run(args, io.Discard, io.Discard); code != 0 {
			b.Fatalf("smoke exited %d", code)
		}
		n++
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / time.Duration(max(n, 1))
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "cores")
	b.ReportMetric(cpu.Seconds(), "cpu-s/op")
}
