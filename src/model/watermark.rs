//! Watermarks named through the API: a PNG in the worker's assets folder (by file name), or
//! inline PNG data. Nothing else on the worker's disk is reachable, and the answers to a bad
//! value say only "not allowed" or "not found".

use std::io::Read;
use std::path::{Path, PathBuf};

/// Inline watermark data start with this.
pub const INLINE_PREFIX: &str = "data:image/png;base64,";
/// Largest inline watermark (decoded).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;
/// Largest watermark, width and height (the platform's `settings.watermark` limit).
pub const MAX_PX: u32 = 140;
/// Largest watermark file in the assets folder.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a watermark was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkError {
    /// A path, or anything but a plain file name or inline data.
    #[error("not allowed: a file name in the assets folder or data:image/png;base64,… data")]
    NotAllowed,
    /// No such file in the assets folder.
    #[error("not found")]
    NotFound,
    /// Not a PNG, too large, or larger than `max_px`.
    #[error("{0}")]
    Invalid(String),
}

fn check_png(head: &[u8], max_px: u32) -> Result<(), WatermarkError> {
    let (w, h) = crate::util::png_header_size(head)
        .ok_or_else(|| WatermarkError::Invalid("not a PNG image".into()))?;
    if w == 0 || h == 0 || w > max_px || h > max_px {
        return Err(WatermarkError::Invalid(format!(
            "{w}x{h}: at most {max_px}x{max_px} pixels"
        )));
    }
    Ok(())
}

fn decode_inline(value: &str) -> Result<Vec<u8>, WatermarkError> {
    use base64::Engine;
    let data = value
        .strip_prefix(INLINE_PREFIX)
        .ok_or(WatermarkError::NotAllowed)?;
    if data.len() > MAX_INLINE_BYTES / 3 * 4 + 4 {
        return Err(WatermarkError::Invalid(format!(
            "inline data over {MAX_INLINE_BYTES} bytes"
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| WatermarkError::Invalid("inline data are not base64".into()))
}

/// Checks a watermark given through the API. Returns what the job keeps: the file's path in
/// `assets`, or the inline data as given.
pub fn accept(assets: &Path, given: &str, max_px: u32) -> Result<String, WatermarkError> {
    if given.starts_with("data:") {
        let png = decode_inline(given)?;
        check_png(&png, max_px)?;
        return Ok(given.to_string());
    }
    let plain = !given.is_empty()
        && given.len() <= 128
        && !given.starts_with('.')
        && given
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !plain {
        return Err(WatermarkError::NotAllowed);
    }
    let path = assets.join(given);
    let meta = std::fs::metadata(&path).map_err(|_| WatermarkError::NotFound)?;
    if !meta.is_file() {
        return Err(WatermarkError::NotFound);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(WatermarkError::Invalid(format!(
            "file over {MAX_FILE_BYTES} bytes"
        )));
    }
    let mut head = [0u8; 24];
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|_| WatermarkError::Invalid("not a PNG image".into()))?;
    check_png(&head, max_px)?;
    Ok(path.to_string_lossy().to_string())
}

/// Where a job's watermark is on this worker: a path as it is, inline data written (once, by
/// content) into `dir`.
pub fn materialize(value: &Path, dir: &Path) -> Result<PathBuf, String> {
    let text = value.to_string_lossy();
    if !text.starts_with("data:") {
        return Ok(value.to_path_buf());
    }
    let png = decode_inline(&text).map_err(|e| format!("watermark: {e}"))?;
    let sum = crate::util::sha256_hex(&png);
    let path = dir.join(format!("watermark-{}.png", &sum[..16]));
    if !path.is_file() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        crate::util::write_atomic(&path, &png).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut d = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        d.extend(w.to_be_bytes());
        d.extend(h.to_be_bytes());
        d.extend([8, 6, 0, 0, 0]);
        d
    }

    #[test]
    fn only_asset_names_and_inline_data_pass() {
        let dir = std::env::temp_dir().join(format!("roomcast-wm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("logo.png"), png(100, 50)).unwrap();
        std::fs::write(dir.join("big.png"), png(500, 50)).unwrap();
        assert!(accept(&dir, "logo.png", 140)
            .unwrap()
            .ends_with("/logo.png"));
        assert_eq!(
            accept(&dir, "/etc/shadow", 140),
            Err(WatermarkError::NotAllowed)
        );
        assert_eq!(
            accept(&dir, "../logo.png", 140),
            Err(WatermarkError::NotAllowed)
        );
        assert_eq!(
            accept(&dir, "missing.png", 140),
            Err(WatermarkError::NotFound)
        );
        assert!(matches!(
            accept(&dir, "big.png", 140),
            Err(WatermarkError::Invalid(_))
        ));
        let inline = format!(
            "{INLINE_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(png(20, 20))
        );
        assert_eq!(accept(&dir, &inline, 140).unwrap(), inline);
        let huge = format!("{INLINE_PREFIX}{}", "A".repeat(200_000));
        assert!(matches!(
            accept(&dir, &huge, 140),
            Err(WatermarkError::Invalid(_))
        ));
        let path = materialize(Path::new(&inline), &dir).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), png(20, 20));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
