//! A Janus VideoRoom as a room: joins hidden, subscribes to every publisher, reports what
//! happens as [`RoomEvent`]s.
//!
//! **Hidden.** roomcast never joins the room as a participant. It learns who publishes by
//! polling `listparticipants` ([`POLL`]) on a plain plugin handle, and receives media through
//! subscriber handles only. Subscribers are not participants in Janus: they appear in no
//! `listparticipants` answer, no publisher list, and no participant gets an event about them —
//! not when the recorder arrives and not when it goes. (A handle joined as a publisher that
//! never publishes is not announced when it joins, with `notify_joining = false`, but Janus does
//! send every participant `unpublished` and `leaving` for it when it goes, so that design was
//! dropped.) Polling costs one small request per [`POLL`] and adds up to that much to the time
//! a new publisher takes to appear.
//!
//! **One PeerConnection per publisher.** Each feed gets its own subscriber handle and its own
//! small pipeline ([`FeedPipeline`]): a feed that fails ICE or is torn down is re-subscribed
//! alone, and joins/leaves never renegotiate a shared connection that carries everyone else.
//! The cost is one ICE/DTLS setup per publisher; new publishers are subscribed concurrently.
//!
//! **PIN.** Checked when connecting, before anything is recorded: a subscriber `join` for a
//! feed that cannot exist is refused by Janus for the PIN first (433 or a missing `pin`), else
//! for the feed — nothing is joined either way.
//!
//! **Screen shares** are feeds whose stream `description` or display name contains
//! [`JanusRoom::screen_pattern`] (case-insensitive, default `screen`); their video is a
//! screen track, which the presentation layout shows large.
//!
//! **Talking** needs `audiolevel_event = true` on the room: Janus then reports a `talking` flag
//! per publisher in `listparticipants`, which drives the speaker layout.
//!
//! **Failures.** A lost WebSocket (Janus restarted) is reconnected with backoff and every feed is
//! subscribed again into the same tiles; after [`JanusRoom::max_reconnects`] failed attempts in a
//! row the room reports `Disconnected`. A feed whose connection fails is re-subscribed.
//!
//! **Health.** Once a second every feed's receive statistics and frame counts become the
//! room's [`FeedBoard`] (see [`health`]).
//!
//! **Simulcast.** A publisher may send its video in three sizes (Janus relays one of them to
//! each subscriber, `substream` 0 the smallest). Each feed asks for the layer that fits how
//! tall its tile is drawn now ([`layer_for`], from the job's [`ShownSizes`]): subscribed with
//! it, and switched by `configure` as the layout changes — a speaker's large tile gets the top
//! layer, a filmstrip tile the smallest, a grid of nine the middle one. Janus switches at the
//! layer's next keyframe (it asks the publisher for one) and reports the layer it sends, which
//! is logged and shown in the feed's health. A feed that is not simulcast ignores the request.

mod conn;
mod health;
mod room;
pub mod session;
mod settings;
mod subscribe;

pub use settings::{layer_for, JanusRoom, LAYER_HEIGHTS, POLL, TOP_LAYER};

use crate::model::feed::FeedBoard;
use crate::room::{RoomConnector, RoomHandle, ShownSizes};
use conn::Conn;
use settings::join_error;
use tokio::sync::mpsc;
use tracing::{info, info_span, Instrument};

impl RoomConnector for JanusRoom {
    async fn connect(&self) -> Result<RoomHandle, crate::Error> {
        let conn = Conn::open(self).await.map_err(join_error)?;
        info!(url = %self.url, room = self.room, publishers = conn.publishers.len(),
            "connected to the Janus room (subscriber only, hidden)");
        let (tx, rx) = mpsc::channel(256);
        let cfg = self.clone();
        let span = info_span!("janus", room = self.room);
        let board = FeedBoard::default();
        let (shown, heights) = ShownSizes::channel();
        let task = tokio::spawn(room::run(cfg, conn, tx, board.clone(), heights).instrument(span));
        Ok(RoomHandle {
            events: rx,
            feeds: board,
            shown,
            leave: Box::new(move || task.abort()),
        })
    }
}

#[cfg(test)]
mod tests;
