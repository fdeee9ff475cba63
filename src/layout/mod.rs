//! Layout geometry: from a canvas and the room's tiles to the slots a compositor draws.
//!
//! Pure maths, no GStreamer. Built-in layouts (`grid`, `speaker`, `presentation`, `single`) are
//! written in the same region language as custom layout files (see [`def`]), so a user can copy a
//! built-in from `layouts/` and edit it.
//!
//! Tile order follows the platform's active-talker rules: spotlighted users first, then active
//! talkers by activity, then pinned users who are not talking, then everyone else by join time.
//! Users paused in the parent room (moved to a break-out room) are not shown; users whose video is
//! hard-muted keep their tile as a named placeholder.

pub mod def;
mod place;

pub use def::{parse_color, Arrange, Fill, Fit, LabelPosition, LabelStyle, LayoutDef, RegionDef};

use crate::codes::Code;
use std::path::Path;

/// Output frame size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canvas {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Identifies one tile: a participant's camera, or their screen share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Participant the tile belongs to.
    pub participant: String,
    /// Whether this is the participant's screen share rather than their camera.
    pub screen: bool,
}

impl TileId {
    /// The camera tile of `participant`.
    pub fn camera(participant: impl Into<String>) -> Self {
        TileId {
            participant: participant.into(),
            screen: false,
        }
    }

    /// The screen-share tile of `participant`.
    pub fn screen(participant: impl Into<String>) -> Self {
        TileId {
            participant: participant.into(),
            screen: true,
        }
    }
}

impl std::fmt::Display for TileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.screen {
            write!(f, "{}#screen", self.participant)
        } else {
            f.write_str(&self.participant)
        }
    }
}

/// What the layout knows about one tile.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Which tile.
    pub id: TileId,
    /// Name shown on the tile.
    pub display_name: String,
    /// Whether video is flowing for this tile (false: placeholder with the name).
    pub has_video: bool,
    /// Position in the active-talker list (0 = most active), if talking.
    pub talker_rank: Option<u32>,
    /// Spotlighted by a moderator.
    pub spotlighted: bool,
    /// Pinned by a moderator.
    pub pinned: bool,
    /// Moved to a break-out room: not shown while paused.
    pub paused: bool,
    /// Video hard-muted by a moderator: shown as a placeholder.
    pub video_muted: bool,
    /// Join order (smaller joined earlier).
    pub join_seq: u64,
}

impl Tile {
    /// A camera tile with video, not talking, not spotlighted or pinned.
    pub fn new(participant: &str, display_name: &str, join_seq: u64) -> Self {
        Tile {
            id: TileId::camera(participant),
            display_name: display_name.to_string(),
            has_video: true,
            talker_rank: None,
            spotlighted: false,
            pinned: false,
            paused: false,
            video_muted: false,
            join_seq,
        }
    }

    /// Whether the tile shows live video (has video and is not hard-muted).
    pub fn shows_video(&self) -> bool {
        self.has_video && !self.video_muted
    }
}

/// A rectangle in output pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Rect {
    /// Centre point.
    pub fn center(&self) -> (i32, i32) {
        (self.x + self.w as i32 / 2, self.y + self.h as i32 / 2)
    }

    /// Whether `(px, py)` lies inside.
    pub fn contains(&self, px: i32, py: i32) -> bool {
        px >= self.x && py >= self.y && px < self.x + self.w as i32 && py < self.y + self.h as i32
    }
}

/// What a slot shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotContent {
    /// A participant's camera or screen share (or its placeholder when `show_video` is false).
    Tile {
        /// The tile.
        id: TileId,
        /// Live video (false: a placeholder with the name).
        show_video: bool,
        /// Display name (drawn on placeholders even when labels are off).
        name: String,
    },
    /// "+N": that many more tiles did not fit.
    Overflow(u32),
}

/// One placed rectangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// What is drawn.
    pub content: SlotContent,
    /// Where.
    pub rect: Rect,
    /// Stacking order (higher on top).
    pub z: u32,
    /// How video of another aspect ratio fills the rectangle.
    pub fit: Fit,
    /// Label text, if labels are shown.
    pub label: Option<String>,
}

/// A layout error: the field at fault, a message, and the platform code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layout error in `{field}`: {message}")]
pub struct LayoutError {
    /// The offending field (dotted path, e.g. `region[1].w`).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// 7073 (unsupported layout) or 7075 (no layout given).
    pub code: Code,
}

impl LayoutError {
    pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        LayoutError {
            field: field.into(),
            message: message.into(),
            code: Code::UnsupportedLayout,
        }
    }
}

/// Names of the built-in layouts.
pub const BUILTINS: &[&str] = &["grid", "speaker", "presentation", "single"];

/// The definition of a built-in layout.
pub fn builtin(name: &str) -> Option<LayoutDef> {
    let text = match name {
        "grid" => include_str!("../../layouts/grid.toml"),
        "speaker" => include_str!("../../layouts/speaker.toml"),
        "presentation" => include_str!("../../layouts/presentation.toml"),
        "single" => include_str!("../../layouts/single.toml"),
        _ => return None,
    };
    // Built-ins are parsed and validated by a unit test; a failure here is a build defect.
    LayoutDef::from_toml(text).ok()
}

/// A layout ready to place tiles: its definition and the one it switches to while a screen share
/// is live (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    def: LayoutDef,
    on_screen_share: Option<Box<LayoutDef>>,
}

impl Layout {
    /// Resolves `spec`: a built-in name or a path to a `.toml` / `.json` layout file.
    pub fn resolve(spec: &str) -> Result<Layout, LayoutError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(LayoutError {
                field: "layout".into(),
                message: "no layout given".into(),
                code: Code::LayoutMissing,
            });
        }
        let def = match builtin(spec) {
            Some(def) => def,
            None => {
                let path = Path::new(spec);
                if !path.is_file() {
                    return Err(LayoutError::unsupported(
                        "layout",
                        format!(
                            "unknown layout {spec:?}: expected one of {} or a path to a .toml/.json \
                             layout file",
                            BUILTINS.join(", ")
                        ),
                    ));
                }
                LayoutDef::from_file(path)?
            }
        };
        Layout::from_def(def)
    }

    /// A layout named in an API request: a built-in name, or an inline definition (the same
    /// format as a layout file, as JSON). Files on the worker are not reachable this way, so an
    /// inline definition may not name a background image.
    pub fn from_request(value: &serde_json::Value) -> Result<Layout, LayoutError> {
        match value {
            serde_json::Value::Null => Err(LayoutError {
                field: "layout".into(),
                message: "no layout given".into(),
                code: Code::LayoutMissing,
            }),
            serde_json::Value::String(name) if name.trim().is_empty() => Err(LayoutError {
                field: "layout".into(),
                message: "no layout given".into(),
                code: Code::LayoutMissing,
            }),
            serde_json::Value::String(name) => match builtin(name.trim()) {
                Some(def) => Layout::from_def(def),
                None => Err(LayoutError::unsupported(
                    "layout",
                    format!(
                        "unknown layout {name:?}: expected one of {} or an inline layout object",
                        BUILTINS.join(", ")
                    ),
                )),
            },
            serde_json::Value::Object(_) => {
                let text = value.to_string();
                if text.len() as u64 > def::MAX_LAYOUT_FILE_BYTES {
                    return Err(LayoutError::unsupported(
                        "layout",
                        "inline layout too large",
                    ));
                }
                let def = LayoutDef::from_json(&text)?;
                if def.background_image.is_some() {
                    return Err(LayoutError::unsupported(
                        "layout.background_image",
                        "not accepted in an inline layout (use a layout file on the worker)",
                    ));
                }
                Layout::from_def(def)
            }
            _ => Err(LayoutError::unsupported(
                "layout",
                "expected a layout name or an inline layout object",
            )),
        }
    }

    /// Builds a layout from a validated definition.
    pub fn from_def(def: LayoutDef) -> Result<Layout, LayoutError> {
        def.validate()?;
        let on_screen_share = match &def.on_screen_share {
            None => None,
            Some(name) => match builtin(name) {
                Some(alt) => Some(Box::new(alt)),
                None => {
                    return Err(LayoutError::unsupported(
                        "on_screen_share",
                        format!(
                            "{name:?} is not a built-in layout ({})",
                            BUILTINS.join(", ")
                        ),
                    ))
                }
            },
        };
        Ok(Layout {
            def,
            on_screen_share,
        })
    }

    /// Overrides the tile limit of every `others` region (the grid's maximum tiles).
    pub fn with_max_tiles(mut self, max_tiles: u32) -> Result<Layout, LayoutError> {
        if max_tiles == 0 {
            return Err(LayoutError::unsupported("max_tiles", "must be at least 1"));
        }
        for r in self
            .def
            .regions
            .iter_mut()
            .filter(|r| r.fill == Fill::Others)
        {
            r.max_tiles = Some(max_tiles);
        }
        Ok(self)
    }

    /// The layout's own definition.
    pub fn def(&self) -> &LayoutDef {
        &self.def
    }

    /// The definition in force for these tiles (the screen-share layout while one is live).
    pub fn active_def(&self, tiles: &[Tile]) -> &LayoutDef {
        match &self.on_screen_share {
            Some(alt) if tiles.iter().any(|t| t.id.screen && !t.paused) => alt,
            _ => &self.def,
        }
    }

    /// Places `tiles` on `canvas`. The result is sorted by `z`, bottom first.
    pub fn place(&self, canvas: Canvas, tiles: &[Tile]) -> Vec<Slot> {
        place::place(self.active_def(tiles), canvas, tiles)
    }
}

/// Orders tiles by the platform's rules; paused tiles are dropped.
pub fn ordered(tiles: &[Tile]) -> Vec<&Tile> {
    let mut v: Vec<&Tile> = tiles.iter().filter(|t| !t.paused).collect();
    v.sort_by_key(|t| {
        let group = if t.spotlighted {
            0
        } else if t.talker_rank.is_some() {
            1
        } else if t.pinned {
            2
        } else {
            3
        };
        (
            group,
            t.talker_rank.unwrap_or(u32::MAX),
            t.join_seq,
            t.id.screen,
        )
    });
    v
}

#[cfg(test)]
mod tests;
