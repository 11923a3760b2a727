"""Records how CPython's own unpickler reads the fixtures' pickles.

Run from internal/pickle: python3 testdata/cpython_golden.py > testdata/cpython.json

For each pickle it writes the globals it names and the sha256
of a canonical dump of the object graph CPython's C unpickler builds when
every global is a recording stub. unpickle_test.go builds the same dump from
this package's result; equal hashes mean both interpreters built the same
graph (memo references, MARK nesting, NEWOBJ vs REDUCE, BUILD states).
Needs only the standard library; torch is not imported.
"""
import collections, hashlib, io, json, pickle, struct, zipfile

FX = "../../goldens/mllama-tiny-dev/runs/"


class Obj:
    kind = "R"

    def __setstate__(self, state):
        self.state = state


def stub(module, name):
    class Meta(type):
        def __call__(cls, *args):  # REDUCE: cls(*args)
            o = object.__new__(cls)
            o.kind, o.args = "R", args
            return o

    def new(cls, *args):  # NEWOBJ: cls.__new__(cls, *args)
        o = object.__new__(cls)
        o.kind, o.args = "N", args
        return o

    return Meta(name, (Obj,), {"__new__": new, "module": module, "gname": name})


class Pers:
    def __init__(self, pid):
        self.pid = pid


class U(pickle.Unpickler):
    def find_class(self, module, name):
        self.globals.add("%s|%s" % (module, name))
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return stub(module, name)

    def persistent_load(self, pid):
        return Pers(pid)


def dump(v):
    if v is None:
        return "N"
    if v is True:
        return "T"
    if v is False:
        return "F"
    if isinstance(v, int):
        return "i%d" % v
    if isinstance(v, float):
        return "f%016x" % struct.unpack(">Q", struct.pack(">d", v))[0]
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return "s%d:" % len(b) + v
    if isinstance(v, (bytes, bytearray)):
        return "b%d:" % len(v) + v.hex()
    if isinstance(v, tuple):
        return "(" + ",".join(dump(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    if isinstance(v, dict):
        s = "{" + ",".join(dump(k) + ":" + dump(x) for k, x in v.items()) + "}"
        if getattr(v, "__dict__", None):
            s += ".B" + dump(dict(v.__dict__))
        return s
    if isinstance(v, (set, frozenset)):
        return ("fset" if isinstance(v, frozenset) else "set") + "[" + ",".join(dump(x) for x in v) + "]"
    if isinstance(v, Pers):
        return "P" + dump(v.pid)
    if isinstance(v, type) and issubclass(v, Obj):
        return "G%s|%s" % (v.module, v.gname)
    if isinstance(v, Obj):
        s = "%s<%s|%s>" % (v.kind, v.module, v.gname) + dump(tuple(v.args))
        if hasattr(v, "state"):
            s += ".B" + dump(v.state)
        return s
    raise TypeError(type(v))


def record(data):
    u = U(io.BytesIO(data))
    u.globals = set()
    v = u.load()
    d = dump(v).encode("utf-8", "surrogatepass")
    return {"globals": sorted(u.globals), "dump_len": len(d), "dump_sha256": hashlib.sha256(d).hexdigest()}


out = {}
for run in ["fsdp1", "fsdp2", "freeze", "legacy"]:
    out["runs/%s/.metadata" % run] = record(open(FX + run + "/.metadata", "rb").read())
z = zipfile.ZipFile(FX + "full/mllama-tiny-1.pt")
out["runs/full/mllama-tiny-1.pt:mllama-tiny-1/data.pkl"] = record(z.read("mllama-tiny-1/data.pkl"))
item = open(FX + "fsdp2/__0_0.distcp", "rb").read()[0:1577]
out["runs/fsdp2/__0_0.distcp@0+1577:archive/data.pkl"] = record(zipfile.ZipFile(io.BytesIO(item)).read("archive/data.pkl"))
print(json.dumps(out, indent=1, sort_keys=True))
