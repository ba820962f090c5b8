//! `wheelhouse run` processes serving one shared directory, as replicas behind a load balancer
//! do. Each is killed when dropped, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

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

impl Replica {
    /// Starts a replica on a free loopback port, open to all (`-P . -a .`) unless `args`
    /// say otherwise, and waits until it answers.
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
            port: free_port(),
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

    fn spawn(&mut self) {
        let child = Command::new(server_binary())
            .arg("run")
            .args(["-i", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--log-stream", "none", "--disable-fallback"])
            .arg("--log-file")
            .arg(&self.log)
            .args(&self.args)
            .arg(&self.packages)
            .env_remove("WHEELHOUSE_USERNAME")
            .env_remove("WHEELHOUSE_PASSWORD")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .expect("start wheelhouse");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(resp) = reqwest::blocking::get(format!("{}/health", self.url())) {
                if resp.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "replica {} did not become healthy; log:\n{}",
            self.name,
            self.log_text()
        );
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
