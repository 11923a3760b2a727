// Package docgen writes docs/checks.md, the reference of every check, from
// the checks' own IDs, Docs and required inputs, so that the documentation
// cannot drift from the code (a test fails when the file is stale).
package docgen

//go:generate go run ./cmd -o ../../docs/checks.md

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/ckptgate/ckptgate/verify"
)

// Header opens docs/checks.md.
const Header = `# Checks

<!-- Generated from the checks' Docs by go run ./internal/docgen/cmd; do not edit. -->

ckptgate verify (and gate, which runs it) reports one or more findings per check. Each finding has a
status: **pass**; **warn**, which is reported but does not fail the run; **fail**, which makes the
command exit 1; or **skip**, when an input the check needs was not given. Check IDs are stable
(family.name): CI configurations and report consumers may rely on them.
`

var inputNames = map[verify.Input]string{
	verify.NeedBase:   "the base model (`--base`)",
	verify.NeedSource: "the source checkpoint (`--source`)",
	verify.NeedGolden: "goldens (`--golden`)",
}

// ChecksMarkdown renders the checks as Markdown: an index table, then one
// section per family (in order of first appearance) with each check's ID,
// summary, full doc and required inputs.
func ChecksMarkdown(checks []*verify.Check) []byte {
	var families []string
	byFamily := map[string][]*verify.Check{}
	for _, c := range checks {
		f := c.Family()
		if _, ok := byFamily[f]; !ok {
			families = append(families, f)
		}
		byFamily[f] = append(byFamily[f], c)
	}

	var b bytes.Buffer
	b.WriteString(Header)
	b.WriteString("\n| Check | Summary | Needs besides the model |\n|:--|:--|:--|\n")
	for _, f := range families {
		for _, c := range byFamily[f] {
			fmt.Fprintf(&b, "| [`%s`](#%s) | %s | %s |\n", c.ID, anchor(c.ID), cell(c.Summary()), cell(needs(c, "—")))
		}
	}
	for _, f := range families {
		fmt.Fprintf(&b, "\n## %s\n", f)
		for _, c := range byFamily[f] {
			fmt.Fprintf(&b, "\n### `%s`\n\n%s\n", c.ID, strings.TrimSpace(c.Summary()))
			if _, rest, ok := strings.Cut(c.Doc, "\n"); ok && strings.TrimSpace(rest) != "" {
				fmt.Fprintf(&b, "\n%s\n", strings.TrimSpace(dedent(rest)))
			}
			fmt.Fprintf(&b, "\nNeeds: %s.\n", needs(c, "the model directory only"))
		}
	}
	return b.Bytes()
}

// needs lists the inputs a check requires besides the model, or none.
func needs(c *verify.Check, none string) string {
	if len(c.Requires) == 0 {
		return none
	}
	parts := make([]string, len(c.Requires))
	for i, in := range c.Requires {
		if s, ok := inputNames[in]; ok {
			parts[i] = s
		} else {
			parts[i] = "`" + string(in) + "`"
		}
	}
	return strings.Join(parts, ", ")
}

// anchor is the fragment GitHub gives the heading "### `id`": lower case,
// punctuation other than - and _ dropped.
func anchor(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// cell keeps text inside one Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.Join(strings.Fields(s), " ")
}

// dedent removes the indentation common to all non-blank lines, so that a
// Doc written as an indented Go raw string does not turn into a code block.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	prefix := ""
	first := true
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		ind := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if first {
			prefix, first = ind, false
			continue
		}
		for !strings.HasPrefix(ind, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	for i, l := range lines {
		lines[i] = strings.TrimRight(strings.TrimPrefix(l, prefix), " \t")
	}
	return strings.Join(lines, "\n")
}
