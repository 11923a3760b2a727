// Package safetensors reads and writes safetensors files the way the reference
// Rust implementation does: headers are parsed with every rule of its reader
// (bounded size, UTF-8 JSON, known dtypes, contiguous non-overlapping offsets,
// sizes matching shapes, exact file length, no duplicate names) and written
// byte-for-byte as its writer lays them out.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"unicode/utf8"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// MaxHeaderSize is the reference reader's bound on the JSON header length.
const MaxHeaderSize = 100_000_000

// Rule names one rule of the reference parser; verify's safetensors.* checks
// are keyed by them.
type Rule string

// The rules a header can break.
const (
	RuleHeaderSize Rule = "header_size" // length prefix missing, too large, or past the end of the file
	RuleUTF8       Rule = "utf8"        // header is not UTF-8
	RuleJSON       Rule = "json"        // header is not a JSON object of the expected shape
	RuleDuplicate  Rule = "duplicate"   // a tensor name appears twice
	RuleDType      Rule = "dtype"       // unknown dtype string
	RuleShape      Rule = "shape"       // shape not a list of non-negative integers, or overflowing
	RuleOffsets    Rule = "offsets"     // data offsets not contiguous from 0 (gap, overlap, begin > end)
	RuleSize       Rule = "size"        // end-begin differs from numel × element size
	RuleLength     Rule = "length"      // file length differs from 8 + header + data
	RuleMetadata   Rule = "metadata"    // __metadata__ is not a map of strings
)

// ErrInvalid is wrapped by every *HeaderError.
var ErrInvalid = errors.New("invalid safetensors file")

// HeaderError reports a broken rule, naming the file and, where there is one,
// the tensor.
type HeaderError struct {
	File   string
	Rule   Rule
	Tensor string
	Msg    string
}

func (e *HeaderError) Error() string {
	s := "safetensors"
	if e.File != "" {
		s = e.File
	}
	if e.Tensor != "" {
		return fmt.Sprintf("%s: tensor %q: %s (%s)", s, e.Tensor, e.Msg, e.Rule)
	}
	return fmt.Sprintf("%s: %s (%s)", s, e.Msg, e.Rule)
}

func (e *HeaderError) Unwrap() error { return ErrInvalid }

// TensorInfo describes one tensor of a file. Begin and End are relative to the
// start of the data section.
type TensorInfo struct {
	Name       string
	DType      dtype.DType
	Shape      []int64
	Begin, End int64
}

// NumElements is the product of the shape (1 for a 0-d tensor).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// NumBytes is End-Begin.
func (t TensorInfo) NumBytes() int64 { return t.End - t.Begin }

// Header is a parsed and validated safetensors header.
type Header struct {
	// Metadata is the __metadata__ map (nil when absent).
	Metadata map[string]string
	// Tensors are sorted by Begin (data order).
	Tensors []TensorInfo
	// JSONOrder lists the tensor names in the order the JSON header has them.
	JSONOrder []string
	// HeaderLen is N, the length of the JSON header including padding.
	HeaderLen int64
}

// DataStart is the file offset of the data section.
func (h *Header) DataStart() int64 { return 8 + h.HeaderLen }

// DataLen is the length of the data section.
func (h *Header) DataLen() int64 {
	if len(h.Tensors) == 0 {
		return 0
	}
	return h.Tensors[len(h.Tensors)-1].End
}

// ReadHeader reads and validates the header of a safetensors file of the given
// size. name is used in errors only.
func ReadHeader(r io.ReaderAt, size int64, name string) (*Header, error) {
	fail := func(rule Rule, tensor, format string, a ...any) (*Header, error) {
		return nil, &HeaderError{File: name, Rule: rule, Tensor: tensor, Msg: fmt.Sprintf(format, a...)}
	}
	if size < 8 {
		return fail(RuleHeaderSize, "", "file is %d bytes, shorter than the 8-byte length prefix", size)
	}
	var pre [8]byte
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, fmt.Errorf("%s: reading header length: %w", name, err)
	}
	n := binary.LittleEndian.Uint64(pre[:])
	if n > MaxHeaderSize {
		return fail(RuleHeaderSize, "", "header length %d exceeds the limit of %d", n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return fail(RuleHeaderSize, "", "header length %d runs past the end of the %d-byte file", n, size)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, fmt.Errorf("%s: reading %d-byte header: %w", name, n, err)
	}
	h, err := ParseHeaderJSON(buf, name)
	if err != nil {
		return nil, err
	}
	h.HeaderLen = int64(n)
	if want := 8 + int64(n) + h.DataLen(); want != size {
		return fail(RuleLength, "", "file is %d bytes, header and offsets say %d", size, want)
	}
	return h, nil
}

// ParseHeaderJSON validates the JSON header bytes (without the length prefix)
// and everything that can be checked without the file length.
func ParseHeaderJSON(buf []byte, name string) (*Header, error) {
	fail := func(rule Rule, tensor, format string, a ...any) (*Header, error) {
		return nil, &HeaderError{File: name, Rule: rule, Tensor: tensor, Msg: fmt.Sprintf(format, a...)}
	}
	if !utf8.Valid(buf) {
		return fail(RuleUTF8, "", "header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return fail(RuleJSON, "", "header does not start with a JSON object")
	}
	h := &Header{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fail(RuleJSON, "", "header JSON: %v", err)
		}
		key := tok.(string)
		if seen[key] {
			return fail(RuleDuplicate, key, "name appears more than once in the header")
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fail(RuleJSON, key, "header JSON: %v", err)
		}
		if key == "__metadata__" {
			md, err := decodeStringMap(raw)
			if err != nil {
				return fail(RuleMetadata, "", "__metadata__: %v", err)
			}
			h.Metadata = md
			continue
		}
		ti, rule, err := decodeTensor(key, raw)
		if err != nil {
			return fail(rule, key, "%v", err)
		}
		h.Tensors = append(h.Tensors, ti)
		h.JSONOrder = append(h.JSONOrder, key)
	}
	if _, err := dec.Token(); err != nil {
		return fail(RuleJSON, "", "header JSON: %v", err)
	}
	// Only padding spaces may follow the object.
	rest, _ := io.ReadAll(dec.Buffered())
	if len(bytes.TrimRight(rest, " ")) != 0 {
		// The Rust reader parses with serde_json::from_str on the whole
		// header, which accepts trailing whitespace only.
		if len(bytes.TrimSpace(rest)) != 0 {
			return fail(RuleJSON, "", "trailing bytes after the header object")
		}
	}
	if _, err := io.Copy(io.Discard, dec.Buffered()); err != nil {
		return nil, err
	}
	sort.SliceStable(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var at int64
	for _, t := range h.Tensors {
		if t.Begin != at {
			if t.Begin < at {
				return fail(RuleOffsets, t.Name, "data_offsets [%d,%d] overlap the previous tensor, which ends at %d", t.Begin, t.End, at)
			}
			return fail(RuleOffsets, t.Name, "data_offsets [%d,%d] leave a gap after %d", t.Begin, t.End, at)
		}
		at = t.End
	}
	return h, nil
}

func decodeStringMap(raw json.RawMessage) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New("not a map of strings to strings")
	}
	return m, nil
}

func decodeTensor(name string, raw json.RawMessage) (TensorInfo, Rule, error) {
	var v struct {
		DType       *string        `json:"dtype"`
		Shape       []json.Number  `json:"shape"`
		DataOffsets []json.Number  `json:"data_offsets"`
		Extra       map[string]any `json:"-"`
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	d.DisallowUnknownFields()
	if err := d.Decode(&v); err != nil {
		return TensorInfo{}, RuleJSON, fmt.Errorf("entry is not {dtype, shape, data_offsets}: %v", err)
	}
	if v.DType == nil || v.Shape == nil || v.DataOffsets == nil {
		return TensorInfo{}, RuleJSON, errors.New("entry lacks dtype, shape or data_offsets")
	}
	dt, ok := dtype.ParseSafetensors(*v.DType)
	if !ok {
		return TensorInfo{}, RuleDType, fmt.Errorf("unknown dtype %q", *v.DType)
	}
	ti := TensorInfo{Name: name, DType: dt, Shape: make([]int64, len(v.Shape))}
	numel := uint64(1)
	for i, s := range v.Shape {
		x, err := parseUint(s)
		if err != nil {
			return TensorInfo{}, RuleShape, fmt.Errorf("shape[%d] = %s: %v", i, s, err)
		}
		hi, lo := bits.Mul64(numel, x)
		if hi != 0 || lo > math.MaxInt64 {
			return TensorInfo{}, RuleShape, fmt.Errorf("shape %v overflows", v.Shape)
		}
		numel = lo
		ti.Shape[i] = int64(x)
	}
	if len(v.DataOffsets) != 2 {
		return TensorInfo{}, RuleOffsets, fmt.Errorf("data_offsets has %d elements, want 2", len(v.DataOffsets))
	}
	b, err1 := parseUint(v.DataOffsets[0])
	e, err2 := parseUint(v.DataOffsets[1])
	if err1 != nil || err2 != nil || b > math.MaxInt64 || e > math.MaxInt64 {
		return TensorInfo{}, RuleOffsets, fmt.Errorf("data_offsets %v are not valid offsets", v.DataOffsets)
	}
	if e < b {
		return TensorInfo{}, RuleOffsets, fmt.Errorf("data_offsets [%d,%d] end before they begin", b, e)
	}
	ti.Begin, ti.End = int64(b), int64(e)
	hi, want := bits.Mul64(numel, uint64(dt.Size()))
	if hi != 0 || want != e-b {
		return TensorInfo{}, RuleSize, fmt.Errorf("shape %v of %v needs %d bytes, data_offsets [%d,%d] hold %d", ti.Shape, dt, numel*uint64(dt.Size()), b, e, e-b)
	}
	return ti, "", nil
}

func parseUint(n json.Number) (uint64, error) {
	s := string(n)
	if s == "" || s[0] == '-' {
		return 0, errors.New("negative or empty")
	}
	var x uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not an integer")
		}
		hi, lo := bits.Mul64(x, 10)
		lo, carry := bits.Add64(lo, uint64(c-'0'), 0)
		if hi != 0 || carry != 0 {
			return 0, errors.New("overflows 64 bits")
		}
		x = lo
	}
	return x, nil
}
