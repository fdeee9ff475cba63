//! A redis-server for the Redis queue store.

use super::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// A redis-server on a free loopback port in `dir`: without persistence, or with an
/// append-only file synced on every write (survives a kill and a restart).
pub struct Redis {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: std::path::PathBuf,
    persistent: bool,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        Self::spawn(dir, free_port(), false)
    }

    /// With an append-only file (`appendfsync always`).
    pub fn start_persistent(dir: &Path) -> Redis {
        Self::spawn(dir, free_port(), true)
    }

    fn spawn(dir: &Path, port: u16, persistent: bool) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--dir".into(),
            dir.to_string_lossy().to_string(),
        ];
        if persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        let child = Command::new("/usr/bin/redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt package redis-server)");
        let up = wait_for(10.0, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        assert!(up.is_some(), "redis-server did not start");
        Redis {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            persistent,
        }
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        stop_child(&mut self.child);
    }

    /// Starts it again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::spawn(&self.dir.clone(), self.port, self.persistent);
        *self = again;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
