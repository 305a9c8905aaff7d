//! Real processes for black-box tests: `tokengate serve`, nginx and Caddy,
//! each with a config written by the test into its own temporary directory,
//! on loopback ports, stopped when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("tokengate-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}:\n{}",
                read(log)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{what} is not listening on {port} after 15 s:\n{}",
        read(log)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `tokengate serve --config {config}` with only `env` in its environment.
fn serve_command(config: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

/// `tokengate serve` as a child process.
pub struct Tokengate {
    child: Child,
    dir: TempDir,
}

impl Tokengate {
    /// Writes `config`, starts `tokengate serve --config …` with `env` (and
    /// nothing else from the environment) and waits for every port in `ports`.
    pub fn start(config: &str, env: &[(&str, &str)], ports: &[u16]) -> Self {
        let dir = TempDir::new("serve");
        let config_path = dir.write("tokengate.toml", config);
        let log = dir.path().join("tokengate.log");
        let mut child = serve_command(&config_path, env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tokengate");
        for port in ports {
            wait_for_port(*port, &mut child, "tokengate", &log);
        }
        Self { child, dir }
    }

    /// Runs `tokengate serve` with `config` expecting it to stop by itself
    /// (a start-up error), within 10 s.
    pub fn run_expecting_exit(config: &str, env: &[(&str, &str)]) -> Output {
        let dir = TempDir::new("serve-fail");
        let config_path = dir.write("tokengate.toml", config);
        let mut child = serve_command(&config_path, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tokengate");
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tokengate serve did not stop by itself");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("tokengate.log"))
    }

    /// The log once it holds `text`, or after 5 s: a line written while
    /// the server starts may follow the moment its ports accept.
    pub async fn log_once(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(text) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.log()
    }

    /// Sends `signal` (`"HUP"`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits (up to 20 s) for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit 20 s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// How many file descriptors it has open (sockets, files, its
    /// runtimes' own), from `/proc/{pid}/fd`.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Peak resident memory so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Tokengate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real nginx (Debian's), master process off, in its own prefix.
pub struct Nginx {
    child: Child,
    _dir: TempDir,
}

impl Nginx {
    /// Starts nginx with `http_block` as the body of its `http { … }` block,
    /// waiting for `port`. Fails (does not skip) when nginx is missing.
    pub fn start(http_block: &str, port: u16) -> Self {
        let dir = TempDir::new("nginx");
        let prefix = dir.path().display().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n\
             error_log {prefix}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n\
             fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n\
             {http_block}\n}}\n"
        );
        let conf_path = dir.write("nginx.conf", &conf);
        let log = dir.path().join("error.log");
        let mut child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nginx ({e}): install it (apt-get install -y nginx)")
            });
        wait_for_port(port, &mut child, "nginx", &log);
        Self { child, _dir: dir }
    }
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Caddy (Debian's), with its admin endpoint off and no automatic
/// HTTPS, storing its state in its own directory.
pub struct Caddy {
    child: Child,
    _dir: TempDir,
}

impl Caddy {
    /// Starts Caddy with `sites` after a global block that turns off what a
    /// test does not want, waiting for `port`.
    pub fn start(sites: &str, port: u16) -> Self {
        let dir = TempDir::new("caddy");
        let caddyfile = format!("{{\n  admin off\n  auto_https off\n}}\n{sites}\n");
        let path = dir.write("Caddyfile", &caddyfile);
        let log = dir.path().join("caddy.log");
        let mut child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run caddy ({e}): install it (apt-get install -y caddy)")
            });
        wait_for_port(port, &mut child, "caddy", &log);
        Self { child, _dir: dir }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin key of [`Replica`]s.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// One `tokengate serve` replica on a shared Redis: a proxy in front of an
/// upstream, and an admin API that takes [`ADMIN_KEY`].
pub struct Replica {
    pub tokengate: Tokengate,
    pub proxy: u16,
    pub admin: u16,
}

impl Replica {
    /// On `redis_url` (any form), proxying to `upstream`; `extra` ends the
    /// config.
    pub fn start(redis_url: &str, upstream: &str, extra: &str) -> Self {
        let (proxy, admin) = (super::free_port(), super::free_port());
        let config = format!(
            "[redis]\nurl = \"{redis_url}\"\n[security]\nbcrypt_cost = 4\n\
             [proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"{upstream}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n{extra}\n"
        );
        let tokengate = Tokengate::start(
            &config,
            &[("TOKENGATE_ADMIN_KEY", ADMIN_KEY)],
            &[proxy, admin],
        );
        Self {
            tokengate,
            proxy,
            admin,
        }
    }

    /// `POST /v1/accounts/acme/tokens` with `body`, through the admin API.
    pub async fn create(&self, body: &str) -> super::HttpReply {
        super::http(
            "POST",
            &format!("http://127.0.0.1:{}/v1/accounts/acme/tokens", self.admin),
            &[
                ("authorization", &format!("Bearer {ADMIN_KEY}")),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// `GET /orders` through the proxy, bearing `token`.
    pub async fn get(&self, token: &str) -> super::HttpReply {
        super::http(
            "GET",
            &format!("http://127.0.0.1:{}/orders", self.proxy),
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await
    }
}
