//! What the job knows about the room: who is there, what they publish, who talks.

use crate::layout::{Tile, TileId};
use crate::room::{ParticipantId, RoomEvent, TrackKind};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
struct Participant {
    name: String,
    join_seq: u64,
    camera: bool,
    screen: bool,
    audio: bool,
    spotlighted: bool,
    pinned: bool,
    paused: bool,
    video_muted: bool,
    audio_muted: bool,
    /// Sequence number of when they last started talking, if talking now.
    talking_since: Option<u64>,
}

/// The room as the recording sees it.
#[derive(Debug, Clone, Default)]
pub struct RoomState {
    participants: BTreeMap<ParticipantId, Participant>,
    seq: u64,
}

impl RoomState {
    /// An empty room.
    pub fn new() -> Self {
        Self::default()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn entry(&mut self, id: &ParticipantId) -> &mut Participant {
        if !self.participants.contains_key(id) {
            let seq = self.next_seq();
            self.participants.insert(
                id.clone(),
                Participant {
                    name: id.0.clone(),
                    join_seq: seq,
                    ..Default::default()
                },
            );
        }
        self.participants.entry(id.clone()).or_default()
    }

    /// Folds one event in. Track sources are not kept here (the runner builds them).
    pub fn apply(&mut self, event: &RoomEvent) {
        match event {
            RoomEvent::ParticipantJoined { id, display_name } => {
                self.entry(id).name = display_name.clone();
            }
            RoomEvent::ParticipantLeft { id } => {
                self.participants.remove(id);
            }
            RoomEvent::TrackPublished { id, kind, .. } => self.set_track(id, *kind, true),
            RoomEvent::TrackUnpublished { id, kind } => self.set_track(id, *kind, false),
            RoomEvent::Talking { id, talking } => {
                let seq = self.next_seq();
                let p = self.entry(id);
                p.talking_since = match (talking, p.talking_since) {
                    (true, Some(s)) => Some(s),
                    (true, None) => Some(seq),
                    (false, _) => None,
                };
            }
            RoomEvent::Spotlight { ids } => {
                for (id, p) in self.participants.iter_mut() {
                    p.spotlighted = ids.contains(id);
                }
            }
            RoomEvent::Pinned { ids } => {
                for (id, p) in self.participants.iter_mut() {
                    p.pinned = ids.contains(id);
                }
            }
            RoomEvent::HardMute { id, kind, muted } => {
                if let Some(p) = self.participants.get_mut(id) {
                    match kind {
                        TrackKind::Audio => p.audio_muted = *muted,
                        TrackKind::Video | TrackKind::Screen => p.video_muted = *muted,
                    }
                }
            }
            RoomEvent::Paused { id, paused } => {
                if let Some(p) = self.participants.get_mut(id) {
                    p.paused = *paused;
                }
            }
            RoomEvent::RoomDestroyed | RoomEvent::Disconnected { .. } => {}
        }
    }

    fn set_track(&mut self, id: &ParticipantId, kind: TrackKind, on: bool) {
        let p = self.entry(id);
        match kind {
            TrackKind::Audio => p.audio = on,
            TrackKind::Video => p.camera = on,
            TrackKind::Screen => p.screen = on,
        }
    }

    /// Whether `id` is in the room.
    pub fn contains(&self, id: &ParticipantId) -> bool {
        self.participants.contains_key(id)
    }

    /// Whether `id` should be heard: present, publishing audio, not hard-muted, not paused.
    pub fn audible(&self, id: &ParticipantId) -> bool {
        self.participants
            .get(id)
            .is_some_and(|p| p.audio && !p.audio_muted && !p.paused)
    }

    /// Number of participants present.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether nobody is present.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Who is present, by id: name, talking, heard.
    pub fn people(&self) -> Vec<crate::model::feed::Person> {
        self.participants
            .iter()
            .map(|(id, p)| crate::model::feed::Person {
                id: id.0.clone(),
                name: p.name.clone(),
                talking: p.talking_since.is_some(),
                audible: self.audible(id),
            })
            .collect()
    }

    /// The tiles for the layout: one camera tile per participant (a placeholder when they have
    /// no video), plus one per live screen share.
    pub fn tiles(&self) -> Vec<Tile> {
        // Most recent talker first.
        let mut talkers: Vec<(&ParticipantId, u64)> = self
            .participants
            .iter()
            .filter_map(|(id, p)| p.talking_since.map(|s| (id, s)))
            .collect();
        talkers.sort_by_key(|(_, s)| std::cmp::Reverse(*s));
        let rank =
            |id: &ParticipantId| talkers.iter().position(|(t, _)| *t == id).map(|r| r as u32);
        let mut out = Vec::new();
        for (id, p) in &self.participants {
            let mut t = Tile::new(&id.0, &p.name, p.join_seq);
            t.has_video = p.camera;
            t.talker_rank = rank(id);
            t.spotlighted = p.spotlighted;
            t.pinned = p.pinned;
            t.paused = p.paused;
            t.video_muted = p.video_muted;
            out.push(t.clone());
            if p.screen {
                t.id = TileId::screen(&id.0);
                t.has_video = true;
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ParticipantId {
        ParticipantId(s.into())
    }

    #[test]
    fn folds_events_into_tiles() {
        let mut s = RoomState::new();
        for (id, name) in [("a", "Ann"), ("b", "Ben"), ("c", "Cy")] {
            s.apply(&RoomEvent::ParticipantJoined {
                id: pid(id),
                display_name: name.into(),
            });
        }
        s.apply(&RoomEvent::TrackUnpublished {
            id: pid("a"),
            kind: TrackKind::Video,
        });
        let t = s.tiles();
        assert_eq!(t.len(), 3);
        assert!(!t[0].has_video);
        assert_eq!(t[1].display_name, "Ben");

        s.apply(&RoomEvent::Talking {
            id: pid("b"),
            talking: true,
        });
        s.apply(&RoomEvent::Talking {
            id: pid("c"),
            talking: true,
        });
        let t = s.tiles();
        assert_eq!(t[2].talker_rank, Some(0), "most recent talker first");
        assert_eq!(t[1].talker_rank, Some(1));
        s.apply(&RoomEvent::Talking {
            id: pid("c"),
            talking: false,
        });
        assert_eq!(s.tiles()[2].talker_rank, None);
        assert_eq!(s.tiles()[1].talker_rank, Some(0));

        s.apply(&RoomEvent::Spotlight {
            ids: vec![pid("c")],
        });
        s.apply(&RoomEvent::Pinned {
            ids: vec![pid("a")],
        });
        s.apply(&RoomEvent::Paused {
            id: pid("b"),
            paused: true,
        });
        s.apply(&RoomEvent::HardMute {
            id: pid("c"),
            kind: TrackKind::Video,
            muted: true,
        });
        let t = s.tiles();
        assert!(t[0].pinned && t[1].paused && t[2].spotlighted && t[2].video_muted);

        s.apply(&RoomEvent::ParticipantLeft { id: pid("b") });
        assert_eq!(s.len(), 2);
        assert!(!s.audible(&pid("b")));
    }

    #[test]
    fn screen_share_adds_a_tile() {
        let mut s = RoomState::new();
        s.apply(&RoomEvent::ParticipantJoined {
            id: pid("a"),
            display_name: "Ann".into(),
        });
        s.apply(&RoomEvent::TrackUnpublished {
            id: pid("a"),
            kind: TrackKind::Screen,
        });
        assert_eq!(s.tiles().len(), 1);
        let mut s2 = s.clone();
        s2.participants.get_mut(&pid("a")).unwrap().screen = true;
        let t = s2.tiles();
        assert_eq!(t.len(), 2);
        assert!(t[1].id.screen && t[1].has_video);
    }
}
