package synth

import (
	"encoding/binary"
	"math/bits"
)

// The pickler below writes what CPython 3.12's C pickler writes for the
// object graphs torch builds, so that a reader meets real framing and memo
// references. Python memoizes by object identity, so the graph is made of
// pointers: two values share a memo entry exactly when they are the same
// pointer (an interned field name, a class, torch.strided), as they would be
// the same Python object.

// pyStr is one Python str object.
type pyStr struct{ s string }

// pyTuple is a tuple object.
type pyTuple struct{ items []any }

// pyList is a list object.
type pyList struct{ items []any }

// pyDict is a dict object with its insertion order.
type pyDict struct{ keys, vals []any }

func (d *pyDict) set(k, v any) {
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
}

// pyGlobal is a class or function, pickled by module and name.
type pyGlobal struct{ module, name *pyStr }

// pyReduce is an object whose __reduce__ gives (callable, args).
type pyReduce struct {
	fn   *pyGlobal
	args *pyTuple
}

// pyObj is an instance rebuilt by NEWOBJ(cls, ()) and BUILD(state).
type pyObj struct {
	cls   *pyGlobal
	state any
}

// pyPers is a persistent id (torch.save's storage references).
type pyPers struct{ pid *pyTuple }

func str(s string) *pyStr         { return &pyStr{s} }
func tuple(items ...any) *pyTuple { return &pyTuple{items} }

// Opcodes used.
const (
	opMark         = '('
	opStop         = '.'
	opBinint       = 'J'
	opBinint1      = 'K'
	opBinint2      = 'M'
	opNone         = 'N'
	opBinpersid    = 'Q'
	opReduce       = 'R'
	opBinunicode   = 'X'
	opAppend       = 'a'
	opBuild        = 'b'
	opGlobal       = 'c'
	opEmptyDict    = '}'
	opAppends      = 'e'
	opBinget       = 'h'
	opLongBinget   = 'j'
	opEmptyList    = ']'
	opBinput       = 'q'
	opLongBinput   = 'r'
	opSetitem      = 's'
	opTuple        = 't'
	opEmptyTuple   = ')'
	opSetitems     = 'u'
	opProto        = 0x80
	opNewobj       = 0x81
	opTuple1       = 0x85
	opNewtrue      = 0x88
	opNewfalse     = 0x89
	opLong1        = 0x8a
	opShortBinuni  = 0x8c
	opBinunicode8  = 0x8d
	opStackGlobal  = 0x93
	opMemoize      = 0x94
	opFrame        = 0x95
	frameHeader    = 9
	frameTarget    = 64 << 10
	frameMin       = 4
	batchSize      = 1000
	noFrame        = -1
	maxBinunicode  = 0xffffffff
	maxShortBinuni = 0xff
)

type pickler struct {
	proto      int
	out        []byte
	framing    bool
	frameStart int
	memo       map[any]int
}

// dumps pickles v as pickle.dumps(v, protocol=proto) does (proto 2 or 4).
func dumps(v any, proto int) []byte {
	p := &pickler{proto: proto, frameStart: noFrame, memo: map[any]int{}}
	p.write(opProto, byte(proto))
	p.framing = proto >= 4
	p.save(v)
	p.write(opStop)
	p.commitFrame()
	return p.out
}

// write appends bytes, opening a frame (with room for its header) when
// framing and none is open.
func (p *pickler) write(b ...byte) {
	if p.framing && p.frameStart == noFrame {
		p.frameStart = len(p.out)
		p.out = append(p.out, make([]byte, frameHeader)...)
	}
	p.out = append(p.out, b...)
}

// commitFrame closes the open frame: a FRAME header with its length, or
// no header at all for a frame shorter than 4 bytes.
func (p *pickler) commitFrame() {
	if p.frameStart == noFrame {
		return
	}
	n := len(p.out) - p.frameStart - frameHeader
	if n >= frameMin {
		p.out[p.frameStart] = opFrame
		binary.LittleEndian.PutUint64(p.out[p.frameStart+1:], uint64(n))
	} else {
		copy(p.out[p.frameStart:], p.out[p.frameStart+frameHeader:])
		p.out = p.out[:len(p.out)-frameHeader]
	}
	p.frameStart = noFrame
}

// boundary ends a frame once it reaches the target size; the C pickler
// checks after every saved object.
func (p *pickler) boundary() {
	if p.frameStart != noFrame && len(p.out)-p.frameStart-frameHeader >= frameTarget {
		p.commitFrame()
	}
}

func (p *pickler) memoPut(v any) {
	idx := len(p.memo)
	p.memo[v] = idx
	switch {
	case p.proto >= 4:
		p.write(opMemoize)
	case idx < 256:
		p.write(opBinput, byte(idx))
	default:
		p.write(opLongBinput)
		p.write(binary.LittleEndian.AppendUint32(nil, uint32(idx))...)
	}
}

func (p *pickler) memoGet(idx int) {
	if idx < 256 {
		p.write(opBinget, byte(idx))
		return
	}
	p.write(opLongBinget)
	p.write(binary.LittleEndian.AppendUint32(nil, uint32(idx))...)
}

func (p *pickler) save(v any) {
	defer p.boundary()
	switch v := v.(type) {
	case nil:
		p.write(opNone)
		return
	case bool:
		if v {
			p.write(opNewtrue)
		} else {
			p.write(opNewfalse)
		}
		return
	case int:
		p.saveInt(int64(v))
		return
	case int64:
		p.saveInt(v)
		return
	}
	if idx, ok := p.memo[v]; ok {
		p.memoGet(idx)
		return
	}
	switch v := v.(type) {
	case *pyStr:
		p.saveStr(v)
	case *pyTuple:
		p.saveTuple(v)
	case *pyList:
		p.write(opEmptyList)
		p.memoPut(v)
		p.batchList(v.items)
	case *pyDict:
		p.write(opEmptyDict)
		p.memoPut(v)
		p.batchDict(v)
	case *pyGlobal:
		if p.proto >= 4 {
			p.save(v.module)
			p.save(v.name)
			p.write(opStackGlobal)
		} else {
			p.write(opGlobal)
			p.write([]byte(v.module.s + "\n" + v.name.s + "\n")...)
		}
		p.memoPut(v)
	case *pyReduce:
		p.save(v.fn)
		p.save(v.args)
		p.write(opReduce)
		p.memoPut(v)
	case *pyObj:
		p.save(v.cls)
		p.save(tuple())
		p.write(opNewobj)
		p.memoPut(v)
		if v.state != nil {
			p.save(v.state)
			p.write(opBuild)
		}
	case *pyPers:
		p.save(v.pid)
		p.write(opBinpersid)
	default:
		panic("synth: pickling an unsupported value") // a programming error: the graphs are built here
	}
}

func (p *pickler) saveInt(x int64) {
	switch {
	case x >= 0 && x <= 0xff:
		p.write(opBinint1, byte(x))
	case x >= 0 && x <= 0xffff:
		p.write(opBinint2, byte(x), byte(x>>8))
	case x >= -1<<31 && x < 1<<31:
		p.write(opBinint)
		p.write(binary.LittleEndian.AppendUint32(nil, uint32(int32(x)))...)
	default:
		p.write(opLong1)
		p.write(encodeLong(x)...)
	}
}

// encodeLong is LONG1's operand: a length byte and the shortest
// little-endian two's-complement bytes, as Python's encode_long makes them.
func encodeLong(x int64) []byte {
	mag := uint64(x)
	if x < 0 {
		mag = -mag
	}
	n := bits.Len64(mag)/8 + 1
	le := binary.LittleEndian.AppendUint64(nil, uint64(x))
	if n > 8 {
		n = 8
	}
	b := le[:n]
	if x < 0 && n > 1 && b[n-1] == 0xff && b[n-2]&0x80 != 0 {
		b = b[:n-1]
	}
	return append([]byte{byte(len(b))}, b...)
}

func (p *pickler) saveStr(s *pyStr) {
	n := len(s.s)
	switch {
	case p.proto >= 4 && n <= maxShortBinuni:
		p.write(opShortBinuni, byte(n))
	case n <= maxBinunicode:
		p.write(opBinunicode)
		p.write(binary.LittleEndian.AppendUint32(nil, uint32(n))...)
	default:
		p.write(opBinunicode8)
		p.write(binary.LittleEndian.AppendUint64(nil, uint64(n))...)
	}
	p.write([]byte(s.s)...)
	p.memoPut(s)
}

func (p *pickler) saveTuple(t *pyTuple) {
	n := len(t.items)
	if n == 0 {
		p.write(opEmptyTuple)
		return
	}
	if n <= 3 {
		for _, x := range t.items {
			p.save(x)
		}
		p.write(byte(opTuple1 + n - 1))
	} else {
		p.write(opMark)
		for _, x := range t.items {
			p.save(x)
		}
		p.write(opTuple)
	}
	p.memoPut(t)
}

// batchList appends a list's items: APPEND for one, else batches of 1000
// between MARK and APPENDS.
func (p *pickler) batchList(items []any) {
	switch len(items) {
	case 0:
		return
	case 1:
		p.save(items[0])
		p.write(opAppend)
		return
	}
	for done := 0; done < len(items); {
		p.write(opMark)
		for n := 0; n < batchSize && done < len(items); n++ {
			p.save(items[done])
			done++
		}
		p.write(opAppends)
	}
}

// batchDict sets a dict's items: SETITEM for one, else batches of 1000
// between MARK and SETITEMS. Like CPython's batch_dict_exact, a dict whose
// size is a multiple of 1000 ends with an empty batch.
func (p *pickler) batchDict(d *pyDict) {
	switch len(d.keys) {
	case 0:
		return
	case 1:
		p.save(d.keys[0])
		p.save(d.vals[0])
		p.write(opSetitem)
		return
	}
	at := 0
	for {
		p.write(opMark)
		n := 0
		for at < len(d.keys) {
			p.save(d.keys[at])
			p.save(d.vals[at])
			at++
			if n++; n == batchSize {
				break
			}
		}
		p.write(opSetitems)
		if n != batchSize {
			return
		}
	}
}
