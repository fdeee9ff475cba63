//! Request parsing: bytes → typed input, every failure a coded [`ApiError`].
//!
//! These functions take plain bytes and values so the fuzz target can drive them directly.

use super::state::ApiError;
use super::text::{check_event_text, is_plain_text, MAX_NAME_LEN};
use crate::codes::Code;
use crate::layout::Layout;
use crate::model::hls::HlsSpec;
use crate::model::page::PageSpec;
use crate::model::RtmpUrl;
use crate::queue::{ConnectorSpec, PlatformEvent, Requester, RoomSettings};
use axum::http::StatusCode;
use serde_json::Value;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest room id.
const MAX_ID_LEN: usize = 128;
/// Most events in one `events` post.
const MAX_EVENTS: usize = 256;

/// Parses a JSON object body; `code` is reported for anything malformed.
pub fn json_object(bytes: &[u8], code: Code) -> Result<serde_json::Map<String, Value>, ApiError> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::with_status(
            code,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(serde_json::Map::new());
    }
    // A key given twice would be decided by whichever came last: `"role":"viewer"` then
    // `"role":"moderator"` must not start a recording.
    if let Err(e) = super::strict_json::unique_keys(bytes) {
        return Err(ApiError::with_status(
            code,
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::with_status(
            code,
            StatusCode::BAD_REQUEST,
            "body must be a JSON object",
        )),
        Err(e) => Err(ApiError::with_status(
            code,
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        )),
    }
}

/// Checks a room id from the path.
pub fn room_id(id: &str) -> Result<(), ApiError> {
    if is_identifier(id) {
        Ok(())
    } else {
        Err(ApiError::with_status(
            Code::RecordParamsMissing,
            StatusCode::BAD_REQUEST,
            format!("room id must be 1-{MAX_ID_LEN} characters of letters, digits and -_.:@"),
        ))
    }
}

/// Room ids, `app_id` and `conf_num`: 1–[`MAX_ID_LEN`] characters of letters, digits and
/// `-_.:@` (no spaces, slashes or control characters: they go into logs, file names and
/// storage keys).
pub fn is_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
        && id != "."
        && id != ".."
}

/// `requested_by`: `{"client_id": "…", "role": "moderator"|…}`.
pub fn requester(body: &serde_json::Map<String, Value>, code: Code) -> Result<Requester, ApiError> {
    match body.get("requested_by") {
        // The client's mistake whatever the code's usual status (7016 is a 500 in the table).
        None | Some(Value::Null) => Err(ApiError::with_status(
            code,
            StatusCode::BAD_REQUEST,
            "requested_by is missing",
        )),
        Some(v) => {
            let r = serde_json::from_value::<Requester>(v.clone()).map_err(|e| {
                ApiError::with_status(code, StatusCode::BAD_REQUEST, format!("requested_by: {e}"))
            })?;
            if !is_plain_text(&r.client_id) {
                return Err(ApiError::with_status(
                    code,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "requested_by.client_id must be 1-{MAX_NAME_LEN} characters without \
                         control or direction characters"
                    ),
                ));
            }
            Ok(r)
        }
    }
}

/// A layout value from a request: a built-in name or an inline definition.
pub fn layout(value: &Value) -> Result<Value, ApiError> {
    Layout::from_request(value)
        .map(|_| value.clone())
        .map_err(|e| ApiError::new(e.code, e.to_string()))
}

/// What a start/change live-recording request asks to show.
#[derive(Debug, Default, PartialEq)]
pub struct RecordingView {
    /// The layout (`layout` or the platform's `layOut`), validated.
    pub layout: Option<Value>,
    /// The custom view page (`url`; custom keys in its query string). `Some(None)`: the
    /// request gave an empty `url` (no page from now on).
    pub page: Option<Option<PageSpec>>,
}

impl RecordingView {
    /// Whether the request named neither a layout nor a page.
    pub fn is_empty(&self) -> bool {
        self.layout.is_none() && self.page.is_none()
    }
}

/// The view of a start/change live-recording request (`config.url_details`, or the platform's
/// `config.urlDetails`): a layout, a page from one of `origins`, or both. `urlDetails` given
/// with neither is 7075; a page address not allowed or malformed is 7202.
pub fn recording_view(
    body: &serde_json::Map<String, Value>,
    origins: &[String],
) -> Result<RecordingView, ApiError> {
    let details = match body.get("config") {
        None | Some(Value::Null) => return Ok(RecordingView::default()),
        Some(Value::Object(c)) => c.get("url_details").or_else(|| c.get("urlDetails")),
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidUrlFormat,
                "config must be an object",
            ))
        }
    };
    let d = match details {
        None | Some(Value::Null) => return Ok(RecordingView::default()),
        Some(Value::Object(d)) => d,
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidUrlFormat,
                "config.url_details must be an object",
            ))
        }
    };
    let layout = match d.get("layout").or_else(|| d.get("layOut")) {
        None | Some(Value::Null) => None,
        // The platform's SDK sends `layOut: {}` when the page decides.
        Some(Value::Object(o)) if o.is_empty() => None,
        Some(l) => Some(layout(l)?),
    };
    let mut page = match d.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.trim().is_empty() => Some(None),
        Some(Value::String(u)) => {
            let url = crate::page::check_url(u, origins)
                .map_err(|e| ApiError::new(e.code(), format!("url_details.url: {e}")))?;
            Some(Some(PageSpec::new(crate::page::page_url(url, d))))
        }
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidUrlFormat,
                "url_details.url must be a string",
            ))
        }
    };
    match d.get("chatOverlay").or_else(|| d.get("chat_overlay")) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        // The chat over the page asked for, or alone over the room's layout.
        Some(Value::Bool(true)) => match &mut page {
            Some(Some(p)) => p.chat_overlay = true,
            _ => page = Some(Some(PageSpec::chat_overlay())),
        },
        Some(_) => {
            return Err(ApiError::new(
                Code::RecordParamsMissing,
                "url_details.chatOverlay must be true or false",
            ))
        }
    }
    let view = RecordingView { layout, page };
    if view.is_empty() {
        return Err(ApiError::new(
            Code::LayoutMissing,
            "url_details names neither a layout nor a url",
        ));
    }
    Ok(view)
}

/// `rtmp_urls` of a streaming request: 1–3 valid rtmp(s) URLs.
pub fn rtmp_urls(body: &serde_json::Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let urls: Vec<String> = match body.get("rtmp_urls") {
        None | Some(Value::Null) => {
            return Err(ApiError::new(
                Code::StreamUrlMissing,
                "rtmp_urls is missing",
            ))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::new(
                    Code::InvalidRtmpUrl,
                    "rtmp_urls must be strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => vec![s.clone()],
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidRtmpUrl,
                "rtmp_urls must be an array of URLs",
            ))
        }
    };
    if urls.is_empty() {
        return Err(ApiError::new(Code::StreamUrlMissing, "rtmp_urls is empty"));
    }
    RtmpUrl::parse_all(&urls).map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    Ok(urls)
}

/// An optional positive number of seconds.
pub fn seconds(v: Option<&Value>, field: &str, code: Code) -> Result<Option<f64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && s > 0.0 && s <= 7.0 * 86_400.0 => Ok(Some(s)),
            _ => Err(ApiError::with_status(
                code,
                StatusCode::BAD_REQUEST,
                format!("{field} must be 0-604800 seconds"),
            )),
        },
        Some(_) => Err(ApiError::with_status(
            code,
            StatusCode::BAD_REQUEST,
            format!("{field} must be a number"),
        )),
    }
}

/// `outputs.hls` of a start request: absent, `false` or `null` (no HLS), `true` (defaults) or
/// `{"segment_secs": …, "window": …}`.
pub fn hls(body: &serde_json::Map<String, Value>, code: Code) -> Result<Option<HlsSpec>, ApiError> {
    let outputs = match body.get("outputs") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::new(code, "outputs must be an object")),
    };
    if let Some(k) = outputs.keys().find(|k| k.as_str() != "hls") {
        return Err(ApiError::new(
            code,
            format!("outputs.{k} is not an output (known: hls)"),
        ));
    }
    let spec = match outputs.get("hls") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => HlsSpec::default(),
        Some(v @ Value::Object(_)) => serde_json::from_value::<HlsSpec>(v.clone())
            .map_err(|e| ApiError::new(code, format!("outputs.hls: {e}")))?,
        Some(_) => return Err(ApiError::new(code, "outputs.hls must be true or an object")),
    };
    spec.validate()
        .map_err(|e| ApiError::new(code, format!("outputs.{e}")))?;
    Ok(Some(spec))
}

/// The body of `PUT /v1/rooms/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomBody {
    /// Application id.
    pub app_id: String,
    /// Conference number.
    pub conf_num: String,
    /// Connector.
    pub connector: ConnectorSpec,
    /// Settings.
    pub settings: RoomSettings,
    /// `settings.watermark: true`: the app's configured watermark is wanted.
    pub app_watermark: bool,
}

/// Parses and validates a room registration.
pub fn parse_room_body(bytes: &[u8]) -> Result<RoomBody, ApiError> {
    let code = Code::RecordParamsMissing;
    let body = json_object(bytes, code)?;
    for k in body.keys() {
        if !["app_id", "conf_num", "connector", "settings"].contains(&k.as_str()) {
            return Err(ApiError::new(code, format!("unknown field {k:?}")));
        }
    }
    let text = |k: &str, default: &str| -> Result<String, ApiError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) if is_identifier(s) => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
            Some(_) => Err(ApiError::new(
                code,
                format!(
                    "{k} must be 1-{MAX_ID_LEN} characters of letters, digits and -_.:@ (or a \
                     whole number)"
                ),
            )),
        }
    };
    let app_id = text("app_id", "roomcast")?;
    let connector: ConnectorSpec = match body.get("connector") {
        None | Some(Value::Null) => ConnectorSpec::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError::new(code, format!("connector: {e}")))?,
    };
    // A real conference is named by its number (files, archive, webhooks): it must be given.
    // A generated room is a demo and is conference "1" unless told otherwise.
    let conf_given = !matches!(body.get("conf_num"), None | Some(Value::Null));
    if !conf_given && matches!(connector, ConnectorSpec::Janus { .. }) {
        return Err(ApiError::new(
            Code::StateConfNumMissing,
            "conf_num is missing: a Janus room is a conference, and its recordings are named \
             and reported by its number",
        ));
    }
    let conf_num = text("conf_num", "1")?;
    match &connector {
        ConnectorSpec::Synthetic { participants, .. } if *participants > 16 => {
            return Err(ApiError::new(code, "connector.participants: at most 16"));
        }
        ConnectorSpec::Janus { url, .. }
            if !(url.starts_with("ws://") || url.starts_with("wss://")) =>
        {
            return Err(ApiError::new(
                code,
                "connector.url must be a ws:// or wss:// URL",
            ));
        }
        _ => {}
    }
    // The platform's flag: `true` asks for the app's watermark, `false` for none.
    let mut settings_value = body.get("settings").cloned();
    let app_watermark = match settings_value.as_mut().and_then(Value::as_object_mut) {
        Some(s) => match s.get("watermark") {
            Some(Value::Bool(on)) => {
                let on = *on;
                s.remove("watermark");
                on
            }
            _ => false,
        },
        None => false,
    };
    let settings: RoomSettings = match settings_value {
        None | Some(Value::Null) => RoomSettings::default(),
        Some(v) => {
            serde_json::from_value(v).map_err(|e| ApiError::new(code, format!("settings: {e}")))?
        }
    };
    if let Some(l) = &settings.layout {
        layout(l)?;
    }
    if let Some(p) = &settings.preset {
        preset(p)?;
    }
    if settings.max_active_talkers == Some(0) {
        return Err(ApiError::new(
            code,
            "settings.max_active_talkers must be at least 1",
        ));
    }
    Ok(RoomBody {
        app_id,
        conf_num,
        connector,
        settings,
        app_watermark,
    })
}

/// A preset named in settings: a built-in name only (no files).
pub fn preset(name: &str) -> Result<crate::model::Preset, ApiError> {
    if !crate::model::preset::BUILTIN_PRESETS
        .iter()
        .any(|(n, _)| *n == name)
    {
        return Err(ApiError::new(
            Code::RecordParamsMissing,
            format!(
                "settings.preset must be one of {}",
                crate::model::preset::BUILTIN_PRESETS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    crate::model::Preset::resolve(name)
        .map_err(|e| ApiError::new(Code::RecordParamsMissing, format!("settings.preset: {e}")))
}

/// `settings.watermark`: a PNG file name in `assets` or inline PNG data (see
/// [`crate::model::watermark`]); answers say only "not allowed" or "not found".
pub fn watermark(
    assets: &std::path::Path,
    given: &std::path::Path,
) -> Result<std::path::PathBuf, ApiError> {
    let max = crate::model::watermark::MAX_PX;
    crate::model::watermark::accept(assets, &given.to_string_lossy(), max)
        .map(std::path::PathBuf::from)
        .map_err(|e| {
            ApiError::new(
                Code::RecordParamsMissing,
                format!("settings.watermark: {e}"),
            )
        })
}

/// Parses `POST /v1/rooms/{id}/events`: one event object or `{"events": [...]}`.
pub fn parse_event_body(bytes: &[u8]) -> Result<Vec<PlatformEvent>, ApiError> {
    let code = Code::RecordParamsMissing;
    let body = json_object(bytes, code)?;
    let values: Vec<Value> = match body.get("events") {
        Some(Value::Array(a)) if body.len() == 1 => a.clone(),
        Some(_) if body.len() == 1 => {
            return Err(ApiError::new(code, "events must be an array"));
        }
        _ => vec![Value::Object(body)],
    };
    if values.is_empty() || values.len() > MAX_EVENTS {
        return Err(ApiError::new(
            code,
            format!("1-{MAX_EVENTS} events per request"),
        ));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let ev = serde_json::from_value::<PlatformEvent>(v)
                .map_err(|e| ApiError::new(code, format!("events[{i}]: {e}")))?;
            check_event_text(&ev).map_err(|m| ApiError::new(code, format!("events[{i}]: {m}")))?;
            Ok(ev)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::text::MAX_CHAT_LEN;
    use serde_json::json;

    #[test]
    fn bodies_are_checked() {
        assert_eq!(
            json_object(b"{", Code::RecordParamsMissing)
                .unwrap_err()
                .code(),
            Code::RecordParamsMissing
        );
        assert!(json_object(b"[1]", Code::StreamInvalidConfig).is_err());
        assert!(json_object(&vec![b' '; MAX_BODY_BYTES + 1], Code::Generic).is_err());
        assert!(json_object(b"  ", Code::Generic).unwrap().is_empty());
        let r = parse_room_body(br#"{"settings":{"layout":"nope"}}"#).unwrap_err();
        assert_eq!(r.code(), Code::UnsupportedLayout);
        let r = parse_room_body(br#"{"connector":{"type":"synthetic","participants":"x"}}"#);
        assert!(r.is_err());
        let janus = |simulcast: &str| {
            parse_room_body(
                format!(
                    r#"{{"conf_num":"1","connector":{{"type":"janus","url":"ws://127.0.0.1:8188","room":1,"simulcast":{simulcast}}}}}"#
                )
                .as_bytes(),
            )
        };
        assert!(matches!(
            janus(r#""top""#).unwrap().connector,
            ConnectorSpec::Janus {
                simulcast: Some(crate::model::room::SimulcastChoice::Top),
                ..
            }
        ));
        let r = janus(r#""best""#).unwrap_err();
        assert_eq!(r.code(), Code::RecordParamsMissing);
        assert!(r.detail.contains("`fit`"), "{}", r.detail);
        let ok = parse_room_body(
            br#"{"app_id":"a","conf_num":7,"settings":{"live_recording":{"auto_recording":true}}}"#,
        )
        .unwrap();
        assert!(ok.settings.live_recording.auto_recording);
        assert_eq!(ok.conf_num, "7");
        let ev = parse_event_body(br#"{"events":[{"type":"participant_joined","user_id":"u"},{"type":"room_destroyed"}]}"#).unwrap();
        assert_eq!(ev.len(), 2);
        assert!(parse_event_body(br#"{"type":"participant_joined"}"#).is_err());
        assert!(parse_event_body(br#"{"events":[]}"#).is_err());
        let chat = parse_event_body(
            br#"{"type":"chat_message","user_id":"u","name":"Ann","text":"hi\nthere"}"#,
        )
        .unwrap();
        assert!(matches!(&chat[0], PlatformEvent::ChatMessage { text, .. } if text == "hi\nthere"));
        for bad in [
            r#"{"type":"chat_message","user_id":"u","text":""}"#,
            r#"{"type":"chat_message","user_id":"u","text":"a\u0007b"}"#,
            r#"{"type":"chat_message","user_id":"u"}"#,
        ] {
            assert!(parse_event_body(bad.as_bytes()).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"type":"chat_message","user_id":"u","text":"{}"}}"#,
            "x".repeat(MAX_CHAT_LEN + 1)
        );
        assert!(parse_event_body(long.as_bytes()).is_err());
    }

    #[test]
    fn layouts_and_urls() {
        let body = |s: &str| json_object(s.as_bytes(), Code::Generic).unwrap();
        let view = |s: &str| recording_view(&body(s), &["http://v.example.com".into()]);
        assert!(view("{}").unwrap().is_empty());
        let e = view(r#"{"config":{"url_details":{}}}"#).unwrap_err();
        assert_eq!(e.code(), Code::LayoutMissing);
        let e = view(r#"{"config":{"url_details":"x"}}"#).unwrap_err();
        assert_eq!(e.code(), Code::InvalidUrlFormat);
        let e = view(r#"{"config":{"url_details":{"layout":"zz"}}}"#).unwrap_err();
        assert_eq!(e.code(), Code::UnsupportedLayout);
        let e = view(r#"{"config":{"url_details":{"layout":""}}}"#).unwrap_err();
        assert_eq!(e.code(), Code::LayoutMissing);
        let v = view(r#"{"config":{"urlDetails":{"url":"http://v.example.com/p","layOut":{},"chatOverlay":false,"k":"v"}}}"#).unwrap();
        assert_eq!(v.layout, None);
        assert_eq!(v.page.unwrap().unwrap().url, "http://v.example.com/p?k=v");
        let v = view(r#"{"config":{"url_details":{"url":"","layout":"grid"}}}"#).unwrap();
        assert_eq!(v.page, Some(None));
        assert_eq!(v.layout, Some(json!("grid")));
        for bad in [
            r#"{"config":{"url_details":{"url":"http://other.example.com/p"}}}"#,
            r#"{"config":{"url_details":{"url":"file:///etc/passwd"}}}"#,
            r#"{"config":{"url_details":{"url":"::"}}}"#,
            r#"{"config":{"url_details":{"url":7}}}"#,
        ] {
            assert_eq!(
                view(bad).unwrap_err().code(),
                Code::InvalidUrlFormat,
                "{bad}"
            );
        }
        let v = view(
            r#"{"config":{"url_details":{"url":"http://v.example.com/p","chatOverlay":true}}}"#,
        )
        .unwrap();
        let p = v.page.unwrap().unwrap();
        assert!(p.chat_overlay && p.url == "http://v.example.com/p");
        let v = view(r#"{"config":{"urlDetails":{"chatOverlay":true}}}"#).unwrap();
        assert_eq!(v.page, Some(Some(PageSpec::chat_overlay())));
        let e = view(r#"{"config":{"urlDetails":{"chatOverlay":"yes"}}}"#).unwrap_err();
        assert_eq!(e.code(), Code::RecordParamsMissing);
        assert_eq!(
            rtmp_urls(&body("{}")).unwrap_err().code(),
            Code::StreamUrlMissing
        );
        let four = r#"{"rtmp_urls":["rtmp://h/a/1","rtmp://h/a/2","rtmp://h/a/3","rtmp://h/a/4"]}"#;
        assert_eq!(
            rtmp_urls(&body(four)).unwrap_err().code(),
            Code::TooManyRtmpUrls
        );
        let bad = r#"{"rtmp_urls":["http://h/a/1"]}"#;
        assert_eq!(
            rtmp_urls(&body(bad)).unwrap_err().code(),
            Code::InvalidRtmpUrl
        );
        assert_eq!(
            rtmp_urls(&body(r#"{"rtmp_urls":[1]}"#)).unwrap_err().code(),
            Code::InvalidRtmpUrl
        );
    }
}
