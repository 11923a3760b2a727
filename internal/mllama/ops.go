package mllama

import (
	"math"
	"runtime"
	"sync"
)

// The kernels below follow torch's fp32 CPU arithmetic closely enough that
// the logits stay within 1e-4 relative RMS of transformers': products and
// sums of matrix products in float32 (as sgemm does), statistics of norms and
// softmax denominators in float64 (where a long fp32 sum would drift from
// torch's cascaded sums).

// workers runs fn over [0, n) split into contiguous ranges on up to jobs
// goroutines. Ranges start at multiples of align so that kernels working on
// groups of rows keep their groups whole.
func workers(jobs, n, align int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	if align < 1 {
		align = 1
	}
	groups := (n + align - 1) / align
	if jobs > groups {
		jobs = groups
	}
	if jobs <= 1 {
		fn(0, n)
		return
	}
	per := (groups + jobs - 1) / jobs
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += per * align {
		hi := min(lo+per*align, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// dot is the float32 inner product of equal-length vectors.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dot4 is four inner products of a with b0..b3 in one pass over a, which
// quarters the loads of a and keeps four independent accumulators busy.
func dot4(a, b0, b1, b2, b3 []float32) (float32, float32, float32, float32) {
	n := len(a)
	b0, b1, b2, b3 = b0[:n], b1[:n], b2[:n], b3[:n]
	var s0, s1, s2, s3 float32
	for i, v := range a {
		s0 += v * b0[i]
		s1 += v * b1[i]
		s2 += v * b2[i]
		s3 += v * b3[i]
	}
	return s0, s1, s2, s3
}

// linearBlock is how many input rows a worker keeps hot in cache while it
// streams its share of the weight rows past them.
const linearBlock = 64

// linear computes y[t] = W·x[t] (+ b) for t rows: x is [t, in], w is
// [out, in] (torch's nn.Linear layout), y is [t, out]. It runs in parallel
// over output features.
func linear(jobs int, y, x []float32, t, in int, w []float32, out int, b []float32) {
	workers(jobs, out, 4, func(lo, hi int) {
		for t0 := 0; t0 < t; t0 += linearBlock {
			t1 := min(t0+linearBlock, t)
			o := lo
			for ; o+4 <= hi; o += 4 {
				w0 := w[o*in : (o+1)*in]
				w1 := w[(o+1)*in : (o+2)*in]
				w2 := w[(o+2)*in : (o+3)*in]
				w3 := w[(o+3)*in : (o+4)*in]
				for r := t0; r < t1; r++ {
					yr := y[r*out : (r+1)*out]
					yr[o], yr[o+1], yr[o+2], yr[o+3] = dot4(x[r*in:(r+1)*in], w0, w1, w2, w3)
				}
			}
			for ; o < hi; o++ {
				wo := w[o*in : (o+1)*in]
				for r := t0; r < t1; r++ {
					y[r*out+o] = dot(x[r*in:(r+1)*in], wo)
				}
			}
		}
		if b != nil {
			for r := 0; r < t; r++ {
				yr := y[r*out : (r+1)*out]
				for o := lo; o < hi; o++ {
					yr[o] += b[o]
				}
			}
		}
	})
}

// rmsNorm applies MllamaTextRMSNorm to each row of x (width n) into dst:
// w · (x · rsqrt(mean(x²) + eps)), with the mean taken in float64.
func rmsNorm(dst, x, w []float32, n int, eps float64) {
	for r := 0; r+n <= len(x); r += n {
		row := x[r : r+n]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(n)+eps))
		d := dst[r : r+n]
		for i, v := range row {
			d[i] = w[i] * (v * inv)
		}
	}
}

// layerNorm applies nn.LayerNorm (biased variance) to each row of x (width
// n) into dst, with the moments in float64.
func layerNorm(dst, x, w, b []float32, n int, eps float64) {
	for r := 0; r+n <= len(x); r += n {
		row := x[r : r+n]
		var sum float64
		for _, v := range row {
			sum += float64(v)
		}
		mean := sum / float64(n)
		var ss float64
		for _, v := range row {
			d := float64(v) - mean
			ss += d * d
		}
		rstd := 1 / math.Sqrt(ss/float64(n)+eps)
		d := dst[r : r+n]
		for i, v := range row {
			d[i] = float32((float64(v)-mean)*rstd)*w[i] + b[i]
		}
	}
}

// gelu is the exact (erf) GELU of transformers' "gelu" activation.
func gelu(x []float32) {
	for i, v := range x {
		f := float64(v)
		x[i] = float32(0.5 * f * (1 + math.Erf(f/math.Sqrt2)))
	}
}

// silu is x·sigmoid(x).
func silu(x float32) float32 {
	f := float64(x)
	return float32(f / (1 + math.Exp(-f)))
}

// softmaxInto turns scores[:n] into probabilities in place, skipping (and
// zeroing) the positions where skip is true. Skipped keys are what an
// additive finfo.min mask does in fp32: their exp underflows to exactly 0.
// It returns false when every position is skipped.
func softmaxInto(scores []float32, skip []bool) bool {
	maxv := float32(math.Inf(-1))
	for j, s := range scores {
		if skip != nil && skip[j] {
			continue
		}
		if s > maxv {
			maxv = s
		}
	}
	if math.IsInf(float64(maxv), -1) {
		for j := range scores {
			scores[j] = 0
		}
		return false
	}
	var sum float64
	for j, s := range scores {
		if skip != nil && skip[j] {
			scores[j] = 0
			continue
		}
		e := math.Exp(float64(s - maxv))
		scores[j] = float32(e)
		sum += e
	}
	inv := 1 / sum
	for j := range scores {
		scores[j] = float32(float64(scores[j]) * inv)
	}
	return true
}
