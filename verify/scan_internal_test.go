package verify

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dcp"
	"github.com/ckptgate/ckptgate/internal/dcp/dcptest"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/safetensors"
)

// specialBF16 are bf16 bit patterns where the fast path's bit tests and the
// general path's float tests could part: NaNs with several payloads and
// signs, both infinities, both zeros, subnormals, the largest finite
// values, ordinary numbers.
var specialBF16 = []uint16{
	0x7fc0, 0xffc0, 0x7f81, 0xff81, 0x7fff, // NaN
	0x7f80, 0xff80, // ±Inf
	0x0000, 0x8000, // ±0
	0x0001, 0x8001, 0x007f, // subnormal
	0x7f7f, 0xff7f, // largest finite
	0x3f80, 0xbf80, 0x3f81, 0x4049, // 1, -1, 1+ulp, π
}

// foldBoth folds model and base bytes (bf16) with foldBF16 and with the
// general path (widen to float64, foldWithBase or foldModel), and returns
// both results.
func foldBoth(mb, bb []byte) (fast, general acc) {
	fast = acc{ts: &TensorScan{}}
	general = acc{ts: &TensorScan{}}
	foldBF16(&fast, mb, bb)
	mf := make([]float64, len(mb)/2)
	toF64(mf, mb, dtype.BF16)
	if bb == nil {
		foldModel(&general, mf)
		return fast, general
	}
	bf := make([]float64, len(bb)/2)
	toF64(bf, bb, dtype.BF16)
	foldWithBase(&general, mf, bf, true)
	return fast, general
}

func compareFolds(t *testing.T, what string, fast, general acc) {
	t.Helper()
	// NaN sums compare equal by bits.
	opt := cmp.Comparer(func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) })
	if diff := cmp.Diff(*general.ts, *fast.ts, opt, cmp.AllowUnexported(TensorScan{})); diff != "" {
		t.Errorf("%s: bf16 fast path differs from the general path (-general +fast):\n%s", what, diff)
	}
	if fast.nonZero != general.nonZero || fast.baseNZ != general.baseNZ {
		t.Errorf("%s: non-zero flags fast (%v, %v), general (%v, %v)", what, fast.nonZero, fast.baseNZ, general.nonZero, general.baseNZ)
	}
}

func putBF16(vals []uint16) []byte {
	b := make([]byte, 2*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint16(b[2*i:], v)
	}
	return b
}

// TestFoldBF16MatchesGeneral checks the bf16 fast path against the general
// path on every pair of special values, and on the fixtures' tensors as
// torch trained them (fsdp1, bf16) against their base.
func TestFoldBF16MatchesGeneral(t *testing.T) {
	var ms, bs []uint16
	for _, m := range specialBF16 {
		for _, b := range specialBF16 {
			ms, bs = append(ms, m), append(bs, b)
		}
	}
	fast, general := foldBoth(putBF16(ms), putBF16(bs))
	compareFolds(t, "special value pairs", fast, general)
	fast, general = foldBoth(putBF16(ms), nil)
	compareFolds(t, "special values without a base", fast, general)

	fx := filepath.Join("..", "goldens", "mllama-tiny-dev")
	base, err := safetensors.OpenDir(filepath.Join(fx, "base"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	c, err := dcp.Open(filepath.Join(fx, "runs", "fsdp1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 0
	for _, st := range c.Tensors {
		bb, info, err := base.ReadBytes(dcptest.LegacyName(st.Name))
		if err != nil || info.DType != dtype.BF16 || st.DType != dtype.BF16 {
			t.Fatalf("%s: base %v %v, source %v", st.Name, info.DType, err, st.DType)
		}
		mb, err := dcptest.TensorBytes(st)
		if err != nil {
			t.Fatal(err)
		}
		fast, general := foldBoth(mb, bb)
		compareFolds(t, st.Name, fast, general)
		n++
	}
	if n != len(c.Tensors) || n == 0 {
		t.Errorf("compared %d of %d tensors", n, len(c.Tensors))
	}
}

// FuzzFoldBF16 checks the fast path against the general path on arbitrary
// model and base bytes (the two halves of the input).
func FuzzFoldBF16(f *testing.F) {
	f.Add(putBF16(append(append([]uint16(nil), specialBF16...), specialBF16...)))
	f.Add(putBF16([]uint16{0x7fc0, 0x7f81, 0x3f80, 0x3f80}))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := len(data) / 4
		fast, general := foldBoth(data[:2*n], data[2*n:4*n])
		compareFolds(t, "fuzz input", fast, general)
	})
}

// BenchmarkFoldBF16 measures the per-element statistics of the scan's
// common case (bf16 model and base) on one piece.
func BenchmarkFoldBF16(b *testing.B) {
	vals := make([]uint16, pieceElems)
	base := make([]uint16, pieceElems)
	for i := range vals {
		// Finite values of both signs; every fourth differs from the base.
		vals[i] = uint16(0x3c00 + i%0x300 | (i&1)<<15)
		base[i] = vals[i]
		if i%4 == 0 {
			base[i]++
		}
	}
	mb, bb := putBF16(vals), putBF16(base)
	b.SetBytes(int64(len(mb)))
	for b.Loop() {
		foldBF16(&acc{ts: &TensorScan{}}, mb, bb)
	}
}

// TestHistBucket checks the relative-error histogram's buckets at their
// edges (10^-9 … 10^-1, as math.Pow computes them) and at the extremes.
func TestHistBucket(t *testing.T) {
	type tc struct {
		rel  float64
		want int
	}
	tests := []tc{{0, 0}, {math.NaN(), 10}, {math.Inf(1), 10}, {5e-324, 1}, {1e-300, 1}, {1, 10}, {1e300, 10}}
	for k := 1; k <= 9; k++ {
		e := math.Pow(10, float64(k-10))
		tests = append(tests, tc{math.Nextafter(e, 0), k}, tc{e, k + 1}, tc{math.Nextafter(e, 1), k + 1},
			tc{e * 3, k + 1}, tc{e / 3, k})
	}
	for _, c := range tests {
		if got := histBucket(c.rel); got != c.want {
			t.Errorf("histBucket(%g) = %d, want %d", c.rel, got, c.want)
		}
	}
}

// BenchmarkCompareSourceF32 measures the comparison of a bf16 model with
// the fp32 source it was cast from (FSDP2's fp32 parameters).
func BenchmarkCompareSourceF32(b *testing.B) {
	sb := make([]byte, 4*pieceElems)
	mb := make([]byte, 2*pieceElems)
	for i := range pieceElems {
		x := float32(i%1000+1) * 1.0009765625e-3 * float32(1-2*(i&1))
		binary.LittleEndian.PutUint32(sb[4*i:], math.Float32bits(x))
		binary.LittleEndian.PutUint16(mb[2*i:], dtype.BF16FromF32(x))
	}
	s := newStreamer()
	b.SetBytes(int64(len(sb)))
	for b.Loop() {
		a := &acc{ts: &TensorScan{DType: dtype.BF16, RelErrHist: make([]int64, 11)}}
		s.compareSourceF(a, mb, nil, sb, dtype.F32)
	}
}

// TestScanColumnChunks scans a source whose chunks split a tensor along
// its second dimension (tensor-parallel boxes, which do not arrive in
// element order): the model is compared with it in a second pass, every
// element once, and a changed element is counted.
func TestScanColumnChunks(t *testing.T) {
	const rows, cols = 5, 6
	vals := make([]uint16, rows*cols)
	for i := range vals {
		vals[i] = dtype.BF16FromF32(float32(i+1) / 8)
	}
	for _, tc := range []struct {
		name      string
		change    int // element of the model to alter, or -1
		differing int64
	}{{"exact", -1, 0}, {"one changed", 13, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			model := append([]uint16(nil), vals...)
			if tc.change >= 0 {
				model[tc.change]++
			}
			dir := t.TempDir()
			l, err := safetensors.NewLayout(nil, []safetensors.Entry{{Name: "multi_modal_projector.weight", DType: dtype.BF16, Shape: []int64{rows, cols}}})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, safetensors.SingleName), append(append([]byte(nil), l.Header...), putBF16(model)...), 0o644); err != nil {
				t.Fatal(err)
			}
			md, err := safetensors.OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer md.Close()
			src := &ckpt.Checkpoint{Tensors: []*ckpt.Tensor{{Name: "multi_modal_projector.weight", DType: dtype.BF16, Shape: []int64{rows, cols}}}}
			for _, c0 := range []int64{0, 3} {
				// The box's elements, row-major, as a contiguous storage.
				var box []uint16
				for r := 0; r < rows; r++ {
					box = append(box, vals[r*cols+int(c0):r*cols+int(c0)+3]...)
				}
				data := putBF16(box)
				src.Tensors[0].Chunks = append(src.Tensors[0].Chunks, ckpt.Chunk{
					Offsets: []int64{0, c0}, Sizes: []int64{rows, 3}, Where: fmt.Sprintf("box at column %d", c0),
					Open: func() (*ckpt.View, error) {
						return &ckpt.View{R: bytes.NewReader(data), StorageLen: int64(len(data)), DType: dtype.BF16,
							Size: []int64{rows, 3}, Stride: []int64{3, 1}, Where: "test"}, nil
					},
				})
			}
			sc, err := runScan(context.Background(), md, nil, src, 1)
			if err != nil {
				t.Fatal(err)
			}
			ts := sc.Get("multi_modal_projector.weight")
			if ts == nil || !ts.HasSource {
				t.Fatalf("no source comparison: %+v", ts)
			}
			var compared int64
			for _, n := range ts.RelErrHist {
				compared += n
			}
			if compared != rows*cols || ts.Differing != tc.differing {
				t.Errorf("compared %d elements (want %d), %d differing (want %d)", compared, rows*cols, ts.Differing, tc.differing)
			}
		})
	}
}
