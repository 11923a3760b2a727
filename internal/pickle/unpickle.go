// Package pickle is a restricted, bounded unpickler for the pickles that
// torch checkpoints hold (DCP .metadata files and torch.save data.pkl
// records). It never executes anything: every global the pickle names must
// be in an explicit Allowlist, whose entries say what calling or
// instantiating them produces, and everything else is refused with an error
// that names module.name.
//
// It implements the binary opcodes of protocols 2 to 5 (with FRAME,
// MEMOIZE, STACK_GLOBAL, BINPERSID, NEWOBJ and NEWOBJ_EX), with the memo
// and MARK stack exactly as CPython's unpickler has them. The text opcodes
// of protocols 0 and 1, extension codes and out-of-band buffers are refused.
//
// Every size read from the input is checked against the bytes that remain
// before anything is allocated, and Limits bound the stack, the MARK depth,
// the memo, the number of containers and the work of hashing dict keys, so
// memory stays proportional to the input whatever it holds.
//
// github.com/nlpodyssey/gopickle was the designated pickle machine, but
// v0.3.0 allocates declared lengths before reading them: the 12-byte input
// PROTO 4, FRAME 2⁶³−1 ends the process with "fatal error: out of memory",
// which recover cannot catch, and go test -fuzz derived a second such input
// from a real .metadata within a second (both are in
// testdata/fuzz/FuzzUnpickle). It also returns nil for memo keys that were
// never stored and has no limits to set, so this package replaces it.
package pickle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

// corruptError is a sentinel that also matches ckpt.ErrCorrupt, so that the
// command line maps every pickle error to exit code 2 (bad input).
type corruptError struct{ msg string }

func (e *corruptError) Error() string { return e.msg }
func (e *corruptError) Unwrap() error { return ckpt.ErrCorrupt }

// Sentinel errors; each also matches ckpt.ErrCorrupt under errors.Is.
var (
	// ErrMalformed: the bytes are not a well-formed pickle (bad opcode,
	// truncated argument, stack underflow, missing memo entry, wrong
	// operand type).
	ErrMalformed error = &corruptError{"malformed pickle"}
	// ErrForbiddenGlobal: the pickle names a global that is not in the
	// allowlist, or uses an allowlisted one in a way it does not allow.
	ErrForbiddenGlobal error = &corruptError{"forbidden global"}
	// ErrLimit: the pickle exceeds one of the Limits.
	ErrLimit error = &corruptError{"pickle exceeds a limit"}
)

// ForbiddenGlobalError reports a global that is not in the allowlist. It
// matches ErrForbiddenGlobal (and so ckpt.ErrCorrupt) under errors.Is.
type ForbiddenGlobalError struct {
	Global Global
	// Pos is the byte offset of the GLOBAL or STACK_GLOBAL opcode.
	Pos int
}

func (e *ForbiddenGlobalError) Error() string {
	return fmt.Sprintf("%v: %s is not in the allowlist (at byte %d)", ErrForbiddenGlobal, e.Global, e.Pos)
}

func (e *ForbiddenGlobalError) Unwrap() error { return ErrForbiddenGlobal }

// Limits bound what one pickle may make the unpickler hold. A zero field
// takes its value from DefaultLimits.
type Limits struct {
	// MaxInput is the largest pickle accepted, in bytes.
	MaxInput int
	// MaxStack is the most values on the stack (all MARK levels together).
	MaxStack int
	// MaxMarks is the deepest MARK nesting.
	MaxMarks int
	// MaxMemo is the most memo entries.
	MaxMemo int
	// MaxString is the longest str or bytes value, in bytes.
	MaxString int
	// MaxObjects is the most containers and instances created.
	MaxObjects int
}

// DefaultLimits are generous for checkpoints (the .metadata of an 11B model
// with optimizer state is a few MB) and small enough to refuse abuse early.
var DefaultLimits = Limits{
	MaxInput:   1 << 30,
	MaxStack:   1 << 22,
	MaxMarks:   1 << 10,
	MaxMemo:    1 << 24,
	MaxString:  1 << 28,
	MaxObjects: 1 << 25,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxInput > 0 {
		d.MaxInput = l.MaxInput
	}
	if l.MaxStack > 0 {
		d.MaxStack = l.MaxStack
	}
	if l.MaxMarks > 0 {
		d.MaxMarks = l.MaxMarks
	}
	if l.MaxMemo > 0 {
		d.MaxMemo = l.MaxMemo
	}
	if l.MaxString > 0 {
		d.MaxString = l.MaxString
	}
	if l.MaxObjects > 0 {
		d.MaxObjects = l.MaxObjects
	}
	return d
}

// Config says what a pickle may contain.
type Config struct {
	// Globals are the only globals GLOBAL and STACK_GLOBAL may name.
	Globals Allowlist
	// PersistentLoad resolves BINPERSID ids (torch's storages); nil refuses
	// persistent ids.
	PersistentLoad func(pid any) (any, error)
	Limits         Limits
}

// Unpickle interprets data and returns the value of its STOP opcode.
// Bytes after STOP are ignored, as Python ignores them.
func Unpickle(data []byte, cfg *Config) (any, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	u := &unpickler{
		data:     data,
		frameEnd: -1,
		cfg:      cfg,
		lim:      cfg.Limits.withDefaults(),
		memo:     map[uint64]any{},
	}
	if len(data) > u.lim.MaxInput {
		return nil, fmt.Errorf("%w: pickle of %d bytes, limit %d", ErrLimit, len(data), u.lim.MaxInput)
	}
	return u.run()
}

type unpickler struct {
	data     []byte
	pos      int
	frameEnd int // end of the current frame, -1 outside frames
	opPos    int // offset of the opcode being executed
	op       byte
	cfg      *Config
	lim      Limits
	stack    []any
	marks    []int // stack lengths at each open MARK
	memo     map[uint64]any
	objects  int
	sawProto bool
}

func (u *unpickler) errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s (opcode %s at byte %d)", sentinel, fmt.Sprintf(format, args...), opName(u.op), u.opPos)
}

// read returns the next n bytes. Inside a frame, reads may not cross its
// end, as pickle.py's unframer requires (the C unpickler is more lenient;
// the pickler never writes such input); after the frame they continue from
// the stream.
func (u *unpickler) read(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, u.errf(ErrMalformed, "needs %d bytes, %d remain", n, len(u.data)-u.pos)
	}
	if u.frameEnd >= 0 {
		if u.pos == u.frameEnd {
			u.frameEnd = -1
		} else if n > u.frameEnd-u.pos {
			return nil, u.errf(ErrMalformed, "argument of %d bytes crosses the end of its frame", n)
		}
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) readUint(n int) (uint64, error) {
	b, err := u.read(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// readLine returns the bytes up to the next '\n' (excluded).
func (u *unpickler) readLine() ([]byte, error) {
	end := len(u.data)
	if u.frameEnd >= 0 && u.pos < u.frameEnd {
		end = u.frameEnd
	}
	for i := u.pos; i < end; i++ {
		if u.data[i] == '\n' {
			b, err := u.read(i + 1 - u.pos)
			if err != nil {
				return nil, err
			}
			return b[:len(b)-1], nil
		}
	}
	return nil, u.errf(ErrMalformed, "line not terminated")
}

// readSized reads a length-prefixed str/bytes argument, checking the
// declared length against MaxString and the remaining input first.
func (u *unpickler) readSized(lenBytes int) ([]byte, error) {
	n, err := u.readUint(lenBytes)
	if err != nil {
		return nil, err
	}
	if n > uint64(u.lim.MaxString) {
		return nil, u.errf(ErrLimit, "declares %d bytes, limit %d", n, u.lim.MaxString)
	}
	return u.read(int(n))
}

// base is the stack index where the innermost MARK's items begin.
func (u *unpickler) base() int {
	if len(u.marks) == 0 {
		return 0
	}
	return u.marks[len(u.marks)-1]
}

func (u *unpickler) push(v any) error {
	if len(u.stack) >= u.lim.MaxStack {
		return u.errf(ErrLimit, "stack holds %d values", len(u.stack))
	}
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (any, error) {
	if len(u.stack) <= u.base() {
		return nil, u.errf(ErrMalformed, "stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack[len(u.stack)-1] = nil
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

// pop2 pops the top two values; a was pushed before b.
func (u *unpickler) pop2() (a, b any, err error) {
	if b, err = u.pop(); err != nil {
		return nil, nil, err
	}
	if a, err = u.pop(); err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) <= u.base() {
		return nil, u.errf(ErrMalformed, "stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark removes and returns the items above the innermost MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, u.errf(ErrMalformed, "no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := make([]any, len(u.stack)-m)
	copy(items, u.stack[m:])
	clear(u.stack[m:])
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) count() error {
	u.objects++
	if u.objects > u.lim.MaxObjects {
		return u.errf(ErrLimit, "more than %d objects", u.lim.MaxObjects)
	}
	return nil
}

func (u *unpickler) memoPut(key uint64) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	if _, ok := u.memo[key]; !ok && len(u.memo) >= u.lim.MaxMemo {
		return u.errf(ErrLimit, "memo holds %d entries", len(u.memo))
	}
	u.memo[key] = v
	return nil
}

func (u *unpickler) memoGet(key uint64) error {
	v, ok := u.memo[key]
	if !ok {
		return u.errf(ErrMalformed, "memo has no entry %d", key)
	}
	return u.push(v)
}

func (u *unpickler) run() (any, error) {
	for {
		u.opPos = u.pos
		b, err := u.read(1)
		if err != nil {
			return nil, fmt.Errorf("%w: pickle ends at byte %d without STOP", ErrMalformed, u.pos)
		}
		u.op = b[0]
		if !u.sawProto && u.op != opPROTO {
			return nil, u.errf(ErrMalformed, "pickle does not start with PROTO (protocols 0 and 1 are not supported)")
		}
		if u.op == opSTOP {
			return u.pop()
		}
		if err := u.step(); err != nil {
			return nil, err
		}
	}
}

// step executes the opcode u.op.
func (u *unpickler) step() error {
	switch u.op {
	case opPROTO:
		p, err := u.readUint(1)
		if err != nil {
			return err
		}
		if p < 2 || p > 5 {
			return u.errf(ErrMalformed, "protocol %d is not supported (2 to 5 are)", p)
		}
		u.sawProto = true
		return nil
	case opFRAME:
		n, err := u.readUint(8)
		if err != nil {
			return err
		}
		if u.frameEnd >= 0 && u.pos < u.frameEnd {
			return u.errf(ErrMalformed, "new frame before the end of the current one")
		}
		if n > uint64(len(u.data)-u.pos) {
			return u.errf(ErrMalformed, "frame of %d bytes, %d remain", n, len(u.data)-u.pos)
		}
		u.frameEnd = u.pos + int(n)
		return nil
	case opMARK:
		if len(u.marks) >= u.lim.MaxMarks {
			return u.errf(ErrLimit, "MARKs nested deeper than %d", u.lim.MaxMarks)
		}
		u.marks = append(u.marks, len(u.stack))
		return nil
	case opPOP:
		if len(u.stack) > u.base() {
			_, err := u.pop()
			return err
		}
		_, err := u.popMark()
		return err
	case opPOPMARK:
		_, err := u.popMark()
		return err
	case opDUP:
		v, err := u.top()
		if err != nil {
			return err
		}
		return u.push(v)

	case opNONE:
		return u.push(nil)
	case opNEWTRUE:
		return u.push(true)
	case opNEWFALSE:
		return u.push(false)
	case opBININT:
		v, err := u.readUint(4)
		if err != nil {
			return err
		}
		return u.push(int64(int32(uint32(v))))
	case opBININT1:
		v, err := u.readUint(1)
		if err != nil {
			return err
		}
		return u.push(int64(v))
	case opBININT2:
		v, err := u.readUint(2)
		if err != nil {
			return err
		}
		return u.push(int64(v))
	case opLONG1, opLONG4:
		lenBytes := 1
		if u.op == opLONG4 {
			lenBytes = 4
		}
		n, err := u.readUint(lenBytes)
		if err != nil {
			return err
		}
		if lenBytes == 4 && int32(uint32(n)) < 0 {
			return u.errf(ErrMalformed, "negative byte count")
		}
		if n > uint64(u.lim.MaxString) {
			return u.errf(ErrLimit, "integer of %d bytes, limit %d", n, u.lim.MaxString)
		}
		b, err := u.read(int(n))
		if err != nil {
			return err
		}
		return u.push(decodeLong(b))
	case opBINFLOAT:
		b, err := u.read(8)
		if err != nil {
			return err
		}
		return u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))

	case opSHORTBINUNICODE, opSHORTBINSTRING:
		b, err := u.readSized(1)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case opBINUNICODE:
		b, err := u.readSized(4)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case opBINSTRING:
		n, err := u.readUint(4)
		if err != nil {
			return err
		}
		if int32(uint32(n)) < 0 {
			return u.errf(ErrMalformed, "negative BINSTRING length")
		}
		if n > uint64(u.lim.MaxString) {
			return u.errf(ErrLimit, "declares %d bytes, limit %d", n, u.lim.MaxString)
		}
		b, err := u.read(int(n))
		if err != nil {
			return err
		}
		return u.push(string(b))
	case opBINUNICODE8:
		b, err := u.readSized(8)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case opSHORTBINBYTES:
		b, err := u.readSized(1)
		if err != nil {
			return err
		}
		return u.push(Bytes(clone(b)))
	case opBINBYTES:
		b, err := u.readSized(4)
		if err != nil {
			return err
		}
		return u.push(Bytes(clone(b)))
	case opBINBYTES8, opBYTEARRAY8:
		b, err := u.readSized(8)
		if err != nil {
			return err
		}
		return u.push(Bytes(clone(b)))

	case opEMPTYTUPLE:
		return u.push(Tuple{})
	case opTUPLE:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.push(Tuple(items))
	case opTUPLE1, opTUPLE2, opTUPLE3:
		n := int(u.op-opTUPLE1) + 1
		if len(u.stack)-u.base() < n {
			return u.errf(ErrMalformed, "stack underflow")
		}
		t := make(Tuple, n)
		copy(t, u.stack[len(u.stack)-n:])
		clear(u.stack[len(u.stack)-n:])
		u.stack = u.stack[:len(u.stack)-n]
		return u.push(t)
	case opEMPTYLIST:
		if err := u.count(); err != nil {
			return err
		}
		return u.push(&List{})
	case opLIST:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		if err := u.count(); err != nil {
			return err
		}
		return u.push(&List{Items: items})
	case opAPPEND:
		v, err := u.pop()
		if err != nil {
			return err
		}
		l, err := u.topList()
		if err != nil {
			return err
		}
		l.Items = append(l.Items, v)
		return nil
	case opAPPENDS:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		l, err := u.topList()
		if err != nil {
			return err
		}
		l.Items = append(l.Items, items...)
		return nil
	case opEMPTYDICT:
		if err := u.count(); err != nil {
			return err
		}
		return u.push(NewDict())
	case opDICT:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		if err := u.count(); err != nil {
			return err
		}
		d := NewDict()
		if err := u.setItems(d, items); err != nil {
			return err
		}
		return u.push(d)
	case opSETITEM:
		k, v, err := u.pop2()
		if err != nil {
			return err
		}
		d, err := u.topDict()
		if err != nil {
			return err
		}
		return u.setItems(d, []any{k, v})
	case opSETITEMS:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		d, err := u.topDict()
		if err != nil {
			return err
		}
		return u.setItems(d, items)
	case opEMPTYSET:
		if err := u.count(); err != nil {
			return err
		}
		return u.push(&Set{})
	case opADDITEMS:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		v, err := u.top()
		if err != nil {
			return err
		}
		s, ok := v.(*Set)
		if !ok || s.Frozen {
			return u.errf(ErrMalformed, "ADDITEMS on %s", TypeName(v))
		}
		s.Items = append(s.Items, items...)
		return nil
	case opFROZENSET:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		if err := u.count(); err != nil {
			return err
		}
		return u.push(&Set{Items: items, Frozen: true})

	case opBINPUT:
		k, err := u.readUint(1)
		if err != nil {
			return err
		}
		return u.memoPut(k)
	case opLONGBINPUT:
		k, err := u.readUint(4)
		if err != nil {
			return err
		}
		return u.memoPut(k)
	case opMEMOIZE:
		return u.memoPut(uint64(len(u.memo)))
	case opBINGET:
		k, err := u.readUint(1)
		if err != nil {
			return err
		}
		return u.memoGet(k)
	case opLONGBINGET:
		k, err := u.readUint(4)
		if err != nil {
			return err
		}
		return u.memoGet(k)

	case opGLOBAL:
		module, err := u.readLine()
		if err != nil {
			return err
		}
		name, err := u.readLine()
		if err != nil {
			return err
		}
		return u.global(string(module), string(name))
	case opSTACKGLOBAL:
		module, name, err := u.pop2()
		if err != nil {
			return err
		}
		ms, ok1 := module.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return u.errf(ErrMalformed, "STACK_GLOBAL needs two str, found %s and %s", TypeName(module), TypeName(name))
		}
		return u.global(ms, ns)
	case opREDUCE, opNEWOBJ:
		f, args, err := u.pop2()
		if err != nil {
			return err
		}
		return u.call(f, args, u.op == opNEWOBJ)
	case opNEWOBJEX:
		kwargs, err := u.pop()
		if err != nil {
			return err
		}
		cls, args, err := u.pop2()
		if err != nil {
			return err
		}
		if d, ok := kwargs.(*Dict); !ok || d.Len() != 0 {
			return u.errf(ErrForbiddenGlobal, "NEWOBJ_EX with keyword arguments (%s)", TypeName(kwargs))
		}
		return u.call(cls, args, true)
	case opBUILD:
		state, err := u.pop()
		if err != nil {
			return err
		}
		inst, err := u.top()
		if err != nil {
			return err
		}
		s, ok := inst.(stateSetter)
		if !ok {
			return u.errf(ErrForbiddenGlobal, "BUILD on %s", TypeName(inst))
		}
		if err := s.SetState(state); err != nil {
			return u.errf(ErrMalformed, "%v", err)
		}
		return nil
	case opBINPERSID:
		pid, err := u.pop()
		if err != nil {
			return err
		}
		if u.cfg.PersistentLoad == nil {
			return u.errf(ErrForbiddenGlobal, "persistent id %s in a pickle that may have none", TypeName(pid))
		}
		v, err := u.cfg.PersistentLoad(pid)
		if err != nil {
			return u.hookErr(err)
		}
		return u.push(v)
	}
	if name, ok := refusedOps[u.op]; ok {
		return u.errf(ErrMalformed, "%s is not supported", name)
	}
	return u.errf(ErrMalformed, "unknown opcode 0x%02x", u.op)
}

// hookErr places an error of a Class or PersistentLoad hook: errors that
// already match ckpt.ErrCorrupt keep their sentinel, others become
// ErrMalformed.
func (u *unpickler) hookErr(err error) error {
	if errors.Is(err, ckpt.ErrCorrupt) {
		return fmt.Errorf("%w (opcode %s at byte %d)", err, opName(u.op), u.opPos)
	}
	return u.errf(ErrMalformed, "%v", err)
}

func (u *unpickler) topList() (*List, error) {
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	l, ok := v.(*List)
	if !ok {
		return nil, u.errf(ErrMalformed, "appending to %s", TypeName(v))
	}
	return l, nil
}

func (u *unpickler) topDict() (*Dict, error) {
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	d, ok := v.(*Dict)
	if !ok {
		return nil, u.errf(ErrMalformed, "setting items of %s", TypeName(v))
	}
	return d, nil
}

func (u *unpickler) setItems(d *Dict, items []any) error {
	if len(items)%2 != 0 {
		return u.errf(ErrMalformed, "odd number of items (%d) for a dict", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		budget := defaultKeyBudget
		if err := d.set(items[i], items[i+1], &budget); err != nil {
			return u.errf(ErrMalformed, "%v", err)
		}
	}
	return nil
}

func (u *unpickler) global(module, name string) error {
	c, ok := u.cfg.Globals[Global{module, name}]
	if !ok {
		return &ForbiddenGlobalError{Global: Global{module, name}, Pos: u.opPos}
	}
	return u.push(c)
}

// call applies REDUCE (newObj false) or NEWOBJ (newObj true).
func (u *unpickler) call(f, args any, newObj bool) error {
	c, ok := f.(*Class)
	if !ok {
		return u.errf(ErrForbiddenGlobal, "calling %s", TypeName(f))
	}
	t, ok := args.(Tuple)
	if !ok {
		return u.errf(ErrMalformed, "arguments of %s are a %s, not a tuple", c, TypeName(args))
	}
	fn := c.Call
	if newObj {
		fn = c.New
	}
	if fn == nil {
		what := "called"
		if newObj {
			what = "instantiated"
		}
		return u.errf(ErrForbiddenGlobal, "%s may not be %s", c, what)
	}
	if err := u.count(); err != nil {
		return err
	}
	v, err := fn(t)
	if err != nil {
		return u.hookErr(err)
	}
	return u.push(v)
}

// decodeLong decodes a little-endian two's-complement integer (LONG1,
// LONG4), as an int64 when it fits.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		shift := 64 - 8*uint(len(b))
		return int64(v<<shift) >> shift
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	n := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	if n.IsInt64() {
		return n.Int64()
	}
	return n
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
