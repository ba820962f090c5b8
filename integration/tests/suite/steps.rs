//! The scenario, one function per step, each asserting what a user would check.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;

use crate::cluster::{start_cluster, Aws, Cluster, Mode};
use crate::common::python::{build_project, run_ok, tool, uv, venv, Dists};
use crate::common::replica::workspace_binary;
use crate::common::{
    assert_metadata_only, json_body, multipart, sha256_hex, sha256_links, text, upload_fields,
    upload_wheel, wheel, wheel_filename, SIMPLE_JSON,
};
use crate::localstack;

type Step = fn(&mut Scenario);

pub(crate) const STEPS: &[(&str, Step)] = &[
    ("deploy_up_and_read_the_credentials", deploy_up),
    ("replicas_start_with_the_stack_credentials", start_replicas),
    ("verify_proves_every_replica_serves", verify_replicas),
    (
        "upload_then_install_from_every_replica",
        upload_then_install,
    ),
    (
        "refused_without_or_with_wrong_credentials",
        refused_without_credentials,
    ),
    (
        "one_filename_uploaded_through_all_three",
        concurrent_uploads,
    ),
    ("replica_killed_mid_upload", replica_killed_mid_upload),
    ("removal_seen_by_all_at_once", removal_seen_by_all),
    ("rolling_restart_under_installs", rolling_restart),
    ("deploy_destroy", deploy_destroy),
];

const PROJECT: &str = "wh-demo";

/// What the steps share.
pub(crate) struct Scenario {
    mode: Mode,
    work: tempfile::TempDir,
    aws: Option<Aws>,
    settings: Option<PathBuf>,
    credentials: Option<(String, String)>,
    cluster: Option<Box<dyn Cluster>>,
    /// Every file the store should hold: filename -> sha256.
    stored: BTreeMap<String, String>,
    client: Client,
}

impl Scenario {
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            mode,
            work: tempfile::tempdir().expect("a work directory"),
            aws: None,
            settings: None,
            credentials: None,
            cluster: None,
            stored: BTreeMap::new(),
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(300))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Stops the replicas, then LocalStack.
    pub(crate) fn shut_down(&mut self) {
        self.cluster = None;
        self.aws = None;
    }

    fn stack(&self) -> String {
        format!("wheelhouse-it-{}", self.mode.name())
    }

    fn aws(&self) -> &Aws {
        self.aws
            .as_ref()
            .expect("step 1 did not bring LocalStack up")
    }

    fn credentials(&self) -> &(String, String) {
        self.credentials
            .as_ref()
            .expect("step 1 did not read the credentials")
    }

    fn cluster(&self) -> &dyn Cluster {
        self.cluster
            .as_deref()
            .expect("step 2 did not start the replicas")
    }

    fn cluster_mut(&mut self) -> &mut Box<dyn Cluster> {
        self.cluster
            .as_mut()
            .expect("step 2 did not start the replicas")
    }

    /// The replica's index URL with the credentials in it, as pip and uv take them.
    fn index_url(&self, replica: usize) -> String {
        let (user, password) = self.credentials();
        let url = self.cluster().url(replica);
        format!(
            "http://{user}:{password}@{}/simple/",
            url.trim_start_matches("http://")
        )
    }

    fn get(&self, replica: usize, path: &str) -> reqwest::blocking::RequestBuilder {
        let (user, password) = self.credentials();
        self.client
            .get(format!("{}{path}", self.cluster().url(replica)))
            .basic_auth(user, Some(password))
    }

    fn deploy(&self, args: &[&str]) -> Output {
        localstack::deploy_command(
            &workspace_binary("wheelhouse-deploy"),
            &self.stack(),
            &self.aws().endpoint(),
            self.settings.as_ref().expect("settings written in step 1"),
            args,
        )
        .output()
        .expect("run wheelhouse-deploy")
    }

    fn deploy_ok(&self, args: &[&str]) -> String {
        let output = self.deploy(args);
        assert!(
            output.status.success(),
            "wheelhouse-deploy {args:?}\n{}",
            text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// filename -> sha256 as the replica's JSON page lists them (empty for a 404).
    fn json_listing(&self, replica: usize) -> BTreeMap<String, String> {
        json_listing(
            &self.client,
            &self.cluster().url(replica),
            self.credentials(),
        )
    }

    /// filename -> sha256 from the `#sha256=` fragments of the replica's HTML page.
    fn html_listing(&self, replica: usize) -> BTreeMap<String, String> {
        let resp = self
            .get(replica, &format!("/simple/{PROJECT}/"))
            .send()
            .expect("GET the project page");
        if resp.status() == StatusCode::NOT_FOUND {
            return BTreeMap::new();
        }
        sha256_links(&resp.text().expect("the page"))
    }

    fn download(&self, replica: usize, filename: &str) -> Option<Vec<u8>> {
        download(
            &self.client,
            &self.cluster().url(replica),
            self.credentials(),
            filename,
        )
    }

    /// Every replica lists exactly what the store should hold, in JSON and HTML, and serves it.
    fn assert_all_replicas_agree(&self) {
        for replica in 0..3 {
            assert_eq!(
                self.json_listing(replica),
                self.stored,
                "replica {replica}: JSON page"
            );
            assert_eq!(
                self.html_listing(replica),
                self.stored,
                "replica {replica}: HTML page"
            );
        }
    }

    fn upload(&self, replica: usize, version: &str, bytes: &[u8]) -> StatusCode {
        let (user, password) = self.credentials();
        upload_wheel(
            &self.client,
            &self.cluster().url(replica),
            Some((user, password)),
            (PROJECT, version),
            bytes,
        )
    }
}

fn json_listing(
    client: &Client,
    url: &str,
    (user, password): &(String, String),
) -> BTreeMap<String, String> {
    let resp = client
        .get(format!("{url}/simple/{PROJECT}/"))
        .basic_auth(user, Some(password))
        .header("Accept", SIMPLE_JSON)
        .send()
        .expect("GET the project page");
    if resp.status() == StatusCode::NOT_FOUND {
        return BTreeMap::new();
    }
    assert_eq!(resp.status(), StatusCode::OK);
    json_body(resp)["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().unwrap().to_owned(),
                f["hashes"]["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn download(
    client: &Client,
    url: &str,
    (user, password): &(String, String),
    filename: &str,
) -> Option<Vec<u8>> {
    let resp = client
        .get(format!("{url}/packages/{filename}"))
        .basic_auth(user, Some(password))
        .send()
        .expect("GET a file");
    (resp.status() == StatusCode::OK).then(|| resp.bytes().expect("the file").to_vec())
}

fn deploy_up(s: &mut Scenario) {
    s.aws = Some(Aws::start(s.mode));
    let network = localstack::Aws(s.aws().endpoint()).create_network();
    let settings = s.work.path().join("wheelhouse.toml");
    std::fs::write(&settings, network.settings()).unwrap();
    s.settings = Some(settings);

    let up = console::strip_ansi_codes(&s.deploy_ok(&["up", "--yes"])).into_owned();
    assert!(
        up.contains(&format!("Stack {}: CREATE_COMPLETE", s.stack())),
        "{up}"
    );
    let outputs: serde_json::Value =
        serde_json::from_str(&s.deploy_ok(&["outputs", "--json"])).expect("outputs as JSON");
    let arn = outputs["CredentialsSecretArn"]
        .as_str()
        .unwrap_or_else(|| panic!("no CredentialsSecretArn in {outputs}"));
    let secret = localstack::Aws(s.aws().endpoint()).secret_value(arn);
    let user = secret["username"].as_str().expect("username").to_owned();
    let password = secret["password"].as_str().expect("password").to_owned();
    assert!(
        !user.is_empty() && password.len() >= 16,
        "weak credentials: {secret}"
    );
    s.credentials = Some((user, password));
}

fn start_replicas(s: &mut Scenario) {
    let credentials = s.credentials().clone();
    s.cluster = Some(start_cluster(s.mode, &credentials, s.work.path()));
    for replica in 0..3 {
        let open = s
            .client
            .get(format!("{}/simple/", s.cluster().url(replica)))
            .send()
            .unwrap();
        assert_eq!(open.status(), StatusCode::UNAUTHORIZED, "replica {replica}");
        let listed = s.get(replica, "/simple/").send().unwrap();
        assert_eq!(listed.status(), StatusCode::OK, "replica {replica}");
    }
}

/// `wheelhouse-deploy verify` with the stack's credentials from LocalStack, the replicas as the
/// tasks: everything a client sees passes, on every replica, and the probe leaves no trace.
fn verify_replicas(s: &mut Scenario) {
    let urls: Vec<String> = (0..3).map(|r| s.cluster().url(r)).collect();
    let mut args = vec!["verify", "--url", urls[0].as_str()];
    for url in &urls {
        args.extend(["--target", url.as_str()]);
    }
    let output = s.deploy(&args);
    let report = console::strip_ansi_codes(&String::from_utf8_lossy(&output.stdout)).into_owned();
    let passed = |check: &str| {
        report
            .lines()
            .any(|line| line.starts_with("ok  ") && line[4..].trim_start().starts_with(check))
    };
    for check in [
        "/simple/ without credentials is 401",
        "probe upload",
        "probe listed",
        "probe .metadata (PEP 658)",
        "probe removed",
    ] {
        assert!(passed(check), "{check} did not pass:\n{}", text(&output));
    }
    for url in &urls {
        assert!(
            passed(&format!("download from {url}/ (")),
            "no download from {url}:\n{}",
            text(&output)
        );
    }
    // LocalStack does not emulate ECS, ELBv2, EFS or AWS Backup (wiremock stands in for them in
    // tests/deploy_verify.rs): only their rows may fail here, and they make the exit code 1.
    let failed: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
    for line in &failed {
        assert!(
            [
                "ECS tasks running",
                "load balancer targets healthy",
                "EFS mount targets available",
                "backup plan",
            ]
            .iter()
            .any(|check| line[4..].trim_start().starts_with(check)),
            "{line}:\n{}",
            text(&output)
        );
    }
    assert!(passed("alarms not in ALARM"), "{}", text(&output));
    assert_eq!(
        output.status.success(),
        failed.is_empty(),
        "{}",
        text(&output)
    );
    for replica in 0..3 {
        assert!(
            !s.json_listing(replica)
                .keys()
                .any(|f| f.contains("verify_probe")),
            "the probe is still listed by replica {replica}"
        );
    }
}

fn upload_then_install(s: &mut Scenario) {
    let dists_dir = s.work.path().join("dists");
    let old = build_project(&dists_dir, "1.0", None);
    let new = build_project(&dists_dir, "2.0", Some(">=3.8"));
    let (user, password) = s.credentials().clone();
    let files: Vec<&Path> = [&old, &new]
        .iter()
        .flat_map(|d: &&Dists| [d.wheel.as_path(), d.sdist.as_path()])
        .collect();
    run_ok(
        tool("twine")
            .args(["upload", "--non-interactive", "--disable-progress-bar"])
            .args(["--repository-url", &format!("{}/", s.cluster().url(0))])
            .args(["-u", &user, "-p", &password])
            .args(&files),
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        s.stored.insert(name, sha256_hex(&bytes));
    }

    // uv resolves from replica C through PEP 658 metadata, never fetching the 2.0 wheel.
    let requirements = s.work.path().join("requirements.in");
    std::fs::write(&requirements, "wh-demo\n").unwrap();
    let compiled = run_ok(
        uv(s.work.path())
            .args(["pip", "compile", "--python-version", "3.11", "--no-header"])
            .args(["--index-url", &s.index_url(2)])
            .arg(&requirements),
    );
    assert!(
        String::from_utf8_lossy(&compiled.stdout).contains("wh-demo==2.0"),
        "{}",
        text(&compiled)
    );
    assert_metadata_only(&s.cluster().log(2), "wh_demo-2.0-py3-none-any.whl");

    // Right after the upload through A: pip and uv from B, then from C without caches.
    let installs = [
        (1, "pip", "2.0", false),
        (1, "uv", "2.0", false),
        (2, "pip", "1.0", true),
        (2, "uv", "1.0", true),
    ];
    for (n, (replica, client, version, no_cache)) in installs.into_iter().enumerate() {
        let target = s.work.path().join(format!("install-{n}"));
        install(s, replica, client, version, no_cache, &target);
        let module = std::fs::read_to_string(target.join("wh_demo/__init__.py")).unwrap();
        assert_eq!(module, format!("VERSION = {version:?}\n"));
    }
    s.assert_all_replicas_agree();
    let page = json_body(
        s.get(1, &format!("/simple/{PROJECT}/"))
            .header("Accept", SIMPLE_JSON)
            .send()
            .unwrap(),
    );
    for file in page["files"].as_array().unwrap() {
        let expected = if file["filename"].as_str().unwrap().contains("-2.0") {
            serde_json::json!(">=3.8")
        } else {
            serde_json::Value::Null
        };
        assert_eq!(file["requires-python"], expected, "{file}");
    }
}

fn install(
    s: &Scenario,
    replica: usize,
    client: &str,
    version: &str,
    no_cache: bool,
    target: &Path,
) {
    let requirement = format!("{PROJECT}=={version}");
    let index = s.index_url(replica);
    let mut cmd = if client == "pip" {
        let mut cmd = tool("pip");
        cmd.args(["install", "--no-deps", "--target"]).arg(target);
        if no_cache {
            cmd.arg("--no-cache-dir");
        }
        cmd
    } else {
        let mut cmd = uv(s.work.path());
        cmd.args(["pip", "install", "--python"])
            .arg(venv().join("bin/python"))
            .arg("--target")
            .arg(target);
        if no_cache {
            cmd.arg("--no-cache");
        }
        cmd
    };
    run_ok(cmd.args(["--index-url", &index, &requirement]));
}

fn refused_without_credentials(s: &mut Scenario) {
    let file = "/packages/wh_demo-1.0-py3-none-any.whl";
    for replica in 0..3 {
        let url = s.cluster().url(replica);
        for path in ["/simple/", "/simple/wh-demo/", file] {
            let anonymous = s.client.get(format!("{url}{path}")).send().unwrap();
            assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{url}{path}");
            let wrong = s
                .client
                .get(format!("{url}{path}"))
                .basic_auth(&s.credentials().0, Some("not-the-password"))
                .send()
                .unwrap();
            assert_eq!(wrong.status(), StatusCode::FORBIDDEN, "{url}{path}");
        }
        let bytes = wheel(PROJECT, "9.9", None);
        let (content_type, body) = multipart(
            &upload_fields(PROJECT, "9.9", &sha256_hex(&bytes)),
            Some((&wheel_filename(PROJECT, "9.9"), &bytes)),
        );
        let refused = s
            .client
            .post(format!("{url}/"))
            .basic_auth("intruder", Some("guess"))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    s.assert_all_replicas_agree();
}

fn concurrent_uploads(s: &mut Scenario) {
    let barrier = Barrier::new(3);
    let outcomes: Vec<(StatusCode, Vec<u8>)> = std::thread::scope(|scope| {
        let contenders: Vec<_> = (0..3)
            .map(|replica| {
                let barrier = &barrier;
                let s = &*s;
                scope.spawn(move || {
                    let python = [None, Some(">=3.9"), Some(">=3.10")][replica];
                    let bytes = wheel(PROJECT, "3.0", python);
                    barrier.wait();
                    (s.upload(replica, "3.0", &bytes), bytes)
                })
            })
            .collect();
        contenders.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let statuses: Vec<StatusCode> = outcomes.iter().map(|(status, _)| *status).collect();
    let winners: Vec<&Vec<u8>> = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(winners.len(), 1, "{statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        2,
        "{statuses:?}"
    );
    let filename = wheel_filename(PROJECT, "3.0");
    let winner = sha256_hex(winners[0]);
    for replica in 0..3 {
        let served = s
            .download(replica, &filename)
            .expect("the winner is served");
        assert_eq!(sha256_hex(&served), winner, "replica {replica}");
    }
    s.stored.insert(filename, winner);
    s.assert_all_replicas_agree();
}

/// A wheel of about `size` bytes: a real archive with one big stored member.
fn big_wheel(version: &str, size: usize) -> Vec<u8> {
    use std::io::Cursor;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(size + 4096)));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let info = format!("wh_demo-{version}.dist-info");
    zip.start_file(format!("{info}/METADATA"), stored).unwrap();
    zip.write_all(format!("Metadata-Version: 2.1\nName: wh-demo\nVersion: {version}\n").as_bytes())
        .unwrap();
    zip.start_file("wh_demo/blob.bin", stored).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..size / chunk.len() {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        zip.write_all(&chunk).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn replica_killed_mid_upload(s: &mut Scenario) {
    let version = "4.0";
    let filename = wheel_filename(PROJECT, version);
    let bytes = big_wheel(version, 200 << 20);
    let sha = sha256_hex(&bytes);
    let (content_type, body) = multipart(
        &upload_fields(PROJECT, version, &sha),
        Some((&filename, &bytes)),
    );

    // B and C are watched the whole time: neither may ever list or serve the file.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let client = s.client.clone();
        let credentials = s.credentials().clone();
        let urls = [s.cluster().url(1), s.cluster().url(2)];
        let filename = filename.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for url in &urls {
                    if json_listing(&client, url, &credentials).contains_key(&filename) {
                        seen.push(format!("listed by {url}"));
                    }
                    if download(&client, url, &credentials, &filename).is_some() {
                        seen.push(format!("served by {url}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };
    let (user, password) = s.credentials().clone();
    let mut stream = TcpStream::connect(s.cluster().url(0).trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: replica\r\nAuthorization: Basic {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        base64_basic(&user, &password),
        body.len()
    )
    .unwrap();
    // Half the body, then the replica dies before the rest arrives.
    stream.write_all(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.cluster_mut().kill(0);
    drop(stream);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert!(seen.is_empty(), "{seen:?}");
    for replica in [1, 2] {
        assert!(!s.json_listing(replica).contains_key(&filename));
        assert!(s.download(replica, &filename).is_none());
    }
    s.cluster_mut().start(0);
    s.assert_all_replicas_agree();

    assert_eq!(s.upload(1, version, &bytes), StatusCode::OK);
    s.stored.insert(filename.clone(), sha.clone());
    s.assert_all_replicas_agree();
    let served = s
        .download(2, &filename)
        .expect("the retried upload is served");
    assert_eq!(sha256_hex(&served), sha);
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn removal_seen_by_all(s: &mut Scenario) {
    let (user, password) = s.credentials().clone();
    let (content_type, body) = multipart(
        &[
            (":action", "remove_pkg"),
            ("name", PROJECT),
            ("version", "3.0"),
        ],
        None,
    );
    let removed = s
        .client
        .post(format!("{}/", s.cluster().url(0)))
        .basic_auth(&user, Some(&password))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(removed.status(), StatusCode::OK);
    let filename = wheel_filename(PROJECT, "3.0");
    s.stored.remove(&filename);
    for replica in [1, 2, 0] {
        assert!(
            s.download(replica, &filename).is_none(),
            "replica {replica}"
        );
    }
    s.assert_all_replicas_agree();
}

fn rolling_restart(s: &mut Scenario) {
    let urls: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new((0..3).map(|r| s.index_url(r)).collect()));
    let in_service = Arc::new(Mutex::new([true; 3]));
    let in_use = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let work = s.work.path().to_owned();
    let client = {
        let (urls, in_service, in_use, stop) = (
            urls.clone(),
            in_service.clone(),
            in_use.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut results = Vec::new();
            let mut next = 0;
            while !stop.load(Ordering::SeqCst) {
                // The load balancer's part: only replicas in service get traffic.
                let replica = {
                    let in_service = in_service.lock().unwrap();
                    let Some(r) = (0..3).map(|k| (next + k) % 3).find(|r| in_service[*r]) else {
                        continue;
                    };
                    in_use.store(r, Ordering::SeqCst);
                    r
                };
                next = replica + 1;
                let target = work.join(format!("rolling-{}", results.len()));
                let index = urls.lock().unwrap()[replica].clone();
                let output = tool("pip")
                    .args(["install", "--no-deps", "--no-cache-dir", "--target"])
                    .arg(&target)
                    .args(["--index-url", &index, "wh-demo==2.0"])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                in_use.store(usize::MAX, Ordering::SeqCst);
                results.push((replica, output));
            }
            results
        })
    };
    let started = Instant::now();
    for replica in 0..3 {
        // Drain: take the replica out of service, wait for its install in flight to end.
        in_service.lock().unwrap()[replica] = false;
        while in_use.load(Ordering::SeqCst) == replica {
            std::thread::sleep(Duration::from_millis(20));
        }
        s.cluster_mut().stop(replica);
        s.cluster_mut().start(replica);
        urls.lock().unwrap()[replica] = s.index_url(replica);
        in_service.lock().unwrap()[replica] = true;
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::SeqCst);
    let results = client.join().unwrap();
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, output)| !output.status.success())
        .map(|(replica, output)| format!("replica {replica}:\n{}", text(output)))
        .collect();
    assert!(failed.is_empty(), "failed installs:\n{}", failed.join("\n"));
    assert!(
        results.len() >= 3,
        "only {} installs in {:?}",
        results.len(),
        started.elapsed()
    );
    s.assert_all_replicas_agree();
}

/// The image on its own, used the way pypiserver's is: `docker run IMAGE -P . -a .
/// /data/packages`. It must start, report healthy through its own health check, list, take an
/// upload and serve it back, as a non-root user with no shell inside.
pub(crate) fn image_smoke_test() {
    use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    use testcontainers_modules::testcontainers::{GenericImage, ImageExt};

    crate::cluster::build_server_image();
    let (name, tag) = crate::cluster::SERVER_IMAGE;
    let image = format!("{name}:{tag}");
    let inspect = docker_output(&["image", "inspect", "-f", "{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}}", &image]);
    assert_eq!(
        inspect.trim(),
        r#"10001:10001 ["/wheelhouse","run"] {"8080/tcp":{}} {"/data/packages":{}}"#
    );
    let size: u64 = docker_output(&["image", "inspect", "-f", "{{.Size}}", &image])
        .trim()
        .parse()
        .unwrap();
    assert!(size < 15 << 20, "the image is {size} bytes");
    let shell = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "the image has a shell");

    let container = GenericImage::new(name, tag)
        .with_exposed_port(8080.tcp())
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["-P", ".", "-a", ".", "/data/packages"])
        .start()
        .expect("start the image");
    let url = format!(
        "http://127.0.0.1:{}",
        container.get_host_port_ipv4(8080).unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = docker_output(&["inspect", "-f", "{{.State.Health.Status}}", container.id()]);
        if health.trim() == "healthy" {
            break;
        }
        assert!(Instant::now() < deadline, "health: {health}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let client = Client::new();
    let listed = client.get(format!("{url}/simple/")).send().unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let bytes = wheel("smoke", "1.0", None);
    let filename = wheel_filename("smoke", "1.0");
    let (content_type, body) = multipart(
        &upload_fields("smoke", "1.0", &sha256_hex(&bytes)),
        Some((&filename, &bytes)),
    );
    let uploaded = client
        .post(format!("{url}/"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::OK);
    let served = client
        .get(format!("{url}/packages/{filename}"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(sha256_hex(&served), sha256_hex(&bytes));
    let page = client
        .get(format!("{url}/simple/smoke/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains(&format!("{filename}#sha256={}", sha256_hex(&bytes))),
        "{page}"
    );
}

fn docker_output(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}\n{}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn deploy_destroy(s: &mut Scenario) {
    let destroyed = s.deploy_ok(&["destroy", "--yes"]);
    assert!(destroyed.contains("destroyed"), "{destroyed}");
    let gone = s.deploy(&["outputs"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("does not exist"),
        "{}",
        text(&gone)
    );
}
