//! From a stored job spec to what a run is built from: the validated [`Plan`] (layout, preset,
//! destinations) and the joined room.

use crate::codes::Code;
use crate::layout::Layout;
use crate::model::Preset;
use crate::model::RtmpUrl;
use crate::queue::{ConnectorSpec, SyntheticScript};
use crate::room::janus::JanusRoom;
use crate::room::synthetic::SyntheticRoom;
use crate::room::{RoomConnector, RoomHandle};
use std::time::Duration;

/// A job's spec, validated and resolved: what the recording is built from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Layout.
    pub layout: Layout,
    /// Encoder preset.
    pub preset: Preset,
    /// RTMP destinations.
    pub rtmp: Vec<RtmpUrl>,
}

impl Plan {
    /// Validates a stored spec (layouts by name or inline only; presets by name or file).
    pub fn from_spec(spec: &crate::queue::JobSpec) -> Result<Plan, (Code, String)> {
        let layout = Layout::from_request(&spec.layout).map_err(|e| (e.code, e.to_string()))?;
        let preset = Preset::resolve(&spec.preset).map_err(|e| (e.code(), e.to_string()))?;
        let rtmp = RtmpUrl::parse_all(&spec.rtmp_urls).map_err(|e| (e.code(), e.to_string()))?;
        Ok(Plan {
            layout,
            preset,
            rtmp,
        })
    }
}

/// Joins the room `connector` names; a demo script is spread over `length` (15 s when
/// none). A synthetic room is returned as well: platform joins add generated participants
/// to it.
pub(crate) async fn connect(
    connector: &ConnectorSpec,
    length: Option<Duration>,
) -> Result<(RoomHandle, Option<SyntheticRoom>), crate::Error> {
    match connector {
        ConnectorSpec::Synthetic {
            participants,
            script,
        } => {
            let room = match script {
                SyntheticScript::Steady => SyntheticRoom::steady(*participants as usize),
                SyntheticScript::Demo => SyntheticRoom::demo(
                    *participants as usize,
                    length
                        .unwrap_or(Duration::from_secs(15))
                        .max(Duration::from_millis(100)),
                ),
            };
            room.connect().await.map(|h| (h, Some(room)))
        }
        ConnectorSpec::Janus {
            url,
            room,
            pin,
            screen_pattern,
            ice_address,
            max_reconnects,
            simulcast,
        } => {
            let mut r = JanusRoom::new(url.clone(), *room);
            r.pin = pin.clone();
            if let Some(p) = screen_pattern {
                r.screen_pattern = p.clone();
            }
            r.local_ip = ice_address.clone();
            if let Some(n) = max_reconnects {
                r.max_reconnects = *n;
            }
            r.simulcast = simulcast.unwrap_or_default();
            r.connect().await.map(|h| (h, None))
        }
    }
}
