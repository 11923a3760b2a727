package torchzip

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/internal/ckpt"
	"github.com/ckptgate/ckptgate/internal/dtype"
	"github.com/ckptgate/ckptgate/internal/pickle"
)

const runs = "../../goldens/mllama-tiny-dev/runs/"

// Items of the fixtures, located by their .metadata (CPython's reading).
var (
	// legacy: model.multi_modal_projector.weight chunk [0:4, 0:96], bf16.
	itemProjector = itemRef{"legacy/__0_0.distcp", 120899, 2345}
	// legacy: model.vision_model.patch_embedding.weight chunk [0:16], bf16.
	itemPatch = itemRef{"legacy/__0_0.distcp", 177312, 20393}
	// fsdp2: model.vision_model.gated_positional_embedding.gate [0:1], fp32.
	itemGate = itemRef{"fsdp2/__0_0.distcp", 0, 1577}
	// fsdp2: the same gate's empty chunk [1:1] on rank 2.
	itemEmpty = itemRef{"fsdp2/__2_0.distcp", 1261, 1513}
)

type itemRef struct {
	file     string
	off, len int64
}

func (r itemRef) bytes(tb testing.TB) []byte {
	tb.Helper()
	f, err := os.Open(runs + r.file)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, r.len)
	if _, err := f.ReadAt(b, r.off); err != nil {
		tb.Fatal(err)
	}
	return b
}

func openBytes(tb testing.TB, b []byte) *Archive {
	tb.Helper()
	a, err := Open(bytes.NewReader(b), int64(len(b)), "test item")
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// viewBytes streams a tensor's elements row-major, as the converter will.
func viewBytes(tb testing.TB, t *Tensor) []byte {
	tb.Helper()
	ct := wholeTensor("x", t)
	var out []byte
	err := ckpt.WalkChunk(ct, &ct.Chunks[0], make([]byte, 64), func(_ int64, src []byte) error {
		out = append(out, src...)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// record returns a record's bytes.
func record(tb testing.TB, a *Archive, name string) []byte {
	tb.Helper()
	rec, err := a.Record(name)
	if err != nil {
		tb.Fatal(err)
	}
	b := make([]byte, rec.Size)
	if _, err := a.r.ReadAt(b, rec.Offset); err != nil && rec.Size > 0 {
		tb.Fatal(err)
	}
	return b
}

// rezip rebuilds a torch archive record by record, in its order, replacing
// the records named in repl (names without the prefix; a nil value drops
// the record). Everything else keeps torch's bytes.
func rezip(tb testing.TB, orig []byte, repl map[string][]byte, method uint16) []byte {
	tb.Helper()
	zr, err := zip.NewReader(bytes.NewReader(orig), int64(len(orig)))
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		_, name, _ := strings.Cut(f.Name, "/")
		data, replaced := repl[name]
		if replaced && data == nil {
			continue
		}
		if !replaced {
			rc, err := f.Open()
			if err != nil {
				tb.Fatal(err)
			}
			data, err = io.ReadAll(rc)
			rc.Close()
			if err != nil {
				tb.Fatal(err)
			}
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: method})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// pkl writes protocol 2 pickles the way torch.save's pickler writes
// data.pkl: GLOBAL opcodes, every object memoized with BINPUT.
type pkl struct {
	b    []byte
	memo byte
}

func (p *pkl) put()               { p.b = append(p.b, 'q', p.memo); p.memo++ }
func (p *pkl) op(s string)        { p.b = append(p.b, s...) }
func (p *pkl) global(m, n string) { p.op("c" + m + "\n" + n + "\n"); p.put() }
func (p *pkl) str(s string) {
	p.b = append(p.b, 'X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
	p.put()
}

func (p *pkl) int(n int64) {
	switch {
	case n >= 0 && n < 256:
		p.b = append(p.b, 'K', byte(n))
	case n >= 0 && n < 65536:
		p.b = append(p.b, 'M', byte(n), byte(n>>8))
	case n >= -1<<31 && n < 1<<31:
		p.b = append(p.b, 'J')
		p.b = binary.LittleEndian.AppendUint32(p.b, uint32(n))
	default:
		p.b = append(p.b, 0x8a, 8) // LONG1, 8 bytes two's complement
		p.b = binary.LittleEndian.AppendUint64(p.b, uint64(n))
	}
}

func (p *pkl) ints(ns []int64) {
	switch len(ns) {
	case 0:
		p.op(")")
		return
	case 1, 2, 3:
		for _, n := range ns {
			p.int(n)
		}
		p.b = append(p.b, 0x85+byte(len(ns)-1))
	default:
		p.op("(")
		for _, n := range ns {
			p.int(n)
		}
		p.op("t")
	}
	p.put()
}

// tensorArgs is one _rebuild_tensor call.
type tensorArgs struct {
	rebuild      string // "_rebuild_tensor_v2" or "_rebuild_tensor_v3"
	storageMod   string // "torch" or "torch.storage"
	storage      string // "BFloat16Storage", "UntypedStorage", …
	key          string
	numel        int64
	offset       int64
	size, stride []int64
	dtype        string // the v3 dtype argument
	conj         bool   // append metadata {"conj": True}
}

// tensor writes the rebuild call for a; tensors are memoized by the caller
// as torch's pickler would (here: not needed).
func (p *pkl) tensor(a tensorArgs) {
	p.global("torch._utils", a.rebuild)
	p.op("((")
	p.str("storage")
	p.global(a.storageMod, a.storage)
	p.str(a.key)
	p.str("cpu")
	p.int(a.numel)
	p.op("t")
	p.put()
	p.op("Q")
	p.int(a.offset)
	p.ints(a.size)
	p.ints(a.stride)
	p.op("\x89")
	p.global("collections", "OrderedDict")
	p.op(")R")
	p.put()
	if a.rebuild == "_rebuild_tensor_v3" {
		p.global("torch", a.dtype)
	}
	if a.conj {
		p.op("}")
		p.put()
		p.str("conj")
		p.op("\x88s")
	}
	p.op("t")
	p.put()
	p.op("R")
	p.put()
}

func itemPickle(a tensorArgs) []byte {
	p := &pkl{b: []byte{0x80, 2}}
	p.tensor(a)
	return append(p.b, '.')
}

var (
	projectorArgs = tensorArgs{rebuild: "_rebuild_tensor_v2", storageMod: "torch", storage: "BFloat16Storage", key: "0",
		numel: 384, size: []int64{4, 96}, stride: []int64{96, 1}}
	patchArgs = tensorArgs{rebuild: "_rebuild_tensor_v2", storageMod: "torch", storage: "BFloat16Storage", key: "0",
		numel: 9408, size: []int64{16, 3, 14, 14}, stride: []int64{588, 196, 14, 1}}
	gateArgs = tensorArgs{rebuild: "_rebuild_tensor_v2", storageMod: "torch", storage: "FloatStorage", key: "0",
		numel: 1, size: []int64{1}, stride: []int64{1}}
	emptyArgs = tensorArgs{rebuild: "_rebuild_tensor_v2", storageMod: "torch", storage: "FloatStorage", key: "0",
		numel: 0, size: []int64{0}, stride: []int64{1}}
)

// TestPickleWriterIsTorchs: the test's data.pkl writer reproduces torch's
// data.pkl of real items byte for byte, so the variants below differ from
// what torch writes only in the numbers changed.
func TestPickleWriterIsTorchs(t *testing.T) {
	for _, tt := range []struct {
		item itemRef
		args tensorArgs
	}{{itemProjector, projectorArgs}, {itemPatch, patchArgs}, {itemGate, gateArgs}, {itemEmpty, emptyArgs}} {
		a := openBytes(t, tt.item.bytes(t))
		if got, want := itemPickle(tt.args), record(t, a, "data.pkl"); !bytes.Equal(got, want) {
			t.Errorf("%s: writer gives\n%q\ntorch wrote\n%q", tt.item.file, got, want)
		}
	}
}

// TestRealItems reads real DCP items: dtype, shape, strides, archive
// facts, and for the legacy run the bytes equal the same rows of the
// FULL_STATE_DICT .pt (legacy and full trained identically).
func TestRealItems(t *testing.T) {
	a := openBytes(t, itemPatch.bytes(t))
	if a.Prefix != "archive" || a.Version != 3 || a.BigEndian {
		t.Errorf("prefix %q version %d big-endian %v", a.Prefix, a.Version, a.BigEndian)
	}
	tn, err := a.LoadTensor()
	if err != nil {
		t.Fatal(err)
	}
	if tn.DType != dtype.BF16 || fmt.Sprint(tn.Size, tn.Stride, tn.Offset) != "[16 3 14 14] [588 196 14 1] 0" || tn.Storage.Record.Size != 9408*2 {
		t.Errorf("tensor %v %v %v %d, storage %d bytes", tn.DType, tn.Size, tn.Stride, tn.Offset, tn.Storage.Record.Size)
	}
	got := viewBytes(t, tn)

	pt, err := OpenPT(runs + "full/mllama-tiny-1.pt")
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close()
	for _, ct := range pt.Tensors {
		if ct.Name == "model.vision_model.patch_embedding.weight" {
			v, err := ct.Chunks[0].Open()
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, len(got))
			if _, err := v.R.ReadAt(want, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("legacy item rows 0:16 differ from the .pt's")
			}
		}
	}

	e, err := openBytes(t, itemEmpty.bytes(t)).LoadTensor()
	if err != nil {
		t.Fatal(err)
	}
	if e.DType != dtype.F32 || len(e.Size) != 1 || e.Size[0] != 0 || e.Storage.Record.Size != 0 {
		t.Errorf("empty chunk: %v %v, %d bytes", e.DType, e.Size, e.Storage.Record.Size)
	}
}

// TestStrides rewrites the data.pkl of a real item (the legacy projector
// chunk, [4, 96] bf16) to view its storage differently; the expected
// elements are picked from the original item's bytes.
func TestStrides(t *testing.T) {
	orig := itemProjector.bytes(t)
	base := viewBytes(t, mustTensor(t, orig))
	elem := func(i int64) []byte { return base[2*i : 2*i+2] }
	tests := []struct {
		name   string
		args   func(a *tensorArgs)
		expect func() []byte
	}{
		{"transposed", func(a *tensorArgs) { a.size, a.stride = []int64{96, 4}, []int64{1, 96} }, func() []byte {
			var out []byte
			for j := int64(0); j < 96; j++ {
				for i := int64(0); i < 4; i++ {
					out = append(out, elem(i*96+j)...)
				}
			}
			return out
		}},
		{"storage offset", func(a *tensorArgs) { a.offset, a.size = 96, []int64{3, 96} }, func() []byte { return base[2*96:] }},
		{"column slice", func(a *tensorArgs) { a.offset, a.size = 10, []int64{4, 5} }, func() []byte {
			var out []byte
			for i := int64(0); i < 4; i++ {
				for j := int64(10); j < 15; j++ {
					out = append(out, elem(i*96+j)...)
				}
			}
			return out
		}},
		{"0-d", func(a *tensorArgs) { a.offset, a.size, a.stride = 7, nil, nil }, func() []byte { return elem(7) }},
		{"v3 on an UntypedStorage", func(a *tensorArgs) {
			a.rebuild, a.storageMod, a.storage, a.numel, a.dtype = "_rebuild_tensor_v3", "torch.storage", "UntypedStorage", 768, "bfloat16"
		}, func() []byte { return base }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := projectorArgs
			tt.args(&args)
			b := rezip(t, orig, map[string][]byte{"data.pkl": itemPickle(args)}, zip.Store)
			if got := viewBytes(t, mustTensor(t, b)); !bytes.Equal(got, tt.expect()) {
				t.Errorf("view bytes differ")
			}
		})
	}
}

func mustTensor(tb testing.TB, b []byte) *Tensor {
	tb.Helper()
	tn, err := openBytes(tb, b).LoadTensor()
	if err != nil {
		tb.Fatal(err)
	}
	return tn
}

// TestSharedStorage: two tensors viewing one storage record (tied or
// sliced weights) share one *Storage and read the right halves.
func TestSharedStorage(t *testing.T) {
	orig := itemProjector.bytes(t)
	base := viewBytes(t, mustTensor(t, orig))
	p := &pkl{b: []byte{0x80, 2}}
	p.global("collections", "OrderedDict")
	p.op(")R")
	p.put()
	p.op("(")
	p.str("a")
	top := projectorArgs
	top.size = []int64{2, 96}
	p.tensor(top)
	p.str("b")
	bottom := top
	bottom.offset = 192
	p.tensor(bottom)
	p.op("u.")
	b := rezip(t, orig, map[string][]byte{"data.pkl": p.b}, zip.Store)
	v, err := openBytes(t, b).Load()
	if err != nil {
		t.Fatal(err)
	}
	d := v.(*pickle.Dict)
	ta, _ := d.Get("a")
	tb, _ := d.Get("b")
	x, y := ta.(*Tensor), tb.(*Tensor)
	if x.Storage != y.Storage {
		t.Error("the two tensors do not share one Storage")
	}
	if !bytes.Equal(viewBytes(t, x), base[:384]) || !bytes.Equal(viewBytes(t, y), base[384:]) {
		t.Error("halves differ")
	}
}

// TestBigEndian: a "big" byteorder record with the storage byte-swapped
// per element reads as the original little-endian values.
func TestBigEndian(t *testing.T) {
	orig := itemProjector.bytes(t)
	a := openBytes(t, orig)
	data := record(t, a, "data/0")
	swapped := bytes.Clone(data)
	dtype.SwapBytes(swapped, 2)
	b := rezip(t, orig, map[string][]byte{"byteorder": []byte("big"), "data/0": swapped}, zip.Store)
	tn := mustTensor(t, b)
	if !tn.archive.BigEndian {
		t.Fatal("byteorder big not seen")
	}
	if !bytes.Equal(viewBytes(t, tn), data) {
		t.Error("big-endian storage not swapped back")
	}
	// No byteorder record: little endian, as torch assumes.
	if tn := mustTensor(t, rezip(t, orig, map[string][]byte{"byteorder": nil}, zip.Store)); tn.archive.BigEndian || !bytes.Equal(viewBytes(t, tn), data) {
		t.Error("archive without byteorder record misread")
	}
}

// TestRefused: variants of a real item that must be refused, each with an
// error that matches ckpt.ErrCorrupt and says why.
func TestRefused(t *testing.T) {
	orig := itemProjector.bytes(t)
	with := func(f func(a *tensorArgs)) map[string][]byte {
		a := projectorArgs
		f(&a)
		return map[string][]byte{"data.pkl": itemPickle(a)}
	}
	globalPkl := func(module, name string) map[string][]byte {
		return map[string][]byte{"data.pkl": []byte("\x80\x02c" + module + "\n" + name + "\n)R.")}
	}
	fromType := func(newType string) map[string][]byte {
		p := &pkl{b: []byte{0x80, 2}}
		p.global("torch._tensor", "_rebuild_from_type_v2")
		p.op("(")
		p.global("torch._utils", "_rebuild_tensor_v2")
		m, n, _ := strings.Cut(newType, " ")
		p.global(m, n)
		p.op("((") // the arguments of _rebuild_tensor_v2, then its storage's persistent id
		p.str("storage")
		p.global("torch", "BFloat16Storage")
		p.str("0")
		p.str("cpu")
		p.int(384)
		p.op("tQ")
		p.int(0)
		p.ints([]int64{4, 96})
		p.ints([]int64{96, 1})
		p.op("\x89")
		p.global("collections", "OrderedDict")
		p.op(")Rt}tR.")
		return map[string][]byte{"data.pkl": p.b}
	}
	tests := []struct {
		name   string
		repl   map[string][]byte
		method uint16
		want   string
	}{
		{"view past the storage", with(func(a *tensorArgs) { a.size = []int64{4, 97} }), zip.Store, "reach element 384 of a storage of 384 BF16 elements"},
		{"expanded view", with(func(a *tensorArgs) { a.size, a.stride = []int64{1000, 96}, []int64{0, 1} }), zip.Store, "expanded views are not supported"},
		{"negative offset", with(func(a *tensorArgs) { a.offset = -1 }), zip.Store, "storage offset is int -1"},
		{"size and stride lengths", with(func(a *tensorArgs) { a.stride = []int64{1} }), zip.Store, "differ in length"},
		{"numel beyond the record", with(func(a *tensorArgs) { a.numel = 1 << 40 }), zip.Store, "declares 1099511627776 elements"},
		{"numel short of the record", with(func(a *tensorArgs) { a.numel = 383 }), zip.Store, "declares 383 elements of 2 bytes, but record archive/data/0 holds 768"},
		{"missing storage record", with(func(a *tensorArgs) { a.key = "7" }), zip.Store, "no record archive/data/7"},
		{"conjugate bit", with(func(a *tensorArgs) { a.conj = true }), zip.Store, `sets str "conj"`},
		{"v2 on an UntypedStorage", with(func(a *tensorArgs) { a.storageMod, a.storage, a.numel = "torch.storage", "UntypedStorage", 768 }), zip.Store, "the dtype is unknown"},
		{"v3 dtype against a typed storage", with(func(a *tensorArgs) { a.rebuild, a.dtype = "_rebuild_tensor_v3", "float16" }), zip.Store, "F16 tensor on BF16 storage"},
		{"DTensor", globalPkl("torch.distributed.tensor", "DTensor"), zip.Store, "torch.distributed.tensor.DTensor is not in the allowlist (at byte 2); this is a per-rank sharded save"},
		{"ShardedTensor", globalPkl("torch.distributed._shard.sharded_tensor.api", "ShardedTensor"), zip.Store, "per-rank sharded save"},
		{"wrapper subclass", globalPkl("torch._utils", "_rebuild_wrapper_subclass"), zip.Store, "per-rank sharded save"},
		{"quantized", globalPkl("torch._utils", "_rebuild_qtensor"), zip.Store, "quantized, sparse, nested"},
		{"os.system", globalPkl("os", "system"), zip.Store, "os.system is not in the allowlist"},
		{"from_type to another class", fromType("torch.nn.parameter UninitializedParameter"), zip.Store, "torch.nn.parameter.UninitializedParameter is not in the allowlist"},
		{"from_type to a storage class", fromType("torch FloatStorage"), zip.Store, "only torch.Tensor and torch.nn.parameter.Parameter"},
		{"not a tensor", map[string][]byte{"data.pkl": []byte("\x80\x02K\x05.")}, zip.Store, "holds a int 5, want one tensor"},
		{"no version record", map[string][]byte{"version": nil}, zip.Store, "no version record"},
		{"version 11", map[string][]byte{"version": []byte("11\n")}, zip.Store, `is "11\n", want a format version from 1 to 10`},
		{"odd byteorder", map[string][]byte{"byteorder": []byte("middle")}, zip.Store, `byteorder record is "middle"`},
		{"no data.pkl", map[string][]byte{"data.pkl": nil}, zip.Store, "no archive/data.pkl record"},
		{"compressed records", nil, zip.Deflate, "is compressed (method 8)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := rezip(t, orig, tt.repl, tt.method)
			_, err := func() (*Tensor, error) {
				a, err := Open(bytes.NewReader(b), int64(len(b)), "test item")
				if err != nil {
					return nil, err
				}
				return a.LoadTensor()
			}()
			if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), tt.want) {
				t.Errorf("got %v, want an ErrCorrupt containing %q", err, tt.want)
			}
		})
	}
}

// TestDamagedArchives: damage to torch's own bytes (not rewritten).
func TestDamagedArchives(t *testing.T) {
	orig := itemProjector.bytes(t)
	a := openBytes(t, orig)
	pklRec, _ := a.Record("data.pkl")
	dataRec, _ := a.Record("data/0")
	flip := func(off int64) []byte {
		b := bytes.Clone(orig)
		b[off] ^= 0x20
		return b
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"data.pkl CRC", flip(pklRec.Offset + 40), "record archive/data.pkl: CRC-32"},
		{"truncated", orig[:len(orig)-30], "bad zip central directory"},
		{"central directory damaged", flip(int64(bytes.Index(orig, []byte("PK\x01\x02")))), "bad zip central directory"},
		{"prefix changed in one record", bytes.Replace(orig, []byte("archive/version"), []byte("archivX/version"), -1), "outside the archive folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := func() (any, error) {
				a, err := Open(bytes.NewReader(tt.data), int64(len(tt.data)), "test item")
				if err != nil {
					return nil, err
				}
				return a.Load()
			}()
			if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(fmt.Sprint(err), tt.want) {
				t.Errorf("got %v, want an ErrCorrupt containing %q", err, tt.want)
			}
		})
	}
	// A flipped tensor byte passes Open and data.pkl; WalkChunk's CRC
	// check catches it.
	tn := mustTensor(t, flip(dataRec.Offset+3))
	ct := wholeTensor("x", tn)
	err := ckpt.WalkChunk(ct, &ct.Chunks[0], make([]byte, 64), func(int64, []byte) error { return nil })
	if !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(err.Error(), "CRC-32") || !strings.Contains(err.Error(), "test item, archive/data/0") {
		t.Errorf("flipped data byte: %v", err)
	}
}

func TestSniff(t *testing.T) {
	tar := make([]byte, 512)
	copy(tar[257:], "ustar")
	st := binary.LittleEndian.AppendUint64(nil, 30)
	st = append(st, `{"__metadata__":{}}`...)
	tests := []struct {
		name string
		head []byte
		want string
	}{
		{"zip", []byte("PK\x03\x04rest"), ""},
		{"PYTORCH1", []byte("PYTORCH1\x00\x00"), "PYTORCH1"},
		{"legacy", legacyMagic, "legacy torch.save format of torch < 1.6"},
		{"gzip", []byte{0x1f, 0x8b, 8, 0}, "gzip"},
		{"tar", tar, "tar archive"},
		{"safetensors", st, "safetensors"},
		{"empty", nil, "empty"},
		{"other", []byte("hello world"), "starts with 68 65 6c 6c 6f 20 77 6f"},
	}
	for _, tt := range tests {
		err := Sniff(tt.head)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrFormat) || !errors.Is(err, ckpt.ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestLegacyFile: a file starting with the pickled legacy magic number is
// refused by OpenPT with its name.
func TestLegacyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "old.pt")
	if err := os.WriteFile(p, append(bytes.Clone(legacyMagic), "more"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenPT(p)
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "legacy") {
		t.Errorf("got %v", err)
	}
}

// TestParameterWrappers: nn.Parameter and tensor-subclass wrappers around
// a real item's tensor unwrap to the tensor.
func TestParameterWrappers(t *testing.T) {
	orig := itemProjector.bytes(t)
	want := viewBytes(t, mustTensor(t, orig))
	wrap := func(global string, extra string) []byte {
		p := &pkl{b: []byte{0x80, 2}}
		m, n, _ := strings.Cut(global, " ")
		p.global(m, n)
		p.op("(")
		p.tensor(projectorArgs)
		p.op("\x88") // requires_grad
		p.global("collections", "OrderedDict")
		p.op(")R")
		p.put()
		p.op(extra + "tR.")
		return p.b
	}
	fromType := func(m, n string) []byte {
		p := &pkl{b: []byte{0x80, 2}}
		p.global("torch._tensor", "_rebuild_from_type_v2")
		p.op("(")
		p.global("torch._utils", "_rebuild_parameter")
		p.global(m, n)
		p.op("(")
		p.tensor(projectorArgs)
		p.op("\x88")
		p.global("collections", "OrderedDict")
		p.op(")R")
		p.put()
		p.op("t}")
		p.put()
		p.op("tR.")
		return p.b
	}
	for name, pkl := range map[string][]byte{
		"_rebuild_parameter":              wrap("torch._utils _rebuild_parameter", ""),
		"_rebuild_parameter_with_state":   wrap("torch._utils _rebuild_parameter_with_state", "}"),
		"_rebuild_from_type_v2 Parameter": fromType("torch.nn.parameter", "Parameter"),
		"_rebuild_from_type_v2 Tensor":    fromType("torch", "Tensor"),
	} {
		t.Run(name, func(t *testing.T) {
			tn := mustTensor(t, rezip(t, orig, map[string][]byte{"data.pkl": pkl}, zip.Store))
			if !bytes.Equal(viewBytes(t, tn), want) {
				t.Error("bytes differ")
			}
		})
	}
}
