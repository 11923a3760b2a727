package main

import (
	"bytes"
	"testing"
)

const fixtures = "../../goldens/mllama-tiny-dev"

// runCLI runs a whole command line as main does and returns its output and
// exit code.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"no-such-command"},
		{"convert", "--no-such-flag"},
		{"convert"},
		{"convert", "--source", "x", "--out", "y", "--dtype", "int8"},
		{"convert", "--source", "x", "--out", "y", "--base", "b", "--max-shard-size", "lots"},
		{"version", "extra"},
	} {
		_, stderr, code := runCLI(t, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr)
		}
	}
	if out, _, code := runCLI(t, "version"); code != 0 || !bytes.Contains([]byte(out), []byte("ckptgate")) {
		t.Errorf("version: %d %q", code, out)
	}
}
