package reports

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzRender renders a report holding arbitrary strings and Details in every
// format. None may panic; the JUnit must stay well-formed XML with one
// testcase per finding; the Markdown table must keep one row of four cells
// per finding; the HTML must not let input become markup.
func FuzzRender(f *testing.F) {
	// Seeds: the fixture reports' findings, with their Details cut small so
	// that the fuzzer mutates them quickly.
	d := loadDerived(f)
	small := map[string][]byte{
		"tensors.drift":        MustDetails(DriftDetails{Tensors: d.DriftSwapped.Tensors[:12]}),
		"tensors.source_exact": MustDetails(SourceDetails{Cast: d.SourceTruncated.Cast, Tensors: d.SourceTruncated.Tensors[:4]}),
		"forward.golden":       MustDetails(LogitsDetails{TopIDsA: d.LogitsWrong.TopIDsA[:3], TopIDsB: d.LogitsWrong.TopIDsB[:3], Sample: d.LogitsWrong.Sample[:16]}),
	}
	for _, c := range append(passingReport(f).Checks, failingReport(f).Checks...) {
		f.Add(c.ID, c.Subject, c.Message, small[c.ID])
	}
	f.Add("tensors.drift", "]]>", "<script>x</script>|`a``b`|\n\\", small["tensors.drift"])
	f.Add("forward.golden", "\x00\xff", "\r\n\t|", []byte(`{"sample":[[1e308,-1e308],[0,0]],"top_ids_a":[1,2]}`))
	f.Add("tensors.source_exact", "", "", []byte(`{"tensors":[{"rel_err_hist":[-1,9223372036854775807,9223372036854775807]}]}`))
	f.Fuzz(func(t *testing.T, id, subject, message string, details []byte) {
		r := New("verify")
		r.Inputs["model"] = subject
		c := Check{ID: id, Status: StatusFail, Subject: subject, Message: message}
		if json.Valid(details) {
			c.Details = details
		}
		r.Add(c, Check{ID: id, Status: StatusWarn, Subject: message, Message: subject})

		for _, f := range Formats {
			var buf bytes.Buffer
			if err := r.Render(&buf, f); err != nil && f != FormatJSON {
				t.Fatalf("%s: %v", f, err)
			}
		}

		var junit bytes.Buffer
		r.WriteJUnit(&junit)
		dec := xml.NewDecoder(&junit)
		cases := 0
		for {
			tok, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("JUnit is not well-formed: %v\n%s", err, junit.String())
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "testcase" {
				cases++
			}
		}
		if cases != 2 {
			t.Errorf("%d testcases, want 2", cases)
		}

		var md bytes.Buffer
		r.WriteMarkdown(&md)
		rows := 0
		for _, l := range strings.Split(md.String(), "\n") {
			if strings.HasPrefix(l, "| ❌ |") || strings.HasPrefix(l, "| ⚠️ |") {
				rows++
				if n := len(unescapedPipe.FindAllString(l, -1)); n != 5 {
					t.Errorf("row with %d cell separators: %q", n, l)
				}
			}
		}
		if rows != 2 {
			t.Errorf("%d finding rows, want 2:\n%s", rows, md.String())
		}

		// Escaped input adds no '<' or '>' to the page: the same report
		// with the angle brackets of its strings neutralised must render
		// exactly as many. (Looking for the input in the page instead
		// fails on strings such as ">" that the markup holds anyway.)
		page := renderHTML(id, subject, message, c.Details)
		neutral := strings.NewReplacer("<", "_", ">", "_")
		plain := renderHTML(neutral.Replace(id), neutral.Replace(subject), neutral.Replace(message), c.Details)
		for _, b := range []string{"<", ">"} {
			if got, want := strings.Count(page, b), strings.Count(plain, b); got != want {
				t.Errorf("%d %q in the page, %d with the inputs' brackets replaced: input became markup", got, b, want)
			}
		}
		if n := strings.Count(page, "<table id=\"checks\">"); n != 1 {
			t.Errorf("%d checks tables", n)
		}
	})
}

// renderHTML is the page of the report FuzzRender builds.
func renderHTML(id, subject, message string, details []byte) string {
	r := New("verify")
	r.Inputs["model"] = subject
	r.Add(Check{ID: id, Status: StatusFail, Subject: subject, Message: message, Details: details},
		Check{ID: id, Status: StatusWarn, Subject: message, Message: subject})
	var page bytes.Buffer
	r.WriteHTML(&page)
	return page.String()
}
