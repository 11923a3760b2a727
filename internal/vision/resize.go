package vision

import "math"

// aaWeights are the integer filter taps of one resized axis: output i reads
// input[start[i] : start[i]+len(taps[i])] weighted by taps[i], in fixed point
// with prec fractional bits.
type aaWeights struct {
	start []int
	taps  [][]int32
	prec  uint
}

// antialiasWeights computes the taps torch uses for
// interpolate(mode="bilinear", antialias=True, align_corners=False) on
// uint8 (_compute_indices_int16_weights_aa, the path torchvision's resize
// takes for uint8 images on CPUs with AVX2): a triangle filter widened by the
// scale when downscaling (Pillow's approach), normalised per output, then
// quantised to int16 with the largest precision (≤ 22 bits) that keeps the
// biggest tap below 2¹⁵.
func antialiasWeights(in, out int) aaWeights {
	scale := float64(in) / float64(out)
	support, invscale := 1.0, 1.0
	if scale >= 1 {
		support, invscale = scale, 1/scale
	}
	w := aaWeights{start: make([]int, out), taps: make([][]int32, out)}
	fw := make([][]float64, out)
	wmax := 0.0
	for i := range out {
		center := scale * (float64(i) + 0.5)
		// int64() truncates toward zero, as the C++ static_cast does.
		xmin := max(int(int64(center-support+0.5)), 0)
		xsize := min(int(int64(center+support+0.5)), in) - xmin
		ws := make([]float64, max(xsize, 0))
		total := 0.0
		for j := range ws {
			ws[j] = triangle((float64(j+xmin) - center + 0.5) * invscale)
			total += ws[j]
		}
		for j := range ws {
			if total != 0 {
				ws[j] /= total
			}
			wmax = max(wmax, ws[j])
		}
		w.start[i], fw[i] = xmin, ws
	}
	for w.prec = 0; w.prec < 22; w.prec++ {
		if int(0.5+wmax*float64(int64(1)<<(w.prec+1))) >= 1<<15 {
			break
		}
	}
	for i, ws := range fw {
		w.taps[i] = make([]int32, len(ws))
		for j, v := range ws {
			// Taps are never negative for the triangle filter.
			w.taps[i][j] = int32(0.5 + v*float64(int64(1)<<w.prec))
		}
	}
	return w
}

// triangle is the bilinear filter: 1-|x| on (-1, 1).
func triangle(x float64) float64 {
	x = math.Abs(x)
	if x < 1 {
		return 1 - x
	}
	return 0
}

// horizontal resamples each of the rows of src (width len(src)/rows) into
// dst (width len(w.taps)). Sums are rounded and saturated to uint8, as
// torch's kernels do.
func (w aaWeights) horizontal(dst, src []uint8, rows int) {
	inW, outW := len(src)/rows, len(w.taps)
	round := int64(1) << (w.prec - 1)
	for y := range rows {
		in, out := src[y*inW:(y+1)*inW], dst[y*outW:(y+1)*outW]
		for i, taps := range w.taps {
			acc := round
			for k, t := range taps {
				acc += int64(in[w.start[i]+k]) * int64(t)
			}
			out[i] = uint8(max(0, min(255, acc>>w.prec)))
		}
	}
}

// vertical resamples the columns of src (rows of width) into dst, a whole
// row at a time so that memory is read in order.
func (w aaWeights) vertical(dst, src []uint8, width int) {
	acc := make([]int64, width)
	round := int64(1) << (w.prec - 1)
	for i, taps := range w.taps {
		for x := range acc {
			acc[x] = round
		}
		for k, t := range taps {
			row := src[(w.start[i]+k)*width : (w.start[i]+k+1)*width]
			for x, v := range row {
				acc[x] += int64(v) * int64(t)
			}
		}
		out := dst[i*width : (i+1)*width]
		for x, a := range acc {
			out[x] = uint8(max(0, min(255, a>>w.prec)))
		}
	}
}

// resizePlane resizes one uint8 channel of w×h to nw×nh as torch's
// antialiased bilinear uint8 kernel does: horizontal pass first (rounded to
// uint8), then vertical; an axis whose size does not change is not touched.
func resizePlane(src []uint8, w, h, nw, nh int) []uint8 {
	if nw == w && nh == h {
		return src
	}
	cur, cw := src, w
	if nw != w {
		next := make([]uint8, nw*h)
		antialiasWeights(w, nw).horizontal(next, cur, h)
		cur, cw = next, nw
	}
	if nh != h {
		next := make([]uint8, cw*nh)
		antialiasWeights(h, nh).vertical(next, cur, cw)
		cur = next
	}
	return cur
}
