package mllama

import (
	"errors"
	"fmt"
	"math"
)

// ErrInput is wrapped by errors about inputs the model cannot take (token
// ids, images or masks of the wrong size or range).
var ErrInput = errors.New("invalid model input")

// MaxImages bounds the images of one sequence (Llama 3.2 Vision is trained
// with one; transformers accepts several).
const MaxImages = 64

// Session is one sequence being decoded: the self-attention KV cache, and the
// cross-attention keys and values of its images, computed once.
type Session struct {
	m   *Model
	pos int
	// k and v are the self-attention caches per layer, [pos, kvHeads·hd].
	k, v [][]float32
	// crossK and crossV are per layer, [vision tokens, kvHeads·hd], with
	// k_norm applied; nil for self-attention layers.
	crossK, crossV [][]float32
	images         int
	nv             int // vision tokens over all images; 0 without images
	// lastRow is the cross-attention mask row of the latest token, which
	// generation repeats for every new token; nil when no mask is in use.
	lastRow []int
	noMask  bool
}

// NewSession encodes the images (zero or more) and computes every
// cross-attention layer's keys and values from them.
func (m *Model) NewSession(images []Image) (*Session, error) {
	tc := &m.Config.Text
	s := &Session{m: m, images: len(images)}
	s.k = make([][]float32, tc.NumHiddenLayers)
	s.v = make([][]float32, tc.NumHiddenLayers)
	s.crossK = make([][]float32, tc.NumHiddenLayers)
	s.crossV = make([][]float32, tc.NumHiddenLayers)
	if len(images) == 0 {
		return s, nil
	}
	if len(images) > MaxImages {
		return nil, fmt.Errorf("%w: %d images, at most %d", ErrInput, len(images), MaxImages)
	}
	for i := range images {
		if err := m.checkImage(i, &images[i]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInput, err)
		}
	}
	var states []float32
	for i := range images {
		states = append(states, m.encodeImage(&images[i])...)
	}
	h, hd, kvw := tc.HiddenSize, tc.HeadDim(), tc.NumKeyValueHeads*tc.HeadDim()
	s.nv = len(states) / h
	for i := range m.text.layers {
		L := &m.text.layers[i]
		if !L.cross {
			continue
		}
		k := make([]float32, s.nv*kvw)
		v := make([]float32, s.nv*kvw)
		linear(m.jobs, k, states, s.nv, h, L.k, kvw, nil)
		linear(m.jobs, v, states, s.nv, h, L.v, kvw, nil)
		rmsNorm(k, k, L.kNorm, hd, tc.RMSNormEps)
		s.crossK[i], s.crossV[i] = k, v
	}
	return s, nil
}

// Pos is the number of tokens the session has consumed.
func (s *Session) Pos() int { return s.pos }

// Forward feeds tokens and returns the logits of the last one ([vocab]).
// crossMask is [tokens][images][max_num_tiles], as transformers'
// cross_attention_mask[0]: 1 where the token attends to the tile. A token
// whose row is all zero attends to every tile but its cross-attention MLP
// output is dropped, as in transformers. A nil crossMask on the first call
// means no mask at all (every token sees every tile); on later calls it
// repeats the previous token's row, as generation does.
func (s *Session) Forward(ids []int, crossMask [][][]int) ([]float32, error) {
	m := s.m
	tc := &m.Config.Text
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrInput)
	}
	if lim := tc.MaxPositionEmbeddings; lim > 0 && s.pos+len(ids) > lim {
		return nil, fmt.Errorf("%w: %d tokens exceed max_position_embeddings %d", ErrInput, s.pos+len(ids), lim)
	}
	for i, id := range ids {
		if id < 0 || id >= m.text.rows {
			return nil, fmt.Errorf("%w: token %d is id %d, outside the embedding's %d rows", ErrInput, i, id, m.text.rows)
		}
	}
	rows, err := s.maskRows(len(ids), crossMask)
	if err != nil {
		return nil, err
	}
	t := len(ids)
	h := tc.HiddenSize
	hs := make([]float32, t*h)
	for i, id := range ids {
		copy(hs[i*h:(i+1)*h], m.text.embed[id*h:(id+1)*h])
	}
	// Per token: which vision tokens to skip (nil: none) and whether the
	// cross-attention MLP output is dropped.
	skips := make([][]bool, t)
	dropped := make([]bool, t)
	if s.nv > 0 && rows != nil {
		tiles := m.Config.Vision.MaxNumTiles
		np := s.nv / (s.images * tiles)
		for i, row := range rows {
			seen := false
			for _, x := range row {
				seen = seen || x != 0
			}
			if !seen {
				dropped[i] = true
				continue
			}
			sk := make([]bool, s.nv)
			for j := range sk {
				sk[j] = row[j/np] == 0
			}
			skips[i] = sk
		}
	}
	for li := range m.text.layers {
		L := &m.text.layers[li]
		if L.cross {
			if s.nv == 0 {
				continue // transformers skips cross layers without an image
			}
			s.crossLayer(li, L, hs, t, skips, dropped)
			continue
		}
		s.selfLayer(li, L, hs, t)
	}
	s.pos += t
	last := make([]float32, h)
	rmsNorm(last, hs[(t-1)*h:], m.text.norm, h, tc.RMSNormEps)
	logits := make([]float32, tc.VocabSize)
	linear(m.jobs, logits, last, 1, h, m.text.lmHead, tc.VocabSize, nil)
	return logits, nil
}

// maskRows validates the caller's mask and flattens each token's row to
// images·max_num_tiles entries, or derives the rows generation uses.
func (s *Session) maskRows(t int, crossMask [][][]int) ([][]int, error) {
	if s.nv == 0 {
		if crossMask != nil {
			return nil, fmt.Errorf("%w: a cross-attention mask was given without images", ErrInput)
		}
		return nil, nil
	}
	if crossMask == nil {
		if s.pos == 0 || s.noMask {
			s.noMask = true
			return nil, nil
		}
		rows := make([][]int, t)
		for i := range rows {
			rows[i] = s.lastRow
		}
		return rows, nil
	}
	if s.noMask {
		return nil, fmt.Errorf("%w: a cross-attention mask was given after tokens without one", ErrInput)
	}
	if len(crossMask) != t {
		return nil, fmt.Errorf("%w: cross-attention mask has %d rows for %d tokens", ErrInput, len(crossMask), t)
	}
	tiles := s.m.Config.Vision.MaxNumTiles
	rows := make([][]int, t)
	for i, tok := range crossMask {
		if len(tok) != s.images {
			return nil, fmt.Errorf("%w: cross-attention mask row %d has %d images, want %d", ErrInput, i, len(tok), s.images)
		}
		row := make([]int, 0, s.images*tiles)
		for j, img := range tok {
			if len(img) != tiles {
				return nil, fmt.Errorf("%w: cross-attention mask row %d image %d has %d tiles, want max_num_tiles %d", ErrInput, i, j, len(img), tiles)
			}
			for k, x := range img {
				if x != 0 && x != 1 {
					return nil, fmt.Errorf("%w: cross-attention mask row %d image %d tile %d is %d, want 0 or 1", ErrInput, i, j, k, x)
				}
			}
			row = append(row, img...)
		}
		rows[i] = row
	}
	s.lastRow = rows[t-1]
	return rows, nil
}

// selfLayer runs a MllamaSelfAttentionDecoderLayer on hs ([t, hidden]) in
// place, appending to the layer's KV cache.
func (s *Session) selfLayer(li int, L *textLayer, hs []float32, t int) {
	m := s.m
	tc := &m.Config.Text
	h, nh, nkv, hd := tc.HiddenSize, tc.NumAttentionHeads, tc.NumKeyValueHeads, tc.HeadDim()
	x := make([]float32, t*h)
	rmsNorm(x, hs, L.inNorm, h, tc.RMSNormEps)
	q := make([]float32, t*nh*hd)
	k := make([]float32, t*nkv*hd)
	v := make([]float32, t*nkv*hd)
	linear(m.jobs, q, x, t, h, L.q, nh*hd, nil)
	linear(m.jobs, k, x, t, h, L.k, nkv*hd, nil)
	linear(m.jobs, v, x, t, h, L.v, nkv*hd, nil)
	cos, sin := make([]float32, hd/2), make([]float32, hd/2)
	for i := 0; i < t; i++ {
		m.ropeAngles(s.pos+i, cos, sin)
		rope(q[i*nh*hd:(i+1)*nh*hd], hd, cos, sin)
		rope(k[i*nkv*hd:(i+1)*nkv*hd], hd, cos, sin)
	}
	s.k[li] = append(s.k[li], k...)
	s.v[li] = append(s.v[li], v...)
	out := make([]float32, t*nh*hd)
	pos := s.pos
	att := attention{q: q, nq: t, nh: nh, hd: hd, keys: s.k[li], vals: s.v[li], stride: nkv * hd, rep: nh / nkv,
		keysFor: func(i int) int { return pos + i + 1 }}
	att.run(m.jobs, out)
	o := make([]float32, t*h)
	linear(m.jobs, o, out, t, nh*hd, L.o, h, nil)
	addGated(hs, o, false, nil)
	m.mlp(L, hs, x, o, t)
	addGated(hs, o, false, nil)
}

// crossLayer runs a MllamaCrossAttentionDecoderLayer on hs in place.
func (s *Session) crossLayer(li int, L *textLayer, hs []float32, t int, skips [][]bool, dropped []bool) {
	m := s.m
	tc := &m.Config.Text
	h, nh, nkv, hd := tc.HiddenSize, tc.NumAttentionHeads, tc.NumKeyValueHeads, tc.HeadDim()
	x := make([]float32, t*h)
	rmsNorm(x, hs, L.inNorm, h, tc.RMSNormEps)
	q := make([]float32, t*nh*hd)
	linear(m.jobs, q, x, t, h, L.q, nh*hd, nil)
	rmsNorm(q, q, L.qNorm, hd, tc.RMSNormEps)
	out := make([]float32, t*nh*hd)
	nv := s.nv
	att := attention{q: q, nq: t, nh: nh, hd: hd, keys: s.crossK[li], vals: s.crossV[li], stride: nkv * hd, rep: nh / nkv,
		keysFor: func(int) int { return nv }, skipFor: func(i int) []bool { return skips[i] }}
	att.run(m.jobs, out)
	o := make([]float32, t*h)
	linear(m.jobs, o, out, t, nh*hd, L.o, h, nil)
	addGated(hs, o, true, L.attnGate)
	m.mlp(L, hs, x, o, t)
	for i, d := range dropped {
		if d {
			row := o[i*h : (i+1)*h]
			for j := range row {
				row[j] *= 0 // full_text_row_masked_out_mask (keeps NaN a NaN)
			}
		}
	}
	addGated(hs, o, true, L.mlpGate)
}

// mlp computes MllamaTextMLP(post_attention_layernorm(hs)) into out, using x
// as scratch.
func (m *Model) mlp(L *textLayer, hs, x, out []float32, t int) {
	tc := &m.Config.Text
	h, ff := tc.HiddenSize, tc.IntermediateSize
	rmsNorm(x, hs, L.postNorm, h, tc.RMSNormEps)
	g := make([]float32, t*ff)
	u := make([]float32, t*ff)
	linear(m.jobs, g, x, t, h, L.gateP, ff, nil)
	linear(m.jobs, u, x, t, h, L.upP, ff, nil)
	for i := range g {
		g[i] = silu(g[i]) * u[i]
	}
	linear(m.jobs, out, g, t, ff, L.downP, h, nil)
}

// ropeAngles fills cos and sin (head_dim/2 each) for a position, computing
// the angle in fp32 as transformers' rotary embedding does.
func (m *Model) ropeAngles(pos int, cos, sin []float32) {
	p := float32(pos)
	for j, f := range m.invFreq {
		a := float64(f * p)
		cos[j] = float32(math.Cos(a))
		sin[j] = float32(math.Sin(a))
	}
}

// rope rotates every head (of size hd) of x in place, in transformers'
// rotate_half layout: the first half pairs with the second.
func rope(x []float32, hd int, cos, sin []float32) {
	half := hd / 2
	for b := 0; b+hd <= len(x); b += hd {
		for j := 0; j < half; j++ {
			x1, x2 := x[b+j], x[b+j+half]
			c, s := cos[j], sin[j]
			a1, b1 := x1*c, -x2*s
			a2, b2 := x2*c, x1*s
			x[b+j] = a1 + b1
			x[b+j+half] = a2 + b2
		}
	}
}
