package dcptest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"

	"github.com/ckptgate/ckptgate/internal/pickle"
)

// metadataGlobals are the globals a real .metadata names
// (checkpoint-formats.md §3.5), recorded rather than interpreted so that
// the object graph can be edited and written back.
var metadataGlobals = [][2]string{
	{"torch.distributed.checkpoint.metadata", "Metadata"},
	{"torch.distributed.checkpoint.metadata", "TensorStorageMetadata"},
	{"torch.distributed.checkpoint.metadata", "BytesStorageMetadata"},
	{"torch.distributed.checkpoint.metadata", "ChunkStorageMetadata"},
	{"torch.distributed.checkpoint.metadata", "MetadataIndex"},
	{"torch.distributed.checkpoint.metadata", "TensorProperties"},
	{"torch.distributed.checkpoint.metadata", "StorageMeta"},
	{"torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"},
	{"torch.distributed.checkpoint.filesystem", "_StorageInfo"},
	{"torch.serialization", "_get_layout"},
	{"torch", "Size"},
	{"torch", "bfloat16"},
	{"torch", "float32"},
	{"torch", "float16"},
	{"pathlib", "PosixPath"},
}

// recording returns a config under which every metadata global yields a
// *pickle.Object that remembers how it was made (NEWOBJ or REDUCE, and
// its arguments), and bare globals stay *pickle.Class values.
func recording() *pickle.Config {
	a := pickle.NewAllowlist()
	for _, g := range metadataGlobals {
		c := &pickle.Class{Module: g[0], Name: g[1]}
		c.Call = func(args pickle.Tuple) (any, error) { return &pickle.Object{Class: c, Args: args}, nil }
		c.New = func(args pickle.Tuple) (any, error) { return &pickle.Object{Class: c, Args: args, NewObj: true}, nil }
		a.Add(c)
	}
	return &pickle.Config{Globals: a}
}

// DecodeMetadata reads a .metadata file as an editable object graph.
func DecodeMetadata(path string) (*pickle.Object, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := pickle.Unpickle(b, recording())
	if err != nil {
		return nil, err
	}
	o, ok := v.(*pickle.Object)
	if !ok {
		return nil, fmt.Errorf("%s holds a %s, not Metadata", path, pickle.TypeName(v))
	}
	return o, nil
}

// EditMetadata decodes dir/.metadata, lets edit change the graph, and
// writes it back with Encode.
func EditMetadata(dir string, edit func(root *pickle.Object) error) error {
	p := filepath.Join(dir, ".metadata")
	root, err := DecodeMetadata(p)
	if err != nil {
		return err
	}
	if err := edit(root); err != nil {
		return err
	}
	b, err := Encode(root)
	if err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// Encode writes v as a protocol 2 pickle. Objects made by NEWOBJ are
// written with NEWOBJ, others with REDUCE, each followed by BUILD when it
// has a state; a Dict's state is written with BUILD too. Shared values are
// written once per reference (no memo), which unpickles to an equal graph.
func Encode(v any) ([]byte, error) {
	e := &encoder{b: []byte{0x80, 2}}
	if err := e.value(v); err != nil {
		return nil, err
	}
	return append(e.b, '.'), nil
}

type encoder struct{ b []byte }

func (e *encoder) value(v any) error {
	switch v := v.(type) {
	case nil:
		e.b = append(e.b, 'N')
	case bool:
		if v {
			e.b = append(e.b, 0x88)
		} else {
			e.b = append(e.b, 0x89)
		}
	case int:
		e.int(int64(v))
	case int64:
		e.int(v)
	case *big.Int:
		e.long(v)
	case float64:
		e.b = append(e.b, 'G')
		e.b = binary.BigEndian.AppendUint64(e.b, math.Float64bits(v))
	case string:
		e.b = append(e.b, 'X')
		e.b = binary.LittleEndian.AppendUint32(e.b, uint32(len(v)))
		e.b = append(e.b, v...)
	case pickle.Bytes:
		// SHORT_BINBYTES/BINBYTES are protocol 3; BINSTRING would
		// unpickle as str. Nothing in DCP metadata is bytes.
		return fmt.Errorf("encode: bytes values are not supported")
	case pickle.Tuple:
		if len(v) == 0 {
			e.b = append(e.b, ')')
			return nil
		}
		e.b = append(e.b, '(')
		for _, x := range v {
			if err := e.value(x); err != nil {
				return err
			}
		}
		e.b = append(e.b, 't')
	case *pickle.List:
		e.b = append(e.b, ']')
		if len(v.Items) > 0 {
			e.b = append(e.b, '(')
			for _, x := range v.Items {
				if err := e.value(x); err != nil {
					return err
				}
			}
			e.b = append(e.b, 'e')
		}
	case *pickle.Dict:
		e.b = append(e.b, '}')
		if v.Len() > 0 {
			e.b = append(e.b, '(')
			for _, kv := range v.Entries() {
				if err := e.value(kv.Key); err != nil {
					return err
				}
				if err := e.value(kv.Value); err != nil {
					return err
				}
			}
			e.b = append(e.b, 'u')
		}
		if v.State != nil {
			if err := e.value(v.State); err != nil {
				return err
			}
			e.b = append(e.b, 'b')
		}
	case *pickle.Class:
		e.b = append(e.b, 'c')
		e.b = append(e.b, v.Module+"\n"+v.Name+"\n"...)
	case *pickle.Object:
		if err := e.value(v.Class); err != nil {
			return err
		}
		if err := e.value(v.Args); err != nil {
			return err
		}
		if v.NewObj {
			e.b = append(e.b, 0x81)
		} else {
			e.b = append(e.b, 'R')
		}
		if v.State != nil {
			if err := e.value(v.State); err != nil {
				return err
			}
			e.b = append(e.b, 'b')
		}
	default:
		return fmt.Errorf("encode: %T values are not supported", v)
	}
	return nil
}

func (e *encoder) int(n int64) {
	switch {
	case n >= 0 && n < 1<<8:
		e.b = append(e.b, 'K', byte(n))
	case n >= 0 && n < 1<<16:
		e.b = append(e.b, 'M', byte(n), byte(n>>8))
	case n >= math.MinInt32 && n <= math.MaxInt32:
		e.b = append(e.b, 'J')
		e.b = binary.LittleEndian.AppendUint32(e.b, uint32(int32(n)))
	default:
		e.long(big.NewInt(n))
	}
}

// long writes LONG1 with the little-endian two's-complement bytes of n.
func (e *encoder) long(n *big.Int) {
	nb := (n.BitLen() + 8) / 8 // one spare bit for the sign
	mod := new(big.Int).Lsh(big.NewInt(1), uint(8*nb))
	u := new(big.Int).Set(n)
	if n.Sign() < 0 {
		u.Add(u, mod)
	}
	be := u.FillBytes(make([]byte, nb))
	e.b = append(e.b, 0x8a, byte(nb))
	for i := len(be) - 1; i >= 0; i-- {
		e.b = append(e.b, be[i])
	}
}
