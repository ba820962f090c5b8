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
}

impl Replica {
    /// Starts a replica on a free loopback port, open to all (`-P . -a .`) unless `args`
    /// say otherwise, and waits until it answers.
    pub fn start(name: &str, packages: &Path, logs: &Path, args: &[&str]) -> Self {
        let mut replica = Self {
            name: name.to_owned(),
            child: None,
            port: free_port(),
            packages: packages.to_owned(),
            log: logs.join(format!("{name}.log")),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        replica.spawn();
        replica
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_wheelhouse"))
            .arg("run")
            .args(["-i", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--log-stream", "none", "--disable-fallback"])
            .arg("--log-file")
            .arg(&self.log)
            .args(&self.args)
            .arg(&self.packages)
            .env_remove("WHEELHOUSE_USERNAME")
            .env_remove("WHEELHOUSE_PASSWORD")
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
