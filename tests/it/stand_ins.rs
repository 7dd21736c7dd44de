//! Stand-in services on loopback for the tests and `cargo xtask bench` (which includes this
//! file): a docker-registry, and the small network helpers that start and probe them.

use std::process::{Child, Command};

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `GET path` on 127.0.0.1:port over plain HTTP/1.0: (status code, body), or None when
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Waits until `ready` holds, up to `seconds`.
pub fn wait_for(seconds: u64, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// A docker-registry serving from a temporary directory on 127.0.0.1; stopped on drop.
pub struct Registry {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The login of [`Registry::start_authenticated`]; the htpasswd line is its bcrypt hash.
pub const REGISTRY_USER: &str = "tester";
pub const REGISTRY_PASSWORD: &str = "neonctl-test-password";
const REGISTRY_HTPASSWD: &str = "tester:$2b$04$ZOIyQrhY9Inbbsl.FHKDJe7Zry3IDC3iKH/dpS4D75r1PAVBtQeTO";

impl Registry {
    /// A registry anyone may push to.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A registry that wants [`REGISTRY_USER`] / [`REGISTRY_PASSWORD`] (basic auth, over http).
    pub fn start_authenticated() -> Self {
        Self::start_with(true)
    }

    fn start_with(authenticated: bool) -> Self {
        let program = std::env::var("NEONCTL_TEST_DOCKER_REGISTRY").unwrap_or_else(|_| "/usr/bin/docker-registry".into());
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if authenticated {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{REGISTRY_HTPASSWD}\n")).unwrap();
            text.push_str(&format!("auth:\n  htpasswd:\n    realm: neonctl-test\n    path: {}\n", htpasswd.display()));
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new(&program)
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let registry = Self { port, child, _dir: dir };
        let expected = if authenticated { 401 } else { 200 };
        assert!(wait_for(20, || http_get(port, "/v2/").is_some_and(|(status, _)| status == expected)), "the registry answers /v2/");
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
