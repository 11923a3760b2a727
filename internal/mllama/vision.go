package mllama

import "fmt"

// Image is one image as MllamaImageProcessor prepares it.
type Image struct {
	// PixelValues is [max_num_tiles, num_channels, image_size, image_size],
	// unused tiles zero.
	PixelValues []float32
	// AspectRatioID is the 1-based index of the tile grid in
	// supported_aspect_ratios (0 marks a padding image).
	AspectRatioID int
	// AspectRatioMask is [max_num_tiles]: 1 for the image's tiles, 0 for
	// padding tiles.
	AspectRatioMask []int
}

// layerNormEps is nn.LayerNorm's default, which MllamaVisionModel's
// layernorm_pre and layernorm_post use instead of norm_eps.
const layerNormEps = 1e-5

func (m *Model) checkImage(i int, img *Image) error {
	vc := &m.Config.Vision
	want := vc.MaxNumTiles * vc.NumChannels * vc.ImageSize * vc.ImageSize
	if len(img.PixelValues) != want {
		return fmt.Errorf("image %d: pixel_values has %d values, want %d ([%d, %d, %d, %d])",
			i, len(img.PixelValues), want, vc.MaxNumTiles, vc.NumChannels, vc.ImageSize, vc.ImageSize)
	}
	if img.AspectRatioID < 0 || img.AspectRatioID > vc.MaxAspectRatioID() {
		return fmt.Errorf("image %d: aspect_ratio_id %d is outside 0…%d", i, img.AspectRatioID, vc.MaxAspectRatioID())
	}
	if len(img.AspectRatioMask) != vc.MaxNumTiles {
		return fmt.Errorf("image %d: aspect_ratio_mask has %d entries, want max_num_tiles %d", i, len(img.AspectRatioMask), vc.MaxNumTiles)
	}
	for t, v := range img.AspectRatioMask {
		if v != 0 && v != 1 {
			return fmt.Errorf("image %d: aspect_ratio_mask[%d] is %d, want 0 or 1", i, t, v)
		}
	}
	return nil
}

// encodeImage runs the vision tower and the projector on one image and
// returns its cross-attention states, [max_num_tiles·num_patches, text
// hidden], tile-major as transformers flattens them.
func (m *Model) encodeImage(img *Image) []float32 {
	vc := &m.Config.Vision
	v := &m.vision
	vh, ps, ch, size := vc.HiddenSize, vc.PatchSize, vc.NumChannels, vc.ImageSize
	g := size / ps
	np := vc.NumPatches()
	padded := np + (8-np%8)%8
	tiles := vc.MaxNumTiles
	n := tiles * padded

	// Patch embedding: a stride-P convolution without bias is a linear map
	// of each patch's (channel, row, column) values.
	k := ch * ps * ps
	cols := make([]float32, tiles*g*g*k)
	for t := 0; t < tiles; t++ {
		for py := 0; py < g; py++ {
			for px := 0; px < g; px++ {
				dst := cols[((t*g+py)*g+px)*k:]
				for c := 0; c < ch; c++ {
					for ky := 0; ky < ps; ky++ {
						src := img.PixelValues[((t*ch+c)*size+py*ps+ky)*size+px*ps:]
						copy(dst[(c*ps+ky)*ps:(c*ps+ky+1)*ps], src[:ps])
					}
				}
			}
		}
	}
	pe := make([]float32, tiles*g*g*vh)
	linear(m.jobs, pe, cols, tiles*g*g, k, v.patch, vh, nil)

	hs := make([]float32, n*vh)
	id := img.AspectRatioID
	preG, posG := tanh1(v.preGate), tanh1(v.posGate)
	oneMinus := 1 - posG
	for t := 0; t < tiles; t++ {
		pre := v.preTile[(id*tiles+t)*vh : (id*tiles+t+1)*vh]
		copy(hs[t*padded*vh:], v.class)
		for p := 0; p < g*g; p++ {
			row := hs[(t*padded+1+p)*vh : (t*padded+2+p)*vh]
			src := pe[(t*g*g+p)*vh:]
			for d := range row {
				row[d] = src[d] + pre[d]*preG
			}
		}
		tile := v.tileEmb[(id*tiles+t)*np*vh:]
		for p := 0; p < np; p++ {
			row := hs[(t*padded+p)*vh : (t*padded+p+1)*vh]
			pos := v.posEmb[p*vh:]
			tp := tile[p*vh:]
			for d := range row {
				row[d] += oneMinus * pos[d]
				row[d] += posG * tp[d]
			}
		}
		// Padding rows are added after layernorm_pre and stay zero.
		real := hs[t*padded*vh : (t*padded+np)*vh]
		layerNorm(real, real, v.preW, v.preB, vh, layerNormEps)
	}

	// A key is hidden from a query only when both are padding (padding
	// patches, or tiles the aspect-ratio mask marks as padding).
	pad := make([]bool, n)
	for t := 0; t < tiles; t++ {
		for p := 0; p < padded; p++ {
			pad[t*padded+p] = p >= np || img.AspectRatioMask[t] == 0
		}
	}
	skipFor := func(i int) []bool {
		if pad[i] {
			return pad
		}
		return nil
	}

	saved := map[int][]float32{}
	want := map[int]bool{}
	for _, i := range vc.IntermediateLayersIndices {
		want[i] = true
	}
	for i := range v.local {
		if want[i] && m.Intermediate == LayerInput {
			saved[i] = append([]float32(nil), hs...)
		}
		m.visionLayer(&v.local[i], hs, n, skipFor)
		if want[i] && m.Intermediate == LayerOutput {
			saved[i] = append([]float32(nil), hs...)
		}
	}
	layerNorm(hs, hs, v.postW, v.postB, vh, layerNormEps)
	postG := tanh1(v.postGate)
	for t := 0; t < tiles; t++ {
		post := v.postTile[(id*tiles+t)*vh : (id*tiles+t+1)*vh]
		for p := 0; p < padded; p++ {
			row := hs[(t*padded+p)*vh : (t*padded+p+1)*vh]
			for d := range row {
				row[d] += post[d] * postG
			}
		}
	}
	for i := range v.global {
		m.visionLayer(&v.global[i], hs, n, skipFor)
	}

	// Features: the final state, then the intermediate states stacked on a
	// last axis (hidden-major), padding rows dropped.
	ni := len(vc.IntermediateLayersIndices)
	od := vc.VisionOutputDim
	feat := make([]float32, tiles*np*od)
	for t := 0; t < tiles; t++ {
		for p := 0; p < np; p++ {
			src := (t*padded + p) * vh
			dst := feat[(t*np+p)*od : (t*np+p+1)*od]
			copy(dst, hs[src:src+vh])
			for j, li := range vc.IntermediateLayersIndices {
				s := saved[li][src : src+vh]
				for d, x := range s {
					dst[vh+d*ni+j] = x
				}
			}
		}
	}
	th := m.Config.Text.HiddenSize
	out := make([]float32, tiles*np*th)
	linear(m.jobs, out, feat, tiles*np, od, m.projW, th, m.projB)
	return out
}

// visionLayer runs one MllamaVisionEncoderLayer on hs ([n, hidden]) in place.
func (m *Model) visionLayer(L *visionLayer, hs []float32, n int, skipFor func(int) []bool) {
	vc := &m.Config.Vision
	vh, heads := vc.HiddenSize, vc.AttentionHeads
	x := make([]float32, n*vh)
	layerNorm(x, hs, L.inW, L.inB, vh, vc.NormEps)
	q := make([]float32, n*vh)
	k := make([]float32, n*vh)
	val := make([]float32, n*vh)
	linear(m.jobs, q, x, n, vh, L.q, vh, nil)
	linear(m.jobs, k, x, n, vh, L.k, vh, nil)
	linear(m.jobs, val, x, n, vh, L.v, vh, nil)
	att := attention{q: q, nq: n, nh: heads, hd: vh / heads, keys: k, vals: val, stride: vh, rep: 1,
		keysFor: func(int) int { return n }, skipFor: skipFor}
	att.run(m.jobs, x)
	o := q // reuse
	linear(m.jobs, o, x, n, vh, L.o, vh, nil)
	addGated(hs, o, L.gated, L.gateAttn)

	layerNorm(x, hs, L.postW, L.postB, vh, vc.NormEps)
	f := make([]float32, n*vc.IntermediateSize)
	linear(m.jobs, f, x, n, vh, L.fc1W, vc.IntermediateSize, L.fc1B)
	gelu(f)
	linear(m.jobs, o, f, n, vc.IntermediateSize, L.fc2W, vh, L.fc2B)
	addGated(hs, o, L.gated, L.gateFFN)
}

// addGated adds tanh(gate)·o (or o) to hs, rounding as torch does.
func addGated(hs, o []float32, gated bool, gate []float32) {
	if !gated {
		for i, x := range o {
			hs[i] += x
		}
		return
	}
	gt := tanh1(gate)
	for i, x := range o {
		hs[i] += gt * x
	}
}
