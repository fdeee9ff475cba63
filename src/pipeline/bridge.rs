//! Buffers handed from one pipeline to another: an appsink whose samples go to a callback and an
//! appsrc that never blocks whoever pushes into it.
//!
//! Used where one pipeline must not be able to stall or error another: the RTMP destinations
//! (the recording's encoded media into each destination's pipeline) and the WebRTC feeds (each
//! feed's decoded frames into the recording). Owns only the two ends; what is pushed, and with
//! which timestamps, is the caller's.

/// The receiving end in the pipeline that gives (named `name`, or automatically): every sample goes to `on_sample` on the
/// streaming thread, and end-of-stream to `on_eos`.
///
/// `caps` restricts what it accepts (none: anything); at most `max_buffers` samples wait for
/// the callback (0: no limit), the oldest dropped beyond that. It never syncs to the clock.
pub(crate) fn sink(
    name: Option<&str>,
    caps: Option<&gst::Caps>,
    max_buffers: u32,
    on_sample: impl Fn(gst::Sample) + Send + Sync + 'static,
    on_eos: impl Fn() + Send + Sync + 'static,
) -> gst_app::AppSink {
    let mut builder = gst_app::AppSink::builder()
        .sync(false)
        .async_(false)
        .max_buffers(max_buffers)
        .drop(max_buffers > 0);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    if let Some(caps) = caps {
        builder = builder.caps(caps);
    }
    builder
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    if let Ok(sample) = s.pull_sample() {
                        on_sample(sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| on_eos())
                .build(),
        )
        .build()
}

/// The sending end in the pipeline that takes: live, in time format, holding at most
/// `max_bytes` and dropping its oldest buffers beyond that instead of blocking the pusher.
pub(crate) fn source(name: &str, max_bytes: u64) -> gst_app::AppSrc {
    gst_app::AppSrc::builder()
        .name(name)
        .is_live(true)
        .format(gst::Format::Time)
        .block(false)
        .max_bytes(max_bytes)
        .leaky_type(gst_app::AppLeakyType::Downstream)
        .build()
}

/// Gives `src` the caps of what comes next, when they differ from what it has. Callers that
/// drop some buffers still call it for every sample: a muxer behind the source may wait for
/// every stream's caps before it writes anything.
pub(crate) fn follow_caps(src: &gst_app::AppSrc, caps: Option<&gst::CapsRef>) {
    if let Some(caps) = caps {
        if src.caps().as_deref() != Some(caps) {
            src.set_caps(Some(&caps.to_owned()));
        }
    }
}

/// Pushes `buffer` into `src` with `caps` ([`follow_caps`] first).
pub(crate) fn push(
    src: &gst_app::AppSrc,
    caps: Option<&gst::CapsRef>,
    buffer: gst::Buffer,
) -> Result<gst::FlowSuccess, gst::FlowError> {
    follow_caps(src, caps);
    src.push_buffer(buffer)
}

/// The running time of `pts` in `sample`'s segment (the pipeline clock's time since the
/// pipeline started when the buffer was produced; zero for a time before the segment);
/// `pts` itself when the sample has no time segment.
pub(crate) fn running_time(sample: &gst::Sample, pts: gst::ClockTime) -> gst::ClockTime {
    sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time_full(pts))
        .map_or(pts, |t| t.positive().unwrap_or(gst::ClockTime::ZERO))
}
