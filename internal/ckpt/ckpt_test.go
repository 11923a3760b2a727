package ckpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

func chunk(off, size []int64) Chunk { return Chunk{Offsets: off, Sizes: size, Where: "test"} }

func TestValidateCoverage(t *testing.T) {
	cases := []struct {
		name   string
		shape  []int64
		chunks []Chunk
		ok     bool
	}{
		{"torch.chunk 10 over 4", []int64{10, 2}, []Chunk{chunk([]int64{0, 0}, []int64{3, 2}), chunk([]int64{3, 0}, []int64{3, 2}), chunk([]int64{6, 0}, []int64{3, 2}), chunk([]int64{9, 0}, []int64{1, 2})}, true},
		{"FSDP2 empty chunk", []int64{1}, []Chunk{chunk([]int64{0}, []int64{1}), chunk([]int64{1}, []int64{0}), chunk([]int64{1}, []int64{0})}, true},
		{"2-D boxes", []int64{4, 4}, []Chunk{chunk([]int64{0, 0}, []int64{2, 2}), chunk([]int64{0, 2}, []int64{2, 2}), chunk([]int64{2, 0}, []int64{2, 4})}, true},
		{"0-d", []int64{}, []Chunk{chunk([]int64{}, []int64{})}, true},
		{"hole", []int64{4}, []Chunk{chunk([]int64{0}, []int64{2}), chunk([]int64{3}, []int64{1})}, false},
		{"overlap", []int64{4}, []Chunk{chunk([]int64{0}, []int64{3}), chunk([]int64{2}, []int64{2})}, false},
		{"overlap hidden by volume", []int64{4}, []Chunk{chunk([]int64{0}, []int64{2}), chunk([]int64{1}, []int64{2})}, false},
		{"out of bounds", []int64{4}, []Chunk{chunk([]int64{0}, []int64{2}), chunk([]int64{3}, []int64{2})}, false},
		{"rank mismatch", []int64{4}, []Chunk{chunk([]int64{0, 0}, []int64{4, 1})}, false},
		{"2-D overlap", []int64{4, 4}, []Chunk{chunk([]int64{0, 0}, []int64{2, 3}), chunk([]int64{0, 2}, []int64{2, 2}), chunk([]int64{2, 0}, []int64{2, 4})}, false},
	}
	for _, c := range cases {
		err := ValidateCoverage(&Tensor{Name: "x", DType: dtype.F32, Shape: c.shape, Chunks: c.chunks})
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v", c.name, err)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v does not wrap ErrCorrupt", c.name, err)
		}
	}
}

// A transposed storage read into one box of a larger tensor: WalkChunk must
// deliver the elements in row-major order at their global positions.
func TestWalkChunkStrided(t *testing.T) {
	// storage holds a 3x2 matrix column-major: the view (size 2x3, stride
	// 1x2) is its transpose, i.e. rows [0 2 4] and [1 3 5].
	st := make([]byte, 6*4)
	for i := 0; i < 6; i++ {
		binary.LittleEndian.PutUint32(st[4*i:], uint32(i))
	}
	v := &View{R: bytes.NewReader(st), StorageLen: int64(len(st)), DType: dtype.U32, Size: []int64{2, 3}, Stride: []int64{1, 2},
		CRC32: crc32.ChecksumIEEE(st), HasCRC: true, Where: "mem"}
	tt := &Tensor{Name: "x", DType: dtype.U32, Shape: []int64{4, 3}}
	c := Chunk{Offsets: []int64{2, 0}, Sizes: []int64{2, 3}, Open: func() (*View, error) { return v, nil }}
	out := make([]uint32, 12)
	err := WalkChunk(tt, &c, make([]byte, 8), func(dst int64, src []byte) error {
		for i := 0; i < len(src)/4; i++ {
			out[dst+int64(i)] = binary.LittleEndian.Uint32(src[4*i:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{0, 0, 0, 0, 0, 0, 0, 2, 4, 1, 3, 5}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("out = %v, want %v", out, want)
		}
	}
	v.CRC32++
	if err := WalkChunk(tt, &c, make([]byte, 8), func(int64, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad CRC: %v", err)
	}
	v.CRC32--
	v.Stride = []int64{0, 2}
	if err := WalkChunk(tt, &c, make([]byte, 8), func(int64, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("expanded view: %v", err)
	}
	v.Stride = []int64{1, 3}
	if err := WalkChunk(tt, &c, make([]byte, 8), func(int64, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("view past the storage: %v", err)
	}
}

func TestCombineCRC(t *testing.T) {
	data := make([]byte, 100000)
	for i := range data {
		data[i] = byte(i*7 + i/13)
	}
	for _, cut := range []int{0, 1, 7, 4096, 65537, 99999, 100000} {
		a, b := data[:cut], data[cut:]
		got := CombineCRC(crc32.ChecksumIEEE(a), crc32.ChecksumIEEE(b), int64(len(b)))
		if want := crc32.ChecksumIEEE(data); got != want {
			t.Errorf("cut %d: %08x, want %08x", cut, got, want)
		}
	}
}

// Walking a chunk in parts, in any order, delivers every element once at
// its place and checks the storage CRC from the parts' CRCs.
func TestWalkParts(t *testing.T) {
	const rows, cols = 37, 5
	st := make([]byte, rows*cols*4)
	for i := 0; i < rows*cols; i++ {
		binary.LittleEndian.PutUint32(st[4*i:], uint32(1000+i))
	}
	v := &View{R: bytes.NewReader(st), StorageLen: int64(len(st)), DType: dtype.U32, Size: []int64{rows, cols}, Stride: []int64{cols, 1},
		CRC32: crc32.ChecksumIEEE(st), HasCRC: true, Where: "mem"}
	tt := &Tensor{Name: "x", DType: dtype.U32, Shape: []int64{rows + 3, cols}}
	c := Chunk{Offsets: []int64{3, 0}, Sizes: []int64{rows, cols}, Open: func() (*View, error) { return v, nil }}
	for _, maxElems := range []int64{1, 7, 64, 1000} {
		out := make([]uint32, (rows+3)*cols)
		parts := SplitChunk(&c, maxElems)
		var rs []PartResult
		for i := len(parts) - 1; i >= 0; i-- {
			r, err := WalkPart(tt, &c, parts[i], make([]byte, 12), func(dst int64, src []byte) error {
				for j := 0; j < len(src)/4; j++ {
					out[dst+int64(j)] = binary.LittleEndian.Uint32(src[4*j:])
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		if err := CheckParts(tt, &c, rs, make([]byte, 64)); err != nil {
			t.Fatalf("max %d: %v", maxElems, err)
		}
		for i := 0; i < rows*cols; i++ {
			if out[3*cols+i] != uint32(1000+i) {
				t.Fatalf("max %d: element %d = %d", maxElems, i, out[3*cols+i])
			}
		}
		rs[0].CRC ^= 1
		if err := CheckParts(tt, &c, rs, make([]byte, 64)); !errors.Is(err, ErrCorrupt) && len(parts) > 0 {
			t.Errorf("max %d: tampered part CRC accepted: %v", maxElems, err)
		}
	}
}
