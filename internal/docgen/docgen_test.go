package docgen

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptgate/ckptgate/verify"
)

var update = flag.Bool("update", false, "rewrite docs/checks.md and testdata/ golden files")

const checksDoc = "../../docs/checks.md"

// golden compares got with the file at path, rewriting it under -update.
func golden(t *testing.T, path string, got []byte, how string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (%s)", err, how)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s is stale; %s (-file +generated):\n%s", path, how, d)
	}
}

// TestChecksDocUpToDate fails when docs/checks.md differs from what the
// checks' Docs generate.
func TestChecksDocUpToDate(t *testing.T) {
	golden(t, checksDoc, ChecksMarkdown(verify.All()),
		"run go generate ./internal/docgen or go test ./internal/docgen -update")
}

var idPattern = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)

// TestAllChecksDocumented holds every registered check to what the
// generated reference and the report schema need.
func TestAllChecksDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range verify.All() {
		if !idPattern.MatchString(c.ID) {
			t.Errorf("check ID %q is not family.name in lower case", c.ID)
		}
		if seen[c.ID] {
			t.Errorf("check ID %q is registered twice", c.ID)
		}
		seen[c.ID] = true
		if s := strings.TrimSpace(c.Summary()); s == "" || !strings.HasSuffix(s, ".") {
			t.Errorf("%s: Doc's first line %q is not a one-sentence summary", c.ID, s)
		}
		if c.Run == nil {
			t.Errorf("%s: no Run", c.ID)
		}
		for _, in := range c.Requires {
			if _, ok := inputNames[in]; !ok {
				t.Errorf("%s: requires %q, which docgen cannot name", c.ID, in)
			}
		}
	}
	if len(seen) == 0 {
		t.Error("verify.All() returned no checks")
	}
}

var samples = []*verify.Check{
	{
		ID: "files.required",
		Doc: `Every side file the base has is present in the model.
Fails for a missing config.json, tokenizer.json, tokenizer_config.json, generation_config.json,
chat template or processor config; the names differ between transformers 4.x and 5.x, so the base decides.`,
		Requires: []verify.Input{verify.NeedBase},
	},
	{
		ID:  "tensors.keys",
		Doc: "Tensor names are those of the base | no more, no fewer.",
	},
	{
		ID: "tensors.source_exact",
		Doc: `Each tensor is the exact cast of the source tensor.

		Passes when every element equals torch's round-to-nearest-even cast (F32->BF16 or none);
		fails naming the tensor, the count of differing elements and the largest error in ULP.
		    An indented line stays indented relative to the rest.`,
		Requires: []verify.Input{verify.NeedSource},
	},
	{
		ID:       "forward.golden",
		Doc:      "The reference forward pass reproduces the HF goldens.\nRelative RMS of the last logits at most 1e-4.",
		Requires: []verify.Input{verify.NeedGolden, "ollama"},
	},
}

func TestChecksMarkdownSample(t *testing.T) {
	got := ChecksMarkdown(samples)
	golden(t, "testdata/sample.md", got, "go test ./internal/docgen -update rewrites it")

	md := string(got)
	// Families in order of first appearance, each check once under its
	// family, index links resolving to GitHub's anchors of the headings.
	for _, order := range [][2]string{{"## files", "## tensors"}, {"## tensors", "## forward"},
		{"### `tensors.keys`", "### `tensors.source_exact`"}} {
		if i, j := strings.Index(md, order[0]), strings.Index(md, order[1]); i < 0 || j < 0 || i > j {
			t.Errorf("%q should come before %q", order[0], order[1])
		}
	}
	for _, link := range []string{"(#filesrequired)", "(#tensorssource_exact)", "(#forwardgolden)"} {
		if !strings.Contains(md, link) {
			t.Errorf("index lacks link %s", link)
		}
	}
	if !strings.Contains(md, `base \| no more`) {
		t.Error("a | in a summary is not escaped in the index table")
	}
	if !strings.Contains(md, "\nPasses when every element") || !strings.Contains(md, "\n    An indented line") {
		t.Error("the common indentation of a Doc is not removed, or relative indentation is lost")
	}
	if !strings.Contains(md, "Needs: goldens (`--golden`), `ollama`.") || !strings.Contains(md, "Needs: the model directory only.") {
		t.Error("required inputs are not listed")
	}
}
