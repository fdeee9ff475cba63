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
use crate::util::Secret;
use crate::webhook::{WebhookConfig, WebhookQueue, DEFAULT_HORIZON};
use crate::Error;
use std::path::PathBuf;
use std::time::Duration;

mod hosts;
pub use hosts::{url_host, HostList};

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
    /// `ROOMCAST_CHUNK_SECS` (default 10; 0: off): how often a recording in progress sends
    /// its new bytes to storage.
    pub chunk_every: Option<Duration>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(setting: &str, message: impl Into<String>) -> Error {
    Error::Config {
        setting: setting.into(),
        message: message.into(),
        code: Code::RecordParamsMissing,
    }
}

/// How often a recording in progress sends its new bytes to storage, by default.
pub const DEFAULT_CHUNK_EVERY: Duration = Duration::from_secs(10);

/// Longest duration a `*_SECS` setting accepts (a year).
const MAX_SETTING_SECS: f64 = 365.0 * 86_400.0;

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
    /// API, queue and worker settings.
    #[serde(default)]
    pub server: ServerSection,
}

/// `[server]` of the configuration file (each has a `ROOMCAST_*` variable that wins).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// API address:port (`ROOMCAST_LISTEN`).
    pub listen: Option<String>,
    /// API bearer token (`ROOMCAST_API_TOKEN`).
    pub api_token: Option<Secret>,
    /// A token that reads but cannot act (`ROOMCAST_READ_TOKEN`).
    pub read_token: Option<Secret>,
    /// Redis URL; unset = embedded queue (`ROOMCAST_REDIS_URL`).
    pub redis_url: Option<Secret>,
    /// Worker CPU budget in cores (`ROOMCAST_CPU_BUDGET`).
    pub cpu_budget: Option<f64>,
    /// Longest a request waits for a worker (`ROOMCAST_QUEUE_WAIT_SECS`).
    pub queue_wait_secs: Option<u64>,
    /// How long a room must wait after a failed start (`ROOMCAST_RETRY_AFTER_SECS`).
    pub retry_after_secs: Option<u64>,
    /// How long an ended job's record is kept (`ROOMCAST_JOB_RETENTION_SECS`).
    pub job_retention_secs: Option<u64>,
    /// How long a start may take (`ROOMCAST_START_TIMEOUT_SECS`).
    pub start_timeout_secs: Option<u64>,
    /// The app's watermark, used by `settings.watermark: true` (`ROOMCAST_WATERMARK`).
    pub watermark: Option<String>,
    /// Free disk space the worker keeps (`ROOMCAST_MIN_FREE_MB`).
    pub min_free_mb: Option<u64>,
}

/// API, queue and worker settings, resolved.
#[derive(Clone)]
pub struct ServerConfig {
    /// API address.
    pub listen: String,
    /// A second address serving only `/metrics`, `/healthz` and `/readyz`, without the token
    /// (`ROOMCAST_METRICS_LISTEN`; unset: none).
    pub metrics_listen: Option<String>,
    /// API bearer token.
    pub api_token: Option<Secret>,
    /// A token (API and console) that sees everything and changes nothing.
    pub read_token: Option<Secret>,
    /// Redis URL (None: embedded queue).
    pub redis_url: Option<Secret>,
    /// Worker CPU budget (cores).
    pub cpu_budget: f64,
    /// Longest a request waits in the queue.
    pub queue_wait: Duration,
    /// Cool-down after a failed start.
    pub retry_after: Duration,
    /// How long an ended job's record is kept before it is deleted.
    pub job_retention: Duration,
    /// Data folder (queue store, spool, recordings).
    pub data_dir: PathBuf,
    /// How long joining the room, then the first encoded frame (a stream: its first live
    /// destination) may take before the start fails as timed out (7011/7013, 7001).
    pub start_timeout: Duration,
    /// Free space the worker keeps on the recordings' file system: below it, it takes no new
    /// jobs and ends running recordings cleanly (finalized, delivered, 7204).
    pub min_free_bytes: u64,
    /// The only folder watermarks named through the API come from (`ROOMCAST_ASSETS_DIR`).
    pub assets_dir: PathBuf,
    /// The app's watermark (a PNG file name in `assets_dir`, or inline `data:` PNG), drawn
    /// when a room's settings say `"watermark": true` (`ROOMCAST_WATERMARK`).
    pub watermark: Option<String>,
    /// Hosts a room's Janus URL may name (`ROOMCAST_JANUS_HOSTS`; unset: any).
    pub janus_hosts: HostList,
    /// Hosts RTMP destinations may name (`ROOMCAST_RTMP_HOSTS`; unset: any).
    pub rtmp_hosts: HostList,
    /// Origins custom view pages may come from (`ROOMCAST_PAGE_ORIGINS`: comma-separated
    /// `scheme://host[:port]`, or `*` for any web origin; unset: no pages through the API).
    pub page_origins: Vec<String>,
}

/// Default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default longest wait in the queue.
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(600);
/// Default free-space floor, MiB.
pub const DEFAULT_MIN_FREE_MB: u64 = 256;
/// Default [`ServerConfig::start_timeout`].
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Default cool-down after a failed start (the platform's "try again after 2 minutes").
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Default time an ended job's record is kept (seven days).
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl ServerConfig {
    /// Reads `ROOMCAST_CONFIG`'s `[server]` section and the `ROOMCAST_*` variables.
    pub fn from_env() -> Result<ServerConfig, Error> {
        let file = read_file_config()?;
        Self::resolve(file, var)
    }

    /// Combines a configuration file with an environment lookup (environment first).
    pub fn resolve(
        file: FileConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ServerConfig, Error> {
        let num = |name: &str, v: Option<String>| -> Result<Option<f64>, Error> {
            v.map(|s| {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| invalid(name, "not a non-negative number"))
            })
            .transpose()
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let cpu_budget = num("ROOMCAST_CPU_BUDGET", env("ROOMCAST_CPU_BUDGET"))?
            .or(file.server.cpu_budget)
            .unwrap_or(cores * 0.8);
        let secs = |name: &str, file_value: Option<u64>, default: Duration| {
            let v = num(name, env(name))?.or(file_value.map(|s| s as f64));
            match v {
                Some(s) if s > MAX_SETTING_SECS => {
                    Err(invalid(name, format!("at most {MAX_SETTING_SECS} seconds")))
                }
                Some(s) => Ok(Duration::from_secs_f64(s)),
                None => Ok(default),
            }
        };
        let data_dir = PathBuf::from(
            env("ROOMCAST_DATA_DIR")
                .or(file.data_dir)
                .unwrap_or(DEFAULT_DATA_DIR.into()),
        );
        let listen = env("ROOMCAST_LISTEN")
            .or(file.server.listen)
            .unwrap_or(DEFAULT_LISTEN.into());
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("ROOMCAST_LISTEN", "expected address:port"));
        }
        let metrics_listen = env("ROOMCAST_METRICS_LISTEN").filter(|l| !l.trim().is_empty());
        if metrics_listen
            .as_deref()
            .is_some_and(|l| l.trim().parse::<std::net::SocketAddr>().is_err())
        {
            return Err(invalid("ROOMCAST_METRICS_LISTEN", "expected address:port"));
        }
        Ok(ServerConfig {
            listen,
            metrics_listen: metrics_listen.map(|l| l.trim().to_string()),
            api_token: env("ROOMCAST_API_TOKEN")
                .map(Secret::from)
                .or(file.server.api_token)
                .filter(|t| !t.expose().is_empty()),
            read_token: env("ROOMCAST_READ_TOKEN")
                .map(Secret::from)
                .or(file.server.read_token)
                .filter(|t| !t.expose().is_empty()),
            redis_url: env("ROOMCAST_REDIS_URL")
                .map(Secret::from)
                .or(file.server.redis_url)
                .filter(|t| !t.expose().is_empty()),
            cpu_budget,
            queue_wait: secs(
                "ROOMCAST_QUEUE_WAIT_SECS",
                file.server.queue_wait_secs,
                DEFAULT_QUEUE_WAIT,
            )?,
            retry_after: secs(
                "ROOMCAST_RETRY_AFTER_SECS",
                file.server.retry_after_secs,
                DEFAULT_RETRY_AFTER,
            )?,
            start_timeout: secs(
                "ROOMCAST_START_TIMEOUT_SECS",
                file.server.start_timeout_secs,
                DEFAULT_START_TIMEOUT,
            )?,
            job_retention: secs(
                "ROOMCAST_JOB_RETENTION_SECS",
                file.server.job_retention_secs,
                DEFAULT_JOB_RETENTION,
            )?,
            janus_hosts: HostList::parse(env("ROOMCAST_JANUS_HOSTS").as_deref()),
            rtmp_hosts: HostList::parse(env("ROOMCAST_RTMP_HOSTS").as_deref()),
            page_origins: env("ROOMCAST_PAGE_ORIGINS")
                .unwrap_or_default()
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            watermark: env("ROOMCAST_WATERMARK")
                .or(file.server.watermark)
                .filter(|w| !w.is_empty()),
            assets_dir: env("ROOMCAST_ASSETS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("assets")),
            data_dir,
            min_free_bytes: match num("ROOMCAST_MIN_FREE_MB", env("ROOMCAST_MIN_FREE_MB"))?
                .or(file.server.min_free_mb.map(|m| m as f64))
            {
                Some(mb) if mb > 1e9 => {
                    return Err(invalid("ROOMCAST_MIN_FREE_MB", "at most 10^9 MiB"))
                }
                Some(mb) => (mb * 1024.0 * 1024.0) as u64,
                None => DEFAULT_MIN_FREE_MB * 1024 * 1024,
            },
        })
    }
}

fn read_file_config() -> Result<FileConfig, Error> {
    match var("ROOMCAST_CONFIG") {
        None => Ok(FileConfig::default()),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("reading {path}"), e))?;
            toml::from_str(&text)
                .map_err(|e| invalid("ROOMCAST_CONFIG", format!("{path}: {}", e.message())))
        }
    }
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
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Receiver URL.
    pub url: Option<String>,
    /// Signing secret.
    pub secret: Option<Secret>,
    /// Retry horizon in seconds.
    pub horizon_secs: Option<u64>,
}

impl DeliveryConfig {
    /// Reads the file named by `ROOMCAST_CONFIG` (if any), then the `ROOMCAST_*` variables,
    /// which win.
    pub fn from_env() -> Result<DeliveryConfig, Error> {
        Self::resolve(read_file_config()?, var)
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
                    .map(Secret::from)
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
        let chunk_every = match env("ROOMCAST_CHUNK_SECS") {
            None => Some(DEFAULT_CHUNK_EVERY),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(s) if s <= 3600 => Some(Duration::from_secs(s)),
                _ => {
                    return Err(invalid(
                        "ROOMCAST_CHUNK_SECS",
                        "a whole number of seconds from 0 (off) to 3600",
                    ))
                }
            },
        };
        Ok(DeliveryConfig {
            data_dir,
            storage,
            webhook,
            backup,
            chunk_every,
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
    pub fn deliverer(
        &self,
        listener: Option<std::sync::Arc<dyn crate::delivery::DeliveryListener>>,
    ) -> Result<Option<Deliverer>, Error> {
        let Some(storage) = self.storage.clone() else {
            return Ok(None);
        };
        Ok(Some(Deliverer {
            spool: self.spool()?,
            storage,
            listener,
            backup: self.backup.clone(),
            chunk_every: self.chunk_every,
        }))
    }
}

impl From<DeliveryError> for Error {
    fn from(e: DeliveryError) -> Self {
        Error::Config {
            setting: "ROOMCAST_STORAGE".into(),
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
