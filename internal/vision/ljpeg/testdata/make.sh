#!/bin/sh
# Makes the JPEG test files and their reference decodes. References are what
# PIL returns (Image.open(f).convert("RGB"), raw RGB bytes, row-major), i.e.
# libjpeg-turbo's default decompression. Made on Debian 12 with python3-pil
# 9.4.0, libjpeg62-turbo 2.1.5 and libjpeg-turbo-progs 2.1.5 (cjpeg).
set -eu
cd "$(dirname "$0")"
/usr/bin/python3 - <<'PY'
import numpy as np
from PIL import Image
def pattern(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(x / 3.1) * np.cos(y / 4.7)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    a = np.stack([r, g, b], -1)
    a[h // 3: h // 2, w // 4: w // 2] = (250, 20, 30)     # saturated edges stress chroma upsampling
    a[h // 2:, w // 2:] += rng.normal(0, 40, (h - h // 2, w - w // 2, 3))
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))
pattern(37, 29, 1).save("q90_420_37x29.jpg", quality=90, subsampling=2)
pattern(37, 29, 2).save("q90_422_37x29.jpg", quality=90, subsampling=1)
pattern(37, 29, 3).save("q90_444_37x29.jpg", quality=90, subsampling=0)
pattern(64, 48, 4).save("q85_420_progressive_64x48.jpg", quality=85, progressive=True, optimize=True)
pattern(3, 5, 5).save("q75_420_3x5.jpg", quality=75, subsampling=2)
pattern(33, 17, 6).convert("L").save("gray_33x17.jpg", quality=90)
pattern(41, 23, 7).save("src_41x23.ppm")
PY
cjpeg -quality 90 -sample 1x2 -outfile q90_440_41x23.jpg src_41x23.ppm
cjpeg -quality 90 -sample 4x1 -outfile q90_411_41x23.jpg src_41x23.ppm
cjpeg -quality 90 -sample 2x2 -restart 1 -outfile q90_420_restart_41x23.jpg src_41x23.ppm
rm src_41x23.ppm
/usr/bin/python3 - <<'PY'
import glob
import numpy as np
from PIL import Image
for f in sorted(glob.glob("*.jpg")):
    im = Image.open(f)
    np.asarray(im.convert("RGB")).tofile(f[:-4] + ".rgb")
    print(f, im.mode, im.size, getattr(im, "layer", None))
PY
