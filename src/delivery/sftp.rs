//! SFTP storage (russh + russh-sftp): write under a temporary name, then rename into place.
//!
//! `sftp://user@host[:port]/path?fingerprint=SHA256:…` or `?known_hosts=/path/known_hosts`,
//! with `&key=/path/to/private_key` or the password in `ROOMCAST_SFTP_PASSWORD`. The server's host
//! key must match the configured fingerprint or known_hosts entry; without either, roomcast
//! refuses to connect. Files land in `<path>/<room>/<conf>/<file>`.

use super::error::DeliveryError;
use super::spool::SegmentMeta;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::OpenFlags;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest wait to connect and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Environment variable holding the SFTP password.
pub const PASSWORD_ENV: &str = "ROOMCAST_SFTP_PASSWORD";

#[derive(Debug, Clone)]
enum HostKeyCheck {
    Fingerprint(String),
    KnownHosts(PathBuf),
}

/// An SFTP server target.
#[derive(Debug, Clone)]
pub struct SftpTarget {
    user: String,
    host: String,
    port: u16,
    root: String,
    key: Option<PathBuf>,
    host_key: HostKeyCheck,
}

struct Checker {
    check: HostKeyCheck,
    host: String,
    port: u16,
    refused: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) =
                Some("host certificates are not accepted; configure the host key".into());
            return Ok(false);
        };
        let ok = match &self.check {
            HostKeyCheck::Fingerprint(fp) => key.fingerprint(HashAlg::Sha256).to_string() == *fp,
            HostKeyCheck::KnownHosts(path) => {
                russh::keys::check_known_hosts_path(&self.host, self.port, key, path)
                    .unwrap_or(false)
            }
        };
        if !ok {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "host key {} of {}:{} does not match the configured one",
                key.fingerprint(HashAlg::Sha256),
                self.host,
                self.port
            ));
        }
        Ok(ok)
    }
}

impl SftpTarget {
    /// Parses `sftp://user@host[:port]/path?fingerprint=…|known_hosts=…[&key=…]`.
    pub fn parse(url: &str) -> Result<SftpTarget, DeliveryError> {
        let rest = url
            .strip_prefix("sftp://")
            .ok_or_else(|| DeliveryError::config("not an sftp:// URL"))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let (user, hostport) = authority
            .split_once('@')
            .ok_or_else(|| DeliveryError::config("sftp:// needs user@host"))?;
        if user.is_empty() || user.contains(':') {
            return Err(DeliveryError::config(
                "sftp:// takes the user only; put the password in ROOMCAST_SFTP_PASSWORD",
            ));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| DeliveryError::config("sftp:// port is not a number"))?,
            ),
            None => (hostport, 22),
        };
        if host.is_empty() {
            return Err(DeliveryError::config("sftp:// needs a host"));
        }
        let mut key = None;
        let mut host_key = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "fingerprint" => {
                    if !v.starts_with("SHA256:") {
                        return Err(DeliveryError::config(
                            "fingerprint must be an OpenSSH SHA256:… fingerprint",
                        ));
                    }
                    host_key = Some(HostKeyCheck::Fingerprint(v.to_string()))
                }
                "known_hosts" => host_key = Some(HostKeyCheck::KnownHosts(PathBuf::from(v))),
                "key" => key = Some(PathBuf::from(v)),
                other => {
                    return Err(DeliveryError::config(format!(
                        "unknown sftp:// parameter {other:?}"
                    )))
                }
            }
        }
        let host_key = host_key.ok_or_else(|| {
            DeliveryError::config("sftp:// needs fingerprint=SHA256:… or known_hosts=PATH")
        })?;
        Ok(SftpTarget {
            user: user.to_string(),
            host: host.to_string(),
            port,
            root: format!("/{}", path.trim_end_matches('/')),
            key,
            host_key,
        })
    }

    async fn session(&self) -> Result<SftpSession, DeliveryError> {
        let refused = Arc::new(Mutex::new(None));
        let checker = Checker {
            check: self.host_key.clone(),
            host: self.host.clone(),
            port: self.port,
            refused: refused.clone(),
        };
        let config = Arc::new(russh::client::Config::default());
        let connect = async {
            let mut s = russh::client::connect(config, (self.host.as_str(), self.port), checker)
                .await
                .map_err(|e| {
                    let why = refused.lock().unwrap_or_else(|e| e.into_inner()).take();
                    match why {
                        Some(w) => DeliveryError::config(w),
                        None => DeliveryError::retryable(format!("sftp connect: {e}")),
                    }
                })?;
            let auth = match &self.key {
                Some(path) => {
                    let k = russh::keys::load_secret_key(path, None)
                        .map_err(|e| DeliveryError::config(format!("sftp key: {e}")))?;
                    let hash = s.best_supported_rsa_hash().await.ok().flatten().flatten();
                    s.authenticate_publickey(
                        &self.user,
                        PrivateKeyWithHashAlg::new(Arc::new(k), hash),
                    )
                    .await
                }
                None => {
                    let pw = std::env::var(PASSWORD_ENV).map_err(|_| {
                        DeliveryError::config(format!("sftp:// needs key=… or {PASSWORD_ENV}"))
                    })?;
                    s.authenticate_password(&self.user, pw).await
                }
            }
            .map_err(|e| DeliveryError::retryable(format!("sftp auth: {e}")))?;
            if !auth.success() {
                return Err(DeliveryError::config(format!(
                    "sftp: {} was not accepted",
                    self.user
                )));
            }
            let channel = s
                .channel_open_session()
                .await
                .map_err(|e| DeliveryError::retryable(format!("sftp channel: {e}")))?;
            channel
                .request_subsystem(true, "sftp")
                .await
                .map_err(|e| DeliveryError::retryable(format!("sftp subsystem: {e}")))?;
            SftpSession::new(channel.into_stream())
                .await
                .map_err(|e| DeliveryError::retryable(format!("sftp session: {e}")))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| DeliveryError::retryable("sftp connect timed out"))?
    }

    /// The folder and name a file for `meta` is written to.
    fn place(&self, meta: &SegmentMeta) -> (String, String) {
        let safe = super::path_component;
        let dir = format!(
            "{}/{}/{}",
            self.root,
            safe(&meta.room_id),
            safe(&meta.conf_num)
        );
        (dir, safe(&meta.file_name))
    }

    /// The URL a file for `meta` has once delivered.
    pub fn url_for(&self, meta: &SegmentMeta) -> String {
        let (dir, name) = self.place(meta);
        format!(
            "sftp://{}@{}:{}{dir}/{name}",
            self.user, self.host, self.port
        )
    }

    /// Uploads `src`, renames it into place and checks its size; returns its `sftp://` URL.
    pub async fn put(&self, src: &Path, meta: &SegmentMeta) -> Result<String, DeliveryError> {
        let (dir, name) = self.place(meta);
        let (tmp, dest) = (format!("{dir}/.{name}.part"), format!("{dir}/{name}"));
        let sftp = self.session().await?;
        let err = |what: &str, e: russh_sftp::client::error::Error| {
            DeliveryError::retryable(format!("sftp {what}: {e}"))
        };
        // mkdir -p, one component at a time (existing folders are fine).
        let mut cur = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            cur = format!("{cur}/{part}");
            if sftp.try_exists(&cur).await.map_err(|e| err("stat", e))? {
                continue;
            }
            sftp.create_dir(&cur).await.map_err(|e| err("mkdir", e))?;
        }
        let mut file = sftp
            .open_with_flags(
                &tmp,
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
            )
            .await
            .map_err(|e| err("open", e))?;
        let mut f = std::fs::File::open(src)
            .map_err(|e| DeliveryError::retryable(format!("reading {}: {e}", src.display())))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| DeliveryError::retryable(format!("reading: {e}")))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .await
                .map_err(|e| DeliveryError::retryable(format!("sftp write: {e}")))?;
        }
        file.flush()
            .await
            .map_err(|e| DeliveryError::retryable(format!("sftp flush: {e}")))?;
        file.shutdown()
            .await
            .map_err(|e| DeliveryError::retryable(format!("sftp close: {e}")))?;
        if sftp.try_exists(&dest).await.map_err(|e| err("stat", e))? {
            sftp.remove_file(&dest)
                .await
                .map_err(|e| err("replace", e))?;
        }
        sftp.rename(&tmp, &dest)
            .await
            .map_err(|e| err("rename", e))?;
        let size = sftp
            .metadata(&dest)
            .await
            .map_err(|e| err("stat", e))?
            .size
            .unwrap_or(0);
        if size != meta.size {
            return Err(DeliveryError::retryable(format!(
                "sftp {dest} did not verify (size {size} vs {})",
                meta.size
            )));
        }
        let _ = sftp.close().await;
        Ok(format!(
            "sftp://{}@{}:{}{}",
            self.user, self.host, self.port, dest
        ))
    }
}

impl SftpTarget {
    /// The path of `url` (`sftp://user@host:port/path`) when it names this server and account.
    pub fn path_of<'a>(&self, url: &'a str) -> Option<&'a str> {
        let here = format!("sftp://{}@{}:{}", self.user, self.host, self.port);
        url.strip_prefix(here.as_str())
            .filter(|p| p.starts_with('/'))
    }

    /// The size of the file at `path`.
    pub async fn size_of(&self, path: &str) -> Result<u64, DeliveryError> {
        let sftp = self.session().await?;
        let size = sftp
            .metadata(path)
            .await
            .map_err(|e| DeliveryError::retryable(format!("sftp stat: {e}")))?
            .size
            .unwrap_or(0);
        let _ = sftp.close().await;
        Ok(size)
    }

    /// Bytes `first..=last` of the file at `path`.
    pub async fn read_range(
        &self,
        path: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<u8>, DeliveryError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let err =
            |what: &str, e: std::io::Error| DeliveryError::retryable(format!("sftp {what}: {e}"));
        let sftp = self.session().await?;
        let mut file = sftp
            .open(path)
            .await
            .map_err(|e| DeliveryError::retryable(format!("sftp open: {e}")))?;
        file.seek(std::io::SeekFrom::Start(first))
            .await
            .map_err(|e| err("seek", e))?;
        let mut buf = vec![0u8; (last + 1 - first) as usize];
        file.read_exact(&mut buf)
            .await
            .map_err(|e| err("read", e))?;
        let _ = file.shutdown().await;
        let _ = sftp.close().await;
        Ok(buf)
    }
}

/// What [`SftpTarget::each`] does with each file it finds.
enum Each<'a> {
    /// Reads it, handing its content on.
    Read(&'a mut (dyn FnMut(&[u8]) -> Result<(), DeliveryError> + Send)),
    /// Removes it.
    Remove,
}

impl SftpTarget {
    /// Over one session: the contents of the files `nth(1)`, `nth(2)`, … describe, each
    /// given to `sink` in order, until one is not there; returns how many there were.
    pub async fn get_each(
        &self,
        nth: impl Fn(u32) -> SegmentMeta,
        mut sink: impl FnMut(&[u8]) -> Result<(), DeliveryError> + Send,
    ) -> Result<u32, DeliveryError> {
        self.each(nth, Each::Read(&mut sink)).await
    }

    /// Over one session: removes the files `nth(1)`, `nth(2)`, … describe until one is not
    /// there; returns how many it removed.
    pub async fn remove_each(
        &self,
        nth: impl Fn(u32) -> SegmentMeta,
    ) -> Result<u32, DeliveryError> {
        self.each(nth, Each::Remove).await
    }

    async fn each(
        &self,
        nth: impl Fn(u32) -> SegmentMeta,
        mut what: Each<'_>,
    ) -> Result<u32, DeliveryError> {
        let err = |what: &str, e: russh_sftp::client::error::Error| {
            DeliveryError::retryable(format!("sftp {what}: {e}"))
        };
        let sftp = self.session().await?;
        let mut n = 0;
        loop {
            let (dir, name) = self.place(&nth(n + 1));
            let path = format!("{dir}/{name}");
            if !sftp.try_exists(&path).await.map_err(|e| err("stat", e))? {
                break;
            }
            match &mut what {
                Each::Read(sink) => {
                    let data = sftp.read(&path).await.map_err(|e| err("read", e))?;
                    sink(&data)?;
                }
                Each::Remove => sftp
                    .remove_file(&path)
                    .await
                    .map_err(|e| err("remove", e))?,
            }
            n += 1;
        }
        let _ = sftp.close().await;
        Ok(n)
    }

    /// Whether the file `meta` describes is there.
    pub async fn has(&self, meta: &SegmentMeta) -> Result<bool, DeliveryError> {
        let (dir, name) = self.place(meta);
        let sftp = self.session().await?;
        let found = sftp
            .try_exists(&format!("{dir}/{name}"))
            .await
            .map_err(|e| DeliveryError::retryable(format!("sftp stat: {e}")))?;
        let _ = sftp.close().await;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = SftpTarget::parse("sftp://rec@files.example:2222/srv/rec?fingerprint=SHA256:abc")
            .unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port, t.root.as_str()),
            ("rec", "files.example", 2222, "/srv/rec")
        );
        assert!(
            SftpTarget::parse("sftp://rec@h/p").is_err(),
            "host key check is required"
        );
        assert!(SftpTarget::parse("sftp://rec:pw@h/p?fingerprint=SHA256:x").is_err());
        assert!(SftpTarget::parse("sftp://h/p?fingerprint=SHA256:x").is_err());
        assert!(SftpTarget::parse("sftp://u@h/p?fingerprint=MD5:x").is_err());
    }
}
