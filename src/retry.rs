//! Retry timing shared by every reconnecting or re-sending part of roomcast.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
