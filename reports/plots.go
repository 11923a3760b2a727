package reports

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Bounds on what a plot draws, so that an inline SVG stays small (each
// point is a path element of ~150 bytes) whatever the report holds.
const (
	maxDriftPoints   = 3000
	maxScatterPoints = 800
	maxHistBuckets   = 32
	// maxPlotValue drops values too large for an axis range: gonum's tick
	// arithmetic overflows near math.MaxFloat64.
	maxPlotValue = 1e30
)

var (
	colText         = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colVision       = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colProjector    = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	colVisionGlobal = color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff}
	colSuspect      = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colGrey         = color.RGBA{R: 0x88, G: 0x88, B: 0x88, A: 0xff}
)

func finite(v float64) bool { return !math.IsNaN(v) && math.Abs(v) <= maxPlotValue }

// driftPlot draws each tensor's relative L2 distance from the base against
// its layer, one colour per group; tensors outside the layer stacks sit at
// x = -1, and suspects (NaN/Inf, nearer another base tensor) are red crosses.
func driftPlot(d DriftDetails) ([]byte, error) {
	ts := subsample(d.Tensors, maxDriftPoints, func(t TensorDrift) bool { return suspect(t) })
	groups := map[string]plotter.XYs{}
	var bad plotter.XYs
	minLayer, maxLayer := -1, 0
	offset := map[string]float64{"text": -0.2, "vision": 0.1, "vision-global": 0.25, "projector": 0}
	for _, t := range ts {
		// Negative distances mark undefined ones (a zero-norm base tensor).
		if !finite(t.RelL2) || t.RelL2 < 0 || t.Layer < -1 || t.Layer > 1_000_000 {
			continue
		}
		x := float64(t.Layer) + offset[t.Group]
		maxLayer = max(maxLayer, t.Layer)
		minLayer = min(minLayer, t.Layer)
		if suspect(t) {
			bad = append(bad, plotter.XY{X: x, Y: t.RelL2})
			continue
		}
		g := t.Group
		if _, ok := offset[g]; !ok {
			g = "other"
		}
		groups[g] = append(groups[g], plotter.XY{X: x, Y: t.RelL2})
	}
	p := newPlot("Drift from the base by layer", "layer (-1: outside the layer stacks)", "relative L2 distance")
	for _, g := range []struct {
		name string
		col  color.Color
	}{{"text", colText}, {"vision", colVision}, {"vision-global", colVisionGlobal}, {"projector", colProjector}, {"other", colGrey}} {
		if len(groups[g.name]) == 0 {
			continue
		}
		s, err := plotter.NewScatter(groups[g.name])
		if err != nil {
			return nil, err
		}
		s.GlyphStyle = draw.GlyphStyle{Color: g.col, Radius: vg.Points(3), Shape: draw.CircleGlyph{}}
		p.Add(s)
		p.Legend.Add(g.name, s)
	}
	if len(bad) > 0 {
		s, err := plotter.NewScatter(bad)
		if err != nil {
			return nil, err
		}
		s.GlyphStyle = draw.GlyphStyle{Color: colSuspect, Radius: vg.Points(5), Shape: draw.CrossGlyph{}}
		p.Add(s)
		p.Legend.Add("suspect (NaN/Inf or nearer another tensor)", s)
	}
	p.Legend.Top = true
	p.Y.Min = 0
	// Headroom so that the legend does not cover the highest points.
	p.Y.Max = math.Max(p.Y.Max*1.3, 1e-6)
	p.X.Min, p.X.Max = float64(minLayer)-0.5, float64(maxLayer)+0.5
	p.X.Tick.Marker = layerTicks{}
	p.Add(plotter.NewGrid())
	return svgOf(p, 7*vg.Inch, 3.6*vg.Inch)
}

func suspect(t TensorDrift) bool { return t.NaN > 0 || t.Inf > 0 || t.NearestOther != "" }

// layerTicks marks whole layers only.
type layerTicks struct{}

func (layerTicks) Ticks(lo, hi float64) []plot.Tick {
	a, b := math.Ceil(lo), math.Floor(hi)
	step := math.Max(1, math.Ceil((b-a+1)/20))
	var ts []plot.Tick
	for v := a; v <= b && len(ts) < 64; v += step {
		ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
	}
	return ts
}

// relErrBuckets sums the tensors' relative-error histograms.
func relErrBuckets(d SourceDetails) []int64 {
	var sum []int64
	for _, t := range d.Tensors {
		for k, n := range t.RelErrHist {
			if k >= maxHistBuckets || n < 0 {
				continue
			}
			for len(sum) <= k {
				sum = append(sum, 0)
			}
			sum[k] += n
		}
	}
	return sum
}

// bucketLabel names histogram bucket k: 0 exact, k ≥ 1 the decade
// [1e-(11-k), 1e-(10-k)).
func bucketLabel(k int) string {
	if k == 0 {
		return "exact"
	}
	return fmt.Sprintf("1e%d", k-11)
}

// relErrPlot draws the share of elements per decade of relative error
// against the exact source values, summed over all tensors.
func relErrPlot(d SourceDetails) ([]byte, error) {
	sum := relErrBuckets(d)
	var total float64
	for _, n := range sum {
		total += float64(n)
	}
	if total == 0 {
		return nil, errNoData
	}
	vals := make(plotter.Values, len(sum))
	labels := make([]string, len(sum))
	for k, n := range sum {
		vals[k] = 100 * float64(n) / total
		labels[k] = bucketLabel(k)
	}
	cast := d.Cast
	if cast == "" {
		cast = "none"
	}
	p := newPlot(fmt.Sprintf("Relative error against the source (cast %s, %d elements)", truncate(cast, 40), int64(total)),
		"relative error (decade lower bound)", "% of elements")
	bars, err := plotter.NewBarChart(vals, vg.Points(18))
	if err != nil {
		return nil, err
	}
	bars.Color = colText
	bars.LineStyle.Width = 0
	p.Add(bars)
	p.NominalX(labels...)
	p.Y.Min = 0
	p.Y.Max = math.Max(p.Y.Max*1.08, 1e-6)
	p.Add(plotter.NewGrid())
	return svgOf(p, 7*vg.Inch, 3.2*vg.Inch)
}

// logitsPlot draws the paired logits of a against b with the line y = x.
func logitsPlot(d LogitsDetails) ([]byte, error) {
	// Keep the top of the distribution, where the next token is decided,
	// when subsampling.
	topA, topB := nthLargest(d.Sample, 0, 50), nthLargest(d.Sample, 1, 50)
	keep := func(s [2]float64) bool { return s[0] >= topA || s[1] >= topB }
	var pts plotter.XYs
	for _, s := range subsample(d.Sample, maxScatterPoints, keep) {
		if finite(s[0]) && finite(s[1]) {
			pts = append(pts, plotter.XY{X: s[0], Y: s[1]})
		}
	}
	if len(pts) == 0 {
		return nil, errNoData
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, pt := range pts {
		lo, hi = math.Min(lo, math.Min(pt.X, pt.Y)), math.Max(hi, math.Max(pt.X, pt.Y))
	}
	if hi-lo < 1e-9 {
		lo, hi = lo-1, hi+1
	}
	p := newPlot(fmt.Sprintf("Last-position logits (KL %.3g, relative RMS %.3g)", d.KL, d.RelRMS),
		truncate(orDefault(d.ALabel, "a"), 60), truncate(orDefault(d.BLabel, "b"), 60))
	diag, err := plotter.NewLine(plotter.XYs{{X: lo, Y: lo}, {X: hi, Y: hi}})
	if err != nil {
		return nil, err
	}
	diag.LineStyle = draw.LineStyle{Color: colGrey, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}
	s, err := plotter.NewScatter(pts)
	if err != nil {
		return nil, err
	}
	s.GlyphStyle = draw.GlyphStyle{Color: colText, Radius: vg.Points(1.6), Shape: draw.CircleGlyph{}}
	p.Add(plotter.NewGrid(), diag, s)
	p.Legend.Add(fmt.Sprintf("%d sampled logits", len(pts)), s)
	p.Legend.Add("a = b", diag)
	p.Legend.Top = true
	p.Legend.Left = true
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = lo, hi, lo, hi
	return svgOf(p, 4.6*vg.Inch, 4.6*vg.Inch)
}

// nthLargest returns the n-th largest value of column c of the sample
// (+Inf when the sample is empty).
func nthLargest(sample [][2]float64, c, n int) float64 {
	vs := make([]float64, 0, len(sample))
	for _, s := range sample {
		if finite(s[c]) {
			vs = append(vs, s[c])
		}
	}
	if len(vs) == 0 {
		return math.Inf(1)
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(vs)))
	return vs[min(n, len(vs))-1]
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// subsample keeps at most n of xs, evenly spaced, always keeping those for
// which keep is true (up to n).
func subsample[T any](xs []T, n int, keep func(T) bool) []T {
	if len(xs) <= n {
		return xs
	}
	var out []T
	kept := map[int]bool{}
	if keep != nil {
		for i, x := range xs {
			if len(out) == n/2 {
				break
			}
			if keep(x) {
				out = append(out, x)
				kept[i] = true
			}
		}
	}
	rest := n - len(out)
	step := float64(len(xs)) / float64(rest)
	for j := range rest {
		i := int(float64(j) * step)
		if !kept[i] {
			out = append(out, xs[i])
		}
	}
	return out
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	sans := func(size vg.Length) font.Font {
		return font.Font{Typeface: "Liberation", Variant: "Sans", Size: size}
	}
	p.Title.TextStyle.Font = sans(12)
	p.Title.Padding = vg.Points(6)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = sans(10)
		a.Tick.Label.Font = sans(9)
	}
	p.Legend.TextStyle.Font = sans(9)
	return p
}

// svgOf draws p as an SVG element ready to inline in HTML (no XML
// declaration, no external references: fonts are named, not embedded).
// gonum panics on some degenerate inputs; that becomes an error here, never
// a crash of the report.
func svgOf(p *plot.Plot, w, h vg.Length) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("plot: %v", r)
		}
	}()
	c := vgsvg.New(w, h)
	p.Draw(draw.New(c))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if i := bytes.Index(b, []byte("<svg")); i >= 0 {
		b = b[i:]
	}
	return b, nil
}

// topDrift returns the n tensors with the largest relative L2 distance,
// suspects first.
func topDrift(ts []TensorDrift, n int) []TensorDrift {
	cs := append([]TensorDrift(nil), ts...)
	sort.SliceStable(cs, func(i, j int) bool {
		if si, sj := suspect(cs[i]), suspect(cs[j]); si != sj {
			return si
		}
		return cs[i].RelL2 > cs[j].RelL2
	})
	if len(cs) > n {
		cs = cs[:n]
	}
	return cs
}
