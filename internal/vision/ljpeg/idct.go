package ljpeg

// A block holds the 64 coefficients or samples of one 8×8 block, in natural
// (row-major) order once dequantized.
type block [blockSize]int32

const blockSize = 8 * 8

// Fixed-point constants of libjpeg's "islow" inverse DCT: round(x·2¹³).
const (
	islowConstBits = 13
	islowPass1Bits = 2

	fix0_298631336 = 2446
	fix0_390180644 = 3196
	fix0_541196100 = 4433
	fix0_765366865 = 6270
	fix0_899976223 = 7373
	fix1_175875602 = 9633
	fix1_501321110 = 12299
	fix1_847759065 = 15137
	fix1_961570560 = 16069
	fix2_053119869 = 16819
	fix2_562915447 = 20995
	fix3_072711026 = 25172
)

// descale divides by 2ⁿ, rounding half up, as libjpeg's DESCALE does.
func descale(x int64, n uint) int64 { return (x + 1<<(n-1)) >> n }

// rangeLimit maps an IDCT output (before the +128 level shift) to a sample
// the way libjpeg's idct range-limit table does: the index is taken modulo
// 1024, so moderate overshoots saturate and wild ones wrap, exactly as
// libjpeg-turbo behaves on corrupt data.
func rangeLimit(v int64) int32 {
	switch k := v & 1023; {
	case k < 128:
		return int32(k) + 128
	case k < 512:
		return 255
	case k < 896:
		return 0
	default:
		return int32(k) - 896
	}
}

// idct is libjpeg's jpeg_idct_islow: the Loeffler–Ligtenberg–Moschytz
// inverse DCT in 13-bit fixed point with 2 extra bits between the passes.
// The input is dequantized coefficients in natural order; the output is
// samples minus 128, already range-limited to [-128, 127].
func idct(b *block) {
	var ws [blockSize]int32

	// Pass 1: columns, into ws, scaled up by 2^islowPass1Bits.
	for col := range 8 {
		in := func(row int) int64 { return int64(b[row*8+col]) }
		if b[8+col] == 0 && b[16+col] == 0 && b[24+col] == 0 && b[32+col] == 0 &&
			b[40+col] == 0 && b[48+col] == 0 && b[56+col] == 0 {
			dc := int32(in(0) << islowPass1Bits)
			for row := range 8 {
				ws[row*8+col] = dc
			}
			continue
		}
		o := islow1D(in(0), in(1), in(2), in(3), in(4), in(5), in(6), in(7))
		for row := range 8 {
			ws[row*8+col] = int32(descale(o[row], islowConstBits-islowPass1Bits))
		}
	}

	// Pass 2: rows, descaled by the pass-1 scale and the 8 of the DCT.
	const shift = islowConstBits + islowPass1Bits + 3
	for row := range 8 {
		w := ws[row*8 : row*8+8 : row*8+8]
		out := b[row*8 : row*8+8 : row*8+8]
		if w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0 {
			s := rangeLimit(descale(int64(w[0]), islowPass1Bits+3)) - 128
			for i := range out {
				out[i] = s
			}
			continue
		}
		o := islow1D(int64(w[0]), int64(w[1]), int64(w[2]), int64(w[3]), int64(w[4]), int64(w[5]), int64(w[6]), int64(w[7]))
		for i := range out {
			out[i] = rangeLimit(descale(o[i], shift)) - 128
		}
	}
}

// islow1D is one 8-point pass of jpeg_idct_islow, before descaling: the
// results carry islowConstBits fractional bits more than the inputs.
func islow1D(x0, x1, x2, x3, x4, x5, x6, x7 int64) [8]int64 {
	// Even part.
	z1 := (x2 + x6) * fix0_541196100
	tmp2 := z1 - x6*fix1_847759065
	tmp3 := z1 + x2*fix0_765366865
	tmp0 := (x0 + x4) << islowConstBits
	tmp1 := (x0 - x4) << islowConstBits
	tmp10, tmp13 := tmp0+tmp3, tmp0-tmp3
	tmp11, tmp12 := tmp1+tmp2, tmp1-tmp2

	// Odd part.
	t0, t1, t2, t3 := x7, x5, x3, x1
	z1 = t0 + t3
	z2 := t1 + t2
	z3 := t0 + t2
	z4 := t1 + t3
	z5 := (z3 + z4) * fix1_175875602
	t0 *= fix0_298631336
	t1 *= fix2_053119869
	t2 *= fix3_072711026
	t3 *= fix1_501321110
	z1 *= -fix0_899976223
	z2 *= -fix2_562915447
	z3 *= -fix1_961570560
	z4 *= -fix0_390180644
	z3 += z5
	z4 += z5
	t0 += z1 + z3
	t1 += z2 + z4
	t2 += z2 + z3
	t3 += z1 + z4

	return [8]int64{
		tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0,
		tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3,
	}
}
