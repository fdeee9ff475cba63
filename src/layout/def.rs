//! The layout file format (TOML or JSON) and its validation.
//!
//! ```toml
//! name = "two-up"
//! background = "#101820"          # or background_image = "/path/to/bg.png"
//! on_screen_share = "presentation" # optional: built-in to switch to while a screen share is live
//!
//! [label]
//! show = true
//! position = "bottom-left"          # top-left | top-right | bottom-left | bottom-right
//! size = 0.03                       # text height as a fraction of the canvas height
//! color = "#ffffff"
//!
//! [[region]]                        # coordinates are fractions of the canvas (0..1)
//! x = 0.0
//! y = 0.0
//! w = 0.5
//! h = 1.0
//! fill = "speaker"                  # screen | speaker | others | participant:<id>
//! fallback = "others"               # optional: used when `fill` finds no tile
//! fit = "crop"                      # crop | letterbox
//! arrange = "grid"                  # grid | row | column (how several tiles share the region)
//! max_tiles = 1                     # more tiles than this: the last cell shows "+N"
//! z = 1
//! ```

use super::LayoutError;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// Largest layout file accepted, in bytes.
pub const MAX_LAYOUT_FILE_BYTES: u64 = 256 * 1024;
/// Most regions a layout may declare.
pub const MAX_REGIONS: usize = 64;
/// Most tiles one region may hold.
pub const MAX_TILES_PER_REGION: u32 = 49;

/// A layout: regions of the canvas and what fills them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutDef {
    /// Name shown in logs and status.
    pub name: String,
    /// Background colour `#rrggbb` (default black).
    #[serde(default)]
    pub background: Option<String>,
    /// Background image (PNG or JPEG), scaled to the canvas; drawn instead of the colour.
    #[serde(default)]
    pub background_image: Option<PathBuf>,
    /// Built-in layout to use while a screen share is live.
    #[serde(default)]
    pub on_screen_share: Option<String>,
    /// Tile label style.
    #[serde(default)]
    pub label: LabelStyle,
    /// Regions, at least one.
    #[serde(rename = "region", default)]
    pub regions: Vec<RegionDef>,
    /// Regions used instead on a portrait canvas (taller than wide), if given.
    #[serde(rename = "portrait_region", default)]
    pub portrait_regions: Vec<RegionDef>,
}

/// One rectangular region of the canvas.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDef {
    /// Left edge, fraction of canvas width.
    pub x: f64,
    /// Top edge, fraction of canvas height.
    pub y: f64,
    /// Width, fraction of canvas width.
    pub w: f64,
    /// Height, fraction of canvas height.
    pub h: f64,
    /// Which tiles go here.
    pub fill: Fill,
    /// What goes here when `fill` finds no tile.
    #[serde(default)]
    pub fallback: Option<Fill>,
    /// How video fills a cell of another aspect ratio.
    #[serde(default)]
    pub fit: Fit,
    /// How several tiles share the region.
    #[serde(default)]
    pub arrange: Arrange,
    /// Most tiles in this region (default 1 for screen/speaker/participant, 9 for others).
    #[serde(default)]
    pub max_tiles: Option<u32>,
    /// Stacking order; higher is on top.
    #[serde(default = "default_z")]
    pub z: u32,
}

fn default_z() -> u32 {
    1
}

impl RegionDef {
    /// The effective tile limit.
    pub fn tile_limit(&self) -> u32 {
        self.max_tiles.unwrap_or(match self.fill {
            Fill::Others => 9,
            _ => 1,
        })
    }
}

/// Which tiles fill a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    /// Live screen shares.
    Screen,
    /// The first tile in active-talker order.
    Speaker,
    /// Every tile not placed elsewhere.
    Others,
    /// One participant's camera.
    Participant(String),
}

impl<'de> Deserialize<'de> for Fill {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Fill::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Fill {
    fn parse(s: &str) -> Result<Fill, String> {
        match s {
            "screen" => Ok(Fill::Screen),
            "speaker" => Ok(Fill::Speaker),
            "others" => Ok(Fill::Others),
            _ => match s.strip_prefix("participant:") {
                Some(id) if !id.trim().is_empty() => Ok(Fill::Participant(id.trim().to_string())),
                _ => Err(format!(
                    "unknown fill {s:?}: expected screen, speaker, others or participant:<id>"
                )),
            },
        }
    }
}

/// How video fills a cell whose aspect ratio differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Scale to cover the cell, cutting the overhang.
    #[default]
    Crop,
    /// Scale to fit inside the cell, with bars.
    Letterbox,
}

/// How several tiles share a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrange {
    /// Rows and columns chosen for the count.
    #[default]
    Grid,
    /// One row (a filmstrip).
    Row,
    /// One column.
    Column,
}

/// Where labels sit on a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelPosition {
    /// Top left corner.
    TopLeft,
    /// Top right corner.
    TopRight,
    /// Bottom left corner.
    #[default]
    BottomLeft,
    /// Bottom right corner.
    BottomRight,
}

/// Tile label style.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelStyle {
    /// Whether names are drawn on tiles.
    pub show: bool,
    /// Corner of the tile.
    pub position: LabelPosition,
    /// Text height as a fraction of the canvas height (0.01–0.2).
    pub size: f64,
    /// Text colour `#rrggbb`.
    pub color: String,
}

impl Default for LabelStyle {
    fn default() -> Self {
        LabelStyle {
            show: true,
            position: LabelPosition::BottomLeft,
            size: 0.03,
            color: "#ffffff".into(),
        }
    }
}

/// Parses `#rrggbb` into 0xRRGGBB.
pub fn parse_color(s: &str) -> Option<u32> {
    let hex = s.strip_prefix('#')?;
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

impl LayoutDef {
    /// Parses TOML text (no validation beyond the format; see [`LayoutDef::validate`]).
    pub fn from_toml(text: &str) -> Result<LayoutDef, LayoutError> {
        toml::from_str(text).map_err(|e| {
            let field = toml_error_field(&e).unwrap_or_else(|| "layout".to_string());
            LayoutError::unsupported(field, e.message().to_string())
        })
    }

    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<LayoutDef, LayoutError> {
        serde_json::from_str(text).map_err(|e| {
            LayoutError::unsupported(
                "layout",
                format!("{e} (line {}, column {})", e.line(), e.column()),
            )
        })
    }

    /// Reads a `.toml` or `.json` file. Relative `background_image` paths are taken relative to
    /// the file's folder.
    pub fn from_file(path: &Path) -> Result<LayoutDef, LayoutError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| LayoutError::unsupported("layout", format!("{}: {e}", path.display())))?;
        if meta.len() > MAX_LAYOUT_FILE_BYTES {
            return Err(LayoutError::unsupported(
                "layout",
                format!(
                    "{} is larger than {MAX_LAYOUT_FILE_BYTES} bytes",
                    path.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| LayoutError::unsupported("layout", format!("{}: {e}", path.display())))?;
        let mut def = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => LayoutDef::from_toml(&text)?,
            Some("json") => LayoutDef::from_json(&text)?,
            _ => {
                return Err(LayoutError::unsupported(
                    "layout",
                    format!("{}: layout files end in .toml or .json", path.display()),
                ))
            }
        };
        if let (Some(img), Some(dir)) = (&def.background_image, path.parent()) {
            if img.is_relative() {
                def.background_image = Some(dir.join(img));
            }
        }
        Ok(def)
    }

    /// Checks every field; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.name.trim().is_empty() {
            return Err(LayoutError::unsupported("name", "must not be empty"));
        }
        if let Some(bg) = &self.background {
            if parse_color(bg).is_none() {
                return Err(LayoutError::unsupported(
                    "background",
                    format!("{bg:?} is not a colour of the form #rrggbb"),
                ));
            }
        }
        if let Some(img) = &self.background_image {
            if !img.is_file() {
                return Err(LayoutError::unsupported(
                    "background_image",
                    format!("{} does not exist", img.display()),
                ));
            }
        }
        if parse_color(&self.label.color).is_none() {
            return Err(LayoutError::unsupported(
                "label.color",
                format!("{:?} is not a colour of the form #rrggbb", self.label.color),
            ));
        }
        if !(0.01..=0.2).contains(&self.label.size) {
            return Err(LayoutError::unsupported(
                "label.size",
                "must be between 0.01 and 0.2",
            ));
        }
        if self.regions.is_empty() {
            return Err(LayoutError::unsupported(
                "region",
                "a layout needs at least one region",
            ));
        }
        if self.regions.len() > MAX_REGIONS {
            return Err(LayoutError::unsupported(
                "region",
                format!("at most {MAX_REGIONS} regions"),
            ));
        }
        if self.portrait_regions.len() > MAX_REGIONS {
            return Err(LayoutError::unsupported(
                "portrait_region",
                format!("at most {MAX_REGIONS} regions"),
            ));
        }
        const EPS: f64 = 1e-6;
        let all = self
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| ("region", i, r))
            .chain(
                self.portrait_regions
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ("portrait_region", i, r)),
            );
        for (list, i, r) in all {
            let f = |name: &str| format!("{list}[{i}].{name}");
            for (name, v) in [("x", r.x), ("y", r.y), ("w", r.w), ("h", r.h)] {
                if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                    return Err(LayoutError::unsupported(
                        f(name),
                        format!("{v} is not in 0..1"),
                    ));
                }
            }
            if r.w <= 0.0 || r.h <= 0.0 {
                return Err(LayoutError::unsupported(
                    f("w"),
                    "width and height must be above 0",
                ));
            }
            if r.x + r.w > 1.0 + EPS {
                return Err(LayoutError::unsupported(
                    f("w"),
                    "x + w goes past the right edge",
                ));
            }
            if r.y + r.h > 1.0 + EPS {
                return Err(LayoutError::unsupported(
                    f("h"),
                    "y + h goes past the bottom edge",
                ));
            }
            match r.max_tiles {
                Some(0) => {
                    return Err(LayoutError::unsupported(
                        f("max_tiles"),
                        "must be at least 1",
                    ))
                }
                Some(n) if n > MAX_TILES_PER_REGION => {
                    return Err(LayoutError::unsupported(
                        f("max_tiles"),
                        format!("at most {MAX_TILES_PER_REGION}"),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn toml_error_field(e: &toml::de::Error) -> Option<String> {
    // toml reports "unknown field `foo`" / "missing field `bar`": lift the name into the field.
    let msg = e.message();
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_string())
}
