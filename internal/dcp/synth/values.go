package synth

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// Values supplies tensor contents to the writers.
type Values interface {
	// DType is the element type Fill writes.
	DType() dtype.DType
	// Fill writes elements [first, first+len(dst)/DType().Size()) of
	// tensor i, in row-major order, as little-endian bytes. It is called
	// from several goroutines at once.
	Fill(dst []byte, i int, first int64)
}

// Variant selects which version of the weights a Gen produces.
type Variant int

const (
	// Base is the pretrained model: bf16 values of magnitude 2⁻⁹ to 2⁻¹,
	// never zero, never NaN.
	Base Variant = iota
	// Tuned is the fine-tuned model: a quarter of the base's elements moved
	// by 1 to 4 bf16 units in the last place (relative L2 drift near 1%).
	// As float32 it also has random low mantissa bits, so that a cast to
	// bf16 rounds.
	Tuned
)

// Gen is a Values of deterministic pseudo-random weights: each element is a
// function of the seed, the tensor's legacy name and the element's index, so
// any range of any tensor can be produced independently and in parallel.
type Gen struct {
	variant Variant
	dt      dtype.DType
	seeds   []uint64
	tensors []Tensor
}

// NewGen returns the values of tensors in variant v as d (bf16 or fp32).
func NewGen(tensors []Tensor, v Variant, d dtype.DType, seed uint64) (*Gen, error) {
	if d != dtype.BF16 && d != dtype.F32 {
		return nil, fmt.Errorf("synth: values in %v: only bfloat16 and float32 are generated", d)
	}
	g := &Gen{variant: v, dt: d, seeds: make([]uint64, len(tensors)), tensors: tensors}
	for i, t := range tensors {
		h := fnv.New64a()
		h.Write([]byte(t.Legacy))
		g.seeds[i] = mix(seed ^ h.Sum64())
	}
	return g, nil
}

// DType implements Values.
func (g *Gen) DType() dtype.DType { return g.dt }

const golden = 0x9e3779b97f4a7c15

// mix is splitmix64's finaliser: a fast bijection whose outputs look
// independent for consecutive inputs.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// baseBits turns 16 random bits into a bf16: sign from bit 10, exponent
// 118–125 from bits 7–9, mantissa from bits 0–6.
func baseBits(h uint16) uint16 {
	return (h&0x400)<<5 | (118+(h>>7&7))<<7 | h&0x7f
}

// tunedBits moves the mantissa of a quarter of the base values (bits 11–12
// zero) by 1 to 4 (bits 13–14), wrapping within the exponent.
func tunedBits(h uint16) uint16 {
	b := baseBits(h)
	if h>>11&3 != 0 {
		return b
	}
	m := (b + 1 + (h >> 13 & 3)) & 0x7f
	return b&^0x7f | m
}

// Fill implements Values. Every 64-bit random word makes four elements.
func (g *Gen) Fill(dst []byte, i int, first int64) {
	seed := g.seeds[i]
	es := g.dt.Size()
	n := len(dst) / es
	le := binary.LittleEndian
	for k := 0; k < n; {
		e := first + int64(k)
		w := mix(seed + uint64(e>>2)*golden)
		var low uint64
		if g.dt == dtype.F32 && g.variant == Tuned {
			low = mix(w ^ golden)
		}
		for lane := int(e & 3); lane < 4 && k < n; lane, k = lane+1, k+1 {
			h := uint16(w >> (16 * lane))
			b := baseBits(h)
			if g.variant == Tuned {
				b = tunedBits(h)
			}
			if g.dt == dtype.BF16 {
				le.PutUint16(dst[2*k:], b)
				continue
			}
			le.PutUint32(dst[4*k:], uint32(b)<<16|uint32(uint16(low>>(16*lane))))
		}
	}
}

// SHA256 is the hex SHA-256 of tensor i's bytes (all elements, row-major,
// little-endian), as ref-manifests.json defines a tensor's checksum.
func (g *Gen) SHA256(i int) string {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	esize := int64(g.dt.Size())
	n := g.tensors[i].NumElements()
	for at := int64(0); at < n; {
		k := min(n-at, int64(len(buf))/esize)
		b := buf[:k*esize]
		g.Fill(b, i, at)
		h.Write(b)
		at += k
	}
	return hex.EncodeToString(h.Sum(nil))
}
