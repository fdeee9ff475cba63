//! A redis-server for the Redis queue store.

use super::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// A redis-server on a free loopback port, no persistence, in `dir`.
pub struct Redis {
    child: Option<std::process::Child>,
    pub port: u16,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("/usr/bin/redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.to_string_lossy(),
            ])
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
        }
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
