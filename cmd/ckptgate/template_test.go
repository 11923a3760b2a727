package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptgate/ckptgate/internal/chat"
	"github.com/ckptgate/ckptgate/internal/exit"
)

// goldenFiles writes a golden case's messages (and tools) to files.
func goldenFiles(t *testing.T, name string) (chat.TemplateCase, string, string) {
	t.Helper()
	g, err := chat.LoadGoldens(filepath.Join(fixtures, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, ok := g.Templates[name]
	if !ok {
		t.Fatalf("no golden case %q", name)
	}
	dir := t.TempDir()
	msgs := filepath.Join(dir, "messages.json")
	if err := os.WriteFile(msgs, c.Messages, 0o644); err != nil {
		t.Fatal(err)
	}
	var kw struct {
		Tools json.RawMessage `json:"tools"`
	}
	if err := json.Unmarshal(c.Kwargs, &kw); err != nil {
		t.Fatal(err)
	}
	tools := ""
	if kw.Tools != nil {
		tools = filepath.Join(dir, "tools.json")
		if err := os.WriteFile(tools, kw.Tools, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return c, msgs, tools
}

// TestTemplateRenderGoldens renders goldens.json's conversations through
// the command, for the 5.x (base) and 4.45 (base-hub) directories, and
// compares text and (for the longest case, since loading the tokenizer
// takes most of a second) ids with what transformers produced.
func TestTemplateRenderGoldens(t *testing.T) {
	for _, model := range []string{"base", "base-hub"} {
		for _, name := range []string{"image_user", "system_text", "tools", "no_generation_prompt"} {
			t.Run(model+"/"+name, func(t *testing.T) {
				c, msgs, tools := goldenFiles(t, name)
				args := []string{"template", "render", "--model", filepath.Join(fixtures, model), "--messages", msgs, "--date-string", "27 Nov 2026"}
				withIDs := name == "tools"
				if withIDs {
					args = append(args, "--tokens")
				}
				if name != "no_generation_prompt" {
					args = append(args, "--add-generation-prompt")
				}
				if tools != "" {
					args = append(args, "--tools", tools)
				}
				out, errOut, code := runCLI(t, args...)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				if !withIDs {
					if diff := cmp.Diff(*c.Rendered, out); diff != "" {
						t.Errorf("text (-transformers +got):\n%s", diff)
					}
					return
				}
				var got struct {
					Text string `json:"text"`
					IDs  []int  `json:"ids"`
				}
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatalf("%v: %q", err, out)
				}
				if diff := cmp.Diff(*c.Rendered, got.Text); diff != "" {
					t.Errorf("text (-transformers +got):\n%s", diff)
				}
				if diff := cmp.Diff(c.InputIDs, got.IDs); diff != "" {
					t.Errorf("ids (-transformers +got):\n%s", diff)
				}
			})
		}
	}
}

// TestTemplateRenderRaises: the conversation transformers refused exits 1
// with the template's message on stderr.
func TestTemplateRenderRaises(t *testing.T) {
	c, msgs, _ := goldenFiles(t, "image_with_system_raises")
	out, errOut, code := runCLI(t, "template", "render", "--model", filepath.Join(fixtures, "base"), "--messages", msgs, "--date-string", "27 Nov 2026")
	if code != exit.CheckFailed || out != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, out)
	}
	if !strings.Contains(errOut, c.ErrorType+": "+c.Error) {
		t.Errorf("stderr %q lacks %s: %s", errOut, c.ErrorType, c.Error)
	}
}

// TestTemplateRenderBadInput: missing or invalid files and flags exit 2.
func TestTemplateRenderBadInput(t *testing.T) {
	_, msgs, _ := goldenFiles(t, "text_user")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`[{"role": "user", "content": "x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, []byte(`[]`), 0o644); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(fixtures, "base")
	for _, args := range [][]string{
		{"--model", base},
		{"--model", base, "--messages", filepath.Join(dir, "missing.json")},
		{"--model", base, "--messages", bad},
		{"--model", base, "--messages", empty},
		{"--model", dir, "--messages", msgs},
		{"--model", base, "--messages", msgs, "--template", "tool_use"},
		{"--model", base, "--messages", msgs, "--tools", filepath.Join(dir, "missing.json")},
		{"--model", base, "--messages", msgs, "extra"},
		{"--model", base, "--messages", msgs, "--no-such-flag"},
	} {
		_, errOut, code := runCLI(t, append([]string{"template", "render"}, args...)...)
		if code != exit.BadInput {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errOut)
		}
	}
	if _, _, code := runCLI(t, "template", "no-such-subcommand"); code != exit.BadInput {
		t.Errorf("template no-such-subcommand: exit %d, want 2", code)
	}
}
