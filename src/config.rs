//! Configuration from the environment (the contract deploy scripts rely on).
//!
//! `ROOMCAST_CONFIG` names an optional TOML file with the same settings ([`FileConfig`]); the
//! variables below override it.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ROOMCAST_DATA_DIR` | spool and webhook queue live here | `./roomcast-data` |
//! | `ROOMCAST_STORAGE` | where recordings are delivered: `file:///dir`, `s3://bucket/prefix?…`, `sftp://user@host:port/path?…` | none: files stay where recorded |
//! | `ROOMCAST_STORAGE_BACKUP` | used after the primary failed 3 times in a row | none |
//! | `ROOMCAST_SFTP_PASSWORD` | SFTP password (when no key is given) | none |
//! | `ROOMCAST_WEBHOOK_URL` | webhook receiver | none: no webhooks |
//! | `ROOMCAST_WEBHOOK_SECRET` | HMAC secret for webhook signatures | required with a URL |
//! | `ROOMCAST_WEBHOOK_HORIZON_SECS` | how long a webhook is retried | 86400 |

use crate::codes::Code;
use crate::delivery::spool::Spool;
use crate::delivery::{Deliverer, DeliveryError, Storage};
use crate::webhook::{WebhookConfig, WebhookQueue, DEFAULT_HORIZON};
use crate::Error;
use std::path::PathBuf;
use std::time::Duration;

/// Default data folder.
pub const DEFAULT_DATA_DIR: &str = "./roomcast-data";

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Data folder.
    pub data_dir: PathBuf,
    /// Storage target, if configured.
    pub storage: Option<Storage>,
    /// Webhook endpoint, if configured.
    pub webhook: Option<WebhookConfig>,
    /// Backup storage target.
    pub backup: Option<Storage>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        message: message.into(),
        code: Code::RecordParamsMissing,
    }
}

/// The optional configuration file (`ROOMCAST_CONFIG=path.toml`); every value can be
/// overridden by its environment variable.
///
/// ```toml
/// data_dir = "/var/lib/roomcast"
/// [storage]
/// url = "s3://recordings/site-a?region=eu-west-1"
/// backup = "file:///mnt/backup"
/// [webhook]
/// url = "https://example.com/roomcast"
/// secret = "…"
/// horizon_secs = 86400
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Spool and webhook queue folder.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Storage targets.
    #[serde(default)]
    pub storage: StorageSection,
    /// Webhook receiver.
    #[serde(default)]
    pub webhook: WebhookSection,
}

/// `[storage]` of the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Primary target URL.
    pub url: Option<String>,
    /// Backup target URL.
    pub backup: Option<String>,
}

/// `[webhook]` of the configuration file.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Receiver URL.
    pub url: Option<String>,
    /// Signing secret.
    pub secret: Option<String>,
    /// Retry horizon in seconds.
    pub horizon_secs: Option<u64>,
}

impl std::fmt::Debug for WebhookSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSection")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("horizon_secs", &self.horizon_secs)
            .finish()
    }
}

impl DeliveryConfig {
    /// Reads the file named by `ROOMCAST_CONFIG` (if any), then the `ROOMCAST_*` variables,
    /// which win.
    pub fn from_env() -> Result<DeliveryConfig, Error> {
        let file = match var("ROOMCAST_CONFIG") {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::io(format!("reading {path}"), e))?;
                toml::from_str(&text)
                    .map_err(|e| invalid("ROOMCAST_CONFIG", format!("{path}: {}", e.message())))?
            }
        };
        Self::resolve(file, var)
    }

    /// Combines a configuration file with an environment lookup (environment first).
    pub fn resolve(
        file: FileConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DeliveryConfig, Error> {
        let data_dir = PathBuf::from(
            env("ROOMCAST_DATA_DIR")
                .or(file.data_dir)
                .unwrap_or(DEFAULT_DATA_DIR.into()),
        );
        let storage = env("ROOMCAST_STORAGE")
            .or(file.storage.url)
            .map(|s| Storage::parse(&s))
            .transpose()?;
        let backup = env("ROOMCAST_STORAGE_BACKUP")
            .or(file.storage.backup)
            .map(|s| Storage::parse(&s))
            .transpose()?;
        let webhook = match env("ROOMCAST_WEBHOOK_URL").or(file.webhook.url) {
            None => None,
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid("ROOMCAST_WEBHOOK_URL", "must be an http(s) URL"));
                }
                let secret = env("ROOMCAST_WEBHOOK_SECRET")
                    .or(file.webhook.secret)
                    .ok_or_else(|| {
                        invalid(
                            "ROOMCAST_WEBHOOK_SECRET",
                            "webhooks are signed: set a secret",
                        )
                    })?;
                let horizon = match env("ROOMCAST_WEBHOOK_HORIZON_SECS") {
                    Some(s) => Duration::from_secs(s.parse().map_err(|_| {
                        invalid("ROOMCAST_WEBHOOK_HORIZON_SECS", "not a number of seconds")
                    })?),
                    None => file
                        .webhook
                        .horizon_secs
                        .map(Duration::from_secs)
                        .unwrap_or(DEFAULT_HORIZON),
                };
                Some(WebhookConfig {
                    url,
                    secret,
                    horizon,
                })
            }
        };
        Ok(DeliveryConfig {
            data_dir,
            storage,
            webhook,
            backup,
        })
    }

    /// The webhook queue, if webhooks are configured.
    pub fn webhook_queue(&self) -> Result<Option<WebhookQueue>, Error> {
        self.webhook
            .clone()
            .map(|c| {
                WebhookQueue::open(self.data_dir.join("webhooks"), c)
                    .map_err(|e| Error::io("opening the webhook queue", e))
            })
            .transpose()
    }

    /// The spool.
    pub fn spool(&self) -> Result<Spool, Error> {
        Spool::open(self.data_dir.join("spool")).map_err(|e| Error::io("opening the spool", e))
    }

    /// A deliverer, if storage is configured.
    pub fn deliverer(&self) -> Result<Option<Deliverer>, Error> {
        let Some(storage) = self.storage.clone() else {
            return Ok(None);
        };
        Ok(Some(Deliverer {
            spool: self.spool()?,
            storage,
            webhooks: self.webhook_queue()?,
            backup: self.backup.clone(),
        }))
    }
}

impl From<DeliveryError> for Error {
    fn from(e: DeliveryError) -> Self {
        Error::Invalid {
            field: "ROOMCAST_STORAGE".into(),
            message: e.message,
            code: e.code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Storage;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn file_values_apply_and_environment_wins() {
        let file: FileConfig = toml::from_str(
            "data_dir = \"/var/lib/rc\"\n[storage]\nurl = \"file:///srv/a\"\n\
             [webhook]\nurl = \"https://h/x\"\nsecret = \"s\"\nhorizon_secs = 60\n",
        )
        .unwrap();
        assert!(!format!("{file:?}").contains("\"s\""), "secret in Debug");
        let c =
            DeliveryConfig::resolve(file, env(&[("ROOMCAST_STORAGE", "file:///srv/b")])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/rc"));
        match c.storage {
            Some(Storage::Local(t)) => assert!(format!("{t:?}").contains("/srv/b")),
            other => panic!("{other:?}"),
        }
        let w = c.webhook.unwrap();
        assert_eq!(
            (w.url.as_str(), w.horizon),
            ("https://h/x", Duration::from_secs(60))
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(toml::from_str::<FileConfig>("[storage]\nbucket = 1\n").is_err());
        let e = DeliveryConfig::resolve(
            FileConfig::default(),
            env(&[("ROOMCAST_WEBHOOK_URL", "http://h/x")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ROOMCAST_WEBHOOK_SECRET"));
        let e = DeliveryConfig::resolve(
            FileConfig::default(),
            env(&[("ROOMCAST_STORAGE", "gopher://x")]),
        );
        assert!(e.is_err());
        let c = DeliveryConfig::resolve(FileConfig::default(), env(&[])).unwrap();
        assert!(c.storage.is_none() && c.webhook.is_none());
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }
}
