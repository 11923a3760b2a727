package mllama

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The 11B-Vision widths (meta-llama/Llama-3.2-11B-Vision config.json).
const (
	b11Hidden, b11Heads, b11KV, b11FFN, b11Vocab = 4096, 32, 8, 14336, 128256
	b11VHidden, b11VHeads, b11VFFN, b11Tile      = 1280, 16, 5120, 560
	b11Patch, b11Tiles, b11Tokens                = 14, 4, 32
)

// config11B is the 11B-Vision config cut to a few layers so that random
// weights fit in memory; vocab is small unless the benchmark needs it.
func config11B(textLayers int, cross []int, vocab int) *Config {
	return &Config{
		ModelType:       "mllama",
		ImageTokenIndex: 128256,
		Text: TextConfig{
			VocabSize: vocab, HiddenSize: b11Hidden, NumHiddenLayers: textLayers, NumAttentionHeads: b11Heads,
			NumKeyValueHeads: b11KV, IntermediateSize: b11FFN, CrossAttentionLayers: cross, RMSNormEps: 1e-5,
			RopeTheta: 500000, MaxPositionEmbeddings: 131072, HiddenAct: "silu",
			RopeScaling: &RopeScaling{RopeType: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4,
				OriginalMaxPositionEmbeddings: 8192, RopeTheta: 500000},
		},
		Vision: VisionConfig{
			HiddenSize: b11VHidden, NumHiddenLayers: 1, NumGlobalLayers: 1, AttentionHeads: b11VHeads,
			IntermediateSize: b11VFFN, VisionOutputDim: 2 * b11VHidden, ImageSize: b11Tile, PatchSize: b11Patch,
			NumChannels: 3, MaxNumTiles: b11Tiles, NormEps: 1e-5, IntermediateLayersIndices: []int{0},
			SupportedAspectRatios: [][2]int{{1, 1}, {1, 2}, {1, 3}, {1, 4}, {2, 1}, {2, 2}, {3, 1}, {4, 1}},
			HiddenAct:             "gelu",
		},
	}
}

func randomF32(r *rand.Rand, n int, std float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * std)
	}
	return x
}

// randomModel fills every tensor the config implies with random values:
// matrices N(0, 0.02), norm weights 1, biases 0, gates 0.5.
func randomModel(tb testing.TB, cfg *Config) *Model {
	tb.Helper()
	m, l, err := plan(cfg, 0)
	if err != nil {
		tb.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, w := range l.wants {
		n := 1
		for _, d := range w.shape {
			n *= int(d)
		}
		switch {
		case strings.HasSuffix(w.name, "gate") || strings.HasSuffix(w.name, "gate_attn") || strings.HasSuffix(w.name, "gate_ffn"):
			*w.dst = []float32{0.5}
		case len(w.shape) == 1 && strings.HasSuffix(w.name, ".bias"):
			*w.dst = make([]float32, n)
		case len(w.shape) == 1 && strings.Contains(w.name, "norm"):
			x := make([]float32, n)
			for i := range x {
				x[i] = 1
			}
			*w.dst = x
		default:
			*w.dst = randomF32(r, n, 0.02)
		}
	}
	m.finish()
	return m
}

// measure runs the benchmark loop and reports, besides wall time, the cores
// Go may use and the process CPU time per iteration, which stays meaningful
// when other processes share the machine.
func measure(b *testing.B, body func()) {
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	n := 0
	for b.Loop() {
		body()
		n++
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / time.Duration(max(n, 1))
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "cores")
	b.ReportMetric(cpu.Seconds(), "cpu-s/op")
}

// BenchmarkSmokeTiny is the engine's share of `ckptgate smoke` on the tiny
// model with an image: load base/ (bf16, upcast), encode the golden image,
// prefill the golden prompt and generate 12 tokens.
func BenchmarkSmokeTiny(b *testing.B) {
	p := goldenPrompt(b, "image_user")
	measure(b, func() {
		m, err := OpenDir(fixtures+"base", 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Generate(p, 12, nil); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkText11BSelfLayer is one self-attention decoder layer at 11B
// widths on a 32-token prompt.
func BenchmarkText11BSelfLayer(b *testing.B) {
	m := randomModel(b, config11B(1, nil, 8))
	hs0 := randomF32(rand.New(rand.NewPCG(3, 4)), b11Tokens*b11Hidden, 1)
	hs := make([]float32, len(hs0))
	measure(b, func() {
		copy(hs, hs0)
		s, _ := m.NewSession(nil)
		s.selfLayer(0, &m.text.layers[0], hs, b11Tokens)
	})
}

// BenchmarkText11BCrossLayer is one cross-attention decoder layer at 11B
// widths on a 32-token prompt attending to one 4-tile image (its keys and
// values precomputed, see BenchmarkText11BCrossKV).
func BenchmarkText11BCrossLayer(b *testing.B) {
	m := randomModel(b, config11B(1, []int{0}, 8))
	r := rand.New(rand.NewPCG(5, 6))
	nv := b11Tiles * m.Config.Vision.NumPatches()
	s, _ := m.NewSession(nil)
	s.images, s.nv = 1, nv
	s.crossK[0] = randomF32(r, nv*b11KV*(b11Hidden/b11Heads), 1)
	s.crossV[0] = randomF32(r, nv*b11KV*(b11Hidden/b11Heads), 1)
	hs0 := randomF32(r, b11Tokens*b11Hidden, 1)
	hs := make([]float32, len(hs0))
	skips := make([][]bool, b11Tokens)
	dropped := make([]bool, b11Tokens)
	measure(b, func() {
		copy(hs, hs0)
		s.crossLayer(0, &m.text.layers[0], hs, b11Tokens, skips, dropped)
	})
}

// BenchmarkText11BCrossKV is one cross-attention layer's keys and values
// (with k_norm) from one 4-tile image's 6404 vision tokens, done once per
// image per cross-attention layer.
func BenchmarkText11BCrossKV(b *testing.B) {
	m := randomModel(b, config11B(1, []int{0}, 8))
	r := rand.New(rand.NewPCG(7, 8))
	nv := b11Tiles * m.Config.Vision.NumPatches()
	states := randomF32(r, nv*b11Hidden, 1)
	L := &m.text.layers[0]
	kvw := b11KV * (b11Hidden / b11Heads)
	k, v := make([]float32, nv*kvw), make([]float32, nv*kvw)
	measure(b, func() {
		linear(0, k, states, nv, b11Hidden, L.k, kvw, nil)
		linear(0, v, states, nv, b11Hidden, L.v, kvw, nil)
		rmsNorm(k, k, L.kNorm, b11Hidden/b11Heads, 1e-5)
	})
}

// BenchmarkVision11BLayer is one vision encoder layer at 11B widths on one
// 4-tile image (4 × 1608 padded positions, attention across all tiles).
func BenchmarkVision11BLayer(b *testing.B) {
	m := randomModel(b, config11B(1, nil, 8))
	np := m.Config.Vision.NumPatches()
	padded := np + (8-np%8)%8
	n := b11Tiles * padded
	pad := make([]bool, n)
	for i := range pad {
		pad[i] = i%padded >= np
	}
	skipFor := func(i int) []bool {
		if pad[i] {
			return pad
		}
		return nil
	}
	hs0 := randomF32(rand.New(rand.NewPCG(9, 10)), n*b11VHidden, 1)
	hs := make([]float32, len(hs0))
	measure(b, func() {
		copy(hs, hs0)
		m.visionLayer(&m.vision.global[0], hs, n, skipFor)
	})
}

// BenchmarkVision11BEmbedProject is the per-image work outside the encoder
// layers at 11B widths: the patch convolution of 4 tiles and the projector
// from 7680 vision features to the 4096-wide text states.
func BenchmarkVision11BEmbedProject(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 12))
	g := b11Tile / b11Patch
	patches, k := b11Tiles*g*g, 3*b11Patch*b11Patch
	nv := b11Tiles * (g*g + 1)
	const od = 7680
	cols, pw := randomF32(r, patches*k, 1), randomF32(r, b11VHidden*k, 0.02)
	feat, projW := randomF32(r, nv*od, 1), randomF32(r, b11Hidden*od, 0.02)
	pe, out := make([]float32, patches*b11VHidden), make([]float32, nv*b11Hidden)
	measure(b, func() {
		linear(0, pe, cols, patches, k, pw, b11VHidden, nil)
		linear(0, out, feat, nv, od, projW, b11Hidden, nil)
	})
}

// BenchmarkLMHead11B is the logits of one position at 11B widths (vocab
// 128256 × hidden 4096), paid once per generated token.
func BenchmarkLMHead11B(b *testing.B) {
	r := rand.New(rand.NewPCG(13, 14))
	w := randomF32(r, b11Vocab*b11Hidden, 0.02)
	x := randomF32(r, b11Hidden, 1)
	y := make([]float32, b11Vocab)
	measure(b, func() {
		linear(0, y, x, 1, b11Hidden, w, b11Vocab, nil)
	})
}

// BenchmarkText11BDecodeStep is one generated token through one
// self-attention layer with 64 cached positions (weights streamed once).
func BenchmarkText11BDecodeStep(b *testing.B) {
	m := randomModel(b, config11B(1, nil, 8))
	r := rand.New(rand.NewPCG(15, 16))
	prefill := randomF32(r, 64*b11Hidden, 1)
	s, _ := m.NewSession(nil)
	s.selfLayer(0, &m.text.layers[0], prefill, 64)
	s.pos = 64
	hs0 := randomF32(r, b11Hidden, 1)
	hs := make([]float32, len(hs0))
	k0, v0 := s.k[0], s.v[0]
	measure(b, func() {
		copy(hs, hs0)
		s.k[0], s.v[0] = k0[:len(k0):len(k0)], v0[:len(v0):len(v0)]
		s.selfLayer(0, &m.text.layers[0], hs, 1)
	})
}
