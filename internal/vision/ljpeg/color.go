package ljpeg

import "image"

// ycbcrToRGB converts a decoded YCbCr image to RGB as libjpeg-turbo's default
// decompression does: chroma planes upsampled with its "fancy" filters
// (h2v2, h2v1 and h1v2 triangles; plain replication where libjpeg uses it),
// then its 16-bit fixed-point BT.601 conversion.
func ycbcrToRGB(m *image.YCbCr) *image.RGBA {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	if w == 0 || h == 0 {
		return out
	}
	cb := upsample(m, m.Cb)
	cr := upsample(m, m.Cr)
	yOff := m.YOffset(b.Min.X, b.Min.Y)
	for y := range h {
		yRow := m.Y[yOff+y*m.YStride : yOff+y*m.YStride+w]
		o := out.Pix[y*out.Stride : y*out.Stride+4*w]
		for x, yy := range yRow {
			r, g, bl := yccToRGB(int32(yy), int32(cb[y*w+x]), int32(cr[y*w+x]))
			o[4*x], o[4*x+1], o[4*x+2], o[4*x+3] = r, g, bl, 255
		}
	}
	return out
}

// libjpeg's jdcolor.c constants: FIX(x) = round(x·2¹⁶).
const (
	fixR  = 91881  // 1.40200
	fixB  = 116130 // 1.77200
	fixGr = 46802  // 0.71414
	fixGb = 22554  // 0.34414
	half  = 1 << 15
)

func yccToRGB(y, cb, cr int32) (r, g, b uint8) {
	cb -= 128
	cr -= 128
	return clamp8(y + (fixR*cr+half)>>16),
		clamp8(y + (-fixGb*cb-fixGr*cr+half)>>16),
		clamp8(y + (fixB*cb+half)>>16)
}

func clamp8(v int32) uint8 { return uint8(max(0, min(255, v))) }

// upsample returns the chroma plane p of m at full resolution, w×h bytes.
func upsample(m *image.YCbCr, p []byte) []byte {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	// The stored chroma samples: libjpeg's downsampled_width/height.
	hs, vs := 1, 1
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		hs = 2
	case image.YCbCrSubsampleRatio420:
		hs, vs = 2, 2
	case image.YCbCrSubsampleRatio440:
		vs = 2
	case image.YCbCrSubsampleRatio411:
		hs = 4
	case image.YCbCrSubsampleRatio410:
		hs, vs = 4, 2
	}
	cw, ch := (w+hs-1)/hs, (h+vs-1)/vs
	c0 := m.COffset(b.Min.X, b.Min.Y)
	at := func(x, y int) int32 { return int32(p[c0+y*m.CStride+x]) }

	out := make([]byte, w*h)
	switch {
	case hs == 2 && vs == 2 && cw > 2:
		colsum := make([]int32, cw)
		for y := range h {
			cy := y / 2
			// The nearer row counts 3, the next nearer 1; libjpeg repeats the
			// first and last rows as context at the image edges.
			ny := max(cy-1, 0)
			if y%2 == 1 {
				ny = min(cy+1, ch-1)
			}
			for x := range colsum {
				colsum[x] = 3*at(x, cy) + at(x, ny)
			}
			row := out[y*w : y*w+w]
			for x := range row {
				cx := x / 2
				var v int32
				switch {
				case x%2 == 0 && cx == 0:
					v = (4*colsum[0] + 8) >> 4
				case x%2 == 0:
					v = (3*colsum[cx] + colsum[cx-1] + 8) >> 4
				case cx == cw-1:
					v = (4*colsum[cx] + 7) >> 4
				default:
					v = (3*colsum[cx] + colsum[cx+1] + 7) >> 4
				}
				row[x] = uint8(v)
			}
		}
	case hs == 2 && vs == 1 && cw > 2:
		for y := range h {
			row := out[y*w : y*w+w]
			for x := range row {
				cx := x / 2
				c := at(cx, y)
				var v int32
				switch {
				case x%2 == 0 && cx == 0:
					v = c
				case x%2 == 0:
					v = (3*c + at(cx-1, y) + 1) >> 2
				case cx == cw-1:
					v = c
				default:
					v = (3*c + at(cx+1, y) + 2) >> 2
				}
				row[x] = uint8(v)
			}
		}
	case hs == 1 && vs == 2:
		for y := range h {
			cy := y / 2
			ny, bias := max(cy-1, 0), int32(1)
			if y%2 == 1 {
				ny, bias = min(cy+1, ch-1), 2
			}
			row := out[y*w : y*w+w]
			for x := range row {
				row[x] = uint8((3*at(x, cy) + at(x, ny) + bias) >> 2)
			}
		}
	default:
		// 4:4:4 and the ratios libjpeg replicates (4:1:1, 4:1:0, and
		// 2-sample-wide chroma).
		for y := range h {
			row := out[y*w : y*w+w]
			for x := range row {
				row[x] = uint8(at(x/hs, y/vs))
			}
		}
	}
	return out
}
