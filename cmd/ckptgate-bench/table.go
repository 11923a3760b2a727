package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// stats summarises a series.
type stats struct {
	median, min, max float64
	cpu              float64 // median CPU seconds (ckptgate steps)
	rss              int64   // the largest peak RSS seen, bytes
}

func (s *series) stats() stats {
	st := stats{median: median(s.Seconds), min: slices.Min(s.Seconds), max: slices.Max(s.Seconds), cpu: median(s.CPU)}
	for _, r := range s.MaxRSS {
		st.rss = max(st.rss, r)
	}
	return st
}

// median of v (the mean of the middle two for an even count; 0 for none).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

// baseline is the series a tool step is compared with.
func (r *sizeResult) baseline(s *series) *series {
	var want string
	jobs := s.Jobs
	switch s.Step {
	case stepConvert:
		want, jobs = stepCopy, 1
	case stepVerify:
		want = stepReadThree
	default:
		return nil
	}
	for _, b := range r.Steps {
		if b.Step == want && b.Jobs == jobs {
			return b
		}
	}
	return nil
}

func printSize(w io.Writer, r *sizeResult, o *options, cache string) {
	fmt.Fprintf(w, "\n### %.2f GB checkpoint (target %.1f GB): %d tensors (%d text, %d vision, %d global layers), world %d, %s, %s, %d chunk archives\n\n",
		gb(r.SourceBytes), gb(r.Target), r.Tensors, r.TextLayers, r.VisionLayers, r.GlobalLayers, o.world, o.sharding, o.dt.TorchName(), r.Items)
	fmt.Fprintf(w, "%s; page cache %s; %d run(s) per step; generated in %.0f s.\n\n", time.Now().Format("2006-01-02"), cache, o.repeat, r.Generate)
	fmt.Fprintln(w, "| step | --jobs | wall s: median (min–max) | GB/s | vs baseline | CPU s | peak RSS | RSS / checkpoint |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|")
	for _, s := range r.Steps {
		st := s.stats()
		jobs := fmt.Sprint(s.Jobs)
		if s.Step == stepCopy || s.Step == stepReadOut || s.Step == stepReadThree {
			jobs = "–"
		}
		vs, cpu, rss, rel := "", "", "", ""
		if b := r.baseline(s); b != nil {
			vs = fmt.Sprintf("%.2f×", b.stats().median/st.median)
		}
		if st.rss > 0 {
			cpu = fmt.Sprintf("%.1f", st.cpu)
			rss = fmt.Sprintf("%.0f MB", float64(st.rss)/1e6)
			rel = fmt.Sprintf("%.1f%%", 100*float64(st.rss)/float64(r.SourceBytes))
		}
		fmt.Fprintf(w, "| %s | %s | %.2f (%.2f–%.2f) | %.2f | %s | %s | %s | %s |\n",
			s.Step, jobs, st.median, st.min, st.max, gb(s.Bytes)/st.median, vs, cpu, rss, rel)
	}
	fmt.Fprintln(w, "\n\"vs baseline\" is the tool's throughput over the baseline's on the same bytes: convert against the copy of the checkpoint, verify against reading the model, the base and the source. CPU s is ckptgate's user+system time (median).")
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
}

// printScaling compares sizes at the largest --jobs measured.
func printScaling(w io.Writer, rs []*sizeResult) {
	fmt.Fprintln(w, "\n### Scaling with size (medians, largest --jobs)")
	fmt.Fprintln(w, "\n| checkpoint GB | tensors | copy s | convert s | convert vs copy | convert CPU s | convert RSS | read 3 dirs s | verify s | verify vs read | verify CPU s | verify RSS |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		var conv, ver *series
		for _, s := range r.Steps {
			if s.Step == stepConvert && (conv == nil || s.Jobs > conv.Jobs) {
				conv = s
			}
			if s.Step == stepVerify && (ver == nil || s.Jobs > ver.Jobs) {
				ver = s
			}
		}
		row := fmt.Sprintf("| %.2f | %d |", gb(r.SourceBytes), r.Tensors)
		cell := func(s *series) string {
			if s == nil {
				return " – | – | – | – | – |"
			}
			b := r.baseline(s).stats()
			st := s.stats()
			return fmt.Sprintf(" %.1f | %.1f | %.2f× | %.1f | %.0f MB |", b.median, st.median, b.median/st.median, st.cpu, float64(st.rss)/1e6)
		}
		fmt.Fprintln(w, row+cell(conv)+cell(ver))
	}
}
