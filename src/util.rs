//! Small helpers every layer may use: retry timing, atomic file writes, safe path components.
//! Nothing here knows about jobs, rooms, media or delivery.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Exponential backoff: `start` doubled per earlier failure (`attempts`), capped at `max`,
/// plus up to 20% jitter so things that failed together do not retry together.
pub fn backoff(attempts: u32, start: Duration, max: Duration) -> Duration {
    let base = start.saturating_mul(1u32 << attempts.min(20)).min(max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base + base.mul_f64(0.2 * (nanos % 1000) as f64 / 1000.0)
}

/// Writes `data` to `path` atomically (temp file, fsync, rename, fsync folder).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Makes `s` safe as one path component (or file name): ASCII letters, digits, `-`, `_`,
/// `.`; anything else becomes `_`. A leading dot is replaced so nothing hides or climbs.
pub fn path_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    out
}

/// `p` as an absolute `file://` URL.
pub fn file_url(p: &Path) -> String {
    let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    format!("file://{}", abs.display())
}

/// The last component of `p` as text (empty when there is none).
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// A value that must never reach logs: tokens, signing secrets, URLs with passwords.
/// `Debug` shows `<redacted>`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the struct we pass; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Width and height from a PNG's first 24 bytes, if they are a PNG header.
pub fn png_header_size(head: &[u8]) -> Option<(u32, u32)> {
    if head.len() < 24 || &head[..8] != b"\x89PNG\r\n\x1a\n" || &head[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
    let h = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
    Some((w, h))
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

/// Gives the memory the allocator holds free back to the system. A big room's pipeline leaves
/// freed memory in the allocator's arenas; called when a pipeline is gone, so a worker's size
/// follows what it runs now.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only releases free memory of the process's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `bytes` random bytes from the kernel, as hex (tokens nobody else may guess).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)) {
        // No kernel randomness is a broken machine; a token from the clock would be guessable.
        panic!("cannot read /dev/urandom: {e}");
    }
    hex(&buf)
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// This process's peak resident memory (VmHWM), MiB; 0 when unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn doubles_caps_and_jitters_up() {
        let s = Duration::from_secs(1);
        let m = Duration::from_secs(30);
        for (attempts, base) in [(0, 1), (1, 2), (3, 8), (5, 30), (40, 30)] {
            let d = backoff(attempts, s, m);
            let base = Duration::from_secs(base);
            assert!(d >= base && d <= base.mul_f64(1.2), "{attempts}: {d:?}");
        }
    }

    #[test]
    fn path_components_cannot_escape() {
        assert_eq!(path_component("room 1/../../etc"), "room_1_.._.._etc");
        assert_eq!(path_component("../x"), "_._x");
        assert_eq!(path_component(".hidden"), "_hidden");
        assert_eq!(path_component("demo_1_2.mp4"), "demo_1_2.mp4");
    }
}
