package pickle

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
)

const fixtures = "../../goldens/mllama-tiny-dev/"

// fixturePickles returns the real pickles of the fixtures, keyed as
// testdata/cpython.json keys them: the DCP .metadata files, the data.pkl of
// the FULL_STATE_DICT .pt and the data.pkl of one DCP item.
func fixturePickles(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for _, run := range []string{"fsdp1", "fsdp2", "freeze", "legacy"} {
		b, err := os.ReadFile(filepath.Join(fixtures, "runs", run, ".metadata"))
		if err != nil {
			tb.Fatal(err)
		}
		out["runs/"+run+"/.metadata"] = b
	}
	pt, err := os.ReadFile(filepath.Join(fixtures, "runs/full/mllama-tiny-1.pt"))
	if err != nil {
		tb.Fatal(err)
	}
	out["runs/full/mllama-tiny-1.pt:mllama-tiny-1/data.pkl"] = zipRecord(tb, pt, "mllama-tiny-1/data.pkl")
	distcp, err := os.ReadFile(filepath.Join(fixtures, "runs/fsdp2/__0_0.distcp"))
	if err != nil {
		tb.Fatal(err)
	}
	out["runs/fsdp2/__0_0.distcp@0+1577:archive/data.pkl"] = zipRecord(tb, distcp[:1577], "archive/data.pkl")
	return out
}

func zipRecord(tb testing.TB, archive []byte, name string) []byte {
	tb.Helper()
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		tb.Fatal(err)
	}
	f, err := zr.Open(name)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

type persistent struct{ pid any }

// recordingConfig allows the given globals as recording stubs, the way
// testdata/cpython_golden.py has CPython load them.
func recordingConfig(globals []string) *Config {
	a := NewAllowlist(OrderedDict())
	for _, g := range globals {
		module, name, _ := strings.Cut(g, "|")
		if module == "collections" && name == "OrderedDict" {
			continue
		}
		c := &Class{Module: module, Name: name}
		c.Call = func(args Tuple) (any, error) { return &Object{Class: c, Args: args}, nil }
		c.New = func(args Tuple) (any, error) { return &Object{Class: c, Args: args, NewObj: true}, nil }
		a.Add(c)
	}
	return &Config{Globals: a, PersistentLoad: func(pid any) (any, error) { return persistent{pid}, nil }}
}

// dump writes the canonical form testdata/cpython_golden.py defines.
func dump(b *strings.Builder, v any) {
	switch v := v.(type) {
	case nil:
		b.WriteString("N")
	case bool:
		if v {
			b.WriteString("T")
		} else {
			b.WriteString("F")
		}
	case int64:
		fmt.Fprintf(b, "i%d", v)
	case *big.Int:
		fmt.Fprintf(b, "i%s", v)
	case float64:
		fmt.Fprintf(b, "f%016x", math.Float64bits(v))
	case string:
		fmt.Fprintf(b, "s%d:%s", len(v), v)
	case Bytes:
		fmt.Fprintf(b, "b%d:%s", len(v), hex.EncodeToString(v))
	case Tuple:
		dumpSeq(b, "(", v, ")")
	case *List:
		dumpSeq(b, "[", v.Items, "]")
	case *Dict:
		b.WriteString("{")
		for i, e := range v.Entries() {
			if i > 0 {
				b.WriteString(",")
			}
			dump(b, e.Key)
			b.WriteString(":")
			dump(b, e.Value)
		}
		b.WriteString("}")
		if v.State != nil {
			b.WriteString(".B")
			dump(b, v.State)
		}
	case *Set:
		if v.Frozen {
			b.WriteString("fset")
		} else {
			b.WriteString("set")
		}
		dumpSeq(b, "[", v.Items, "]")
	case persistent:
		b.WriteString("P")
		dump(b, v.pid)
	case *Class:
		fmt.Fprintf(b, "G%s|%s", v.Module, v.Name)
	case *Object:
		kind := "R"
		if v.NewObj {
			kind = "N"
		}
		fmt.Fprintf(b, "%s<%s|%s>", kind, v.Class.Module, v.Class.Name)
		dump(b, v.Args)
		if v.built {
			b.WriteString(".B")
			dump(b, v.State)
		}
	default:
		panic(fmt.Sprintf("dump: %T", v))
	}
}

func dumpSeq(b *strings.Builder, open string, items []any, close string) {
	b.WriteString(open)
	for i, x := range items {
		if i > 0 {
			b.WriteString(",")
		}
		dump(b, x)
	}
	b.WriteString(close)
}

// TestMatchesCPython unpickles every real pickle of the fixtures and checks
// that the object graph is the one CPython's unpickler builds from the same
// bytes (testdata/cpython.json, made by testdata/cpython_golden.py).
func TestMatchesCPython(t *testing.T) {
	raw, err := os.ReadFile("testdata/cpython.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string]struct {
		Globals    []string `json:"globals"`
		DumpLen    int      `json:"dump_len"`
		DumpSHA256 string   `json:"dump_sha256"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	pickles := fixturePickles(t)
	if len(golden) != len(pickles) {
		t.Fatalf("cpython.json has %d pickles, the test reads %d", len(golden), len(pickles))
	}
	for name, data := range pickles {
		t.Run(name, func(t *testing.T) {
			g, ok := golden[name]
			if !ok {
				t.Fatalf("no golden for %s", name)
			}
			v, err := Unpickle(data, recordingConfig(g.Globals))
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			dump(&b, v)
			sum := sha256.Sum256([]byte(b.String()))
			if b.Len() != g.DumpLen || hex.EncodeToString(sum[:]) != g.DumpSHA256 {
				p := filepath.Join(t.TempDir(), "dump.txt")
				_ = os.WriteFile(p, []byte(b.String()), 0o644)
				t.Errorf("object graph differs from CPython's: dump of %d bytes, sha256 %x; CPython: %d bytes, %s (ours is in %s)",
					b.Len(), sum, g.DumpLen, g.DumpSHA256, p)
			}
		})
	}
}

// TestAllowlistIsEnforced removes, one at a time, each global a real
// .metadata needs from the allowlist and checks that the pickle is then
// refused with an error naming exactly that global.
func TestAllowlistIsEnforced(t *testing.T) {
	data := fixturePickles(t)["runs/fsdp2/.metadata"]
	globals := []string{
		"pathlib|PosixPath", "torch.distributed.checkpoint.filesystem|_StorageInfo",
		"torch.distributed.checkpoint.metadata|BytesStorageMetadata", "torch.distributed.checkpoint.metadata|ChunkStorageMetadata",
		"torch.distributed.checkpoint.metadata|Metadata", "torch.distributed.checkpoint.metadata|MetadataIndex",
		"torch.distributed.checkpoint.metadata|StorageMeta", "torch.distributed.checkpoint.metadata|TensorProperties",
		"torch.distributed.checkpoint.metadata|TensorStorageMetadata", "torch.distributed.checkpoint.metadata|_MEM_FORMAT_ENCODING",
		"torch.serialization|_get_layout", "torch|Size", "torch|float32",
	}
	if _, err := Unpickle(data, recordingConfig(globals)); err != nil {
		t.Fatal(err)
	}
	for i, g := range globals {
		rest := append(append([]string(nil), globals[:i]...), globals[i+1:]...)
		_, err := Unpickle(data, recordingConfig(rest))
		want := strings.Replace(g, "|", ".", 1) + " is not in the allowlist"
		if !errors.Is(err, ErrForbiddenGlobal) || !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("without %s: got %v, want ErrForbiddenGlobal naming it", g, err)
		}
	}
}

// p assembles a pickle from pieces: strings are copied, ints and runes
// (the opcode constants) become one byte each.
func p(parts ...any) []byte {
	var b []byte
	for _, x := range parts {
		switch x := x.(type) {
		case string:
			b = append(b, x...)
		case []byte:
			b = append(b, x...)
		case int:
			b = append(b, byte(x))
		case rune:
			b = append(b, byte(x))
		default:
			panic(x)
		}
	}
	return b
}

// u32 and u64 are little-endian length arguments.
func u32(n uint32) []byte { return []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)} }
func u64(n uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
	return b
}

func sbu(s string) []byte { return append([]byte{opSHORTBINUNICODE, byte(len(s))}, s...) }

// TestHostile feeds crafted pickles: forbidden globals (os.system,
// builtins.eval, posix.system, reduce gadgets through allowlisted values),
// deep nesting, huge declared sizes and memo abuse. Each must be refused
// with the right sentinel, without a panic, and without allocating what
// the input declares.
func TestHostile(t *testing.T) {
	allow := NewAllowlist(OrderedDict(), Value("torch", "float32"), Instance("m", "Rec"))
	deepMarks := bytes.Repeat([]byte{opMARK}, 100000)
	manyMemo := bytes.Repeat([]byte{opMEMOIZE}, 100)
	tests := []struct {
		name   string
		data   []byte
		limits Limits
		want   error
		msg    string
	}{
		{"os.system GLOBAL", p("\x80\x02cos\nsystem\n", sbu("id"), opTUPLE1, opREDUCE, opSTOP), Limits{}, ErrForbiddenGlobal, "os.system"},
		{"posix.system GLOBAL", p("\x80\x02cposix\nsystem\n", sbu("id"), opTUPLE1, opREDUCE, opSTOP), Limits{}, ErrForbiddenGlobal, "posix.system"},
		{"builtins.eval STACK_GLOBAL", p("\x80\x04", sbu("builtins"), sbu("eval"), opSTACKGLOBAL, sbu("1+1"), opTUPLE1, opREDUCE, opSTOP), Limits{}, ErrForbiddenGlobal, "builtins.eval"},
		{"builtins.getattr", p("\x80\x04", sbu("builtins"), sbu("getattr"), opSTACKGLOBAL, opSTOP), Limits{}, ErrForbiddenGlobal, "builtins.getattr"},
		{"reduce on an allowlisted value", p("\x80\x04", sbu("torch"), sbu("float32"), opSTACKGLOBAL, opEMPTYTUPLE, opREDUCE, opSTOP), Limits{}, ErrForbiddenGlobal, "torch.float32 may not be called"},
		{"reduce on a str", p("\x80\x04", sbu("os"), sbu("x"), opTUPLE1, opREDUCE, opSTOP), Limits{}, ErrForbiddenGlobal, "calling str"},
		{"newobj on a function", p("\x80\x04", sbu("collections"), sbu("OrderedDict"), opSTACKGLOBAL, opEMPTYTUPLE, opNEWOBJ, opSTOP), Limits{}, ErrForbiddenGlobal, "may not be instantiated"},
		{"build on a str", p("\x80\x04", sbu("x"), opEMPTYDICT, opBUILD, opSTOP), Limits{}, ErrForbiddenGlobal, "BUILD on str"},
		{"persistent id not allowed", p("\x80\x02", sbu("x"), opBINPERSID, opSTOP), Limits{}, ErrForbiddenGlobal, "persistent id"},
		{"NEWOBJ_EX with kwargs", p("\x80\x04", sbu("m"), sbu("Rec"), opSTACKGLOBAL, opEMPTYTUPLE, opEMPTYDICT, sbu("k"), opNONE, opSETITEM, opNEWOBJEX, opSTOP), Limits{}, ErrForbiddenGlobal, "keyword arguments"},
		{"protocol 0", p("cos\nsystem\n."), Limits{}, ErrMalformed, "PROTO"},
		{"protocol 6", p("\x80\x06N."), Limits{}, ErrMalformed, "protocol 6"},
		{"INST", p("\x80\x02(ios\nsystem\n."), Limits{}, ErrMalformed, "INST"},
		{"EXT1", p("\x80\x02\x82\x01."), Limits{}, ErrMalformed, "EXT1"},
		{"out-of-band buffer", p("\x80\x05\x97."), Limits{}, ErrMalformed, "NEXT_BUFFER"},
		{"deep MARK nesting", p("\x80\x02", deepMarks, opSTOP), Limits{}, ErrLimit, "MARKs nested deeper than 1024"},
		{"huge FRAME", p("\x80\x04\x95", u64(1<<62), "N."), Limits{}, ErrMalformed, "frame of 4611686018427387904 bytes"},
		{"FRAME inside FRAME", p("\x80\x04\x95", u64(11), "\x95", u64(1), "N.", "N."), Limits{}, ErrMalformed, "new frame before the end"},
		{"argument crossing a frame", p("\x80\x04\x95", u64(3), "\x8c\x05h", "ello."), Limits{}, ErrMalformed, "crosses the end of its frame"},
		{"huge BINUNICODE8", p("\x80\x04\x8d", u64(1<<63-1), "x."), Limits{}, ErrLimit, "declares 9223372036854775807 bytes"},
		{"huge BINUNICODE", p("\x80\x02X", u32(0xFFFFFFFF), "x."), Limits{}, ErrLimit, "declares 4294967295 bytes"},
		{"BINUNICODE past the end", p("\x80\x02X", u32(1000), "x."), Limits{}, ErrMalformed, "needs 1000 bytes"},
		{"huge BINBYTES8", p("\x80\x04\x8e", u64(1<<40), "."), Limits{}, ErrLimit, "declares 1099511627776 bytes"},
		{"huge LONG4", p("\x80\x02\x8b", u32(0x7FFFFFFF), "."), Limits{}, ErrLimit, "integer of 2147483647 bytes"},
		{"negative LONG4", p("\x80\x02\x8b", u32(0xFFFFFFFF), "."), Limits{}, ErrMalformed, "negative byte count"},
		{"negative BINSTRING", p("\x80\x02T", u32(0x80000000), "."), Limits{}, ErrMalformed, "negative BINSTRING"},
		{"BINGET of an unset entry", p("\x80\x02N", opBINGET, 7, opSTOP), Limits{}, ErrMalformed, "memo has no entry 7"},
		{"LONG_BINGET far away", p("\x80\x02N", opLONGBINPUT, u32(0xFFFFFFFE), opLONGBINGET, u32(0xFFFFFFFF), opSTOP), Limits{}, ErrMalformed, "memo has no entry 4294967295"},
		{"memo flood", p("\x80\x04N", manyMemo, opSTOP), Limits{MaxMemo: 50}, ErrLimit, "memo holds 50 entries"},
		{"PUT on an empty stack", p("\x80\x02", opBINPUT, 0, "N."), Limits{}, ErrMalformed, "stack underflow"},
		{"PUT above a MARK", p("\x80\x02N(", opBINPUT, 0, "t."), Limits{}, ErrMalformed, "stack underflow"},
		{"APPEND across a MARK", p("\x80\x02](N", opAPPEND, "t."), Limits{}, ErrMalformed, "stack underflow"},
		{"APPEND to a tuple", p("\x80\x02)N", opAPPEND, "."), Limits{}, ErrMalformed, "appending to tuple"},
		{"SETITEMS odd", p("\x80\x02}(N", opSETITEMS, "."), Limits{}, ErrMalformed, "odd number of items"},
		{"unhashable key", p("\x80\x02}]N", opSETITEM, "."), Limits{}, ErrMalformed, "unhashable dict key of type list"},
		{"STACK_GLOBAL of ints", p("\x80\x04K", 1, "K", 2, opSTACKGLOBAL, "."), Limits{}, ErrMalformed, "STACK_GLOBAL needs two str"},
		{"TUPLE without MARK", p("\x80\x02Nt."), Limits{}, ErrMalformed, "no MARK"},
		{"TUPLE3 underflow", p("\x80\x02NN\x87."), Limits{}, ErrMalformed, "stack underflow"},
		{"STOP on an empty stack", p("\x80\x02."), Limits{}, ErrMalformed, "stack underflow"},
		{"no STOP", p("\x80\x02N"), Limits{}, ErrMalformed, "without STOP"},
		{"unknown opcode", p("\x80\x02\xff."), Limits{}, ErrMalformed, "unknown opcode 0xff"},
		{"BUILD twice", p("\x80\x04", sbu("m"), sbu("Rec"), opSTACKGLOBAL, opEMPTYTUPLE, opNEWOBJ, opNONE, opBUILD, opNONE, opBUILD, opSTOP), Limits{}, ErrMalformed, "built twice"},
		{"object flood", p("\x80\x02", bytes.Repeat([]byte{opEMPTYLIST, opPOP}, 100), opNONE, opSTOP), Limits{MaxObjects: 10}, ErrLimit, "more than 10 objects"},
		{"stack flood", p("\x80\x02", bytes.Repeat([]byte{opNONE}, 100), opSTOP), Limits{MaxStack: 10}, ErrLimit, "stack holds 10 values"},
		{"input limit", p("\x80\x02N."), Limits{MaxInput: 3}, ErrLimit, "pickle of 4 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Unpickle(tt.data, &Config{Globals: allow, Limits: tt.limits})
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tt.want) || !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), tt.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.want, tt.msg)
			}
			// The largest legitimate allocation here is the deep-MARK
			// stack (100000 ints); declared sizes must never be allocated.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
				t.Errorf("allocated %d bytes for a %d-byte pickle", grew, len(tt.data))
			}
		})
	}
}

// TestDeepValues: values nested a million levels deep (lists built with
// EMPTY_LIST/APPEND, tuples with TUPLE1) need no recursion in the
// interpreter, so they load in memory proportional to the input; hashing
// such a tuple as a dict key stops at the key budget.
func TestDeepValues(t *testing.T) {
	const n = 1000000
	lists := p("\x80\x02", bytes.Repeat([]byte{opEMPTYLIST}, n), bytes.Repeat([]byte{opAPPEND}, n-1), opSTOP)
	v, err := Unpickle(lists, nil)
	if err != nil {
		t.Fatal(err)
	}
	depth := 0
	for l, ok := v.(*List); ok; l, ok = v.(*List) {
		depth++
		if len(l.Items) == 0 {
			break
		}
		v = l.Items[0]
	}
	if depth != n {
		t.Errorf("list depth %d, want %d", depth, n)
	}

	tuples := p("\x80\x02}N", bytes.Repeat([]byte{opTUPLE1}, n), "N", opSETITEM, opSTOP)
	_, err = Unpickle(tuples, nil)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "dict key too large") {
		t.Errorf("deep tuple key: got %v", err)
	}
}

// TestSemantics checks opcodes whose CPython behaviour is easy to get
// subtly wrong; the expected values are what CPython 3.11 returns for the
// same bytes (pickle.loads).
func TestSemantics(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		// POP with an empty top level pops the MARK instead (pickle.py load_pop).
		{"POP pops a mark", p("\x80\x02N(0\x85."), "(N)"},
		{"POP_MARK", p("\x80\x02N(NN1\x85."), "(N)"},
		{"DUP", p("\x80\x02K\x052\x86."), "(i5,i5)"},
		// MEMOIZE numbers entries by the memo's size, whatever BINPUT did.
		{"MEMOIZE after BINPUT", p("\x80\x04K\x01q\x05K\x02\x94h\x01h\x05\x86."), "(i2,i1)"},
		{"memo shares mutable lists", p("\x80\x02]q\x00h\x00K\x07a\x86."), "([i7],[i7])"},
		{"dict keeps first key, last value", p("\x80\x02}(K\x01K\x02\x88K\x03u."), "{i1:i3}"},
		{"LONG1 negative", p("\x80\x02\x8a\x02\x00\xff."), "i-256"},
		{"LONG1 beyond int64", p("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."), "i18446744073709551616"},
		{"LONG1 empty", p("\x80\x02\x8a\x00."), "i0"},
		{"BININT negative", p("\x80\x02J\xff\xff\xff\xff."), "i-1"},
		{"BINFLOAT", p("\x80\x02G?\xf0\x00\x00\x00\x00\x00\x00."), "f3ff0000000000000"},
		{"frames", p("\x80\x04\x95", u64(3), "K\x01\x85", "\x95", u64(1), "."), "(i1)"},
		{"DICT and LIST", p("\x80\x02(K\x01(K\x02ld."), "{i1:[i2]}"},
		{"sets", p("\x80\x04\x8f(K\x01\x90(K\x02\x91\x86."), "(set[i1],fset[i2])"},
		{"bytes", p("\x80\x03C\x02\x00\xff."), "b2:00ff"},
		{"trailing bytes after STOP", p("\x80\x02N.garbage"), "N"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Unpickle(tt.data, nil)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			dump(&b, v)
			if b.String() != tt.want {
				t.Errorf("got %s, want %s", b.String(), tt.want)
			}
		})
	}
}

func TestDictKeys(t *testing.T) {
	d := NewDict()
	for _, kv := range []struct{ k, v any }{{int64(1), "a"}, {true, "b"}, {1.0, "c"}, {Tuple{"x", int64(1)}, "d"}, {Tuple{"x", 1.0}, "e"}, {"1", "f"}, {Bytes("1"), "g"}} {
		if err := d.Set(kv.k, kv.v); err != nil {
			t.Fatal(err)
		}
	}
	// Python: {1: 'c', ('x', 1): 'e', '1': 'f', b'1': 'g'}
	if d.Len() != 4 {
		t.Fatalf("%d entries, want 4", d.Len())
	}
	if v, _ := d.Get(int64(1)); v != "c" {
		t.Errorf("d[1] = %v", v)
	}
	if v, _ := d.Get(Tuple{"x", true}); v != "e" {
		t.Errorf("d[('x', True)] = %v", v)
	}
	if err := d.Set(&List{}, nil); err == nil {
		t.Error("list key accepted")
	}
}

// TestDescribe: values unpickled from CPython's encoding of
// ("<a 100-byte tensor name>", 7, -1, [], None, True) are named with their
// value where it is short (str cut at 80 bytes, ints), by type otherwise; a
// global by its dotted name.
func TestDescribe(t *testing.T) {
	name := "model.model.language_model.layers.3.cross_attn.k_norm.weight.optimizer_state.exp_avg.extra"
	name += strings.Repeat("x", 100-len(name))
	v, err := Unpickle(p("\x80\x02(X", u64(100)[:4], name, "K\x07J\xff\xff\xff\xff]N\x88t."), nil)
	if err != nil {
		t.Fatal(err)
	}
	tup, ok := v.(Tuple)
	if !ok || len(tup) != 6 {
		t.Fatalf("unpickled %#v, want a 6-tuple", v)
	}
	want := []string{fmt.Sprintf("str %q", name[:80]+"…"), "int 7", "int -1", "list", "None", "bool"}
	for i, x := range tup {
		if got := Describe(x); got != want[i] {
			t.Errorf("Describe(element %d) = %s, want %s", i, got, want[i])
		}
	}
	g := &Class{Module: "torch._utils", Name: "_rebuild_tensor_v2"}
	if got := Describe(g); got != "torch._utils._rebuild_tensor_v2" {
		t.Errorf("Describe(global) = %s, want torch._utils._rebuild_tensor_v2", got)
	}
}
