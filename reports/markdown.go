package reports

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// GitHub caps a step summary at 1 MiB; these bounds keep the Markdown far
// below that whatever the report holds. The full report is in the other
// formats.
const (
	maxMarkdownRows    = 300
	maxMarkdownMessage = 400
	maxMarkdownValue   = 200
)

var statusIcon = map[Status]string{
	StatusFail: "❌",
	StatusWarn: "⚠️",
	StatusPass: "✅",
	StatusSkip: "⏭️",
}

// WriteMarkdown writes the report as GitHub-flavoured Markdown for a step
// summary or a pull-request comment: the verdict on top, then one compact
// table with failures first, then inputs, toolchain and timings.
func (r *Report) WriteMarkdown(w io.Writer) error {
	bw := bufio.NewWriter(w)
	verdict, icon := "PASS", "✅"
	if r.Failed() {
		verdict, icon = "FAIL", "❌"
	}
	title := "ckptgate"
	if r.Command != "" {
		title += " " + r.Command
	}
	fmt.Fprintf(bw, "## %s %s: %s\n\n", icon, mdText(title), verdict)
	fmt.Fprintf(bw, "%s\n\n", countsLine(r.Counts(), "**"))

	if len(r.Checks) > 0 {
		fmt.Fprintf(bw, "| | Check | Subject | Message |\n|:-:|:--|:--|:--|\n")
		sorted := r.Sorted()
		for i, c := range sorted {
			if i == maxMarkdownRows {
				fmt.Fprintf(bw, "\n*%d more findings (passes and skips last) are in the JSON and HTML reports.*\n", len(sorted)-i)
				break
			}
			icon := statusIcon[c.Status]
			if icon == "" {
				icon = mdText(string(c.Status))
			}
			subject := ""
			if c.Subject != "" {
				subject = mdCode(truncate(c.Subject, maxMarkdownValue))
			}
			msg := mdText(truncate(c.Message, maxMarkdownMessage))
			if head, _, lines, ok := fold(c.Message); ok {
				msg = fmt.Sprintf("%s *(%d more lines in the HTML report)*", mdText(truncate(head, maxMarkdownMessage)), lines)
			}
			fmt.Fprintf(bw, "| %s | %s | %s | %s |\n", icon, mdCode(truncate(c.ID, maxMarkdownValue)), subject, msg)
		}
		fmt.Fprintln(bw)
	} else {
		fmt.Fprintf(bw, "*No checks ran.*\n\n")
	}

	fmt.Fprintf(bw, "<details><summary>Inputs, toolchain and timings</summary>\n\n| | |\n|:--|:--|\n")
	for _, k := range slices.Sorted(maps.Keys(r.Inputs)) {
		fmt.Fprintf(bw, "| %s | %s |\n", mdText(truncate(k, maxMarkdownValue)), mdCode(truncate(r.Inputs[k], maxMarkdownValue)))
	}
	for _, kv := range [][2]string{
		{"ckptgate", r.Toolchain.Ckptgate}, {"Go", r.Toolchain.Go},
		{"transformers", r.Toolchain.Transformers}, {"torch", r.Toolchain.Torch},
	} {
		if kv[1] != "" {
			fmt.Fprintf(bw, "| %s | %s |\n", kv[0], mdCode(truncate(kv[1], maxMarkdownValue)))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Timings)) {
		fmt.Fprintf(bw, "| %s time | %s s |\n", mdText(truncate(k, maxMarkdownValue)), junitTime(r.Timings[k]))
	}
	fmt.Fprintf(bw, "\n</details>\n")
	return bw.Flush()
}

// countsLine says how many findings have each status, failures first;
// strong wraps the failure count.
func countsLine(counts map[Status]int, strong string) string {
	parts := []string{fmt.Sprintf("%s%d failed%s", strong, counts[StatusFail], strong)}
	parts = append(parts, plural(counts[StatusWarn], "warning", "warnings"))
	parts = append(parts, fmt.Sprintf("%d passed", counts[StatusPass]))
	parts = append(parts, fmt.Sprintf("%d skipped", counts[StatusSkip]))
	return strings.Join(parts, " · ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// mdText escapes s for a Markdown table cell: no markup, no HTML, no cell
// or line breaks.
func mdText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\', '`', '*', '_', '[', ']', '|', '~', '#', '!':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '\n':
			b.WriteString("<br>")
		case '\r', '\t':
			b.WriteByte(' ')
		default:
			if r < 0x20 || r == 0x7f {
				b.WriteRune('\uFFFD')
				continue
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdCode renders s as an inline code span in a table cell: a fence longer
// than any run of backticks in s, pipes escaped (GFM splits cells before it
// parses code spans), line breaks as spaces.
func mdCode(s string) string {
	if s == "" {
		return ""
	}
	longest, run := 0, 0
	var b strings.Builder
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
		switch {
		case r == '|':
			b.WriteString(`\|`)
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
			b.WriteRune('\uFFFD')
		default:
			b.WriteRune(r)
		}
	}
	fence := strings.Repeat("`", longest+1)
	body := b.String()
	if strings.HasPrefix(body, "`") || strings.HasSuffix(body, "`") {
		body = " " + body + " "
	}
	return fence + body + fence
}
