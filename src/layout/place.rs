//! Placement: assign ordered tiles to regions, then cut each region into cells.

use super::{ordered, Arrange, Canvas, Fill, LayoutDef, Rect, RegionDef, Slot, SlotContent, Tile};

/// Aspect ratio used to size cells of rows, columns and grids.
const TILE_ASPECT: f64 = 16.0 / 9.0;

/// Rounds down to an even number (4:2:0 video needs even sizes and offsets).
fn even(v: f64) -> i32 {
    let i = v.max(0.0).floor() as i32;
    i & !1
}

fn region_rect(r: &RegionDef, c: Canvas) -> Rect {
    let (cw, ch) = (c.width as f64, c.height as f64);
    let x = even(r.x * cw);
    let y = even(r.y * ch);
    let x2 = even(((r.x + r.w) * cw).min(cw));
    let y2 = even(((r.y + r.h) * ch).min(ch));
    Rect {
        x,
        y,
        w: (x2 - x).max(2) as u32,
        h: (y2 - y).max(2) as u32,
    }
}

/// Chooses (cols, rows) for `n` cells in `w`×`h` that makes 16:9 content largest; ties go to
/// more columns.
pub(crate) fn grid_shape(n: usize, w: f64, h: f64) -> (usize, usize) {
    let mut best = (1, n.max(1));
    let mut best_area = -1.0;
    for cols in 1..=n.max(1) {
        let rows = n.div_ceil(cols).max(1);
        let (cw, ch) = (w / cols as f64, h / rows as f64);
        let fw = cw.min(ch * TILE_ASPECT);
        let area = fw * (fw / TILE_ASPECT);
        if area >= best_area - 1e-6 {
            best_area = area;
            best = (cols, rows);
        }
    }
    best
}

/// Cuts `area` into `n` cells.
fn cells(area: Rect, n: usize, arrange: Arrange) -> Vec<Rect> {
    if n == 0 {
        return Vec::new();
    }
    let (ax, ay, aw, ah) = (area.x as f64, area.y as f64, area.w as f64, area.h as f64);
    let mk = |x: f64, y: f64, w: f64, h: f64| {
        let (x0, y0) = (even(x), even(y));
        let (x1, y1) = (even(x + w), even(y + h));
        Rect {
            x: x0,
            y: y0,
            w: (x1 - x0).max(2) as u32,
            h: (y1 - y0).max(2) as u32,
        }
    };
    match arrange {
        Arrange::Grid => {
            let (cols, rows) = grid_shape(n, aw, ah);
            let (cw, ch) = (aw / cols as f64, ah / rows as f64);
            (0..n)
                .map(|i| {
                    let (row, col) = (i / cols, i % cols);
                    // Centre an incomplete last row.
                    let in_row = if row == rows - 1 {
                        n - row * cols
                    } else {
                        cols
                    };
                    let x0 = ax + (aw - in_row as f64 * cw) / 2.0;
                    mk(x0 + col as f64 * cw, ay + row as f64 * ch, cw, ch)
                })
                .collect()
        }
        Arrange::Row => {
            let cw = (aw / n as f64).min(ah * TILE_ASPECT);
            let ch = ah.min(cw / TILE_ASPECT);
            let x0 = ax + (aw - cw * n as f64) / 2.0;
            let y0 = ay + (ah - ch) / 2.0;
            (0..n).map(|i| mk(x0 + i as f64 * cw, y0, cw, ch)).collect()
        }
        Arrange::Column => {
            let ch = (ah / n as f64).min(aw / TILE_ASPECT);
            let cw = aw.min(ch * TILE_ASPECT);
            let x0 = ax + (aw - cw) / 2.0;
            let y0 = ay + (ah - ch * n as f64) / 2.0;
            (0..n).map(|i| mk(x0, y0 + i as f64 * ch, cw, ch)).collect()
        }
    }
}

/// Takes the tiles `fill` wants from `pool` (in pool order), at most `limit`.
fn take<'a>(pool: &mut Vec<&'a Tile>, fill: &Fill, limit: usize) -> Vec<&'a Tile> {
    let wanted = |t: &Tile| match fill {
        Fill::Screen => t.id.screen,
        Fill::Speaker => !t.id.screen,
        Fill::Others => true,
        Fill::Participant(id) => !t.id.screen && &t.id.participant == id,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < pool.len() {
        if out.len() < limit && wanted(pool[i]) {
            out.push(pool.remove(i));
        } else {
            i += 1;
        }
    }
    out
}

/// Allocation priority: named participants claim first, then screens, speakers, others.
fn priority(f: &Fill) -> u8 {
    match f {
        Fill::Participant(_) => 0,
        Fill::Screen => 1,
        Fill::Speaker => 2,
        Fill::Others => 3,
    }
}

pub(super) fn place(def: &LayoutDef, canvas: Canvas, tiles: &[Tile]) -> Vec<Slot> {
    let mut pool = ordered(tiles);
    let regions = if canvas.height > canvas.width && !def.portrait_regions.is_empty() {
        &def.portrait_regions
    } else {
        &def.regions
    };
    let mut order: Vec<usize> = (0..regions.len()).collect();
    order.sort_by_key(|&i| (priority(&regions[i].fill), i));

    let mut slots = Vec::new();
    for i in order {
        let region = &regions[i];
        let limit = region.tile_limit() as usize;
        // "others" may overflow: take everything left and show "+N" in the last cell.
        let want = if region.fill == Fill::Others {
            usize::MAX
        } else {
            limit
        };
        let mut got = take(&mut pool, &region.fill, want);
        if got.is_empty() {
            if let Some(fb) = &region.fallback {
                let want = if *fb == Fill::Others {
                    usize::MAX
                } else {
                    limit
                };
                got = take(&mut pool, fb, want);
            }
        }
        let overflow = if got.len() > limit {
            let extra = got.len() - (limit - 1);
            got.truncate(limit - 1);
            Some(extra as u32)
        } else {
            None
        };
        let n = got.len() + usize::from(overflow.is_some());
        let rects = cells(region_rect(region, canvas), n, region.arrange);
        let label = |t: &Tile| {
            def.label.show.then(|| {
                if t.id.screen {
                    format!("{} (screen)", t.display_name)
                } else {
                    t.display_name.clone()
                }
            })
        };
        for (t, rect) in got.iter().zip(rects.iter()) {
            slots.push(Slot {
                content: SlotContent::Tile {
                    id: t.id.clone(),
                    show_video: t.shows_video(),
                    name: t.display_name.clone(),
                },
                rect: *rect,
                z: region.z,
                fit: region.fit,
                label: label(t),
            });
        }
        if let (Some(extra), Some(rect)) = (overflow, rects.last()) {
            slots.push(Slot {
                content: SlotContent::Overflow(extra),
                rect: *rect,
                z: region.z,
                fit: region.fit,
                label: None,
            });
        }
    }
    slots.sort_by_key(|s| s.z);
    slots
}
