package reports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Bounds that keep the page light whatever the report holds; report.json
// has everything.
const (
	maxHTMLRows    = 2000
	maxHTMLDetails = 4096
	maxTopRows     = 10
	maxHTMLMessage = 64 << 10
	// Messages longer than this many lines or bytes after their first line
	// are folded.
	foldLines = 8
	foldBytes = 800
	// maxFigures bounds the plots on one page.
	maxFigures = 24
)

// fold splits a long multi-line message (a diff) into its first line and
// the rest, which the renderers fold away; ok is false for a message short
// enough to show whole.
func fold(msg string) (head, rest string, restLines int, ok bool) {
	head, rest, found := strings.Cut(msg, "\n")
	if !found || (strings.Count(rest, "\n") < foldLines && len(rest) <= foldBytes) {
		return "", "", 0, false
	}
	return head, rest, strings.Count(rest, "\n") + 1, true
}

// errNoData says a plot has nothing to draw.
var errNoData = errors.New("no data")

type kv struct{ K, V string }

type htmlCheck struct {
	Status, ID, Subject string
	// Message is shown whole when short; a long one (a diff) shows Head
	// and folds Rest away.
	Message, Head, Rest string
	RestLines           int
	Details             string
}

type htmlFigure struct {
	Title string // check ID and subject
	SVG   template.HTML
	Err   string
}

type driftFigure struct {
	htmlFigure
	N   int
	Top []TensorDrift
}

type sourceFigure struct {
	htmlFigure
	Cast                 string
	N                    int
	Elements, Differing  int64
	MaxULP               int64
	MaxRelErr            float64
	Worst                []TensorError
	DifferingTensorCount int
}

type logitsRow struct {
	Rank           int
	IDA, IDB       string
	LogitA, LogitB string
	Same           bool
}

type logitsFigure struct {
	htmlFigure
	D    LogitsDetails
	TopK []logitsRow
}

type htmlPage struct {
	Title, Verdict, Counts string
	Failed                 bool
	Facts                  []kv
	Checks                 []htmlCheck
	Omitted                int
	Drift                  []driftFigure
	Source                 []sourceFigure
	Logits                 []logitsFigure
}

// WriteHTML writes the report as one self-contained HTML page: no scripts,
// no external CSS, fonts or images (a Content-Security-Policy forbids them),
// plots as inline SVG. Plots appear only where the report has their data;
// otherwise the page says "no data".
func (r *Report) WriteHTML(w io.Writer) error {
	page := htmlPage{Title: "ckptgate report", Verdict: "PASS", Counts: countsLine(r.Counts(), "")}
	if r.Command != "" {
		page.Title = "ckptgate " + r.Command
	}
	if r.Failed() {
		page.Failed, page.Verdict = true, "FAIL"
	}
	for _, k := range slices.Sorted(maps.Keys(r.Inputs)) {
		page.Facts = append(page.Facts, kv{k, r.Inputs[k]})
	}
	for _, f := range []kv{{"ckptgate", r.Toolchain.Ckptgate}, {"Go", r.Toolchain.Go},
		{"transformers", r.Toolchain.Transformers}, {"torch", r.Toolchain.Torch}} {
		if f.V != "" {
			page.Facts = append(page.Facts, f)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Timings)) {
		page.Facts = append(page.Facts, kv{k + " time", junitTime(r.Timings[k]) + " s"})
	}
	sorted := r.Sorted()
	for i, c := range sorted {
		if i == maxHTMLRows {
			page.Omitted = len(sorted) - i
			break
		}
		hc := htmlCheck{Status: string(c.Status), ID: c.ID, Subject: c.Subject, Details: prettyDetails(c.Details)}
		msg := truncate(c.Message, maxHTMLMessage)
		if head, rest, lines, ok := fold(msg); ok {
			hc.Head, hc.Rest, hc.RestLines = head, rest, lines
		} else {
			hc.Message = msg
		}
		page.Checks = append(page.Checks, hc)
	}
	for _, c := range r.Checks {
		if len(c.Details) == 0 || len(page.Drift)+len(page.Source)+len(page.Logits) >= maxFigures {
			continue
		}
		title := c.ID
		if c.Subject != "" {
			title += " — " + c.Subject
		}
		switch {
		case c.ID == "tensors.drift":
			var d DriftDetails
			if json.Unmarshal(c.Details, &d) != nil || len(d.Tensors) == 0 {
				continue
			}
			f := driftFigure{htmlFigure: figure(title, func() ([]byte, error) { return driftPlot(d) }),
				N: len(d.Tensors), Top: topDrift(d.Tensors, maxTopRows)}
			page.Drift = append(page.Drift, f)
		case c.ID == "tensors.source_exact":
			var d SourceDetails
			if json.Unmarshal(c.Details, &d) != nil || len(d.Tensors) == 0 {
				continue
			}
			page.Source = append(page.Source, sourceFigureOf(title, d))
		case strings.HasPrefix(c.ID, "forward.") || c.ID == "golden.forward" || strings.HasPrefix(c.ID, "ollama.logits"):
			var d LogitsDetails
			if json.Unmarshal(c.Details, &d) != nil || (len(d.Sample) == 0 && len(d.TopIDsA) == 0) {
				continue
			}
			d.Prompt = truncate(d.Prompt, maxHTMLDetails)
			f := logitsFigure{htmlFigure: htmlFigure{Title: title}, D: d, TopK: topK(d)}
			if len(d.Sample) > 0 { // a one-sided finding (forward.sanity) has only its top-k
				f.htmlFigure = figure(title, func() ([]byte, error) { return logitsPlot(d) })
			}
			page.Logits = append(page.Logits, f)
		}
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, page); err != nil {
		return fmt.Errorf("html: %w", err)
	}
	_, err := buf.WriteTo(w)
	return err
}

func figure(title string, draw func() ([]byte, error)) htmlFigure {
	f := htmlFigure{Title: title}
	svg, err := draw()
	switch {
	case errors.Is(err, errNoData):
		f.Err = "no data"
	case err != nil:
		f.Err = "the plot could not be drawn: " + err.Error()
	default:
		f.SVG = template.HTML(svg) // made by vgsvg, which escapes all text
	}
	return f
}

func sourceFigureOf(title string, d SourceDetails) sourceFigure {
	f := sourceFigure{htmlFigure: figure(title, func() ([]byte, error) { return relErrPlot(d) }),
		Cast: d.Cast, N: len(d.Tensors)}
	for _, n := range relErrBuckets(d) {
		f.Elements += n
	}
	var worst []TensorError
	for _, t := range d.Tensors {
		if t.Differing > 0 {
			f.DifferingTensorCount++
			f.Differing += t.Differing
			worst = append(worst, t)
		}
		f.MaxULP = max(f.MaxULP, t.MaxULP)
		if finite(t.MaxRelErr) {
			f.MaxRelErr = max(f.MaxRelErr, t.MaxRelErr)
		}
	}
	sort.SliceStable(worst, func(i, j int) bool { return worst[i].Differing > worst[j].Differing })
	if len(worst) > maxTopRows {
		worst = worst[:maxTopRows]
	}
	f.Worst = worst
	return f
}

func topK(d LogitsDetails) []logitsRow {
	n := min(max(len(d.TopIDsA), len(d.TopIDsB)), 50)
	rows := make([]logitsRow, n)
	cell := func(ids []int, logits []float64, i int) (string, string) {
		id, l := "", ""
		if i < len(ids) {
			id = fmt.Sprint(ids[i])
		}
		if i < len(logits) {
			l = fmt.Sprintf("%.4f", logits[i])
		}
		return id, l
	}
	for i := range rows {
		rows[i].Rank = i + 1
		rows[i].IDA, rows[i].LogitA = cell(d.TopIDsA, d.TopLogitsA, i)
		rows[i].IDB, rows[i].LogitB = cell(d.TopIDsB, d.TopLogitsB, i)
		rows[i].Same = rows[i].IDA == rows[i].IDB
	}
	return rows
}

// prettyDetails indents Details for display, cut to a readable size.
func prettyDetails(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if len(raw) > 4*maxHTMLDetails || json.Indent(&buf, raw, "", "  ") != nil {
		buf.Reset()
		buf.Write(raw[:min(len(raw), maxHTMLDetails)])
	}
	s := buf.String()
	if len(s) > maxHTMLDetails {
		s = truncate(s, maxHTMLDetails) + "\n(cut; the whole value is in report.json)"
	}
	return s
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"g": func(v float64) string { return fmt.Sprintf("%.4g", v) },
	"pct": func(v float64) string {
		return fmt.Sprintf("%.1f%%", 100*v)
	},
}).Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}: {{.Verdict}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", "Liberation Sans", sans-serif; margin: 0; color: #1b1f24; background: #f6f8fa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; font-family: ui-monospace, "Liberation Mono", monospace; }
.banner { display: flex; align-items: center; gap: 18px; padding: 16px 20px; border-radius: 8px; color: #fff; }
.banner.pass { background: #1a7f37; } .banner.fail { background: #cf222e; }
#verdict { font-size: 34px; font-weight: 700; letter-spacing: 1px; }
.banner p { margin: 0; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e5e8eb; vertical-align: top; }
th { background: #eef1f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code.id { white-space: nowrap; }
#checks td:nth-child(3) { min-width: 14em; max-width: 22em; }
code, .mono { font-family: ui-monospace, "Liberation Mono", monospace; font-size: 12px; overflow-wrap: anywhere; }
.msg { white-space: pre-wrap; }
.badge { display: inline-block; min-width: 38px; text-align: center; padding: 1px 6px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }
.badge.fail { background: #cf222e; } .badge.warn { background: #bf8700; } .badge.pass { background: #1a7f37; } .badge.skip { background: #6e7781; }
tr.fail td { background: #fff5f5; } tr.warn td { background: #fffbea; }
figure { margin: 8px 0 16px; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; }
figure svg { max-width: 100%; height: auto; display: block; margin: 0 auto; }
.nodata { color: #57606a; font-style: italic; margin: 6px 0; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.row > * { flex: 1 1 360px; }
details pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 11px; background: #f6f8fa; padding: 6px; margin: 4px 0; }
tr.differ td { color: #cf222e; }
</style>
</head>
<body>
<main>
<div class="banner {{if .Failed}}fail{{else}}pass{{end}}">
<div id="verdict">{{.Verdict}}</div>
<div><h1>{{.Title}}</h1><p id="counts">{{.Counts}}</p></div>
</div>

<h2>Inputs and toolchain</h2>
{{if .Facts}}<table id="facts">{{range .Facts}}<tr><th>{{.K}}</th><td class="mono">{{.V}}</td></tr>{{end}}</table>
{{else}}<p class="nodata">No inputs recorded.</p>{{end}}

<h2>Checks</h2>
{{if .Checks}}<table id="checks">
<tr><th>Status</th><th>Check</th><th>Subject</th><th>Message</th></tr>
{{range .Checks}}<tr class="{{.Status}}"><td><span class="badge {{.Status}}">{{.Status}}</span></td><td><code class="id">{{.ID}}</code></td><td><code>{{.Subject}}</code></td><td>{{if .Rest}}<div class="msg">{{.Head}}</div><details class="more"><summary>{{.RestLines}} more lines</summary><pre>{{.Rest}}</pre></details>{{else}}<div class="msg">{{.Message}}</div>{{end}}{{if .Details}}<details><summary>details</summary><pre>{{.Details}}</pre></details>{{end}}</td></tr>
{{end}}</table>
{{if .Omitted}}<p class="nodata">{{.Omitted}} more findings are in report.json.</p>{{end}}
{{else}}<p class="nodata">No checks ran.</p>{{end}}

<h2>Drift from the base</h2>
{{range .Drift}}<h3>{{.Title}}</h3>
<figure class="plot" data-plot="drift">{{if .SVG}}{{.SVG}}{{else}}<p class="nodata">{{.Err}}</p>{{end}}</figure>
<table class="top"><tr><th>Tensor (largest drift of {{.N}})</th><th>group</th><th>layer</th><th>rel. L2</th><th>max |Δ|</th><th>changed</th><th>norm ratio</th><th>nearer to</th></tr>
{{range .Top}}<tr><td class="mono">{{.Name}}</td><td>{{.Group}}</td><td class="num">{{.Layer}}</td><td class="num">{{g .RelL2}}</td><td class="num">{{g .MaxAbs}}</td><td class="num">{{pct .ChangedFrac}}</td><td class="num">{{g .NormRatio}}</td><td class="mono">{{.NearestOther}}{{if .NaN}} NaN×{{.NaN}}{{end}}{{if .Inf}} Inf×{{.Inf}}{{end}}</td></tr>
{{end}}</table>
{{else}}<p class="nodata" data-nodata="drift">No data: the report has no tensors.drift finding with drift details.</p>{{end}}

<h2>Exactness against the source</h2>
{{range .Source}}<h3>{{.Title}}</h3>
<p>{{.N}} tensors, {{.Elements}} elements, cast {{.Cast}}: {{if .Differing}}<strong>{{.Differing}} elements in {{.DifferingTensorCount}} tensors differ from torch's result</strong> (at most {{.MaxULP}} ULP){{else}}every element equals torch's result{{end}}; largest relative error against the source {{g .MaxRelErr}}.</p>
<figure class="plot" data-plot="relerr">{{if .SVG}}{{.SVG}}{{else}}<p class="nodata">{{.Err}}</p>{{end}}</figure>
{{if .Worst}}<table class="top"><tr><th>Tensor</th><th>differing</th><th>max ULP</th><th>max rel. error</th></tr>
{{range .Worst}}<tr class="differ"><td class="mono">{{.Name}}</td><td class="num">{{.Differing}}</td><td class="num">{{.MaxULP}}</td><td class="num">{{g .MaxRelErr}}</td></tr>
{{end}}</table>{{end}}
{{else}}<p class="nodata" data-nodata="relerr">No data: the report has no tensors.source_exact finding with error details.</p>{{end}}

<h2>Logits agreement</h2>
{{range .Logits}}<h3>{{.Title}}</h3>
{{if .D.BLabel}}<p>{{.D.ALabel}} against {{.D.BLabel}}: KL {{g .D.KL}}, relative RMS {{g .D.RelRMS}}.</p>{{end}}
<div class="row">
{{if .SVG}}<figure class="plot" data-plot="logits">{{.SVG}}</figure>{{else if .Err}}<figure class="plot" data-plot="logits"><p class="nodata">{{.Err}}</p></figure>{{end}}
{{if .TopK}}<table class="topk"><tr><th>#</th><th>id ({{.D.ALabel}})</th><th>logit</th><th>id ({{.D.BLabel}})</th><th>logit</th></tr>
{{range .TopK}}<tr{{if not .Same}} class="differ"{{end}}><td class="num">{{.Rank}}</td><td class="num">{{.IDA}}</td><td class="num">{{.LogitA}}</td><td class="num">{{.IDB}}</td><td class="num">{{.LogitB}}</td></tr>
{{end}}</table>{{end}}
</div>
{{if .D.Prompt}}<details><summary>prompt</summary><pre>{{.D.Prompt}}</pre></details>{{end}}
{{else}}<p class="nodata" data-nodata="logits">No data: the report has no forward.* finding with logits.</p>{{end}}
</main>
</body>
</html>
`
