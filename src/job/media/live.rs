//! A running recording's media side ([`Job`]): room events folded into the room state and
//! applied to the composite's tiles and audio, layout changes, and RTMP destinations added and
//! removed while it records. The runner owns the loop around it.
//!
//! Owns no lifecycle (the runner's) and no signalling (the room's).

use crate::job::media::page::MAX_RSS;
use crate::job::media::page::{PageLayer, PageUpdate};
use crate::job::spec::state::RoomState;
use crate::job::spec::{EndReason, JobEvent};
use crate::layout::{parse_color, Layout, TileId};
use crate::model::page::{ChatLine, PageSpec};

/// Chat messages a page is given (the latest).
const PAGE_CHAT_LINES: usize = 50;
use crate::pipeline::rtmp::{
    Destination, DestinationState, DestinationStatus, RtmpUrl, RtmpUrlError, StatusListener,
    MAX_DESTINATIONS,
};
use crate::pipeline::{Composite, PipelineError};
use crate::room::{RoomEvent, TrackKind};
use crate::Error;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// A running recording's media side: its composite and RTMP destinations, the room as it
/// stands, and the layout in force.
pub(crate) struct Job {
    pub(crate) composite: Composite,
    pub(crate) destinations: Vec<Destination>,
    pub(crate) next_destination: u32,
    pub(crate) events: Option<mpsc::UnboundedSender<JobEvent>>,
    pub(crate) state: RoomState,
    pub(crate) layout: Layout,
    /// The custom view page, if one is shown (or tried).
    pub(crate) page: Option<PageLayer>,
    /// A page replacing a shown one: it loads unseen and takes over once it is shown.
    pub(crate) next_page: Option<PageLayer>,
    /// The latest chat messages, for the page.
    pub(crate) chat: std::collections::VecDeque<ChatLine>,
    /// When the recording started (ms since the epoch), for the page's clock.
    pub(crate) started_ms: u64,
    /// Where the room learns how large each camera is drawn.
    pub(crate) shown: crate::room::ShownSizes,
}

impl Job {
    pub(crate) fn add_destination(&mut self, url: RtmpUrl) -> Result<(), Error> {
        let live = self
            .destinations
            .iter()
            .filter(|d| d.status().state != DestinationState::Stopped)
            .count();
        if live >= MAX_DESTINATIONS {
            return Err(RtmpUrlError::TooMany(live + 1).into());
        }
        self.next_destination += 1;
        let id = self.next_destination;
        info!(destination = id, url = %url.redacted(), "adding RTMP destination");
        let pipeline = self.composite.pipeline().clone();
        let listener: Option<StatusListener> = self.events.clone().map(|tx| {
            Arc::new(move |s: &DestinationStatus| {
                let _ = tx.send(JobEvent::Streaming(s.clone()));
            }) as StatusListener
        });
        let d = tokio::task::block_in_place(|| Destination::start(&pipeline, id, url, listener))?;
        self.destinations.push(d);
        Ok(())
    }

    pub(crate) async fn remove_destination(
        &mut self,
        id: u32,
    ) -> Option<crate::model::DestinationStatus> {
        let i = self.destinations.iter().position(|d| d.id == id)?;
        let d = self.destinations.remove(i);
        info!(destination = id, "removing RTMP destination");
        let mut status = d.finish(self.composite.pipeline()).await;
        info!(
            destination = id,
            connections = status.connections,
            "RTMP destination removed"
        );
        status.state = crate::model::DestinationState::Stopped;
        Some(status)
    }

    /// Shows `page` over the tiles from now on (None: none). A shown page stays until its
    /// replacement is shown (or fails), so the recording does not drop to the room's layout
    /// in between.
    pub(crate) async fn set_page(&mut self, page: Option<PageSpec>) {
        self.next_page = None;
        let Some(spec) = page else {
            self.page = None;
            return;
        };
        let canvas = self.composite.canvas();
        info!(url = %spec.shown_url(), "custom view requested");
        let Some(overlay) = self.composite.page_overlay() else {
            warn!("this recording was started without a page layer: the custom view is not shown");
            return;
        };
        match PageLayer::start(spec, (canvas.width, canvas.height), overlay, MAX_RSS).await {
            Ok(layer) => {
                let status = layer.status().clone();
                if self.page.as_ref().is_some_and(|p| p.is_shown()) {
                    self.next_page = Some(layer);
                } else {
                    self.page = Some(layer);
                }
                self.send_page_state();
                self.report(JobEvent::Page(status));
            }
            Err(e) => warn!(error = %e, "no channel for the custom view: not shown"),
        }
    }

    /// The next change of the page or of its replacement (never, without either).
    pub(crate) async fn page_update(&mut self) -> PageUpdate {
        let next = async {
            match &mut self.next_page {
                Some(p) => p.next().await,
                None => std::future::pending().await,
            }
        };
        let current = async {
            match &mut self.page {
                Some(p) => p.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            mut update = next => {
                // The replacement is shown, or failed: either way it is the page from now on
                // (a failed one falls back to the room's layout and is retried).
                self.page = self.next_page.take();
                update.relayout = true;
                update
            }
            update = current => update,
        }
    }

    pub(crate) fn on_page(&mut self, update: PageUpdate) -> Result<(), PipelineError> {
        if let Some(status) = update.status {
            self.report(JobEvent::Page(status));
        }
        if update.relayout {
            self.relayout()?;
        }
        Ok(())
    }

    fn report(&self, event: JobEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    /// A chat message: the page learns it (with the latest before it).
    pub(crate) fn on_chat(&mut self, line: ChatLine) {
        debug!(from = %line.user_id, chars = line.text.chars().count(), "chat message");
        if self.chat.len() >= PAGE_CHAT_LINES {
            self.chat.pop_front();
        }
        self.chat.push_back(line);
        self.send_page_state();
    }

    /// Tells the page (and a page about to replace it) the room as it stands.
    fn send_page_state(&self) {
        if self.page.is_none() && self.next_page.is_none() {
            return;
        }
        let tiles = self.state.tiles();
        let layout = &self.layout.active_def(&tiles).name;
        for p in self.page.iter().chain(self.next_page.iter()) {
            p.send_room(&tiles, layout, self.started_ms, &self.chat);
        }
    }

    pub(crate) fn relayout(&mut self) -> Result<(), PipelineError> {
        let tiles = self.state.tiles();
        let layout = self
            .page
            .as_ref()
            .and_then(|p| p.layout())
            .unwrap_or(&self.layout);
        let def = layout.active_def(&tiles);
        let bg = def.background.as_deref().and_then(parse_color).unwrap_or(0);
        tokio::task::block_in_place(|| self.composite.set_background(bg))?;
        self.composite.set_label_style(def.label.clone());
        let slots = layout.place(self.composite.canvas(), &tiles);
        debug!(layout = %def.name, slots = slots.len(), "layout applied");
        tokio::task::block_in_place(|| self.composite.apply(&slots))?;
        self.shown.set(video_heights(&slots));
        Ok(())
    }

    /// Applies a batch of room events; the reason to end when the room is gone.
    pub(crate) fn on_room(&mut self, events: Vec<RoomEvent>) -> Result<Option<EndReason>, Error> {
        if events.iter().any(|e| matches!(e, RoomEvent::RoomDestroyed)) {
            info!("room destroyed");
            return Ok(Some(EndReason::RoomDestroyed));
        }
        if events
            .iter()
            .any(|e| matches!(e, RoomEvent::Disconnected { .. }))
        {
            warn!("room connection lost");
            return Ok(Some(EndReason::Disconnected));
        }
        self.on_events(events)?;
        Ok(None)
    }

    pub(crate) fn on_events(&mut self, events: Vec<RoomEvent>) -> Result<(), PipelineError> {
        for ev in events {
            self.on_event(ev)?;
        }
        self.send_page_state();
        self.relayout()
    }

    pub(crate) fn on_event(&mut self, event: RoomEvent) -> Result<(), PipelineError> {
        self.state.apply(&event);
        match event {
            RoomEvent::ParticipantJoined { id, display_name } => {
                info!(participant = %id, name = %display_name, "participant joined");
            }
            RoomEvent::TrackPublished { id, kind, source } => {
                info!(participant = %id, ?kind, "track published");
                tokio::task::block_in_place(|| match kind {
                    TrackKind::Audio => {
                        let element = source.build(&self.composite.next_source_context())?;
                        self.composite.add_audio(&id.0, element)?;
                        self.composite
                            .set_audio_muted(&id.0, !self.state.audible(&id));
                        Ok(())
                    }
                    TrackKind::Video => self.composite.add_video(&TileId::camera(&id.0), source),
                    TrackKind::Screen => self.composite.add_video(&TileId::screen(&id.0), source),
                })?;
            }
            RoomEvent::TrackUnpublished { id, kind } => {
                info!(participant = %id, ?kind, "track unpublished");
                tokio::task::block_in_place(|| match kind {
                    TrackKind::Audio => self.composite.remove_audio(&id.0),
                    TrackKind::Video => self.composite.remove_video(&TileId::camera(&id.0)),
                    TrackKind::Screen => self.composite.remove_video(&TileId::screen(&id.0)),
                })?;
            }
            RoomEvent::ParticipantLeft { id } => {
                info!(participant = %id, "participant left");
                tokio::task::block_in_place(|| {
                    self.composite.remove_audio(&id.0)?;
                    self.composite.remove_video(&TileId::camera(&id.0))?;
                    self.composite.remove_video(&TileId::screen(&id.0))
                })?;
            }
            RoomEvent::HardMute { id, .. } | RoomEvent::Paused { id, .. } => {
                self.composite
                    .set_audio_muted(&id.0, !self.state.audible(&id));
            }
            RoomEvent::Talking { .. }
            | RoomEvent::Spotlight { .. }
            | RoomEvent::Pinned { .. }
            | RoomEvent::RoomDestroyed
            | RoomEvent::Disconnected { .. } => {}
        }
        Ok(())
    }
}

/// How tall each participant's video (camera or screen share) is drawn in `slots`, the
/// tallest where there are two; placeholders do not count.
fn video_heights(slots: &[crate::layout::Slot]) -> crate::room::Heights {
    let mut heights = std::collections::HashMap::new();
    for slot in slots {
        if let crate::layout::SlotContent::Tile {
            id,
            show_video: true,
            ..
        } = &slot.content
        {
            let h = heights.entry(id.participant.clone()).or_insert(0);
            *h = (*h).max(slot.rect.h);
        }
    }
    heights
}
