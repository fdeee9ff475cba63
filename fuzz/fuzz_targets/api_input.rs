//! Every request parser and the job records read back from the queue, on arbitrary bytes:
//! they must answer with a coded error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::api::input;
use roomcast::codes::Code;

fuzz_target!(|data: &[u8]| {
    let _ = input::parse_room_body(data);
    let _ = input::parse_event_body(data);
    if let Ok(body) = input::json_object(data, Code::RecordParamsMissing) {
        let _ = input::requester(&body, Code::RecordParamsMissing);
        let _ = input::recording_layout(&body, false);
        let _ = input::recording_layout(&body, true);
        let _ = input::rtmp_urls(&body);
        if let Some(l) = body.get("layout") {
            let _ = input::layout(l);
        }
        let _ = input::seconds(body.get("max_duration_secs"), "x", Code::Generic);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = input::room_id(s);
    }
    // What workers read back from the store.
    let _ = serde_json::from_slice::<roomcast::queue::Job>(data);
    let _ = serde_json::from_slice::<roomcast::queue::Command>(data);
    let _ = serde_json::from_slice::<roomcast::queue::RoomConfig>(data);
});
