//! An OpenSSH server for SFTP delivery.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An OpenSSH server on a loopback port with a generated host key and a client key authorised
/// for the current user.
pub struct Sshd {
    pub port: u16,
    pub dir: PathBuf,
    pub fingerprint: String,
    pub client_key: PathBuf,
    pub user: String,
    child: Option<std::process::Child>,
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        let keygen = |args: &[&str]| {
            let st = Command::new("ssh-keygen")
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen {args:?}");
        };
        let (host, client) = (dir.join("hostkey"), dir.join("client"));
        keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            host.to_str().unwrap(),
        ]);
        keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            client.to_str().unwrap(),
        ]);
        std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(dir.join("hostkey.pub"))
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        let port = free_port();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), conf).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd (apt package openssh-server)");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed().as_secs() < 10, "sshd did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().unwrap().stdout)
            .trim()
            .to_string();
        Sshd {
            port,
            dir: dir.to_path_buf(),
            fingerprint,
            client_key: client,
            user,
            child: Some(child),
        }
    }

    pub fn url(&self, path: &Path, fingerprint: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}?fingerprint={}&key={}",
            self.user,
            self.port,
            path.display(),
            fingerprint,
            self.client_key.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
