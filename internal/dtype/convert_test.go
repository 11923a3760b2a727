package dtype

import (
	"encoding/binary"
	"math"
	"testing"
)

// The expected bits below are what torch 2.11 produced on x86-64 for these
// inputs (checkpoint-formats.md §10, observed runs), except NaN, where torch's
// vectorised kernel emits 0xFFFF and its scalar reference 0x7FC0; ckptgate
// follows the scalar reference.
func TestBF16FromF32Torch(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3F808000, 0x3F80}, // tie rounds to even
		{0x3F818000, 0x3F82}, // tie rounds to even (up)
		{0x3F808001, 0x3F81}, // above the tie
		{0x7F7F8000, 0x7F80}, // rounds to +Inf
		{0x7F7F7FFF, 0x7F7F}, // largest finite stays finite
		{0x000116C2, 0x0001}, // subnormal not flushed
		{0x80000000, 0x8000}, // -0
		{0x7F800000, 0x7F80}, // +Inf
		{0xFF800000, 0xFF80}, // -Inf
		{0x7FC00001, BF16NaN},
		{0xFFC12345, BF16NaN},
	}
	for _, c := range cases {
		if got := BF16FromF32(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("BF16FromF32(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
}

func TestF16FromF32Torch(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{65520, 0x7C00}, // overflow to Inf
		{65504, 0x7BFF}, // largest finite
		{70000, 0x7C00},
		{1e-8, 0x0000},    // underflow to zero
		{5.96e-8, 0x0001}, // smallest subnormal
		{1, 0x3C00},       // one
		{-2, 0xC000},      // minus two
		{1.0009765625, 0x3C01},
		{1.00048828125, 0x3C00}, // tie to even
		{1.00146484375, 0x3C02}, // tie to even (up)
	}
	for _, c := range cases {
		if got := F16FromF32(c.in); got != c.want {
			t.Errorf("F16FromF32(%v) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := F16FromF32(float32(math.NaN())); got&0x7FFF != F16NaN {
		t.Errorf("NaN -> %#04x", got)
	}
}

// Every bf16 and f16 value must survive widening to f32 and rounding back
// bit-for-bit (NaNs by class), which is what makes a bf16 -> fp32 -> bf16
// conversion lossless.
func TestRoundTripsExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		b := uint16(i)
		f := F32FromBF16(b)
		if f != f {
			if BF16FromF32(f) != BF16NaN {
				t.Fatalf("bf16 NaN %#04x", b)
			}
			continue
		}
		if got := BF16FromF32(f); got != b {
			t.Fatalf("bf16 %#04x -> %v -> %#04x", b, f, got)
		}
		h := uint16(i)
		g := F32FromF16(h)
		if g != g {
			continue
		}
		if got := F16FromF32(g); got != h {
			t.Fatalf("f16 %#04x -> %v -> %#04x", h, g, got)
		}
	}
}

func TestConvertSlices(t *testing.T) {
	src := make([]byte, 12)
	binary.LittleEndian.PutUint32(src[0:], 0x3F808000)
	binary.LittleEndian.PutUint32(src[4:], math.Float32bits(float32(math.NaN())))
	binary.LittleEndian.PutUint32(src[8:], 0xFF800000)
	dst := make([]byte, 6)
	nans, err := Convert(dst, BF16, src, F32)
	if err != nil {
		t.Fatal(err)
	}
	if nans != 1 {
		t.Errorf("nans = %d, want 1", nans)
	}
	want := []uint16{0x3F80, BF16NaN, 0xFF80}
	for i, w := range want {
		if got := binary.LittleEndian.Uint16(dst[2*i:]); got != w {
			t.Errorf("element %d = %#04x, want %#04x", i, got, w)
		}
	}
	if _, err := Convert(make([]byte, 8), I64, src[:8], F32); err == nil {
		t.Error("F32 -> I64 accepted")
	}
	if _, err := Convert(make([]byte, 2), BF16, src[:3], F32); err == nil {
		t.Error("ragged source accepted")
	}
}

func TestNames(t *testing.T) {
	for d := Bool; d < numDTypes; d++ {
		if p, ok := ParseSafetensors(d.String()); !ok || p != d {
			t.Errorf("ParseSafetensors(%q) = %v, %v", d, p, ok)
		}
		if p, ok := ParseTorch("torch." + d.TorchName()); !ok || p != d {
			t.Errorf("ParseTorch(%q) = %v, %v", d.TorchName(), p, ok)
		}
	}
	if BF16.SafetensorsRank() <= F16.SafetensorsRank() || F32.SafetensorsRank() <= BF16.SafetensorsRank() {
		t.Error("safetensors order F16 < BF16 < F32 broken")
	}
}
