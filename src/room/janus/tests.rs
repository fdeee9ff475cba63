//! The room's event logic without a Janus server.

use super::conn::*;
use super::room::*;
use super::settings::*;
use super::*;
use crate::model::feed::FeedBoard;
use crate::model::room::SimulcastChoice;
use crate::room::RoomEvent;
use std::collections::HashMap;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_publisher_first_seen_talking_is_reported_talking() {
    let (tx, mut rx) = mpsc::channel(8);
    let mut room = Room {
        cfg: JanusRoom::new("ws://127.0.0.1:1", 1),
        tx,
        feeds: HashMap::new(),
        board: FeedBoard::default(),
        heights: ShownSizes::channel().1,
    };
    for (id, talking) in [(7, true), (8, false)] {
        room.register(Publisher {
            id,
            display: format!("P{id}"),
            talking,
        })
        .await;
    }
    drop(room);
    let mut talking = Vec::new();
    while let Some(ev) = rx.recv().await {
        if let RoomEvent::Talking { id, talking: true } = ev {
            talking.push(id.0);
        }
    }
    assert_eq!(talking, ["7"]);
}

#[test]
fn a_tile_gets_the_smallest_simulcast_layer_at_least_as_tall() {
    use SimulcastChoice::{Fit, Top};
    // 1280x720 canvas: the speaker's tile (576), a grid of two (360) or nine (240), the
    // filmstrip (144); not drawn at all.
    let cases = [
        (Some(576), 2),
        (Some(361), 2),
        (Some(360), 1),
        (Some(240), 1),
        (Some(181), 1),
        (Some(180), 0),
        (Some(144), 0),
        (None, 0),
    ];
    for (height, layer) in cases {
        assert_eq!(layer_for(Fit, height), layer, "{height:?}");
        assert_eq!(layer_for(Top, height), TOP_LAYER, "{height:?}");
    }
}
