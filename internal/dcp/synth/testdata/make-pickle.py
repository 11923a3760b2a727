# Writes python-pickle4.bin: what CPython's pickle.dumps(obj, protocol=4)
# makes of a graph exercising the parts of the pickler synth mirrors:
# framing past 64 KiB, SETITEMS/APPENDS batches of 1000 (and a dict of
# exactly 1000 items), int opcodes up to LONG1, and shared objects reached
# again through BINGET and LONG_BINGET. pickle_test.go builds the same graph.
# Run: python3 make-pickle.py   (made with CPython 3.11.7)
import pickle

shared = "shared"
pair = (shared, 7)
obj = {
    "big": {f"k{i}": (i % 9) * 10 ** (i % 19) for i in range(6000)},
    "thousand": {f"t{i}": i for i in range(1000)},
    "l1000": list(range(1000)),
    "l1001": [f"s{i}" for i in range(1001)],
    "ints": [-1, -255, -2**31, -2**31 - 1, 2**31, 2**63 - 1, -2**63, 255, 256, 65535, 65536],
    "refs": [shared, pair, pair, shared],
    "one": {"a": [True, False, None, ()]},
}
with open("python-pickle4.bin", "wb") as f:
    f.write(pickle.dumps(obj, protocol=4))
