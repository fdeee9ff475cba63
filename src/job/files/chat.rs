//! A segment's chat transcript: while the segment records, every chat message of the room is
//! appended (and synced) to a journal beside it, `<room>_<conf>_<n>.chat.jsonl`; when the
//! segment ends the journal becomes the transcript `<room>_<conf>_<n>.chat.json`, which is
//! delivered like the segment and announced with the platform's `chatdata` webhook.
//!
//! The journal is the only copy until the transcript is written, so a process that dies
//! mid-segment loses no message: the next run finds the journal with the segment it recovers.
//! A line cut short by the crash is skipped.

use crate::model::page::ChatLine;
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use tracing::warn;

/// Suffix of a transcript file name.
pub const TRANSCRIPT_SUFFIX: &str = ".chat.json";

/// Whether `file_name` names a chat transcript.
pub fn is_transcript(file_name: &str) -> bool {
    file_name.ends_with(TRANSCRIPT_SUFFIX)
}

fn stem(segment: &Path) -> String {
    segment
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The journal of the segment at `segment`.
pub fn journal_path(segment: &Path) -> PathBuf {
    segment.with_file_name(format!("{}.chat.jsonl", stem(segment)))
}

/// The transcript of the segment at `segment`.
pub fn transcript_path(segment: &Path) -> PathBuf {
    segment.with_file_name(format!("{}{TRANSCRIPT_SUFFIX}", stem(segment)))
}

/// Appends one message to a segment's journal and syncs it.
pub fn append(journal: &Path, line: &ChatLine) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)?;
    f.write_all(&text)?;
    f.sync_data()
}

/// What a transcript says about where it belongs.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// Application id.
    pub app_id: String,
    /// Room id.
    pub room_id: String,
    /// Conference number.
    pub conf_num: String,
    /// Job id.
    pub job_id: String,
    /// The recording it goes with.
    pub recording: String,
    /// When the segment started, ms since the epoch.
    pub started_ms: u64,
    /// When it ended, ms since the epoch.
    pub ended_ms: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    user_id: &'a str,
    name: &'a str,
    text: &'a str,
    /// When it was sent, ms since the epoch.
    time: u64,
    /// Seconds into the segment's recording (negative: sent before it started).
    offset_s: f64,
}

#[derive(Serialize)]
struct Transcript<'a> {
    #[serde(flatten)]
    header: &'a Header,
    messages: Vec<Message<'a>>,
}

/// Turns the segment's journal into its transcript (written atomically, then the journal is
/// removed). Returns the transcript's path and message count when the segment has one: a
/// journal with messages, or a transcript an earlier run wrote but did not hand off.
pub fn seal(segment: &Path, header: &Header) -> std::io::Result<Option<(PathBuf, u32)>> {
    let journal = journal_path(segment);
    let transcript = transcript_path(segment);
    let lines = match std::fs::File::open(&journal) {
        Ok(f) => read_journal(std::io::BufReader::new(f), &journal),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Sealed by an earlier run that died before handing it off.
            return Ok(count_messages(&transcript).map(|n| (transcript, n)));
        }
        Err(e) => return Err(e),
    };
    if lines.is_empty() {
        std::fs::remove_file(&journal)?;
        return Ok(None);
    }
    let messages = lines
        .iter()
        .map(|l| Message {
            user_id: &l.user_id,
            name: &l.name,
            text: &l.text,
            time: l.time_ms,
            offset_s: (l.time_ms as f64 - header.started_ms as f64) / 1000.0,
        })
        .collect();
    let body = serde_json::to_vec_pretty(&Transcript { header, messages })
        .map_err(std::io::Error::other)?;
    crate::util::write_atomic(&transcript, &body)?;
    std::fs::remove_file(&journal)?;
    Ok(Some((transcript, lines.len() as u32)))
}

fn read_journal(r: impl BufRead, path: &Path) -> Vec<ChatLine> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in r.split(b'\n').map_while(Result::ok) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<ChatLine>(&line) {
            Ok(l) => out.push(l),
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        warn!(file = %path.display(), skipped, "chat journal lines cut short were skipped");
    }
    out
}

fn count_messages(transcript: &Path) -> Option<u32> {
    let text = std::fs::read(transcript).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Some(v["messages"].as_array()?.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, time_ms: u64) -> ChatLine {
        ChatLine {
            user_id: "u1".into(),
            name: "Ann".into(),
            text: text.into(),
            time_ms,
        }
    }

    #[test]
    fn a_journal_becomes_a_transcript_and_a_cut_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("roomcast-chat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let seg = dir.join("r_1_3.mp4");
        assert_eq!(journal_path(&seg), dir.join("r_1_3.chat.jsonl"));
        assert!(is_transcript("r_1_3.chat.json"));
        let header = Header {
            app_id: "app".into(),
            room_id: "r".into(),
            conf_num: "1".into(),
            job_id: "j".into(),
            recording: "r_1_3.mp4".into(),
            started_ms: 10_000,
            ended_ms: 20_000,
        };
        assert_eq!(seal(&seg, &header).unwrap(), None, "no chat, no transcript");
        append(&journal_path(&seg), &line("hello\n\"there\"", 12_500)).unwrap();
        append(&journal_path(&seg), &line("second", 13_000)).unwrap();
        // A process killed mid-write leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(&seg))
            .unwrap();
        f.write_all(br#"{"user_id":"u1","na"#).unwrap();
        let (path, n) = seal(&seg, &header).unwrap().unwrap();
        assert_eq!((path.clone(), n), (dir.join("r_1_3.chat.json"), 2));
        assert!(!journal_path(&seg).exists());
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["recording"], "r_1_3.mp4");
        assert_eq!(v["messages"][0]["text"], "hello\n\"there\"");
        assert_eq!(v["messages"][0]["offset_s"], 2.5);
        assert_eq!(v["messages"][1]["name"], "Ann");
        // Sealed but not handed off: found again.
        assert_eq!(seal(&seg, &header).unwrap(), Some((path, 2)));
        std::fs::remove_dir_all(&dir).ok();
    }
}
