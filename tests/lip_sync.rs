//! Lip sync of WebRTC feeds: a publisher whose picture flashes and whose sound beeps on the
//! same timestamps of its own clock, recorded through a real Janus; flash and beep must meet
//! in the MP4. Each test runs in its own network namespace.

mod support;
use std::time::Duration;
use support::janus::*;
use support::*;

const RED: u32 = 0xd02020;

/// Records `secs` of a room with the publisher `publish` makes (with `lossy`, 3 % of the
/// packets reaching Janus and 1 % of those reaching the recorder dropped); returns the MP4 and
/// the directory holding it.
fn record_room(
    tag: &str,
    secs: u64,
    lossy: bool,
    publish: impl FnOnce(&str) -> std::pin::Pin<Box<dyn std::future::Future<Output = Publisher>>>,
) -> (std::path::PathBuf, TempDir) {
    gst::init().unwrap();
    let dir = TempDir::new(tag);
    let (janus, rt, _admin) = janus_room(dir.path(), 1);
    let publisher = rt.block_on(publish(&janus.url()));
    rt.block_on(publisher.wait_connected());
    if lossy {
        add_loss(&janus, 3, 1);
    }
    let duration = secs.to_string();
    let (child, _) = recorder(&janus, 1, dir.path(), &["--duration", &duration]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "recorder failed");
    if lossy {
        clear_loss();
    }
    drop(publisher);
    let mp4 = std::fs::read_dir(dir.path().join("rec"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mp4"))
        .expect("recording");
    (mp4, dir)
}

/// Records `secs` of a room with one marker publisher (its packets jittered by up to
/// `jitter_ms`; with `lossy`, 3 % of the packets reaching Janus and 1 % of those reaching the
/// recorder dropped); returns the (flash time, offset) pairs found in the recording.
fn record_markers(tag: &str, secs: u64, jitter_ms: u32, lossy: bool) -> Vec<(f64, f64)> {
    let (mp4, _dir) = record_room(tag, secs, lossy, |url| {
        let url = url.to_string();
        Box::pin(async move { Publisher::publish_markers(&url, 1, "Ann", RED, jitter_ms).await })
    });
    // Ann fills the canvas alone: a flash whitens most of the frame.
    let flashes = flash_onsets(&mp4, 20_000);
    let beeps = beep_onsets(&mp4, 2000.0);
    eprintln!("{tag}: flashes {flashes:?}\n{tag}: beeps {beeps:?}");
    let want = secs as usize - 3;
    eprintln!(
        "{tag}: {} flashes, {} beeps in {secs} s",
        flashes.len(),
        beeps.len()
    );
    if !lossy {
        assert!(flashes.len() >= want, "{tag}: {} flashes", flashes.len());
        assert!(beeps.len() >= want, "{tag}: {} beeps", beeps.len());
    } else {
        // Under loss the recorder's own handshakes with Janus (ICE, DTLS: a lost flight waits
        // a second or more to be sent again) can take a few seconds; from its first beep on,
        // every second's beep is there but at most two.
        let first = beeps.first().copied().unwrap_or(f64::MAX);
        assert!(first < 8.0, "{tag}: the feed's sound began at {first} s");
        let possible = (secs as f64 - 0.15 - first).floor() as usize + 1;
        assert!(
            beeps.len() + 2 >= possible,
            "{tag}: {} beeps of {possible} after the first at {first} s",
            beeps.len()
        );
    }
    // The feed's first two seconds are left out: its decoder waits for a keyframe and the
    // first beep in the file may be cut at its start.
    let settled = flashes[0].max(beeps[0]) + 1.5;
    // A flash with no beep within half a second (the last one, cut by the end) pairs with
    // nothing.
    let offsets: Vec<(f64, f64)> = av_offsets(&flashes, &beeps)
        .into_iter()
        .filter(|(t, off)| *t > settled && off.abs() < 0.5)
        .collect();
    if !lossy {
        assert!(offsets.len() >= want - 2, "{tag}: {offsets:?}");
    }
    for (t, off) in &offsets {
        eprintln!("{tag}: flash {t:.3} s offset {:+.1} ms", off * 1000.0);
    }
    std::thread::sleep(Duration::from_millis(100));
    offsets
}

/// The offsets stay within what viewers cannot notice (ITU-R BT.1359: sound no more than
/// 45 ms ahead of or 125 ms behind the picture): the median within `median_ms`, every pair
/// within `worst_ms`, at the recording's frame resolution (33 ms at 30 fps).
fn check(tag: &str, offsets: &[(f64, f64)], median_ms: f64, worst_ms: f64) {
    let mut sorted: Vec<f64> = offsets.iter().map(|(_, o)| o * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let worst = sorted.iter().map(|o| o.abs()).fold(0.0, f64::max);
    eprintln!(
        "{tag}: {} pairs, median offset {median:+.1} ms, worst {worst:.1} ms",
        sorted.len()
    );
    assert!(
        median.abs() <= median_ms,
        "{tag}: median A/V offset {median:.1} ms: {sorted:?}"
    );
    assert!(
        worst <= worst_ms,
        "{tag}: an A/V offset of {worst:.1} ms: {sorted:?}"
    );
}

#[test]
fn a_webrtc_feed_keeps_the_senders_lip_sync() {
    if !in_network_namespace("a_webrtc_feed_keeps_the_senders_lip_sync") {
        return;
    }
    let offsets = record_markers("lipsync", 12, 0, false);
    // README: per-run medians −26.5 to +20.8 ms, worst pair 27 ms. The median's bound is
    // about 1.3 times the widest median seen (Janus anchors its sender reports afresh in every
    // run, which moves a run's median as a whole); the worst pair's is under twice its figure.
    check("lipsync", &offsets, 35.0, 45.0);
}

/// 40 ms of jitter on the publisher's packets, 3 % loss on the way to Janus and 1 % on the way
/// to the recorder: every flash that reaches the recording meets its beep within what viewers
/// accept (ITU-R BT.1359: sound no more than 90 ms ahead of the picture), the median within
/// 45 ms. Frames placed by arrival came out 150–185 ms apart here; placed by the jitter
/// buffers' timestamps the medians were −18 to +23 ms and the worst pair 73 ms over 7 runs (a
/// flash whose first frame was lost before Janus, where nothing repairs it, is found a frame or
/// two late).
#[test]
fn lip_sync_holds_under_loss_and_jitter() {
    if !in_network_namespace("lip_sync_holds_under_loss_and_jitter") {
        return;
    }
    // Long enough for ten pairs even when the recorder's handshakes under loss take until the
    // latest start `record_markers` accepts (the feed's first beep at 8 s; pairs count from
    // 1.5 s after it; at most two flashes lost): one run's feed began 4.4 s in and left 7
    // pairs of a 15 s recording.
    let offsets = record_markers("impaired", 22, 40, true);
    // README: 12–14 of 14 flashes reach the recording, medians −18.2 to +22.8 ms, worst 73 ms.
    assert!(offsets.len() >= 10, "impaired: {offsets:?}");
    check("impaired", &offsets, 45.0, 90.0);
}

/// Cuts `len` seconds of `mp4` from `from` into a file of its own (picture re-encoded
/// losslessly enough to find flashes, sound as PCM), both tracks cut at the same instant.
fn cut(mp4: &std::path::Path, from: f64, len: f64, out: &std::path::Path) {
    tool_output(
        std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-ss", &format!("{from}"), "-i"])
            .arg(mp4)
            .args(["-t", &format!("{len}")])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-qp", "10"])
            .args(["-c:a", "pcm_s16le"])
            .arg(out),
    );
}

/// The offsets of a 60 s window of the recording: their median, and how far apart the
/// smallest and the largest are (ms).
fn window_offsets(
    tag: &str,
    mp4: &std::path::Path,
    from: f64,
    dir: &std::path::Path,
) -> (f64, f64) {
    let part = dir.join(format!("{tag}-{from}.mov"));
    cut(mp4, from, 60.0, &part);
    let flashes = flash_onsets(&part, 20_000);
    let beeps = beep_onsets(&part, 2000.0);
    let mut sorted: Vec<f64> = av_offsets(&flashes, &beeps)
        .into_iter()
        .filter(|(t, off)| *t > 0.5 && *t < 59.5 && off.abs() < 0.5)
        .map(|(_, o)| o * 1000.0)
        .collect();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted.len() >= 50, "{tag} at {from} s: {sorted:?}");
    let median = sorted[sorted.len() / 2];
    // A beep already sounding when the window begins is found at its start, not at its
    // onset: the intervals begin with the first beep wholly inside.
    let whole: Vec<f64> = beeps.iter().copied().filter(|t| *t > 0.15).collect();
    let intervals: Vec<f64> = whole.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect();
    let (lo, hi) = intervals
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &i| (lo.min(i), hi.max(i)));
    eprintln!(
        "{tag} {from:.0}–{:.0} s: {} pairs, median {median:+.1} ms, range {:+.1}…{:+.1} ms; \
         {} beeps, spaced {lo:.1}–{hi:.1} ms",
        from + 60.0,
        sorted.len(),
        sorted[0],
        sorted[sorted.len() - 1],
        beeps.len()
    );
    // Sound dropped or repeated shows as a beep out of its second (the mixer dropping what
    // piled up past its alignment threshold: 40 ms at a time).
    assert!(
        lo > 985.0 && hi < 1015.0,
        "{tag} at {from} s: beeps spaced {intervals:?}"
    );
    (median, sorted[sorted.len() - 1] - sorted[0])
}

/// Records `secs` of a publisher whose microphone clock runs 0.1 % fast; returns the MP4 and
/// the directory holding it.
fn record_fast_microphone(tag: &str, secs: u64) -> (std::path::PathBuf, TempDir) {
    record_room(tag, secs, false, |url| {
        let url = url.to_string();
        Box::pin(
            async move { Publisher::publish_markers_fast_audio(&url, 1, "Ann", RED, 1000).await },
        )
    })
}

/// A publisher whose microphone clock runs 0.1 % fast: 48 samples a second more than its
/// timestamps account for. Left to the mixer, they piled up until it dropped 40 ms at once
/// (every 41 s, the offset sliding from −10 to −50 ms and back); resampled on arrival, no
/// sound is dropped or repeated and the offset holds. 80 s: one such drop would fall inside.
#[test]
fn a_fast_microphone_clock_loses_no_sound() {
    if !in_network_namespace("a_fast_microphone_clock_loses_no_sound") {
        return;
    }
    let (mp4, dir) = record_fast_microphone("fastmic", 80);
    let (median, spread) = window_offsets("fastmic", &mp4, 12.0, dir.path());
    // What the fast clock did before sound was resampled on arrival: the offset slid by 40 ms
    // and jumped back every 41 s, so a 60 s window spread over ~40 ms. Measured since: 2 ms.
    assert!(
        spread <= 10.0,
        "A/V offsets spread over {spread:.1} ms in 60 s"
    );
    // Where the offset sits as a whole moves between runs with where Janus anchors its
    // sender reports (the clean test's medians: −9.8…+20.8 ms; this test: −1.2, −3.2 and
    // once −25.2 ms), which says nothing of the sound card's clock: the clean test's bound.
    assert!(median.abs() <= 35.0, "median A/V offset {median:.1} ms");
}

/// A publisher whose microphone clock runs 0.1 % fast for ten minutes (its audio RTP
/// timestamps end 600 ms ahead of its video's): the offset in minute 10 is within 20 ms of
/// minute 1's, and the beeps keep their one-second spacing (nothing audible lost or
/// repeated). Eleven minutes: run with `--ignored`; the figures are in the README.
#[test]
#[ignore]
fn a_fast_microphone_clock_keeps_lip_sync_for_ten_minutes() {
    if !in_network_namespace("a_fast_microphone_clock_keeps_lip_sync_for_ten_minutes") {
        return;
    }
    let secs: u64 = std::env::var("ROOMCAST_DRIFT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(620);
    let (mp4, dir) = record_fast_microphone("drift", secs);
    let (first, _) = window_offsets("drift", &mp4, 60.0, dir.path());
    let (last, spread) = window_offsets("drift", &mp4, secs as f64 - 70.0, dir.path());
    assert!(
        spread <= 10.0,
        "last minute's offsets spread over {spread:.1} ms"
    );
    eprintln!(
        "drift: minute 1 median {first:+.1} ms, last minute {last:+.1} ms, moved {:+.1} ms",
        last - first
    );
    assert!(
        (last - first).abs() <= 20.0,
        "A/V offset moved {:.1} ms over the run",
        last - first
    );
}
