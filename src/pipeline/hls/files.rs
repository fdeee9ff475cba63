//! An HLS output's files on disk: what the writer announces ([`HlsFile`]), their names and
//! folder, the journal of cut segments, and the output of a run whose process died ended from
//! that journal ([`recover`]).

use super::playlist::{Entry, Playlist};
pub use crate::model::hls::HlsPart;
use std::path::{Path, PathBuf};
use tracing::info;

/// A file the writer finished.
#[derive(Debug, Clone)]
pub struct HlsFile {
    /// Where it is (a copy the receiver may move: the writer keeps its own playlist).
    pub path: PathBuf,
    /// Its name in storage, beside the playlist.
    pub name: String,
    /// What it is.
    pub part: HlsPart,
    /// Segments cut so far.
    pub segments: u32,
    /// Seconds of media in them.
    pub duration_s: f64,
    /// For a playlist: how long before it was written the first frame of its newest segment
    /// was composited (pipeline running time), in ms — the longest any frame of that segment
    /// waited to be listed.
    pub latency_ms: u64,
}

/// The list of an output's cut segments (`<duration> <name>` per line, each line synced as
/// the segment is written): what a later run needs to end an output whose process died.
pub(super) fn journal_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.segments"))
}

pub(super) fn journal_append(
    dir: &Path,
    stem: &str,
    seconds: f64,
    name: &str,
) -> Result<(), String> {
    use std::io::Write;
    let path = journal_path(dir, stem);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{seconds:.6} {name}")
        .and_then(|_| f.sync_data())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The folder under `out_dir` an output named `stem` is written to.
pub fn folder(out_dir: &Path, stem: &str) -> PathBuf {
    out_dir.join(format!("{stem}_hls"))
}

/// The folder an output of segment file `segment` (`<stem>.mp4`) is written to, and its stem.
pub fn folder_of(segment: &Path) -> Option<(PathBuf, String)> {
    let stem = segment.file_stem()?.to_string_lossy().to_string();
    Some((folder(segment.parent()?, &stem), stem))
}

/// The initialization segment's name of the output `stem`.
pub fn init_name(stem: &str) -> String {
    format!("{stem}_init.m4s")
}

/// The playlist's name of the output `stem`.
pub fn playlist_name(stem: &str) -> String {
    format!("{stem}.m3u8")
}

/// Ends the HLS output of a run whose process died: the files it wrote that are still in
/// `dir` (not yet handed over for delivery), then the VOD playlist of every segment its
/// journal lists. Nothing when the output ended normally (no journal).
pub fn recover(dir: &Path, stem: &str) -> Result<Vec<HlsFile>, String> {
    let journal = journal_path(dir, stem);
    let text = match std::fs::read_to_string(&journal) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", journal.display())),
    };
    // A line cut short by the crash is left out (its segment was not finished either).
    let mut playlist = Playlist::new(init_name(stem), 1.0, 1);
    for line in text.lines() {
        let Some((d, name)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(duration), false) = (d.parse::<f64>(), name.is_empty()) else {
            continue;
        };
        playlist.entries.push(Entry {
            sequence: playlist.entries.len() as u32 + 1,
            uri: name.to_string(),
            duration,
        });
    }
    let file = |path: PathBuf, name: String, part: HlsPart, n: usize, p: &Playlist| HlsFile {
        path,
        name,
        part,
        segments: n as u32,
        duration_s: p.entries[..n].iter().map(|e| e.duration).sum(),
        latency_ms: 0,
    };
    let mut out = Vec::new();
    let init = dir.join(&playlist.map);
    if init.is_file() {
        out.push(file(
            init,
            playlist.map.clone(),
            HlsPart::Init,
            0,
            &playlist,
        ));
    }
    for (i, e) in playlist.entries.iter().enumerate() {
        let path = dir.join(&e.uri);
        if path.is_file() {
            out.push(file(
                path,
                e.uri.clone(),
                HlsPart::Segment,
                i + 1,
                &playlist,
            ));
        }
    }
    // Copies of playlists made for delivery and never handed over are stale.
    if let Ok(rd) = std::fs::read_dir(dir) {
        let copies = format!("{}.v", playlist_name(stem));
        for f in rd.flatten() {
            if f.file_name().to_string_lossy().starts_with(&copies) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    if !playlist.entries.is_empty() {
        let name = playlist_name(stem);
        let text = playlist.vod();
        let write = |n: &str| {
            let p = dir.join(n);
            crate::util::write_atomic(&p, text.as_bytes())
                .map(|_| p)
                .map_err(|e| format!("{n}: {e}"))
        };
        write(&name)?;
        let copy = write(&format!("{name}.recovered"))?;
        let n = playlist.entries.len();
        out.push(file(copy, name, HlsPart::Ended, n, &playlist));
    }
    let _ = std::fs::remove_file(&journal);
    info!(dir = %dir.display(), segments = playlist.entries.len(),
        "ended the HLS output of an earlier run");
    Ok(out)
}
