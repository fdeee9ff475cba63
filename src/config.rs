//! Configuration from the environment (the contract deploy scripts rely on).
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

impl DeliveryConfig {
    /// Reads the `ROOMCAST_*` variables.
    pub fn from_env() -> Result<DeliveryConfig, Error> {
        let data_dir = PathBuf::from(var("ROOMCAST_DATA_DIR").unwrap_or(DEFAULT_DATA_DIR.into()));
        let storage = var("ROOMCAST_STORAGE")
            .map(|s| Storage::parse(&s))
            .transpose()?;
        let backup = var("ROOMCAST_STORAGE_BACKUP")
            .map(|s| Storage::parse(&s))
            .transpose()?;
        let webhook = match var("ROOMCAST_WEBHOOK_URL") {
            None => None,
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid("ROOMCAST_WEBHOOK_URL", "must be an http(s) URL"));
                }
                let secret = var("ROOMCAST_WEBHOOK_SECRET").ok_or_else(|| {
                    invalid(
                        "ROOMCAST_WEBHOOK_SECRET",
                        "webhooks are signed: set a secret",
                    )
                })?;
                let horizon = match var("ROOMCAST_WEBHOOK_HORIZON_SECS") {
                    None => DEFAULT_HORIZON,
                    Some(s) => Duration::from_secs(s.parse().map_err(|_| {
                        invalid("ROOMCAST_WEBHOOK_HORIZON_SECS", "not a number of seconds")
                    })?),
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
