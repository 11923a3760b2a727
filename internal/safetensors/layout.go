package safetensors

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/ckptgate/ckptgate/internal/dtype"
)

// Entry is a tensor to be written.
type Entry struct {
	Name  string
	DType dtype.DType
	Shape []int64
}

// NumBytes is the tensor's data size.
func (e Entry) NumBytes() int64 {
	n := int64(e.DType.Size())
	for _, d := range e.Shape {
		n *= d
	}
	return n
}

// Layout is the exact byte layout the Rust writer (safetensors.serialize)
// produces for a set of tensors: the header, then every tensor's data
// back-to-back in header order.
type Layout struct {
	// Header is the 8-byte length prefix followed by the padded JSON header.
	Header []byte
	// Tensors in file order, with data offsets relative to the data section.
	Tensors []TensorInfo
	byName  map[string]int
}

// DataStart is the file offset of the data section.
func (l *Layout) DataStart() int64 { return int64(len(l.Header)) }

// Size is the total file size.
func (l *Layout) Size() int64 {
	if len(l.Tensors) == 0 {
		return l.DataStart()
	}
	return l.DataStart() + l.Tensors[len(l.Tensors)-1].End
}

// Offset returns the file offset of a tensor's first byte.
func (l *Layout) Offset(name string) (int64, bool) {
	i, ok := l.byName[name]
	if !ok {
		return 0, false
	}
	return l.DataStart() + l.Tensors[i].Begin, true
}

// NewLayout orders tensors as the Rust writer does (dtype descending in its
// enum order, then name ascending by bytes), assigns contiguous offsets and
// renders the header: compact JSON, __metadata__ first (keys sorted, as the
// Rust HashMap is rendered through a sorted map by transformers' usage),
// entries as {"dtype","shape","data_offsets"}, padded with spaces to a
// multiple of 8.
func NewLayout(metadata map[string]string, entries []Entry) (*Layout, error) {
	es := append([]Entry(nil), entries...)
	seen := make(map[string]bool, len(es))
	for _, e := range es {
		if seen[e.Name] {
			return nil, fmt.Errorf("safetensors: tensor %q given twice", e.Name)
		}
		seen[e.Name] = true
		if e.DType.Size() == 0 {
			return nil, fmt.Errorf("safetensors: tensor %q has invalid dtype", e.Name)
		}
		if !utf8.ValidString(e.Name) {
			return nil, fmt.Errorf("safetensors: tensor name %q is not UTF-8", e.Name)
		}
	}
	sort.SliceStable(es, func(i, j int) bool {
		ri, rj := es[i].DType.SafetensorsRank(), es[j].DType.SafetensorsRank()
		if ri != rj {
			return ri > rj
		}
		return es[i].Name < es[j].Name
	})
	l := &Layout{byName: make(map[string]int, len(es))}
	buf := []byte{'{'}
	if metadata != nil {
		buf = append(buf, `"__metadata__":{`...)
		keys := slices.Sorted(maps.Keys(metadata))
		for i, k := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, k)
			buf = append(buf, ':')
			buf = appendJSONString(buf, metadata[k])
		}
		buf = append(buf, '}')
	}
	var at int64
	for i, e := range es {
		if metadata != nil || i > 0 {
			buf = append(buf, ',')
		}
		n := e.NumBytes()
		ti := TensorInfo{Name: e.Name, DType: e.DType, Shape: append([]int64(nil), e.Shape...), Begin: at, End: at + n}
		at += n
		l.byName[e.Name] = len(l.Tensors)
		l.Tensors = append(l.Tensors, ti)
		buf = appendJSONString(buf, e.Name)
		buf = append(buf, `:{"dtype":"`...)
		buf = append(buf, e.DType.String()...)
		buf = append(buf, `","shape":[`...)
		for k, d := range e.Shape {
			if k > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendInt(buf, d, 10)
		}
		buf = append(buf, `],"data_offsets":[`...)
		buf = strconv.AppendInt(buf, ti.Begin, 10)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, ti.End, 10)
		buf = append(buf, "]}"...)
	}
	buf = append(buf, '}')
	for len(buf)%8 != 0 {
		buf = append(buf, ' ')
	}
	if len(buf) > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header of %d bytes exceeds %d", len(buf), MaxHeaderSize)
	}
	l.Header = make([]byte, 8, 8+len(buf))
	binary.LittleEndian.PutUint64(l.Header, uint64(len(buf)))
	l.Header = append(l.Header, buf...)
	return l, nil
}

// appendJSONString escapes like serde_json: only '"', '\\' and control
// characters, with \b \f \n \r \t short forms and \u00xx (lower-case hex)
// for the rest; everything else, non-ASCII included, is written raw.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			buf = append(buf, '\\', '"')
		case '\\':
			buf = append(buf, '\\', '\\')
		case '\b':
			buf = append(buf, '\\', 'b')
		case '\f':
			buf = append(buf, '\\', 'f')
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			if c < 0x20 {
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			} else {
				buf = append(buf, c)
			}
		}
	}
	return append(buf, '"')
}
