// Package dtype names tensor element types the way safetensors and torch do, and
// converts between the floating-point ones exactly as torch's Tensor.to does on
// the CPU: round-to-nearest-even, NaN and Inf preserved, subnormals kept.
package dtype

import (
	"fmt"
	"strings"
)

// DType is a tensor element type. The zero value is Invalid.
type DType uint8

// The element types ckptgate knows. Their order is not significant; use
// SafetensorsRank for the order safetensors sorts tensors in.
const (
	Invalid DType = iota
	Bool
	U8
	I8
	I16
	U16
	F16
	BF16
	I32
	U32
	F32
	F64
	I64
	U64
	C64
	C128
	F8E4M3
	F8E5M2
	F8E4M3FNUZ
	F8E5M2FNUZ
	F8E8M0
	numDTypes
)

type info struct {
	st    string // safetensors dtype string
	torch string // torch dtype attribute name (torch.<name>)
	size  int    // bytes per element
	rank  int    // position in the safetensors Rust Dtype enum
	float bool
}

// rank values follow the declaration order of the Rust enum safetensors::Dtype:
// BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ
// I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64.
var infos = [numDTypes]info{
	Bool:       {"BOOL", "bool", 1, 0, false},
	U8:         {"U8", "uint8", 1, 4, false},
	I8:         {"I8", "int8", 1, 5, false},
	F8E5M2:     {"F8_E5M2", "float8_e5m2", 1, 6, true},
	F8E4M3:     {"F8_E4M3", "float8_e4m3fn", 1, 7, true},
	F8E8M0:     {"F8_E8M0", "float8_e8m0fnu", 1, 8, true},
	F8E4M3FNUZ: {"F8_E4M3FNUZ", "float8_e4m3fnuz", 1, 9, true},
	F8E5M2FNUZ: {"F8_E5M2FNUZ", "float8_e5m2fnuz", 1, 10, true},
	I16:        {"I16", "int16", 2, 11, false},
	U16:        {"U16", "uint16", 2, 12, false},
	F16:        {"F16", "float16", 2, 13, true},
	BF16:       {"BF16", "bfloat16", 2, 14, true},
	I32:        {"I32", "int32", 4, 15, false},
	U32:        {"U32", "uint32", 4, 16, false},
	F32:        {"F32", "float32", 4, 17, true},
	C64:        {"C64", "complex64", 8, 18, false},
	F64:        {"F64", "float64", 8, 19, true},
	I64:        {"I64", "int64", 8, 20, false},
	U64:        {"U64", "uint64", 8, 21, false},
	C128:       {"C128", "complex128", 16, 22, false},
}

// String returns the safetensors name ("BF16", "F32", …).
func (d DType) String() string {
	if d == Invalid || d >= numDTypes {
		return fmt.Sprintf("dtype(%d)", d)
	}
	return infos[d].st
}

// Size is the number of bytes of one element (0 for Invalid).
func (d DType) Size() int {
	if d >= numDTypes {
		return 0
	}
	return infos[d].size
}

// IsFloat reports whether d is a real floating-point type.
func (d DType) IsFloat() bool { return d < numDTypes && infos[d].float }

// TorchName is torch's attribute name for d ("bfloat16"), as pickles and
// config.json's dtype field spell it.
func (d DType) TorchName() string {
	if d == Invalid || d >= numDTypes {
		return ""
	}
	return infos[d].torch
}

// SafetensorsRank is d's position in the safetensors Rust enum; the Rust writer
// orders tensors by descending rank, then by name.
func (d DType) SafetensorsRank() int {
	if d >= numDTypes {
		return -1
	}
	return infos[d].rank
}

// ParseSafetensors returns the DType named by a safetensors dtype string.
func ParseSafetensors(s string) (DType, bool) {
	for d := Bool; d < numDTypes; d++ {
		if infos[d].st == s {
			return d, true
		}
	}
	return Invalid, false
}

// ParseTorch returns the DType for a torch dtype name, with or without the
// "torch." prefix ("bfloat16", "torch.float32"), including the aliases torch
// accepts in config files (half, float, double, bf16 spellings are not torch's).
func ParseTorch(s string) (DType, bool) {
	s = strings.TrimPrefix(s, "torch.")
	switch s {
	case "half":
		return F16, true
	case "float":
		return F32, true
	case "double":
		return F64, true
	case "long":
		return I64, true
	case "int":
		return I32, true
	case "short":
		return I16, true
	}
	for d := Bool; d < numDTypes; d++ {
		if infos[d].torch == s {
			return d, true
		}
	}
	return Invalid, false
}

// ParseFlag parses the --dtype flag spellings: bf16, fp16, fp32 (and the
// torch names).
func ParseFlag(s string) (DType, bool) {
	switch strings.ToLower(s) {
	case "bf16", "bfloat16":
		return BF16, true
	case "fp16", "f16", "float16", "half":
		return F16, true
	case "fp32", "f32", "float32", "float":
		return F32, true
	}
	return Invalid, false
}
