//! End to end: the real `wheelhouse` binary on a loopback port, driven by the real clients
//! (pip, uv, twine, build) from a Python venv that this harness creates from
//! `tests/python/clients.txt`.

use crate::common;
#[path = "e2e/hostile.rs"]
mod hostile;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::python::{build_project, run, run_fails, run_ok, tool, uv, venv};
use common::replica::Replica;
use common::{assert_metadata_only, free_port, sha256_hex, text};

/// A `wheelhouse run` process with a packages directory of its own; killed when dropped.
struct Server {
    replica: Replica,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let packages = dir.path().join("packages");
        std::fs::create_dir(&packages).unwrap();
        let replica = Replica::start_with_env("server", &packages, dir.path(), args, env);
        Self { replica, dir }
    }

    fn url(&self) -> String {
        self.replica.url()
    }

    fn port(&self) -> u16 {
        self.replica.port()
    }

    fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port())
    }

    fn packages(&self) -> PathBuf {
        self.dir.path().join("packages")
    }

    /// How many uploads are being received: each streams into a hidden temp file.
    fn uploads_in_flight(&self) -> usize {
        std::fs::read_dir(self.packages())
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with('.') && name != wheelhouse::index::fs_clock::CLOCK_FILE
            })
            .count()
    }

    fn stored(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.packages())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // The filesystem clock's probe, which every listing skips.
            .filter(|name| name != wheelhouse::index::fs_clock::CLOCK_FILE)
            .collect();
        names.sort();
        names
    }

    fn log_text(&self) -> String {
        self.replica.log_text()
    }

    fn peak_rss_kib(&self) -> u64 {
        self.replica.peak_rss_kib()
    }

    fn twine_upload(&self, files: &[&Path], user: &str, password: &str) -> Command {
        let mut cmd = tool("twine");
        cmd.args([
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--verbose",
        ])
        .args(["--repository-url", &format!("{}/", self.url())])
        .args(["-u", user, "-p", password])
        .args(files);
        cmd
    }
}

fn sha256_file(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// uv's cache would hide whether the index was asked: give each run its own.
#[test]
fn open_index_round_trip_with_twine_pip_and_uv() {
    let work = tempfile::tempdir().unwrap();
    let dists = build_project(work.path(), "1.0", Some(">=3.8"));
    let server = Server::start(&["-P", ".", "-a", "."], &[]);

    run_ok(&mut server.twine_upload(&[&dists.wheel, &dists.sdist], "anyone", "anything"));
    assert_eq!(
        server.stored(),
        vec!["wh_demo-1.0-py3-none-any.whl", "wh_demo-1.0.tar.gz"]
    );
    assert_eq!(
        sha256_file(&server.packages().join("wh_demo-1.0.tar.gz")),
        sha256_file(&dists.sdist)
    );

    let again = run_fails(&mut server.twine_upload(&[&dists.wheel], "anyone", "anything"));
    assert!(text(&again).contains("already exists"), "{}", text(&again));

    let skipped = run_ok(
        uv(work.path())
            .args(["publish", "--publish-url", &format!("{}/", server.url())])
            .args(["--check-url", &format!("{}/simple/", server.url())])
            .args(["-u", "anyone", "-p", "anything"])
            .arg(&dists.wheel),
    );
    let skipped = text(&skipped);
    assert!(skipped.to_lowercase().contains("skipping"), "{skipped}");
    assert_eq!(server.stored().len(), 2);

    let found = run_ok(tool("pip").args([
        "search",
        "--index",
        &format!("{}/RPC2", server.url()),
        "wh_dem",
    ]));
    assert!(
        String::from_utf8_lossy(&found.stdout).contains("wh-demo (1.0)"),
        "{}",
        text(&found)
    );

    let download = work.path().join("downloaded");
    run_ok(
        tool("pip")
            .args([
                "download",
                "--no-cache-dir",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
            ])
            .arg(&download)
            .args([
                "--index-url",
                &format!("{}/simple/", server.url()),
                "wh-demo==1.0",
            ]),
    );
    assert_eq!(
        sha256_file(&download.join("wh_demo-1.0-py3-none-any.whl")),
        sha256_file(&dists.wheel)
    );

    let pip_target = work.path().join("pip-target");
    run_ok(
        tool("pip")
            .args(["install", "--no-cache-dir", "--target"])
            .arg(&pip_target)
            .args([
                "--index-url",
                &format!("{}/simple/", server.url()),
                "WH_Demo",
            ]),
    );
    assert!(pip_target.join("wh_demo/__init__.py").exists());

    let uv_target = work.path().join("uv-target");
    run_ok(
        uv(work.path())
            .args(["pip", "install", "--python"])
            .arg(venv().join("bin/python"))
            .arg("--target")
            .arg(&uv_target)
            .args([
                "--index-url",
                &format!("{}/simple/", server.url()),
                "wh-demo",
            ]),
    );
    assert!(uv_target.join("wh_demo/__init__.py").exists());
}

#[test]
fn uv_resolves_through_pep658_metadata_without_downloading_the_wheel() {
    let work = tempfile::tempdir().unwrap();
    let dists = build_project(work.path(), "1.1", Some(">=3.8"));
    let server = Server::start(&["-P", ".", "-a", "."], &[]);
    run_ok(&mut server.twine_upload(&[&dists.wheel], "anyone", "anything"));

    let requirements = work.path().join("requirements.in");
    std::fs::write(&requirements, "wh-demo\n").unwrap();
    let compiled = run_ok(
        uv(work.path())
            .args(["pip", "compile", "--python-version", "3.11", "--no-header"])
            .args(["--index-url", &format!("{}/simple/", server.url())])
            .arg(&requirements),
    );
    assert!(
        String::from_utf8_lossy(&compiled.stdout).contains("wh-demo==1.1"),
        "{}",
        text(&compiled)
    );

    assert_metadata_only(&server.log_text(), "wh_demo-1.1-py3-none-any.whl");
}

#[test]
fn authenticated_index_refuses_clients_without_credentials() {
    let work = tempfile::tempdir().unwrap();
    let dists = build_project(work.path(), "2.0", Some(">=3.8"));
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("alice-pw-42", 5).unwrap()),
    )
    .unwrap();
    let server = Server::start(
        &[
            "-P",
            htpasswd.to_str().unwrap(),
            "-a",
            "update,download,list",
        ],
        &[
            ("WHEELHOUSE_USERNAME", "deployer"),
            ("WHEELHOUSE_PASSWORD", "env-pw-77"),
        ],
    );

    let refused = run_fails(&mut server.twine_upload(&[&dists.wheel], "alice", "wrong"));
    assert!(text(&refused).contains("403"), "{}", text(&refused));
    assert!(server.stored().is_empty());
    run_ok(&mut server.twine_upload(&[&dists.wheel], "alice", "alice-pw-42"));
    run_ok(&mut server.twine_upload(&[&dists.sdist], "deployer", "env-pw-77"));
    assert_eq!(server.stored().len(), 2);

    let resp = reqwest::blocking::get(format!("{}/simple/wh-demo/", server.url())).unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"pypi\"");

    let pip_download = |index: String, dest: &str| {
        let mut cmd = tool("pip");
        cmd.args([
            "download",
            "--no-cache-dir",
            "--no-deps",
            "--no-input",
            "-d",
        ])
        .arg(work.path().join(dest))
        .args(["--index-url", &format!("{index}/simple/"), "wh-demo==2.0"]);
        cmd
    };
    run_fails(&mut pip_download(server.url(), "anon"));
    run_ok(&mut pip_download(
        server.url_with("alice", "alice-pw-42"),
        "alice",
    ));
    assert!(work
        .path()
        .join("alice/wh_demo-2.0-py3-none-any.whl")
        .exists());

    let uv_install = |index: String, dest: &str| {
        let mut cmd = uv(work.path());
        cmd.args(["pip", "install", "--python"])
            .arg(venv().join("bin/python"))
            .arg("--target")
            .arg(work.path().join(dest))
            .args(["--index-url", &format!("{index}/simple/"), "wh-demo"]);
        cmd
    };
    run_fails(&mut uv_install(server.url(), "uv-anon"));
    run_ok(&mut uv_install(
        server.url_with("deployer", "env-pw-77"),
        "uv-env-user",
    ));
    assert!(work.path().join("uv-env-user/wh_demo/__init__.py").exists());

    let log = server.log_text();
    assert!(log.contains("user=alice"), "{log}");
    for secret in ["alice-pw-42", "env-pw-77", "Authorization", "authorization"] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

#[test]
fn a_300_mb_upload_keeps_the_server_under_64_mb() {
    let work = tempfile::tempdir().unwrap();
    let wheel = work.path().join("wh_big-1.0-py3-none-any.whl");
    // Incompressible data stored uncompressed: the upload really is 300 MB on the wire.
    let script = format!(
        "import os, zipfile\nwith zipfile.ZipFile({:?}, 'w', zipfile.ZIP_STORED) as z:\n    z.writestr('wh_big-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: wh-big\\nVersion: 1.0\\n')\n    z.writestr('wh_big-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n    z.writestr('wh_big-1.0.dist-info/RECORD', '')\n    with z.open('wh_big/blob.bin', 'w', force_zip64=True) as blob:\n        for _ in range(300):\n            blob.write(os.urandom(1 << 20))\n",
        wheel.to_str().unwrap()
    );
    run_ok(tool("python").args(["-c", &script]));
    assert!(std::fs::metadata(&wheel).unwrap().len() > 300 << 20);

    let server = Server::start(&["-P", ".", "-a", "."], &[]);
    run_ok(&mut server.twine_upload(&[&wheel], "anyone", "anything"));
    assert_eq!(server.stored(), vec!["wh_big-1.0-py3-none-any.whl"]);
    assert_eq!(
        sha256_file(&server.packages().join("wh_big-1.0-py3-none-any.whl")),
        sha256_file(&wheel)
    );
    let peak_mib = server.peak_rss_kib() / 1024;
    println!("server peak RSS during a 300 MB upload: {peak_mib} MiB");
    assert!(peak_mib < 64, "peak RSS {peak_mib} MiB");
}

#[test]
fn wrong_sha256_digest_is_400_and_stores_nothing() {
    let server = Server::start(&["-P", ".", "-a", "."], &[]);
    let bytes = common::wheel("wh-demo", "3.0", None);
    let actual = sha256_hex(&bytes);
    let form = reqwest::blocking::multipart::Form::new()
        .text(":action", "file_upload")
        .text("name", "wh-demo")
        .text("version", "3.0")
        .text("sha256_digest", "ab".repeat(32))
        .part(
            "content",
            reqwest::blocking::multipart::Part::bytes(bytes)
                .file_name("wh_demo-3.0-py3-none-any.whl"),
        );
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/", server.url()))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Both values, so the user can tell a corrupted upload from a wrong claim.
    let message = resp.text().unwrap();
    assert!(message.contains("sha256_digest"), "{message}");
    assert!(message.contains(&"ab".repeat(32)), "{message}");
    assert!(message.contains(&actual), "{message}");
    assert!(server.stored().is_empty(), "{:?}", server.stored());
}

#[test]
fn downloads_have_exact_lengths_and_ranges_on_the_wire() {
    let server = Server::start(&["-P", ".", "-a", "."], &[]);
    let bytes = common::wheel("wh-demo", "1.0", None);
    std::fs::write(
        server.packages().join("wh_demo-1.0-py3-none-any.whl"),
        &bytes,
    )
    .unwrap();
    let url = format!("{}/packages/wh_demo-1.0-py3-none-any.whl", server.url());
    let client = reqwest::blocking::Client::new();
    let head = client.head(&url).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    let range = client
        .get(&url)
        .header("Range", "bytes=-100")
        .send()
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.headers()["content-length"], "100");
    assert_eq!(range.bytes().unwrap(), &bytes[bytes.len() - 100..]);
}

#[test]
fn sigterm_lets_an_upload_in_flight_finish() {
    let mut server = Server::start(&["-P", ".", "-a", "."], &[]);
    let bytes = common::wheel("wh-demo", "4.0", None);
    let sha = sha256_hex(&bytes);
    let (content_type, body) = common::multipart(
        &common::upload_fields("wh-demo", "4.0", &sha),
        Some(("wh_demo-4.0-py3-none-any.whl", &bytes)),
    );
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // All but the end of the file: the server is receiving its content part.
    let most = body.len() - 100;
    stream.write_all(&body[..most]).unwrap();
    stream.flush().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server.uploads_in_flight() == 1),
        "the upload never reached the server"
    );

    let pid = server.replica.pid() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Shutting down: new connections are refused, the upload in flight is not.
    assert!(
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", server.port())).is_err()
        }),
        "the server still takes connections after SIGTERM"
    );
    stream.write_all(&body[most..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(server.stored(), vec!["wh_demo-4.0-py3-none-any.whl"]);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.replica.try_wait() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM; log:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn command_line_errors_quote_the_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(Command::new(env!("CARGO_BIN_EXE_wheelhouse"))
        .args(["run", "-a", "everything"])
        .arg(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("\"everything\""),
        "{}",
        text(&output)
    );

    let output = run_ok(Command::new(env!("CARGO_BIN_EXE_wheelhouse")).arg("--version"));
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));

    let output = run_ok(Command::new(env!("CARGO_BIN_EXE_wheelhouse")).args(["run", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--passwords",
        "--server ",
        "--log-req-frmt",
        "--max-upload-size",
        "WHEELHOUSE_USERNAME",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

/// At start-up the index removes the temp files of uploads whose process died (nobody holds
/// their lock) once they are old enough, and spares a young one, whose upload may be about to
/// lock it.
#[test]
fn temp_files_of_dead_uploads_are_swept_at_start_up() {
    use wheelhouse::index::upload::TEMP_PREFIX;
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("packages");
    std::fs::create_dir(&packages).unwrap();
    let stale = packages.join(format!("{TEMP_PREFIX}dead"));
    let young = packages.join(format!("{TEMP_PREFIX}young"));
    for path in [&stale, &young] {
        std::fs::write(path, b"half an upload").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let _server = Replica::start("sweeper", &packages, dir.path(), &["-P", ".", "-a", "."]);
    assert!(
        !stale.exists(),
        "the dead upload's temp file is still there"
    );
    assert!(
        young.exists(),
        "a temp file younger than a minute was removed"
    );
}

/// A credential variable set without its other half refuses to start, naming both variables,
/// rather than running an index that nobody can log in to (or that anyone can).
#[test]
fn one_credential_variable_alone_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for (set, missing) in [
        ("WHEELHOUSE_USERNAME", "WHEELHOUSE_PASSWORD"),
        ("WHEELHOUSE_PASSWORD", "WHEELHOUSE_USERNAME"),
        ("WHEELHOUSE_USERNAME_CI", "WHEELHOUSE_PASSWORD_CI"),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wheelhouse"));
        common::without_env_users(&mut command)
            .args(["run", "-p", "0", "-a", "update"])
            .arg(dir.path())
            .env(set, "value");
        let output = run(&mut command);
        assert_eq!(output.status.code(), Some(2), "{set}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(set) && stderr.contains(missing),
            "{set}: {stderr}"
        );
    }
}

/// `--log-file` appends the access log to a file, `--log-stream` picks where the log also goes
/// (or nowhere), and `-v` adds the debug level the default leaves out.
#[test]
fn log_file_stream_and_verbosity() {
    let marker = "/packages/log-marker-1.0.tar.gz";
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("server.log");
    std::fs::write(&log_file, "an earlier line\n").unwrap();
    let (stdout, stderr) = serve_one_request(
        &[
            "--log-stream",
            "none",
            "--log-file",
            log_file.to_str().unwrap(),
        ],
        marker,
    );
    assert!(stdout.is_empty() && stderr.is_empty(), "{stdout}{stderr}");
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(logged.starts_with("an earlier line\n"), "{logged}");
    assert!(logged.contains(marker), "{logged}");

    for (stream, on_stdout, on_stderr) in [("stdout", true, false), ("stderr", false, true)] {
        let (stdout, stderr) = serve_one_request(&["--log-stream", stream], marker);
        assert_eq!(
            stdout.contains(marker),
            on_stdout,
            "{stream}: stdout {stdout}"
        );
        assert_eq!(
            stderr.contains(marker),
            on_stderr,
            "{stream}: stderr {stderr}"
        );
    }

    // Raising the open files limit is said at debug: with -v only.
    let (_, quiet) = serve_one_request(&["--log-stream", "stderr"], marker);
    assert!(!quiet.contains("open files limit raised"), "{quiet}");
    let (_, verbose) = serve_one_request(&["--log-stream", "stderr", "-v"], marker);
    assert!(verbose.contains("DEBUG"), "{verbose}");
    assert!(verbose.contains("open files limit raised"), "{verbose}");
}

/// Starts the server with `args` and a soft open files limit below the hard one, asks it for
/// `path` once, stops it with SIGTERM and returns what it wrote to stdout and stderr.
fn serve_one_request(args: &[&str], path: &str) -> (String, String) {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    // Where the port it picked is announced, whichever stream the test looks at: the
    // arguments' --log-file, or one of its own.
    let log_file = args.iter().position(|arg| *arg == "--log-file");
    let announced = log_file.map_or(dir.path().join("announced.log"), |i| args[i + 1].into());
    let mut command = Command::new(env!("CARGO_BIN_EXE_wheelhouse"));
    common::without_env_users(&mut command)
        .args(["run", "-i", "127.0.0.1", "-p", "0", "-P", ".", "-a", "."])
        .arg("--disable-fallback")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if log_file.is_none() {
        command.arg("--log-file").arg(&announced);
    }
    command.arg(dir.path());
    // SAFETY: between fork and exec only async-signal-safe calls (getrlimit, setrlimit).
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_max > 256 {
                limit.rlim_cur = 256;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answered = wait_until(Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&announced).unwrap_or_default();
        let Some(address) = common::replica::announced_address(&log) else {
            return false;
        };
        client.get(format!("http://{address}{path}")).send().is_ok()
    });
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    assert!(answered, "{args:?}: no answer\n{}", text(&output));
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `probe` for up to `limit`.
fn wait_until(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn healthcheck_subcommand_probes_the_server() {
    let server = Server::start(&["-P", ".", "-a", ".", "--health-endpoint", "/ready"], &[]);
    let probe = |url: String| {
        run(Command::new(env!("CARGO_BIN_EXE_wheelhouse"))
            .args(["healthcheck", "--timeout", "2", "--url"])
            .arg(url))
    };
    let ok = probe(format!("{}/ready", server.url()));
    assert!(ok.status.success(), "{}", text(&ok));
    let wrong_path = probe(format!("{}/health", server.url()));
    assert_eq!(wrong_path.status.code(), Some(1), "{}", text(&wrong_path));
    let dead = probe(format!("http://127.0.0.1:{}/ready", free_port()));
    assert_eq!(dead.status.code(), Some(1), "{}", text(&dead));
    assert!(String::from_utf8_lossy(&dead.stderr).contains("cannot connect"));
}

#[test]
fn health_fails_while_the_required_file_is_missing() {
    let volume = tempfile::tempdir().unwrap();
    let marker = volume.path().join(".wheelhouse-volume");
    std::fs::write(&marker, b"").unwrap();
    let server = Server::start(
        &[
            "-P",
            ".",
            "-a",
            ".",
            "--health-requires",
            marker.to_str().unwrap(),
        ],
        &[],
    );
    let health = || reqwest::blocking::get(format!("{}/health", server.url())).unwrap();
    assert_eq!(health().status(), 200);
    // The volume is gone (as after a mount that failed): out of service, saying why.
    std::fs::remove_file(&marker).unwrap();
    let gone = health();
    assert_eq!(gone.status(), 503);
    let body = gone.text().unwrap();
    assert!(body.contains(&marker.display().to_string()), "{body}");
    std::fs::write(&marker, b"").unwrap();
    assert_eq!(health().status(), 200);
}
