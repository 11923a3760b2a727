package reports

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

var (
	svgElement = regexp.MustCompile(`(?s)<svg.*?</svg>`)
	urlLike    = regexp.MustCompile(`(?i)(https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}/|url\(|@import|<script|<link|<img|<iframe|src=)`)
)

// svgNamespaces are the only URLs allowed in the page: namespace names,
// which browsers never fetch.
var svgNamespaces = []string{`xmlns="http://www.w3.org/2000/svg"`, `xmlns:xlink="http://www.w3.org/1999/xlink"`}

// assertSelfContained fails on anything in the page that could make the
// browser fetch something.
func assertSelfContained(t *testing.T, page string) {
	t.Helper()
	stripped := page
	for _, ns := range svgNamespaces {
		stripped = strings.ReplaceAll(stripped, ns, "")
	}
	if m := urlLike.FindAllString(stripped, 5); m != nil {
		t.Errorf("page references outside resources: %q", m)
	}
	if !strings.Contains(page, `content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"`) {
		t.Error("page lacks its Content-Security-Policy")
	}
}

func TestHTMLPlots(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			page := string(render(t, tc.report(t), FormatHTML))
			assertSelfContained(t, page)
			want := `<div id="verdict">PASS</div>`
			if tc.failed {
				want = `<div id="verdict">FAIL</div>`
			}
			if !strings.Contains(page, want) {
				t.Errorf("page lacks %s", want)
			}
			for _, plot := range []string{"drift", "relerr", "logits"} {
				if n := strings.Count(page, `data-plot="`+plot+`"><svg`); n != 1 {
					t.Errorf("%d %s plots, want 1", n, plot)
				}
				if strings.Contains(page, `data-nodata="`+plot+`"`) {
					t.Errorf("the %s section says no data", plot)
				}
			}
			for _, svg := range svgElement.FindAllString(page, -1) {
				if len(svg) > 200_000 {
					t.Errorf("an SVG of %d bytes; plots must stay small", len(svg))
				}
			}
			if len(page) > 1_000_000 {
				t.Errorf("page of %d bytes", len(page))
			}
		})
	}
	// The failing report's tables name what failed.
	page := string(render(t, failingReport(t), FormatHTML))
	for _, s := range []string{
		"language_model.model.layers.0.self_attn.q_proj.weight</td>", // top of the drift table
		"<strong>541248 elements in 98 tensors differ from torch's result</strong>",
		`<td class="num">882</td>`, // image_user's top-1 in the top-k table
	} {
		if !strings.Contains(page, s) {
			t.Errorf("failing page lacks %q", s)
		}
	}
}

func TestHTMLNoData(t *testing.T) {
	r := newFixtureReport(t)
	r.Add(
		Check{ID: "tensors.drift", Status: StatusPass, Message: "details of another shape", Details: json.RawMessage(`"just a string"`)},
		Check{ID: "tensors.source_exact", Status: StatusSkip, Message: "no source given"},
		Check{ID: "forward.golden", Status: StatusPass, Message: "no tensors", Details: MustDetails(LogitsDetails{})},
		Check{ID: "tensors.drift", Status: StatusWarn, Subject: "<script>alert(1)</script>", Message: "</td></tr></table><h1>injected"},
	)
	page := string(render(t, r, FormatHTML))
	assertSelfContained(t, page)
	if strings.Contains(page, "<svg") {
		t.Error("page has a plot without data")
	}
	for _, plot := range []string{"drift", "relerr", "logits"} {
		if !strings.Contains(page, `data-nodata="`+plot+`">No data:`) {
			t.Errorf("the %s section does not say no data", plot)
		}
	}
	if strings.Contains(page, "<h1>injected") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("input strings reach the page unescaped")
	}
}

// TestHTMLBoundsHostileDetails feeds the plots what no check should send:
// huge samples, degenerate and extreme values. The page must still render,
// small.
func TestHTMLBoundsHostileDetails(t *testing.T) {
	big := LogitsDetails{ALabel: "a", BLabel: "b", TopIDsA: make([]int, 1000), TopLogitsA: make([]float64, 3)}
	for i := range 20_000 {
		big.Sample = append(big.Sample, [2]float64{float64(i % 977), float64(i % 991)})
	}
	flat := DriftDetails{}
	for i := range 5_000 {
		flat.Tensors = append(flat.Tensors, TensorDrift{Name: "t", Layer: i % 40, Group: "text", NaN: int64(i % 2)})
	}
	extreme := DriftDetails{Tensors: []TensorDrift{{Name: "x", Layer: 1_000_000, Group: "?", RelL2: 1e308}, {Name: "y", Layer: -1, RelL2: 1e-300}}}
	hist := SourceDetails{Cast: strings.Repeat("F32->BF16 ", 100), Tensors: []TensorError{
		{Name: "a", RelErrHist: make([]int64, 10_000)}, {Name: "b", RelErrHist: []int64{-5, 1 << 62, 1 << 62, 7}}}}
	single := LogitsDetails{Sample: [][2]float64{{1, 1}}}
	r := New("verify")
	r.Add(
		Check{ID: "forward.big", Status: StatusPass, Message: "m", Details: MustDetails(big)},
		Check{ID: "forward.single", Status: StatusPass, Message: "m", Details: MustDetails(single)},
		Check{ID: "tensors.drift", Status: StatusPass, Message: "m", Details: MustDetails(flat)},
		Check{ID: "tensors.drift", Status: StatusPass, Message: "m", Details: MustDetails(extreme)},
		Check{ID: "tensors.source_exact", Status: StatusPass, Message: "m", Details: MustDetails(hist)},
	)
	page := string(render(t, r, FormatHTML))
	assertSelfContained(t, page)
	for _, svg := range svgElement.FindAllString(page, -1) {
		if len(svg) > 600_000 {
			t.Errorf("an SVG of %d bytes", len(svg))
		}
	}
	if n := strings.Count(page, "<svg"); n < 3 {
		t.Errorf("%d plots drawn, want at least the big sample, the flat drift and the histogram", n)
	}
	if n := strings.Count(page, "<tr class=\"differ\"><td class=\"num\">"); n > 50 {
		t.Errorf("top-k table of %d rows", n)
	}
}

// TestLongMessagesFold: a multi-line message (a diff of a side file) shows
// its first line, the rest folded, in the page and in the Markdown.
func TestLongMessagesFold(t *testing.T) {
	diff := "differs from the base (-base +model):\n" + strings.Repeat("-\t\"rope_theta\": float64(500000),\n", 20) + "  }"
	r := New("verify")
	r.Add(Check{ID: "files.side_equal", Status: StatusFail, Subject: "config.json", Message: diff},
		Check{ID: "files.side_equal", Status: StatusFail, Subject: "generation_config.json", Message: "differs:\n-a\n+b"})
	page := string(render(t, r, FormatHTML))
	if !strings.Contains(page, `<div class="msg">differs from the base (-base &#43;model):</div><details class="more"><summary>21 more lines</summary>`) {
		t.Error("the long message is not folded after its first line")
	}
	if !strings.Contains(page, `<div class="msg">differs:`+"\n"+`-a`+"\n"+`&#43;b</div>`) {
		t.Error("a short multi-line message is folded")
	}
	md := string(render(t, r, FormatMarkdown))
	if !strings.Contains(md, "| differs from the base (-base +model): *(21 more lines in the HTML report)* |") ||
		!strings.Contains(md, "| differs:<br>-a<br>+b |") {
		t.Errorf("Markdown does not fold the long message only:\n%s", md)
	}
}
