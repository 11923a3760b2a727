package dtype

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Canonical NaN encodings torch's scalar conversions produce: c10's
// round_to_nearest_even returns 0x7FC0 for any NaN, and
// fp16_ieee_from_fp32_value returns the sign with 0x7E00.
const (
	BF16NaN = 0x7FC0
	F16NaN  = 0x7E00
)

// ErrUnsupported is returned for conversions between types ckptgate does not
// convert (integers, complex, fp8).
var ErrUnsupported = errors.New("unsupported dtype conversion")

// BF16FromF32 rounds f to bfloat16 bits with round-to-nearest-even, as torch
// does; any NaN becomes BF16NaN.
func BF16FromF32(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f {
		return BF16NaN
	}
	bias := (u>>16)&1 + 0x7FFF
	return uint16((u + bias) >> 16)
}

// F32FromBF16 widens bfloat16 bits to float32 exactly.
func F32FromBF16(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F16FromF32 rounds f to IEEE half bits with round-to-nearest-even, overflow to
// ±Inf and gradual underflow; NaN becomes sign|F16NaN as in torch.
func F16FromF32(f float32) uint16 {
	if f != f {
		return uint16(math.Float32bits(f)>>16)&0x8000 | F16NaN
	}
	return uint16(float16.Fromfloat32(f))
}

// F32FromF16 widens IEEE half bits to float32 exactly.
func F32FromF16(h uint16) float32 { return float16.Frombits(h).Float32() }

// ToFloat32 decodes n elements of src (little-endian, type from) into dst.
// It accepts F32, BF16, F16 and F64 (F64 is rounded to nearest float32).
func ToFloat32(dst []float32, src []byte, from DType) error {
	n := len(dst)
	if len(src) < n*from.Size() {
		return fmt.Errorf("dtype: %d bytes of %v hold fewer than %d elements", len(src), from, n)
	}
	switch from {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = F32FromBF16(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F32FromF16(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	default:
		return fmt.Errorf("%w: %v to F32", ErrUnsupported, from)
	}
	return nil
}

// Convert casts n = len(src)/from.Size() little-endian elements of type from
// into dst as type to, exactly as torch's Tensor.to(to) does on the CPU.
// dst must hold n*to.Size() bytes. When from == to the bytes are copied.
// The returned count is the number of NaN elements seen (so callers can warn
// that their bit patterns were canonicalised).
func Convert(dst []byte, to DType, src []byte, from DType) (nans int, err error) {
	fs, ts := from.Size(), to.Size()
	if fs == 0 || ts == 0 {
		return 0, fmt.Errorf("%w: %v to %v", ErrUnsupported, from, to)
	}
	if len(src)%fs != 0 {
		return 0, fmt.Errorf("dtype: %d bytes is not a whole number of %v elements", len(src), from)
	}
	n := len(src) / fs
	if len(dst) < n*ts {
		return 0, fmt.Errorf("dtype: destination holds %d bytes, need %d", len(dst), n*ts)
	}
	if from == to {
		copy(dst, src)
		return 0, nil
	}
	if !from.IsFloat() || !to.IsFloat() || from.Size() == 1 || to.Size() == 1 {
		return 0, fmt.Errorf("%w: %v to %v", ErrUnsupported, from, to)
	}
	le := binary.LittleEndian
	for i := 0; i < n; i++ {
		var f float32
		var f64 float64
		wide := false
		switch from {
		case F32:
			f = math.Float32frombits(le.Uint32(src[4*i:]))
		case BF16:
			f = F32FromBF16(le.Uint16(src[2*i:]))
		case F16:
			f = F32FromF16(le.Uint16(src[2*i:]))
		case F64:
			f64 = math.Float64frombits(le.Uint64(src[8*i:]))
			f = float32(f64)
			wide = true
		}
		if f != f {
			nans++
		}
		switch to {
		case F32:
			le.PutUint32(dst[4*i:], math.Float32bits(f))
		case BF16:
			le.PutUint16(dst[2*i:], BF16FromF32(f))
		case F16:
			le.PutUint16(dst[2*i:], F16FromF32(f))
		case F64:
			if !wide {
				f64 = float64(f)
			}
			le.PutUint64(dst[8*i:], math.Float64bits(f64))
		}
	}
	return nans, nil
}

// SwapBytes reverses the byte order of every element of size esize in b, in
// place (big-endian torch archives).
func SwapBytes(b []byte, esize int) {
	if esize <= 1 {
		return
	}
	for i := 0; i+esize <= len(b); i += esize {
		e := b[i : i+esize]
		for l, r := 0, esize-1; l < r; l, r = l+1, r-1 {
			e[l], e[r] = e[r], e[l]
		}
	}
}
