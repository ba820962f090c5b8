//! Three `wheelhouse` replicas sharing one package store, as processes or as containers, and
//! LocalStack beside them. Whatever is started here is stopped when dropped, pass or fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testcontainers_modules::localstack::LocalStack as LocalStackImage;
use testcontainers_modules::testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, GenericImage, ImageExt};

use crate::common::replica::Replica;
use crate::common::text;
use crate::localstack::LocalStack;

/// The tag the LocalStack image is built under (by `integration/localstack-image/build`) and
/// that testcontainers-modules then finds locally.
pub(crate) const LOCALSTACK_TAG: &str = "4.13.1";
/// The server image the suite builds with `image/build`.
pub(crate) const SERVER_IMAGE: (&str, &str) = ("wheelhouse", "integration");
/// What the template passes to the server (see `wheelhouse-deploy template`), minus the port
/// and directory that each mode sets.
pub(crate) const SERVER_ARGS: &[&str] = &["--backend", "auto", "-a", "download,list,update"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Containers,
    Processes,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Containers => "containers",
            Mode::Processes => "processes",
        }
    }
}

/// LocalStack, whichever way it runs.
pub(crate) enum Aws {
    Process(LocalStack),
    Container(Box<Container<LocalStackImage>>),
}

impl Aws {
    pub(crate) fn start(mode: Mode) -> Self {
        match mode {
            Mode::Processes => Aws::Process(LocalStack::start()),
            Mode::Containers => {
                run_script(&repo().join("integration/localstack-image/build"), &[]);
                let container = LocalStackImage::default()
                    .with_tag(LOCALSTACK_TAG)
                    .start()
                    .expect("start the LocalStack container");
                Aws::Container(Box::new(container))
            }
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        match self {
            Aws::Process(localstack) => localstack.endpoint.clone(),
            Aws::Container(container) => {
                let port = container
                    .get_host_port_ipv4(4566)
                    .expect("LocalStack's mapped port");
                format!("http://127.0.0.1:{port}")
            }
        }
    }
}

/// The replicas, addressed by index.
pub(crate) trait Cluster: Send + Sync {
    fn url(&self, replica: usize) -> String;
    /// SIGKILL: nothing gets to clean up.
    fn kill(&mut self, replica: usize);
    /// SIGTERM and wait: requests in flight finish first.
    fn stop(&mut self, replica: usize);
    /// Starts a killed or stopped replica and waits until it answers.
    fn start(&mut self, replica: usize);
    /// What the replica has logged (the access log among it).
    fn log(&self, replica: usize) -> String;
}

pub(crate) fn start_cluster(
    mode: Mode,
    credentials: &(String, String),
    work: &Path,
) -> Box<dyn Cluster> {
    match mode {
        Mode::Processes => Box::new(Processes::start(credentials, work)),
        Mode::Containers => Box::new(Containers::start(credentials)),
    }
}

struct Processes {
    replicas: Vec<Replica>,
}

impl Processes {
    fn start((user, password): &(String, String), work: &Path) -> Self {
        let packages = work.join("shared-packages");
        std::fs::create_dir_all(&packages).unwrap();
        let env = [
            ("WHEELHOUSE_USERNAME", user.as_str()),
            ("WHEELHOUSE_PASSWORD", password.as_str()),
        ];
        let replicas = ["a", "b", "c"]
            .iter()
            .map(|name| Replica::start_with_env(name, &packages, work, SERVER_ARGS, &env))
            .collect();
        Self { replicas }
    }
}

impl Cluster for Processes {
    fn url(&self, replica: usize) -> String {
        self.replicas[replica].url()
    }
    fn kill(&mut self, replica: usize) {
        self.replicas[replica].kill_hard();
    }
    fn stop(&mut self, replica: usize) {
        self.replicas[replica].stop_gracefully();
    }
    fn start(&mut self, replica: usize) {
        self.replicas[replica].start_again();
    }
    fn log(&self, replica: usize) -> String {
        self.replicas[replica].log_text()
    }
}

struct Containers {
    containers: Vec<Container<GenericImage>>,
    volume: String,
}

impl Containers {
    fn start((user, password): &(String, String)) -> Self {
        build_server_image();
        let volume = format!("wheelhouse-integration-{}", std::process::id());
        let containers = (0..3)
            .map(|_| {
                let mut cmd: Vec<String> = SERVER_ARGS.iter().map(|a| (*a).to_owned()).collect();
                cmd.extend(["--disable-fallback", "/data/packages"].map(String::from));
                GenericImage::new(SERVER_IMAGE.0, SERVER_IMAGE.1)
                    .with_exposed_port(8080.tcp())
                    .with_wait_for(WaitFor::Nothing)
                    .with_cmd(cmd)
                    .with_env_var("WHEELHOUSE_USERNAME", user)
                    .with_env_var("WHEELHOUSE_PASSWORD", password)
                    .with_mount(Mount::volume_mount(&volume, "/data/packages"))
                    .start()
                    .expect("start a wheelhouse container")
            })
            .collect();
        let cluster = Self { containers, volume };
        for replica in 0..3 {
            cluster.wait_healthy(replica);
        }
        cluster
    }

    fn id(&self, replica: usize) -> &str {
        self.containers[replica].id()
    }

    fn wait_healthy(&self, replica: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // The host port can change when a container is started again: ask each time.
            if let Ok(port) = self.containers[replica].get_host_port_ipv4(8080) {
                let health = format!("http://127.0.0.1:{port}/health");
                if reqwest::blocking::get(&health).is_ok_and(|r| r.status().is_success()) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "container {} did not become healthy\n{}",
            self.id(replica),
            self.log(replica)
        );
    }
}

impl Cluster for Containers {
    fn url(&self, replica: usize) -> String {
        let port = self.containers[replica]
            .get_host_port_ipv4(8080)
            .expect("the replica's mapped port");
        format!("http://127.0.0.1:{port}")
    }
    fn kill(&mut self, replica: usize) {
        docker(&["kill", "--signal", "KILL", self.id(replica)]);
    }
    fn stop(&mut self, replica: usize) {
        docker(&["stop", "--time", "30", self.id(replica)]);
    }
    fn start(&mut self, replica: usize) {
        docker(&["start", self.id(replica)]);
        self.wait_healthy(replica);
    }
    fn log(&self, replica: usize) -> String {
        let output = Command::new("docker")
            .args(["logs", self.id(replica)])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        // The containers are removed by their own Drop; the volume must outlive them.
        for container in self.containers.drain(..) {
            let _ = container.rm();
        }
        let _ = Command::new("docker")
            .args(["volume", "rm", "--force", &self.volume])
            .output();
    }
}

/// Builds (or brings up to date: the build is incremental) the server image.
pub(crate) fn build_server_image() {
    run_script(
        &repo().join("image/build"),
        &[&format!("{}:{}", SERVER_IMAGE.0, SERVER_IMAGE.1)],
    );
}

fn docker(args: &[&str]) {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}\n{}",
        text(&output)
    );
}

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the integration crate sits in the repository")
        .to_owned()
}

fn run_script(script: &Path, args: &[&str]) {
    let output = Command::new(script)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|err| panic!("{}: {err}", script.display()));
    assert!(
        output.status.success(),
        "{} failed\n{}",
        script.display(),
        text(&output)
    );
    eprintln!("{}", String::from_utf8_lossy(&output.stdout).trim_end());
}
