//! Blending a page's drawing onto the composited I420 canvas.
//!
//! A page frame arrives as premultiplied BGRA rectangles. It is converted once, when it
//! arrives, into what each canvas frame needs: per pixel the premultiplied luma and the
//! remaining transparency, per 2×2 block the premultiplied chroma and the block's mean
//! transparency. Blending a frame is then one multiply-add per sample of the drawn area
//! (`out = drawn + canvas × (255 − alpha) / 255`), which costs a fraction of converting and
//! blending the BGRA pixels again on every frame.
//!
//! Colours are BT.601 limited range, the canvas's colorimetry
//! ([`COLORIMETRY`](super::COLORIMETRY)).

/// One rectangle of a page frame, ready to blend onto an I420 frame.
#[derive(Debug, Clone, PartialEq)]
pub struct YuvRect {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    /// Premultiplied luma, `w × h`.
    luma: Vec<u8>,
    /// 255 − alpha, `w × h`.
    luma_keep: Vec<u8>,
    /// Premultiplied Cb, Cr and 255 − mean alpha, per 2×2 block: `(w / 2) × (h / 2)` each.
    cb: Vec<u8>,
    cr: Vec<u8>,
    chroma_keep: Vec<u8>,
}

fn div255(v: i32) -> i32 {
    (v + 127) / 255
}

impl YuvRect {
    /// Converts `w × h` premultiplied BGRA pixels drawn at (`x`, `y`). `x`, `y`, `w` and `h`
    /// are expected even (a stray odd row or column gets no chroma of its own).
    pub fn from_bgra(pixels: &[u8], x: usize, y: usize, w: usize, h: usize) -> Option<YuvRect> {
        if pixels.len() != w * h * 4 || w == 0 || h == 0 {
            return None;
        }
        let mut luma = vec![0u8; w * h];
        let mut luma_keep = vec![0u8; w * h];
        let (cw, ch) = (w / 2, h / 2);
        let mut cb = vec![0u8; cw * ch];
        let mut cr = vec![0u8; cw * ch];
        let mut chroma_keep = vec![0u8; cw * ch];
        let px = |i: usize| {
            let p = &pixels[i * 4..i * 4 + 4];
            // BGRA, premultiplied: every colour is at most its alpha.
            let a = p[3] as i32;
            (
                (p[2] as i32).min(a),
                (p[1] as i32).min(a),
                (p[0] as i32).min(a),
                a,
            )
        };
        for i in 0..w * h {
            let (r, g, b, a) = px(i);
            let yv = ((66 * r + 129 * g + 25 * b + 128) >> 8) + div255(16 * a);
            luma[i] = yv.clamp(0, 255) as u8;
            luma_keep[i] = (255 - a) as u8;
        }
        for by in 0..ch {
            for bx in 0..cw {
                let (mut r, mut g, mut b, mut a) = (0, 0, 0, 0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (pr, pg, pb, pa) = px((by * 2 + dy) * w + bx * 2 + dx);
                    r += pr;
                    g += pg;
                    b += pb;
                    a += pa;
                }
                let (r, g, b, a) = ((r + 2) / 4, (g + 2) / 4, (b + 2) / 4, (a + 2) / 4);
                let i = by * cw + bx;
                let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + div255(128 * a);
                let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + div255(128 * a);
                cb[i] = u.clamp(0, 255) as u8;
                cr[i] = v.clamp(0, 255) as u8;
                chroma_keep[i] = (255 - a) as u8;
            }
        }
        Some(YuvRect {
            x,
            y,
            w,
            h,
            luma,
            luma_keep,
            cb,
            cr,
            chroma_keep,
        })
    }

    /// Whether nothing in it is drawn (all transparent).
    pub fn is_clear(&self) -> bool {
        self.luma_keep.iter().all(|k| *k == 255)
    }

    /// Blends it onto an I420 frame of `width × height` given as its three planes and their
    /// strides. Parts outside the frame are left out.
    pub fn blend(&self, planes: [&mut [u8]; 3], strides: [usize; 3], width: usize, height: usize) {
        let [py, pu, pv] = planes;
        let w = self.w.min(width.saturating_sub(self.x));
        let h = self.h.min(height.saturating_sub(self.y));
        for row in 0..h {
            let dst = &mut py[(self.y + row) * strides[0] + self.x..][..w];
            let src = &self.luma[row * self.w..][..w];
            let keep = &self.luma_keep[row * self.w..][..w];
            for ((d, s), k) in dst.iter_mut().zip(src).zip(keep) {
                *d = blend_one(*d, *s, *k);
            }
        }
        let (cx, cy) = (self.x / 2, self.y / 2);
        let cw = (self.w / 2).min((width / 2).saturating_sub(cx));
        let ch = (self.h / 2).min((height / 2).saturating_sub(cy));
        let src_stride = self.w / 2;
        for row in 0..ch {
            let keep = &self.chroma_keep[row * src_stride..][..cw];
            for (plane, stride, src) in [
                (&mut *pu, strides[1], &self.cb),
                (&mut *pv, strides[2], &self.cr),
            ] {
                let dst = &mut plane[(cy + row) * stride + cx..][..cw];
                let src = &src[row * src_stride..][..cw];
                for ((d, s), k) in dst.iter_mut().zip(src).zip(keep) {
                    *d = blend_one(*d, *s, *k);
                }
            }
        }
    }
}

#[inline]
fn blend_one(dst: u8, drawn: u8, keep: u8) -> u8 {
    match keep {
        255 => dst,
        0 => drawn,
        k => (drawn as u32 + (dst as u32 * k as u32 + 127) / 255).min(255) as u8,
    }
}

/// Blends `rects` onto the I420 `frame`.
pub fn blend_i420(frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, rects: &[YuvRect]) {
    use gst_video::prelude::*;
    if frame.format() != gst_video::VideoFormat::I420 {
        return;
    }
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let strides = frame.plane_stride();
    let strides = [
        strides[0] as usize,
        strides[1] as usize,
        strides[2] as usize,
    ];
    let [y, u, v, _] = frame.planes_data_mut();
    for r in rects {
        r.blend([&mut *y, &mut *u, &mut *v], strides, width, height);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgra(b: u8, g: u8, r: u8, a: u8, n: usize) -> Vec<u8> {
        [b, g, r, a].repeat(n)
    }

    #[test]
    fn opaque_transparent_and_half_drawn() {
        let (w, h) = (8usize, 4usize);
        let mut y = vec![100u8; w * h];
        let mut u = vec![90u8; w * h / 4];
        let mut v = vec![160u8; w * h / 4];
        // Opaque white at (2, 0) 2×2: limited-range white is Y 235, Cb/Cr 128.
        let white = YuvRect::from_bgra(&bgra(255, 255, 255, 255, 4), 2, 0, 2, 2).unwrap();
        // Fully transparent at (4, 0): nothing changes.
        let clear = YuvRect::from_bgra(&bgra(0, 0, 0, 0, 4), 4, 0, 2, 2).unwrap();
        assert!(clear.is_clear() && !white.is_clear());
        // Half-transparent black at (0, 2): Y halfway to 16.
        let shade = YuvRect::from_bgra(&bgra(0, 0, 0, 128, 4), 0, 2, 2, 2).unwrap();
        for r in [&white, &clear, &shade] {
            r.blend([&mut y, &mut u, &mut v], [w, w / 2, w / 2], w, h);
        }
        assert_eq!((y[2], y[3], y[w + 3]), (235, 235, 235));
        assert_eq!((u[1], v[1]), (128, 128));
        assert_eq!((y[4], u[2], v[2]), (100, 90, 160));
        assert!((57..=59).contains(&y[2 * w]), "{}", y[2 * w]);
        assert_eq!(y[0], 100);
        // Pure red: Y 81, Cb 90, Cr 240 (BT.601 limited).
        let red = YuvRect::from_bgra(&bgra(0, 0, 255, 255, 4), 6, 2, 2, 2).unwrap();
        red.blend([&mut y, &mut u, &mut v], [w, w / 2, w / 2], w, h);
        assert!((80..=82).contains(&y[2 * w + 6]), "{}", y[2 * w + 6]);
        assert!((89..=91).contains(&u[w / 2 + 3]), "{}", u[w / 2 + 3]);
        assert!((239..=241).contains(&v[w / 2 + 3]), "{}", v[w / 2 + 3]);
        // Off the edge: clipped, not a panic.
        let edge = YuvRect::from_bgra(&bgra(0, 0, 0, 255, 16), 6, 2, 4, 4).unwrap();
        edge.blend([&mut y, &mut u, &mut v], [w, w / 2, w / 2], w, h);
        assert_eq!(y[3 * w + 7], 16);
        assert!(YuvRect::from_bgra(&[0u8; 5], 0, 0, 2, 2).is_none());
    }
}
