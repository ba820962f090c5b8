//! `wheelhouse run` processes, the one server-process type of every test: serving one shared
//! directory, as replicas behind a load balancer do, or a directory of their own. Each binds
//! port 0 and is found at the address it announces in its log (no port picked in advance that
//! another process could take first), and is killed when dropped, pass or fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Replica {
    pub name: String,
    child: Option<Child>,
    port: u16,
    packages: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The server binary: Cargo's for this package's tests; for other workspace crates the one
/// `cargo test --workspace` (or `cargo build`) left in the target directory.
pub fn server_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_wheelhouse") {
        Some(path) => PathBuf::from(path),
        None => workspace_binary("wheelhouse"),
    }
}

/// A binary of the `wheelhouse` package, as built into this workspace's target directory.
pub fn workspace_binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../debug")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// The address of the first whole "listening on" line of a server's log: only once the line
/// is written to its end, not a port cut short mid-write.
pub fn announced_address(log: &str) -> Option<SocketAddr> {
    let rest = log.split("listening on http://").nth(1)?;
    let (line, _) = rest.split_once('\n')?;
    line.split_whitespace().next()?.parse().ok()
}

impl Replica {
    /// Starts a replica on a loopback port of its choosing, open to all (`-P . -a .`) unless
    /// `args` say otherwise, with no fallback to PyPI, and waits until it answers.
    pub fn start(name: &str, packages: &Path, logs: &Path, args: &[&str]) -> Self {
        Self::start_with_env(name, packages, logs, args, &[])
    }

    /// As [`Replica::start`], with environment variables (credentials, as ECS injects them).
    pub fn start_with_env(
        name: &str,
        packages: &Path,
        logs: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut replica = Self {
            name: name.to_owned(),
            child: None,
            port: 0,
            packages: packages.to_owned(),
            log: logs.join(format!("{name}.log")),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        replica.spawn();
        replica
    }

    /// Starts the process (on its last port, or on one it picks the first time) and waits
    /// until it has announced its address and answers its health check. A process that exits
    /// meanwhile fails the test at once, with its log; one that found its old port taken by
    /// someone else (another process may bind it between a stop and a start) is tried again.
    fn spawn(&mut self) {
        for attempt in 1.. {
            let log_from = std::fs::metadata(&self.log).map_or(0, |meta| meta.len());
            // Its stderr (where a failure to start is said) goes to the log too.
            let stderr = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("open the replica's log");
            let mut command = Command::new(server_binary());
            let child = super::without_env_users(&mut command)
                .arg("run")
                .args(["-i", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["--log-stream", "none", "--disable-fallback"])
                .arg("--log-file")
                .arg(&self.log)
                .args(&self.args)
                .arg(&self.packages)
                // The log level is the arguments' (-v), not the developer's shell's: the
                // address is announced at info.
                .env_remove("RUST_LOG")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("start wheelhouse");
            self.child = Some(child);
            match self.wait_for("announce its address", |replica| {
                replica.announced_port(log_from)
            }) {
                Ok(port) => self.port = port,
                Err(status) if attempt < 5 && self.log_since(log_from).contains("in use") => {
                    eprintln!(
                        "replica {}: port {} taken ({status}); again",
                        self.name, self.port
                    );
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Err(status) => panic!(
                    "replica {} exited ({status}) before it could announce its address; log:\n{}",
                    self.name,
                    self.log_text()
                ),
            }
            let health = format!("{}{}", self.url(), self.health_path());
            if let Err(status) = self.wait_for("answer its health check", |_| {
                reqwest::blocking::get(&health)
                    .is_ok_and(|resp| resp.status().is_success())
                    .then_some(())
            }) {
                panic!(
                    "replica {} exited ({status}) before it answered its health check; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            return;
        }
    }

    /// Polls `probe` for up to 15 s while the process lives; the exit status if it does not.
    fn wait_for<T>(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T, ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = probe(self) {
                return Ok(found);
            }
            if let Some(status) = self.try_wait() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not {what} within 15 s; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the log has gained since `from`.
    fn log_since(&self, from: u64) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[from..]).into_owned()
    }

    /// The port of the first whole "listening on" line the log has gained since `from`.
    fn announced_port(&self, from: u64) -> Option<u16> {
        announced_address(&self.log_since(from)).map(|address| address.port())
    }

    /// `--health-endpoint` of the arguments (`--health-endpoint P` or `--health-endpoint=P`),
    /// or the default.
    fn health_path(&self) -> &str {
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == "--health-endpoint" {
                return args.next().map_or("/health", String::as_str);
            }
            if let Some(path) = arg.strip_prefix("--health-endpoint=") {
                return path;
            }
        }
        "/health"
    }

    /// The exit status, once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Peak resident memory of the process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no handler runs, no temp file is cleaned up.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same arguments.
    pub fn restart(&mut self) {
        self.kill_hard();
        self.spawn();
    }

    /// SIGTERM, then waits for the exit: requests in flight are finished first.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain syscall on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    /// Starts a stopped replica again.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
