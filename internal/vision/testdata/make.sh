#!/bin/sh
# Makes images in the modes transformers' convert_to_rgb treats specially and
# what transformers' Mllama processor gets from them: PIL's pixels after
# Image.open and convert_to_rgb (mode "RGB" untouched; anything else
# convert("RGBA"), alpha-composited over opaque white, convert("RGB")),
# stored as raw row-major RGB (*.rgb). Made on Debian 12 with python3-pil
# 9.4.0.
set -eu
cd "$(dirname "$0")"
/usr/bin/python3 - <<'PY'
import numpy as np
from PIL import Image

def convert_to_rgb(im):
    # transformers' Mllama convert_to_rgb, restated.
    if im.mode == "RGB":
        return im
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")

w, h = 23, 11
y, x = np.mgrid[0:h, 0:w]
rgb = np.stack([(x * 11) % 256, (y * 23) % 256, (x * y * 7) % 256], -1).astype(np.uint8)
alpha = ((x * 255) // (w - 1)).astype(np.uint8)

Image.fromarray(np.dstack([rgb, alpha])).save("rgba_23x11.png")
Image.fromarray(np.dstack([rgb[..., 0], alpha])).convert("LA").save("la_23x11.png")
Image.fromarray(rgb).save("rgb_trns_23x11.png", transparency=tuple(int(v) for v in rgb[0, 0]))
Image.fromarray(rgb[..., 1]).save("l_trns_23x11.png", transparency=int(rgb[3, 5, 1]))
p = Image.fromarray(rgb).quantize(16)
p.save("p_trns_23x11.png", transparency=3)
p.save("p_trns_23x11.gif", transparency=3)
Image.fromarray(rgb).convert("CMYK").save("cmyk_23x11.jpg", quality=95)
for f in ["rgba_23x11.png", "la_23x11.png", "rgb_trns_23x11.png", "l_trns_23x11.png",
          "p_trns_23x11.png", "p_trns_23x11.gif", "cmyk_23x11.jpg"]:
    im = Image.open(f)
    np.asarray(convert_to_rgb(im)).tofile(f.rsplit(".", 1)[0] + "." + f.rsplit(".", 1)[1] + ".rgb")
    print(f, im.mode, im.info.get("transparency"))
PY
