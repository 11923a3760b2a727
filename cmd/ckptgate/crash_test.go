package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckptgate/ckptgate/convert"
)

// TestMain lets the test binary act as ckptgate itself (CKPTGATE_RUN_MAIN=1),
// so crash tests can kill a real conversion process at a chosen stage
// (CKPTGATE_PAUSE_AT) or run it under a file-size limit (CKPTGATE_FSIZE).
func TestMain(m *testing.M) {
	if os.Getenv("CKPTGATE_RUN_MAIN") != "1" {
		os.Exit(m.Run())
	}
	if at := os.Getenv("CKPTGATE_PAUSE_AT"); at != "" {
		stageHook = func(ctx context.Context, stage string) {
			if stage == at {
				fmt.Fprintln(os.Stderr, "PAUSED "+stage)
				<-ctx.Done()
			}
		}
	}
	if s := os.Getenv("CKPTGATE_FSIZE"); s != "" {
		n, _ := strconv.ParseUint(s, 10, 64)
		// Writes past the limit then fail with EFBIG instead of killing
		// the process, as on a full disk.
		signal.Ignore(syscall.SIGXFSZ)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			fmt.Fprintln(os.Stderr, "setrlimit:", err)
			os.Exit(99)
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// child starts the test binary as ckptgate with extra environment.
func child(t *testing.T, env []string, args ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "CKPTGATE_RUN_MAIN=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(stderr)
}

func waitFor(t *testing.T, sc *bufio.Scanner, marker string) string {
	t.Helper()
	var seen strings.Builder
	done := make(chan bool, 1)
	go func() {
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), marker) {
				done <- true
				return
			}
		}
		done <- false
	}()
	select {
	case ok := <-done:
		if !ok {
			t.Fatalf("process ended before %q:\n%s", marker, seen.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("no %q within 2 minutes:\n%s", marker, seen.String())
	}
	return seen.String()
}

// leftovers lists what is in dir besides the source.
func leftovers(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func convertArgs(out string) []string {
	return []string{"convert", "--source", filepath.Join(fixtures, "runs/fsdp1"), "--base", filepath.Join(fixtures, "base"),
		"--out", out, "--quiet"}
}

// A conversion killed with SIGKILL at any stage leaves no directory that
// looks complete — only a temporary directory whose name says so — and a
// rerun succeeds and removes it.
func TestConvertSIGKILLLeavesNothingComplete(t *testing.T) {
	for _, stage := range convert.Stages {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			cmd, sc := child(t, []string{"CKPTGATE_PAUSE_AT=" + stage}, convertArgs(out)...)
			waitFor(t, sc, "PAUSED "+stage)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			if _, err := os.Stat(out); err == nil {
				t.Fatalf("%s exists after SIGKILL at %s", out, stage)
			}
			for _, n := range leftovers(t, dir) {
				if !strings.Contains(n, ".ckptgate-tmp-") {
					t.Errorf("unexpected leftover %s", n)
				}
			}
			_, stderr, code := runCLI(t, convertArgs(out)...)
			if code != 0 {
				t.Fatalf("rerun: exit %d: %s", code, stderr)
			}
			if l := leftovers(t, dir); len(l) != 1 || l[0] != "out" {
				t.Errorf("after the rerun: %v", l)
			}
		})
	}
}

// SIGINT stops the conversion and removes the temporary directory.
func TestConvertSIGINTCleansUp(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cmd, sc := child(t, []string{"CKPTGATE_PAUSE_AT=copied"}, convertArgs(out)...)
	waitFor(t, sc, "PAUSED copied")
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	err := cmd.Wait()
	if err == nil {
		t.Fatal("interrupted conversion exited 0")
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("left behind after SIGINT: %v", l)
	}
}

// Running out of space (here: a file-size limit, which fails writes the way
// a full disk does) is reported with the file that could not be written, and
// nothing is left behind — whether it strikes a side file (the 7 MB
// tokenizer.json under a 1 MB limit) or the weights (8.5 MB of fp32 under an
// 8 MB limit).
func TestConvertOutOfSpace(t *testing.T) {
	for _, c := range []struct {
		limit, file string
		extra       []string
	}{
		{"1000000", "tokenizer.json", nil},
		{"8000000", "model.safetensors", []string{"--dtype", "fp32"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			cmd, sc := child(t, []string{"CKPTGATE_FSIZE=" + c.limit}, append(convertArgs(out), c.extra...)...)
			var msg strings.Builder
			for sc.Scan() {
				msg.WriteString(sc.Text() + "\n")
			}
			err := cmd.Wait()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 3 {
				t.Fatalf("exit %v, want 3; stderr: %s", err, msg.String())
			}
			if !strings.Contains(msg.String(), "file too large") || !strings.Contains(msg.String(), c.file) {
				t.Errorf("message does not say what failed where: %s", msg.String())
			}
			if l := leftovers(t, dir); len(l) != 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}
