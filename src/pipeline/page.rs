//! A web page drawn over the composite (or under its tiles): WPE WebKit renders it in a process
//! of its own ([`PageView`] runs `roomcast page-render`, [`render_main`]), and what it draws
//! reaches the recording through a [`PageOverlay`]: blended onto the composited frames before
//! they are encoded ([`draw_over`], with [`super::blend`]), or onto the background under the
//! tiles ([`draw_below`]).
//!
//! The renderer is a separate process so a page that crashes, hangs or errors — or WebKit
//! itself failing — cannot stop or blank the recording: its frames stop arriving, and the
//! overlay keeps the last one until the owner clears it. The renderer sends only frames that
//! changed, cut to the parts the page draws in (cells with non-transparent pixels), so a static
//! overlay costs nothing to carry and a blend of what it covers per output frame.
//!
//! Renderer protocol. Out (stdout), per changed frame: the number of rectangles, then for each
//! `x y w h` (all little-endian u32) and `w·h·4` bytes of premultiplied BGRA (no rectangles: the
//! page draws nothing). In (stdin), one JSON string per line: a script to run in the page. The
//! renderer ends when its input closes.

use super::blend::{blend_i420, YuvRect};
use super::{bridge, make, PipelineError};
use crate::page::guard::{configured_origins, Allowed, Guard, Refusal};
use gst::prelude::*;
use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex};

/// Frames per second the page is rendered at.
pub const PAGE_FPS: u32 = 15;

/// What pages draw, ready to blend onto every composited frame.
///
/// Each page view draws under a generation of its own, and only the active one is shown: a page
/// replacing another renders unseen until it is ready, then takes over in one frame.
#[derive(Default)]
pub struct PageOverlay {
    inner: Mutex<OverlayState>,
}

#[derive(Default)]
struct OverlayState {
    active: Option<u64>,
    next: u64,
    /// Per generation: what it draws.
    pages: std::collections::HashMap<u64, Drawing>,
}

#[derive(Default)]
struct Drawing {
    /// The latest frame, ready to blend onto the I420 canvas (None: it draws nothing).
    yuv: Option<Arc<Vec<YuvRect>>>,
    /// Changed frames sent so far.
    frames: u64,
    /// Drawn under the tiles rather than over them.
    below: bool,
}

impl PageOverlay {
    /// What to draw now over the tiles (`below` false) or under them (None: nothing).
    pub fn drawing(&self, below: bool) -> Option<Arc<Vec<YuvRect>>> {
        let s = self.lock();
        s.active
            .and_then(|g| s.pages.get(&g))
            .filter(|d| d.below == below)
            .and_then(|d| d.yuv.clone())
    }

    /// A generation for a new page view (not shown until [`PageOverlay::activate`]).
    pub fn generation(&self) -> u64 {
        let mut s = self.lock();
        s.next += 1;
        let g = s.next;
        s.pages.insert(g, Drawing::default());
        g
    }

    /// Changed frames generation `g` has sent so far.
    pub fn frames(&self, g: u64) -> u64 {
        self.lock().pages.get(&g).map_or(0, |d| d.frames)
    }

    /// Draws generation `g` under the tiles (`below`) or over them.
    pub fn set_below(&self, g: u64, below: bool) {
        if let Some(d) = self.lock().pages.get_mut(&g) {
            d.below = below;
        }
    }

    /// Shows generation `g` from the next composited frame on.
    pub fn activate(&self, g: u64) {
        self.lock().active = Some(g);
    }

    /// Forgets generation `g`; nothing is drawn if it was the one shown.
    pub fn clear(&self, g: u64) {
        let mut s = self.lock();
        s.pages.remove(&g);
        if s.active == Some(g) {
            s.active = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OverlayState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, g: u64, yuv: Vec<YuvRect>) {
        let yuv: Vec<_> = yuv.into_iter().filter(|r| !r.is_clear()).collect();
        if let Some(page) = self.lock().pages.get_mut(&g) {
            page.yuv = (!yuv.is_empty()).then(|| Arc::new(yuv));
            page.frames += 1;
        }
    }
}

/// Side of the square cells a page's frame is cut into: only cells the page draws in are
/// blended, so a frame around the canvas costs its border, not the whole canvas.
const CELL: usize = 64;
/// Most rectangles one frame is sent as (beyond: merged into their bounding box).
const MAX_RECTS: usize = 64;

/// The parts of a BGRA frame that hold pixels with alpha, as (x, y, w, h) rectangles: cells of
/// [`CELL`] pixels with anything drawn, merged into runs along each row of cells and then down
/// columns of identical runs. Even-aligned for 4:2:0 chroma; empty when nothing is drawn.
fn drawn_rects(data: &[u8], width: usize, height: usize) -> Vec<(usize, usize, usize, usize)> {
    let stride = width * 4;
    let (cols, rows) = (width.div_ceil(CELL), height.div_ceil(CELL));
    let mut drawn = vec![false; cols * rows];
    for y in 0..height {
        let row = &data[y * stride..(y + 1) * stride];
        for (c, cell) in row.chunks(CELL * 4).enumerate() {
            let slot = &mut drawn[(y / CELL) * cols + c];
            if !*slot && cell.chunks_exact(4).any(|p| p[3] != 0) {
                *slot = true;
            }
        }
    }
    // Runs of drawn cells per row of cells: (first column, last column + 1).
    let mut rects: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut open: Vec<(usize, usize, usize)> = Vec::new(); // (c0, c1, index in rects)
    for r in 0..rows {
        let mut runs = Vec::new();
        let mut c = 0;
        while c < cols {
            if drawn[r * cols + c] {
                let start = c;
                while c < cols && drawn[r * cols + c] {
                    c += 1;
                }
                runs.push((start, c));
            } else {
                c += 1;
            }
        }
        let mut next_open = Vec::new();
        for (c0, c1) in runs {
            let y0 = r * CELL;
            let h = CELL.min(height - y0);
            match open.iter().find(|(a, b, _)| *a == c0 && *b == c1) {
                Some(&(_, _, i)) => {
                    rects[i].3 += h;
                    next_open.push((c0, c1, i));
                }
                None => {
                    let x0 = c0 * CELL;
                    rects.push((x0, y0, (c1 * CELL).min(width) - x0, h));
                    next_open.push((c0, c1, rects.len() - 1));
                }
            }
        }
        open = next_open;
    }
    if rects.len() > MAX_RECTS {
        let x0 = rects.iter().map(|r| r.0).min().unwrap_or(0);
        let y0 = rects.iter().map(|r| r.1).min().unwrap_or(0);
        let x1 = rects.iter().map(|r| r.0 + r.2).max().unwrap_or(0);
        let y1 = rects.iter().map(|r| r.1 + r.3).max().unwrap_or(0);
        rects = vec![(x0, y0, x1 - x0, y1 - y0)];
    }
    // Cells are even-sized; only the canvas edge can make a side odd.
    rects
        .into_iter()
        .map(|(x, y, w, h)| (x, y, w & !1, h & !1))
        .filter(|r| r.2 > 0 && r.3 > 0)
        .collect()
}

/// Blends the page shown over the tiles onto every frame leaving `pad`: the composited
/// canvas, of format `video` (I420).
pub(crate) fn draw_over(overlay: Arc<PageOverlay>, pad: &gst::Pad, video: gst_video::VideoInfo) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(rects) = overlay.drawing(false) else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            if let Ok(mut frame) =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &video)
            {
                blend_i420(&mut frame, &rects);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Makes the frames leaving `pad` (a background source of format `video`, the canvas) show the
/// page drawn under the tiles, while one is shown. The page is blended onto a background frame
/// once per frame the page sends; every frame in between carries that picture's memory again
/// (a shallow copy), so a still backdrop costs what the plain background costs.
pub(crate) fn draw_below(overlay: Arc<PageOverlay>, pad: &gst::Pad, video: gst_video::VideoInfo) {
    // The drawing last blended and the frame it gave.
    type Blended = (Arc<Vec<YuvRect>>, gst::Buffer);
    let cache: Mutex<Option<Blended>> = Mutex::new(None);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(rects) = overlay.drawing(true) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.as_ref().is_some_and(|(r, _)| Arc::ptr_eq(r, &rects)) {
            let mut drawn = buffer.copy_deep().unwrap_or_else(|_| buffer.copy());
            match gst_video::VideoFrameRef::from_buffer_ref_writable(drawn.make_mut(), &video) {
                Ok(mut frame) => blend_i420(&mut frame, &rects),
                Err(_) => return gst::PadProbeReturn::Ok,
            }
            *cache = Some((rects, drawn));
        }
        if let Some((_, drawn)) = cache.as_ref() {
            let mut out = drawn.copy();
            {
                let out = out.make_mut();
                out.set_pts(buffer.pts());
                out.set_dts(buffer.dts());
                out.set_duration(buffer.duration());
                out.set_offset(buffer.offset());
                out.set_offset_end(buffer.offset_end());
            }
            *buffer = out;
        }
        gst::PadProbeReturn::Ok
    });
}

/// What a page renderer reports besides frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageViewEvent {
    /// It ended or failed: why.
    Failed(String),
}

/// A page rendered by WPE WebKit in a process of its own, its frames going to a
/// [`PageOverlay`]. The process ends (and its WebKit processes with it) when this is dropped.
pub struct PageView {
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    /// Every request of the renderer goes through it (held for as long as the view).
    _guard: Guard,
}

impl PageView {
    /// Starts rendering `url` at `width`×`height`; frames go to `overlay` under `generation`,
    /// its end to `on_event` (called from a thread of the view's own).
    ///
    /// The renderer reaches the network only through a [`Guard`]: the page's own origin, the
    /// configured page origins and `reach` (the room channel's address). A navigation to any
    /// other origin (a redirect included) ends the view as failed; other requests are refused.
    pub fn start(
        url: &str,
        (width, height): (u32, u32),
        reach: &[String],
        (overlay, generation): (Arc<PageOverlay>, u64),
        on_event: impl Fn(PageViewEvent) + Send + Sync + 'static,
    ) -> Result<PageView, PipelineError> {
        let on_event = Arc::new(on_event);
        let mut origins = configured_origins();
        origins.extend_from_slice(reach);
        let refused_by = on_event.clone();
        let guard = Guard::start(Allowed::new(url, &origins), move |r: Refusal| {
            tracing::warn!(origin = %r.origin, document = r.document,
                "custom view request to an origin that is not allowed: refused");
            if r.document {
                refused_by(PageViewEvent::Failed(format!(
                    "the page navigated to {}, which is not an allowed origin",
                    r.origin
                )));
            }
        })
        .map_err(|e| PipelineError::setup(format!("page guard: {e}")))?;
        let exe = std::env::current_exe()
            .map_err(|e| PipelineError::setup(format!("page renderer: {e}")))?;
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(exe)
            // A group of its own, so its WebKit processes can be ended with it.
            .process_group(0)
            .args(["page-render", "--width", &width.to_string()])
            .args(["--height", &height.to_string(), "--url", url])
            .envs(guard.proxy_env())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| PipelineError::setup(format!("page renderer: {e}")))?;
        let input = child.stdin.take();
        let output = child.stdout.take();
        let errors = child.stderr.take();
        if let Some(errors) = errors {
            spawn("page-log", move || {
                for line in std::io::BufReader::new(errors)
                    .lines()
                    .map_while(Result::ok)
                {
                    tracing::debug!(line = %line, "page renderer");
                }
            })?;
        }
        if let Some(mut output) = output {
            spawn("page-frames", move || {
                let why = loop {
                    match read_frame(&mut output, width, height) {
                        Ok(frame) => overlay.set(generation, frame),
                        Err(e) => break e,
                    }
                };
                on_event(PageViewEvent::Failed(why));
            })?;
        }
        Ok(PageView {
            child,
            input,
            _guard: guard,
        })
    }

    /// Starts rendering `url` on a `canvas`-sized view under a new generation of `overlay`
    /// (not shown until activated), with nobody told of its end; the generation is returned
    /// with the view. For a page rendered once, as a preview or a bench renders it.
    pub fn start_unseen(
        url: &str,
        canvas: crate::layout::Canvas,
        reach: &[String],
        overlay: &Arc<PageOverlay>,
    ) -> Result<(PageView, u64), PipelineError> {
        let generation = overlay.generation();
        let view = PageView::start(
            url,
            (canvas.width, canvas.height),
            reach,
            (overlay.clone(), generation),
            |_| {},
        )?;
        Ok((view, generation))
    }

    /// Runs `script` in the page (no result comes back).
    pub fn run_javascript(&mut self, script: &str) {
        if let Some(input) = &mut self.input {
            let line = serde_json::Value::String(script.to_string()).to_string();
            if writeln!(input, "{line}")
                .and_then(|_| input.flush())
                .is_err()
            {
                self.input = None;
            }
        }
    }

    /// Process id of the renderer (its WebKit processes are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PageView {
    fn drop(&mut self) {
        // Closing its input asks the renderer to end; it gets a moment, then is killed.
        self.input = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // WebKit's web and network processes share the renderer's group; none outlives it.
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: kill only sends a signal; the group is the renderer's own.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
}

/// Reads one frame message: a count, then per rectangle `x y w h` and its pixels.
/// Reads one page frame: its rectangles, converted for the canvas.
fn read_frame(input: &mut impl Read, width: u32, height: u32) -> Result<Vec<YuvRect>, String> {
    let ended = |e: std::io::Error| format!("the page renderer ended ({e})");
    let mut word = [0u8; 4];
    input.read_exact(&mut word).map_err(ended)?;
    let n = u32::from_le_bytes(word) as usize;
    if n > MAX_RECTS {
        return Err(format!("the page renderer sent {n} rectangles"));
    }
    let mut rects = Vec::with_capacity(n);
    for _ in 0..n {
        let mut head = [0u8; 16];
        input.read_exact(&mut head).map_err(ended)?;
        let v = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (x, y, w, h) = (v(0), v(4), v(8), v(12));
        if x.saturating_add(w) > width || y.saturating_add(h) > height {
            return Err("the page renderer sent a rectangle out of bounds".into());
        }
        let mut pixels = vec![0u8; (w * h * 4) as usize];
        input.read_exact(&mut pixels).map_err(ended)?;
        let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
        rects.extend(YuvRect::from_bgra(&pixels, x, y, w, h));
    }
    Ok(rects)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), PipelineError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| PipelineError::setup(format!("{name} thread: {e}")))
}

/// The renderer process (`roomcast page-render`): renders `url` with `wpesrc` until its input
/// closes, writing every changed frame to stdout and running every script read from stdin.
pub fn render_main(url: &str, width: u32, height: u32) -> Result<(), PipelineError> {
    let pipeline = gst::Pipeline::with_name("page");
    let source = make("wpesrc", "page_source")?;
    source.set_property("location", url);
    source.set_property("draw-background", false);
    let caps = make("capsfilter", "page_caps")?;
    // System memory (not GL) is what a machine without a GPU can give; BGRA keeps alpha.
    caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "BGRA")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", gst::Fraction::new(PAGE_FPS as i32, 1))
            .build(),
    );
    let (w, h) = (width as usize, height as usize);
    let last = Mutex::new(Vec::<u8>::new());
    let sink = bridge::sink(
        Some("page_sink"),
        None,
        1,
        move |sample| {
            let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) else {
                return;
            };
            let data = map.as_slice();
            if data.len() < w * h * 4 {
                return;
            }
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_slice() == data {
                return;
            }
            last.clear();
            last.extend_from_slice(data);
            let rects = drawn_rects(data, w, h);
            let mut msg = (rects.len() as u32).to_le_bytes().to_vec();
            for (x, y, bw, bh) in rects {
                for v in [x, y, bw, bh] {
                    msg.extend_from_slice(&(v as u32).to_le_bytes());
                }
                for row in y..y + bh {
                    msg.extend_from_slice(&data[(row * w + x) * 4..(row * w + x + bw) * 4]);
                }
            }
            let mut out = std::io::stdout().lock();
            if out.write_all(&msg).and_then(|_| out.flush()).is_err() {
                // The recording is gone: nobody to draw for.
                std::process::exit(0);
            }
        },
        || std::process::exit(0),
    );
    pipeline
        .add_many([&source, &caps, sink.upcast_ref()])
        .map_err(PipelineError::setup)?;
    source.link(&caps).map_err(PipelineError::setup)?;
    caps.link(&sink).map_err(PipelineError::setup)?;
    let main_loop = gst::glib::MainLoop::new(None, false);
    let bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::setup("no bus"))?;
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let _watch = {
        let (main_loop, failed) = (main_loop.clone(), failed.clone());
        bus.add_watch(move |_, msg| {
            if let gst::MessageView::Error(e) = msg.view() {
                *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "{} ({})",
                    e.error(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default()
                ));
                main_loop.quit();
            }
            gst::glib::ControlFlow::Continue
        })
        .map_err(PipelineError::setup)?
    };
    // Scripts from stdin; its end (the recording let go of the page) ends the renderer.
    {
        let (main_loop, source) = (main_loop.clone(), source.clone());
        spawn("page-scripts", move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if let Ok(serde_json::Value::String(script)) = serde_json::from_str(&line) {
                    source.emit_by_name::<()>("run-javascript", &[&script]);
                }
            }
            main_loop.quit();
        })?;
    }
    pipeline
        .set_state(gst::State::Playing)
        .map_err(PipelineError::setup)?;
    main_loop.run();
    let _ = pipeline.set_state(gst::State::Null);
    let failed = failed.lock().unwrap_or_else(|e| e.into_inner()).take();
    match failed {
        Some(message) => Err(PipelineError::Runtime {
            element: "wpesrc".into(),
            message,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_covers_only_what_the_page_draws() {
        gst::init().unwrap();
        let (w, h) = (640usize, 400usize);
        let mut data = vec![0u8; w * h * 4];
        assert!(drawn_rects(&data, w, h).is_empty());
        let mut paint = |x0: usize, y0: usize, x1: usize, y1: usize| {
            for y in y0..y1 {
                for x in x0..x1 {
                    data[(y * w + x) * 4 + 3] = 255;
                }
            }
        };
        // A frame 10 px wide around the canvas and a dot in the middle.
        paint(0, 0, w, 10);
        paint(0, h - 10, w, h);
        paint(0, 0, 10, h);
        paint(w - 10, 0, w, h);
        paint(300, 200, 302, 202);
        let rects = drawn_rects(&data, w, h);
        let area: usize = rects.iter().map(|r| r.2 * r.3).sum();
        assert!(area < w * h * 3 / 4, "{rects:?}");
        // Every drawn pixel is inside a rectangle.
        for (x, y) in [
            (0, 0),
            (639, 399),
            (5, 200),
            (635, 200),
            (301, 201),
            (320, 395),
        ] {
            assert!(
                rects
                    .iter()
                    .any(|r| x >= r.0 && x < r.0 + r.2 && y >= r.1 && y < r.1 + r.3),
                "({x}, {y}) not in {rects:?}"
            );
        }
        // Nothing in the empty middle, away from the dot.
        assert!(!rects
            .iter()
            .any(|r| 150 >= r.0 && 150 < r.0 + r.2 && 150 >= r.1 && 150 < r.1 + r.3));
    }
}
