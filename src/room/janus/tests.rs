//! The room's event logic without a Janus server.

use super::*;

#[tokio::test]
async fn a_publisher_first_seen_talking_is_reported_talking() {
    let (tx, mut rx) = mpsc::channel(8);
    let mut room = Room {
        cfg: JanusRoom::new("ws://127.0.0.1:1", 1),
        tx,
        feeds: HashMap::new(),
        board: FeedBoard::default(),
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
