//! An nginx-rtmp server that records what it receives.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An nginx-rtmp server on a loopback port that records every stream as FLV.
pub struct NginxRtmp {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl NginxRtmp {
    pub fn start(dir: &Path) -> NginxRtmp {
        let port = free_port();
        std::fs::create_dir_all(dir.join("rec")).expect("rec dir");
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             daemon off;\nmaster_process off;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{\n\
               live on; record all; record_path {d}/rec; record_unique on; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        let mut n = NginxRtmp {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        n.restart();
        n
    }

    /// (Re)starts the server on the same port and folder; returns once it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (apt package nginx + libnginx-mod-rtmp)");
        self.child = Some(child);
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed().as_secs() < 10,
                "nginx did not start on {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGKILL: the server vanishes mid-stream.
    pub fn kill(&mut self) {
        stop_child(&mut self.child);
    }

    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.port)
    }

    /// Recorded FLV files, oldest first.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut v: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(self.dir.join("rec"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "flv"))
                    .map(|e| {
                        (
                            e.metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH),
                            e.path(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        self.kill();
    }
}
