//! Progress of the long commands (`transcode`, `finalize`, `deliver`, `bench`) on the command
//! line: on a terminal a bar with percent, speed and time left, on standard error; with
//! `--log-json` or without a terminal, a `progress` log line every [`LINE_EVERY`]. The final
//! JSON line on standard output is not touched.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a progress line is logged when there is no bar.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

const UNSET: u8 = 0;
const BAR: u8 = 1;
const LINES: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(UNSET);

/// Chooses bars or lines for this process: bars when standard error is a terminal and logs
/// are text (`lines_only` unset). Called once by `main`; without it, progress is logged as lines.
pub fn init(lines_only: bool) {
    use std::io::IsTerminal;
    let bar = !lines_only && std::io::stderr().is_terminal();
    MODE.store(if bar { BAR } else { LINES }, Ordering::Relaxed);
}

/// What a count is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds of media.
    Seconds,
    /// Bytes.
    Bytes,
    /// Files.
    Files,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Seconds => format!("{v:.1} s"),
            Unit::Bytes => format!("{:.1} MB", v / 1e6),
            Unit::Files => format!("{v:.0} files"),
        }
    }
}

/// One long piece of work, `total` of `unit` (0: not known).
pub struct Progress {
    what: &'static str,
    total: f64,
    unit: Unit,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
    last_line: Mutex<Instant>,
}

impl Progress {
    /// Starts showing `what`.
    pub fn start(what: &'static str, total: f64, unit: Unit) -> Progress {
        let bar = (MODE.load(Ordering::Relaxed) == BAR).then(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {percent:>3}% {msg} {elapsed_precise} elapsed, {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            let b = indicatif::ProgressBar::with_draw_target(
                Some(1000),
                indicatif::ProgressDrawTarget::stderr_with_hz(4),
            );
            b.set_style(style);
            b.set_prefix(what);
            b
        });
        Progress {
            what,
            total,
            unit,
            started: Instant::now(),
            bar,
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// The work done so far (in its unit).
    pub fn set(&self, done: f64) {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let speed = done / elapsed;
        let fraction = if self.total > 0.0 {
            (done / self.total).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let left = if speed > 0.0 && self.total > 0.0 {
            ((self.total - done).max(0.0) / speed).round()
        } else {
            f64::NAN
        };
        let speed_text = match self.unit {
            Unit::Seconds => format!("{speed:.2}x"),
            u => format!("{}/s", u.format(speed)),
        };
        if let Some(b) = &self.bar {
            b.set_position((fraction * 1000.0) as u64);
            b.set_message(format!(
                "{} of {}, {speed_text}",
                self.unit.format(done),
                self.unit.format(self.total)
            ));
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= LINE_EVERY {
            *last = Instant::now();
            tracing::info!(
                what = self.what,
                percent = (fraction * 1000.0).round() / 10.0,
                done = %self.unit.format(done),
                total = %self.unit.format(self.total),
                speed = %speed_text,
                left_s = left,
                "progress"
            );
        }
    }

    /// Ends the bar (lines need no end).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Runs `work` while a thread reads its progress through `done` every quarter second.
pub fn watch<T>(
    what: &'static str,
    total: f64,
    unit: Unit,
    done: impl Fn() -> f64 + Send + 'static,
    work: impl FnOnce() -> T,
) -> T {
    let p = std::sync::Arc::new(Progress::start(what, total, unit));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                p.set(done());
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let out = work();
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    p.finish();
    out
}
