//! How a job's files are named: the segment file `<room>_<conf>_<n>.mp4`, its number, and
//! reserving the next one in a folder.

use crate::error::Error;
use std::path::{Path, PathBuf};

/// `s` with every character that is not an ASCII letter, digit or `-` replaced by `_`, for use
/// in a file name.
pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `n` of a segment file name `<room>_<conf>_<n>.mp4`.
pub fn segment_number(file_name: &str) -> Option<u64> {
    file_name
        .trim_end_matches(".mp4")
        .trim_end_matches("_tracks")
        .trim_end_matches("_transcoded")
        .rsplit('_')
        .next()?
        .parse()
        .ok()
}

/// Reserves the next segment file `<room>_<conf>_<n>.mp4` in `dir`: n is above every
/// segment already there and at least `first`.
pub fn reserve_segment(dir: &Path, room: &str, conf: &str, first: u64) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let prefix = format!("{}_{}_", file_safe(room), file_safe(conf));
    let mut n = first.max(1);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(k) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".mp4"))
                .and_then(|k| k.parse::<u64>().ok())
            {
                n = n.max(k + 1);
            }
        }
    }
    loop {
        let path = dir.join(format!("{prefix}{n}.mp4"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_count_up() {
        let dir = std::env::temp_dir().join(format!("roomcast-seg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = reserve_segment(&dir, "room 1", "c/7", 1).unwrap();
        assert_eq!(a.file_name().unwrap(), "room_1_c_7_1.mp4");
        let b = reserve_segment(&dir, "room 1", "c/7", 1).unwrap();
        assert_eq!(b.file_name().unwrap(), "room_1_c_7_2.mp4");
        std::fs::write(dir.join("room_1_c_7_9.mp4"), b"").unwrap();
        let c = reserve_segment(&dir, "room 1", "c/7", 1).unwrap();
        assert_eq!(c.file_name().unwrap(), "room_1_c_7_10.mp4");
        let other = reserve_segment(&dir, "room 2", "c/7", 1).unwrap();
        assert_eq!(other.file_name().unwrap(), "room_2_c_7_1.mp4");
        let later = reserve_segment(&dir, "room 2", "c/7", 5).unwrap();
        assert_eq!(later.file_name().unwrap(), "room_2_c_7_5.mp4");
        std::fs::remove_dir_all(&dir).ok();
    }
}
