package mllama

import "math"

// attention describes multi-head scaled dot-product attention of nq query
// rows over rows of keys and values laid out [key][kvHeads·hd]; query head h
// reads key/value head h/rep (repeat_kv's grouping).
type attention struct {
	q          []float32 // [nq, nh·hd]
	nq, nh, hd int
	keys, vals []float32
	stride     int // floats per key row: kvHeads·hd
	rep        int // query heads per key/value head
	// keysFor returns how many leading keys query row i sees.
	keysFor func(i int) int
	// skipFor returns the keys query row i must not see (nil: none).
	skipFor func(i int) []bool
}

// attentionRows is about how many query vectors (queries × heads sharing a
// key/value head) a worker scores at once: few enough to stay in cache while
// every key streams past them once.
const attentionRows = 64

// run writes the attention output [nq, nh·hd] to out. Work is split over
// (key/value head, block of queries); each block reads its head's keys and
// values once, from contiguous copies. Scores are scaled by hd^-0.5 in fp32
// as transformers' eager attention does; the probabilities weight the
// values four keys at a time.
func (a *attention) run(jobs int, out []float32) {
	scale := float32(math.Pow(float64(a.hd), -0.5))
	hd, w := a.hd, a.nh*a.hd
	kvHeads := a.nh / a.rep
	n := 0
	for i := 0; i < a.nq; i++ {
		n = max(n, a.keysFor(i))
	}
	// Contiguous [kvHeads][n][hd] copies of the keys and values.
	ks, vs := make([]float32, kvHeads*n*hd), make([]float32, kvHeads*n*hd)
	workers(jobs, kvHeads, 1, func(lo, hi int) {
		for g := lo; g < hi; g++ {
			for j := 0; j < n; j++ {
				src := j*a.stride + g*hd
				copy(ks[(g*n+j)*hd:(g*n+j+1)*hd], a.keys[src:src+hd])
				copy(vs[(g*n+j)*hd:(g*n+j+1)*hd], a.vals[src:src+hd])
			}
		}
	})
	qb := max(1, attentionRows/a.rep) // queries per block
	blocks := (a.nq + qb - 1) / qb
	workers(jobs, kvHeads*blocks, 1, func(lo, hi int) {
		var scores []float32
		var rows []int // query row index of each vector in the block
		var qs [][]float32
		for u := lo; u < hi; u++ {
			g, b := u/blocks, u%blocks
			kg, vg := ks[g*n*hd:(g+1)*n*hd], vs[g*n*hd:(g+1)*n*hd]
			rows = rows[:0]
			for i := b * qb; i < min((b+1)*qb, a.nq); i++ {
				for r := 0; r < a.rep; r++ {
					rows = append(rows, i)
				}
			}
			qs = qs[:0] // query vector r: row rows[r], head g·rep + r%rep
			for r, i := range rows {
				h := g*a.rep + r%a.rep
				qs = append(qs, a.q[i*w+h*hd:i*w+(h+1)*hd])
			}
			if cap(scores) < len(rows)*n {
				scores = make([]float32, len(rows)*n)
			}
			scores = scores[:len(rows)*n]
			j := 0
			for ; j+4 <= n; j += 4 {
				k0, k1, k2, k3 := kg[j*hd:(j+1)*hd], kg[(j+1)*hd:(j+2)*hd], kg[(j+2)*hd:(j+3)*hd], kg[(j+3)*hd:(j+4)*hd]
				for r, q := range qs {
					s0, s1, s2, s3 := dot4(q, k0, k1, k2, k3)
					sr := scores[r*n+j : r*n+j+4]
					sr[0], sr[1], sr[2], sr[3] = s0*scale, s1*scale, s2*scale, s3*scale
				}
			}
			for ; j < n; j++ {
				kj := kg[j*hd : (j+1)*hd]
				for r, q := range qs {
					scores[r*n+j] = dot(q, kj) * scale
				}
			}
			// Probabilities, zero past each row's last visible key: the
			// product with the values then runs over all n keys, as
			// torch's matmul of the masked probabilities does.
			for r, i := range rows {
				lim := a.keysFor(i)
				var skip []bool
				if a.skipFor != nil {
					skip = a.skipFor(i)
				}
				if skip != nil {
					skip = skip[:lim]
				}
				row := scores[r*n : (r+1)*n]
				softmaxInto(row[:lim], skip)
				clear(row[lim:])
				h := g*a.rep + r%a.rep
				clear(out[i*w+h*hd : i*w+(h+1)*hd])
			}
			j = 0
			for ; j+4 <= n; j += 4 {
				v0, v1, v2, v3 := vg[j*hd:(j+1)*hd], vg[(j+1)*hd:(j+2)*hd], vg[(j+2)*hd:(j+3)*hd], vg[(j+3)*hd:(j+4)*hd]
				for r, i := range rows {
					h := g*a.rep + r%a.rep
					p := scores[r*n+j : r*n+j+4]
					axpy4(out[i*w+h*hd:i*w+(h+1)*hd], p[0], p[1], p[2], p[3], v0, v1, v2, v3)
				}
			}
			for ; j < n; j++ {
				v := vg[j*hd : (j+1)*hd]
				for r, i := range rows {
					h := g*a.rep + r%a.rep
					p := scores[r*n+j]
					o := out[i*w+h*hd : i*w+(h+1)*hd]
					for d, x := range v {
						o[d] += p * x
					}
				}
			}
		}
	})
}

// axpy4 adds p0·v0 + p1·v1 + p2·v2 + p3·v3 to o: four keys' values per
// pass over the output, which quarters its loads and stores.
func axpy4(o []float32, p0, p1, p2, p3 float32, v0, v1, v2, v3 []float32) {
	n := len(o)
	v0, v1, v2, v3 = v0[:n], v1[:n], v2[:n], v3[:n]
	for d := range o {
		o[d] += ((p0*v0[d] + p1*v1[d]) + p2*v2[d]) + p3*v3[d]
	}
}
