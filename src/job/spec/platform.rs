//! Platform room events (the platform's view of the room, posted to the API) → what a running
//! job does with them.

use crate::job::spec::JobCommand;
use crate::layout::Layout;
use crate::queue::{MediaKind, PlatformEvent, RoomMode};
use crate::room::synthetic::SyntheticRoom;
use crate::room::{ParticipantId, RoomEvent, TrackKind};
use std::collections::HashSet;
use tokio::sync::mpsc;
use tracing::warn;

/// What a platform event asks of a running job.
#[derive(Debug)]
pub enum Action {
    /// Room events for the layout and mix.
    Events(Vec<RoomEvent>),
    /// Switch to this layout (name or inline definition).
    Layout(serde_json::Value),
    /// A chat message (for the custom view page).
    Chat(crate::model::page::ChatLine),
}

/// Turns the platform's events into room events for one job.
///
/// With a synthetic room the platform's joins are the participants: each join adds a generated
/// camera and microphone (next colour of the palette). With a real room (media from the SFU)
/// joins and leaves come from the room connection itself and are only tracked here.
#[derive(Debug)]
pub struct Translator {
    synthetic: Option<SyntheticRoom>,
    first_guest: usize,
    present: HashSet<String>,
    joined: usize,
    talking: Vec<String>,
    max_talkers: Option<u32>,
    group_layout: serde_json::Value,
}

fn pid(s: &str) -> ParticipantId {
    ParticipantId(s.to_string())
}

impl Translator {
    /// A translator for a job whose own layout is `group_layout`; `synthetic` is the room
    /// the job records if it is synthetic (guests are numbered after its own participants).
    pub fn new(
        synthetic: Option<SyntheticRoom>,
        max_talkers: Option<u32>,
        group_layout: serde_json::Value,
    ) -> Self {
        let first_guest = synthetic.as_ref().map_or(0, |r| r.participants.len());
        Translator {
            synthetic,
            first_guest,
            present: HashSet::new(),
            joined: 0,
            talking: Vec::new(),
            max_talkers,
            group_layout,
        }
    }

    /// Actions for one platform event.
    pub fn translate(&mut self, event: &PlatformEvent) -> Vec<Action> {
        match event {
            PlatformEvent::ParticipantJoined { user_id, name } => {
                if !self.present.insert(user_id.clone()) {
                    return Vec::new();
                }
                let Some(room) = &self.synthetic else {
                    return Vec::new();
                };
                let p = SyntheticRoom::guest(
                    self.first_guest + self.joined,
                    user_id,
                    name.as_deref().unwrap_or(user_id),
                );
                self.joined += 1;
                vec![Action::Events(room.join_events(&p))]
            }
            PlatformEvent::ParticipantLeft { user_id } => {
                if !self.present.remove(user_id) {
                    return Vec::new();
                }
                self.talking.retain(|t| t != user_id);
                if self.synthetic.is_none() {
                    return Vec::new();
                }
                vec![Action::Events(vec![RoomEvent::ParticipantLeft {
                    id: pid(user_id),
                }])]
            }
            PlatformEvent::ActiveTalkers { user_ids } => {
                let limit = self.max_talkers.map_or(usize::MAX, |n| n as usize);
                let now: Vec<String> = user_ids.iter().take(limit).cloned().collect();
                let mut out = Vec::new();
                for old in &self.talking {
                    if !now.contains(old) {
                        out.push(RoomEvent::Talking {
                            id: pid(old),
                            talking: false,
                        });
                    }
                }
                // Least active first, so the most active ends up the most recent talker.
                for id in now.iter().rev() {
                    if !self.talking.contains(id) {
                        out.push(RoomEvent::Talking {
                            id: pid(id),
                            talking: true,
                        });
                    }
                }
                self.talking = now;
                vec![Action::Events(out)]
            }
            PlatformEvent::Spotlight { user_ids } => {
                vec![Action::Events(vec![RoomEvent::Spotlight {
                    ids: user_ids.iter().map(|u| pid(u)).collect(),
                }])]
            }
            PlatformEvent::Pinned { user_ids } => vec![Action::Events(vec![RoomEvent::Pinned {
                ids: user_ids.iter().map(|u| pid(u)).collect(),
            }])],
            PlatformEvent::HardMute {
                user_id,
                media,
                muted,
            } => vec![Action::Events(vec![RoomEvent::HardMute {
                id: pid(user_id),
                kind: match media {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                },
                muted: *muted,
            }])],
            PlatformEvent::Paused { user_ids, paused } => vec![Action::Events(
                user_ids
                    .iter()
                    .map(|u| RoomEvent::Paused {
                        id: pid(u),
                        paused: *paused,
                    })
                    .collect(),
            )],
            PlatformEvent::ModeSwitched { mode } => vec![Action::Layout(match mode {
                RoomMode::Lecture => serde_json::Value::String("speaker".into()),
                RoomMode::Group => self.group_layout.clone(),
            })],
            PlatformEvent::RoomDestroyed => vec![Action::Events(vec![RoomEvent::RoomDestroyed])],
            PlatformEvent::ChatMessage {
                user_id,
                name,
                text,
                time,
            } => vec![Action::Chat(crate::model::page::ChatLine {
                user_id: user_id.clone(),
                name: name.clone().unwrap_or_else(|| user_id.clone()),
                text: text.clone(),
                time_ms: time.unwrap_or_else(crate::clock::now_ms),
            })],
        }
    }
}

/// Sends the actions to the runner; consecutive event lists go as one.
pub(crate) async fn apply_actions(tx: &mpsc::Sender<JobCommand>, actions: Vec<Action>) {
    // Consecutive event lists become one.
    let mut merged: Vec<Action> = Vec::new();
    for a in actions {
        match (merged.last_mut(), a) {
            (Some(Action::Events(all)), Action::Events(more)) => all.extend(more),
            (_, a) => merged.push(a),
        }
    }
    for a in merged {
        let cmd = match a {
            Action::Events(ev) if ev.is_empty() => continue,
            Action::Events(ev) => JobCommand::Room(ev),
            Action::Chat(line) => JobCommand::Chat(line),
            Action::Layout(v) => match Layout::from_request(&v) {
                Ok(l) => JobCommand::SetLayout(Box::new(l)),
                Err(e) => {
                    warn!(error = %e, "layout of the room mode not applied");
                    continue;
                }
            },
        };
        let _ = tx.send(cmd).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_joins_add_media_once_and_talkers_are_capped() {
        let mut t = Translator::new(Some(SyntheticRoom::steady(0)), Some(1), "grid".into());
        let join = PlatformEvent::ParticipantJoined {
            user_id: "u1".into(),
            name: Some("Ann".into()),
        };
        match t.translate(&join).as_slice() {
            [Action::Events(ev)] => assert_eq!(ev.len(), 3),
            other => panic!("{other:?}"),
        }
        assert!(
            t.translate(&join).is_empty(),
            "a repeated join adds nothing"
        );
        let talk = PlatformEvent::ActiveTalkers {
            user_ids: vec!["u1".into(), "u2".into()],
        };
        match t.translate(&talk).as_slice() {
            [Action::Events(ev)] => {
                assert_eq!(ev.len(), 1);
                assert!(matches!(&ev[0], RoomEvent::Talking { id, talking: true } if id.0 == "u1"));
            }
            other => panic!("{other:?}"),
        }
        let mode = PlatformEvent::ModeSwitched {
            mode: RoomMode::Lecture,
        };
        assert!(matches!(t.translate(&mode).as_slice(), [Action::Layout(v)] if v == "speaker"));
    }
}
