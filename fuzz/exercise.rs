// Everything roomcast reads from outside, on arbitrary bytes: requests, room events (parsed,
// translated and folded into the room state that drives the layout), layout files (TOML and
// JSON, then placed on a canvas) and the job records read back from the queue. Each must
// answer with a coded error or a result, never panic. Shared by the cargo-fuzz target and
// the seed-replay test (`tests/fuzz_inputs.rs`), which include this file.

use roomcast::api::input;
use roomcast::codes::Code;
use roomcast::job::spec::platform::{Action, Translator};
use roomcast::job::RoomState;
use roomcast::layout::{Canvas, Layout, LayoutDef, Tile};

/// Feeds `data` to every parser.
pub fn exercise(data: &[u8]) {
    let _ = input::parse_room_body(data);
    if let Ok(events) = input::parse_event_body(data) {
        let mut translator = Translator::new(
            Some(roomcast::room::synthetic::SyntheticRoom::steady(2)),
            Some(3),
            serde_json::json!("grid"),
        );
        let mut state = RoomState::new();
        for ev in &events {
            for action in translator.translate(ev) {
                if let Action::Events(evs) = action {
                    for e in &evs {
                        state.apply(e);
                    }
                }
            }
        }
        let tiles = state.tiles();
        if let Ok(layout) = Layout::resolve("speaker") {
            let _ = layout.place(Canvas { width: 1280, height: 720 }, &tiles);
        }
    }
    if let Ok(roomcast::page::channel::PageMessage::Regions { viewport, regions, .. }) =
        serde_json::from_slice(data)
    {
        if let Ok(Some(layout)) = roomcast::page::regions_layout(viewport, &regions) {
            let _ = layout.place(Canvas { width: 1280, height: 720 }, &[]);
        }
    }
    if let Ok(body) = input::json_object(data, Code::RecordParamsMissing) {
        let _ = input::requester(&body, Code::RecordParamsMissing);
        let _ = input::recording_view(&body, &[]);
        let _ = input::recording_view(&body, &["*".to_string()]);
        let _ = input::rtmp_urls(&body);
        if let Some(l) = body.get("layout") {
            let _ = input::layout(l);
        }
        let _ = input::seconds(body.get("max_duration_secs"), "x", Code::Generic);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = input::room_id(s);
        // Layout files: parsed, validated, then placed with as many tiles as the input is long.
        for def in [LayoutDef::from_toml(s), LayoutDef::from_json(s)].into_iter().flatten() {
            if let Ok(layout) = Layout::from_def(def) {
                let tiles: Vec<Tile> = (0..(data.len() % 60))
                    .map(|i| Tile::new(&format!("p{i}"), "P", i as u64))
                    .collect();
                for (w, h) in [(1280, 720), (720, 1280), (16, 16)] {
                    let _ = layout.place(Canvas { width: w, height: h }, &tiles);
                }
            }
        }
    }
    // What workers read back from the store.
    let _ = serde_json::from_slice::<roomcast::queue::Job>(data);
    let _ = serde_json::from_slice::<roomcast::queue::Command>(data);
    let _ = serde_json::from_slice::<roomcast::queue::RoomConfig>(data);
}
