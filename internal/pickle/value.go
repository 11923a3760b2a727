package pickle

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// The Go types of unpickled values:
//
//	None                 nil
//	bool                 bool
//	int                  int64, or *big.Int when it does not fit
//	float                float64
//	str                  string
//	bytes, bytearray     Bytes
//	tuple                Tuple
//	list                 *List
//	dict                 *Dict
//	set, frozenset       *Set
//	allowlisted global   *Class
//	class instance       *Object, or whatever the Class's Call/New returns
//
// Mutable containers are pointers because the memo shares them: an APPEND
// through a memoized reference must change the one list every holder sees.

// Tuple is a Python tuple.
type Tuple []any

// Bytes is a Python bytes or bytearray value.
type Bytes []byte

// List is a Python list.
type List struct {
	Items []any
}

// DictEntry is one key/value pair of a Dict.
type DictEntry struct {
	Key, Value any
}

// Dict is a Python dict (or OrderedDict) in insertion order. Keys are
// compared as Python compares them for the hashable types the unpickler
// produces; instances (*Object) compare by identity.
type Dict struct {
	entries []DictEntry
	index   map[any]int
	// State is what a BUILD opcode gave the dict (torch stores an
	// OrderedDict's _metadata attribute this way); nil if none.
	State any
}

// NewDict returns an empty Dict.
func NewDict() *Dict { return &Dict{index: map[any]int{}} }

// Len is the number of entries.
func (d *Dict) Len() int { return len(d.entries) }

// Entries returns the entries in insertion order. The slice must not be
// modified.
func (d *Dict) Entries() []DictEntry { return d.entries }

// Get returns the value stored under key. Keys that cannot be hashed are
// never found.
func (d *Dict) Get(key any) (any, bool) {
	budget := defaultKeyBudget
	k, err := hashKey(key, &budget)
	if err != nil {
		return nil, false
	}
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.entries[i].Value, true
}

// Set stores value under key, replacing an equal key's value in place as
// Python does. It fails for unhashable keys (lists, dicts, sets) and for
// keys whose hashing would visit more than the unpickler's key budget.
func (d *Dict) Set(key, value any) error {
	budget := defaultKeyBudget
	return d.set(key, value, &budget)
}

func (d *Dict) set(key, value any, budget *int) error {
	k, err := hashKey(key, budget)
	if err != nil {
		return err
	}
	if d.index == nil {
		d.index = map[any]int{}
	}
	if i, ok := d.index[k]; ok {
		d.entries[i].Value = value
		return nil
	}
	d.index[k] = len(d.entries)
	d.entries = append(d.entries, DictEntry{Key: key, Value: value})
	return nil
}

// SetState records a BUILD state.
func (d *Dict) SetState(state any) error {
	if d.State != nil {
		return fmt.Errorf("dict built twice")
	}
	d.State = state
	return nil
}

// Set is a Python set or frozenset. Items are kept in the order the pickle
// added them; duplicates are not removed (nothing ckptgate reads uses sets).
type Set struct {
	Items  []any
	Frozen bool
}

// Object is an instance of an allowlisted class created by NEWOBJ (for
// pickled dataclasses and other plain objects) or REDUCE, with the state a
// later BUILD opcode gave it.
type Object struct {
	Class *Class
	// Args are the arguments of the NEWOBJ or REDUCE that created it.
	Args Tuple
	// NewObj is true when NEWOBJ (cls.__new__) created the object, false for
	// REDUCE (cls(*args)).
	NewObj bool
	// State is the BUILD argument (usually a *Dict of attributes); nil when
	// the pickle had no BUILD for it.
	State any
	built bool
}

// SetState records a BUILD state; a second BUILD of one object is refused.
func (o *Object) SetState(state any) error {
	if o.built {
		return fmt.Errorf("%s instance built twice", o.Class)
	}
	o.built, o.State = true, state
	return nil
}

// Attr returns the BUILD state entry name when the state is a dict.
func (o *Object) Attr(name string) (any, bool) {
	d, ok := o.State.(*Dict)
	if !ok {
		return nil, false
	}
	return d.Get(name)
}

// stateSetter is what BUILD can target.
type stateSetter interface {
	SetState(state any) error
}

// defaultKeyBudget bounds the work of hashing one dict key: tuples can
// share sub-tuples through the memo, so a key of a few bytes of pickle can
// stand for an exponentially large tree.
const defaultKeyBudget = 4096

type keyNone struct{}

type keyBytes string

type keyFloat float64

type keyClass struct{ module, name string }

// hashKey maps a Python value to a comparable Go value such that values
// Python considers equal (1 == 1.0 == True) map to equal keys.
func hashKey(v any, budget *int) (any, error) {
	*budget--
	if *budget < 0 {
		return nil, fmt.Errorf("dict key too large to hash")
	}
	switch v := v.(type) {
	case nil:
		return keyNone{}, nil
	case bool:
		if v {
			return int64(1), nil
		}
		return int64(0), nil
	case int64:
		return v, nil
	case *big.Int:
		if v.IsInt64() {
			return v.Int64(), nil
		}
		return "big:" + v.String(), nil
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<63 {
			return int64(v), nil
		}
		return keyFloat(v), nil
	case string:
		return v, nil
	case Bytes:
		return keyBytes(v), nil
	case *Class:
		return keyClass{v.Module, v.Name}, nil
	case *Object:
		return v, nil
	case Tuple:
		var b strings.Builder
		b.WriteString("tuple(")
		for _, e := range v {
			k, err := hashKey(e, budget)
			if err != nil {
				return nil, err
			}
			writeKey(&b, k)
		}
		b.WriteByte(')')
		return b.String(), nil
	}
	return nil, fmt.Errorf("unhashable dict key of type %s", TypeName(v))
}

// writeKey serialises a hashKey result unambiguously into a tuple's key.
func writeKey(b *strings.Builder, k any) {
	switch k := k.(type) {
	case keyNone:
		b.WriteString("N;")
	case int64:
		b.WriteString("i")
		b.WriteString(strconv.FormatInt(k, 10))
		b.WriteString(";")
	case keyFloat:
		b.WriteString("f")
		b.WriteString(strconv.FormatUint(math.Float64bits(float64(k)), 16))
		b.WriteString(";")
	case string:
		fmt.Fprintf(b, "s%d:%s", len(k), k)
	case keyBytes:
		fmt.Fprintf(b, "b%d:%s", len(k), string(k))
	case keyClass:
		fmt.Fprintf(b, "g%d:%s%d:%s", len(k.module), k.module, len(k.name), k.name)
	case *Object:
		// Instances hash by identity, as Python's default __hash__ does;
		// Go does not move heap objects, so the address is stable.
		fmt.Fprintf(b, "o%p;", k)
	}
}

// Describe names an unpickled value in a message without printing it whole:
// a str (its first 80 bytes) or int with its value, a global by its name,
// anything else by its type name.
func Describe(v any) string {
	switch v := v.(type) {
	case string:
		if len(v) > 80 {
			v = v[:80] + "…"
		}
		return fmt.Sprintf("str %q", v)
	case int64:
		return fmt.Sprintf("int %d", v)
	case *Class:
		return v.String()
	}
	return TypeName(v)
}

// TypeName is the Python type name of an unpickled value, for messages.
func TypeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case Bytes:
		return "bytes"
	case Tuple:
		return "tuple"
	case *List:
		return "list"
	case *Dict:
		return "dict"
	case *Set:
		if v.Frozen {
			return "frozenset"
		}
		return "set"
	case *Class:
		return "global " + v.String()
	case *Object:
		return v.Class.String() + " instance"
	}
	return fmt.Sprintf("%T", v)
}
