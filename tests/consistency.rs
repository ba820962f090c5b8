//! The consistency contract, with three replicas as separate processes serving one directory:
//! whatever one replica acknowledged, or a person did to the directory by hand, every replica
//! reflects at the very next request; nothing half-written is ever listed or served.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use common::privileged;
use common::replica::Replica;
use common::{
    json_body, multipart, sha256_hex, sha256_links, text, upload_fields, upload_wheel, wheel,
    wheel_filename, SIMPLE_JSON,
};
use reqwest::blocking::Client;
use reqwest::StatusCode;

/// A backend, and how its replicas are held to the one consistency model: every change is seen
/// by every replica at the next request.
#[derive(Debug, Clone, Copy)]
struct Backend {
    name: &'static str,
    replicas: usize,
    /// How long after a change made by hand (not through a replica) the replicas may take to
    /// show it.
    hand_changes_within: Duration,
}

/// The three backends, one model. `cached-dir` learns of a change made by hand from an inotify
/// event, which notify delivers on its own thread a moment after the change, and which never
/// comes for a change made on another host: it runs as one replica, as the README says it
/// must, and is given that moment for changes made by hand. Changes through the replica it
/// shows at the next request, as the others do.
const BACKENDS: [Backend; 3] = [
    Backend {
        name: "consistent-dir",
        replicas: 3,
        hand_changes_within: Duration::ZERO,
    },
    Backend {
        name: "simple-dir",
        replicas: 3,
        hand_changes_within: Duration::ZERO,
    },
    Backend {
        name: "cached-dir",
        replicas: 1,
        hand_changes_within: Duration::from_secs(2),
    },
];

/// The replicas of one backend on one directory, plus the directory itself.
struct Cluster {
    backend: Backend,
    replicas: Vec<Replica>,
    packages: PathBuf,
    client: Client,
    _dir: Option<tempfile::TempDir>,
}

impl Cluster {
    fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Self::on(dir.path(), backend);
        cluster._dir = Some(dir);
        cluster
    }

    /// Replicas serving `root/packages`, logging into `root`.
    fn on(root: &Path, backend: Backend) -> Self {
        let packages = root.join("packages");
        std::fs::create_dir_all(&packages).unwrap();
        let replicas = ["a", "b", "c"][..backend.replicas]
            .iter()
            .map(|name| {
                let args = ["-P", ".", "-a", ".", "--backend", backend.name];
                Replica::start(name, &packages, root, &args)
            })
            .collect();
        Self {
            backend,
            replicas,
            packages,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _dir: None,
        }
    }

    /// The replica that `via` names, counting round the replicas there are.
    fn replica(&self, via: usize) -> &Replica {
        &self.replicas[via % self.replicas.len()]
    }

    fn upload(&self, via: usize, project: &str, version: &str, bytes: &[u8]) -> StatusCode {
        upload_wheel(
            &self.client,
            &self.replica(via).url(),
            None,
            (project, version),
            bytes,
        )
    }

    fn remove(&self, via: usize, project: &str, version: &str) -> StatusCode {
        let (content_type, body) = multipart(
            &[
                (":action", "remove_pkg"),
                ("name", project),
                ("version", version),
            ],
            None,
        );
        self.client
            .post(format!("{}/", self.replica(via).url()))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .unwrap()
            .status()
    }

    /// Asserts that every replica shows exactly `expected` (path below the package directory
    /// -> bytes) after a change through a replica: in the root index, the project pages (JSON
    /// and HTML), `/packages/`, downloads and `.metadata`.
    fn assert_all_show(&self, expected: &BTreeMap<String, Vec<u8>>, known_projects: &[&str]) {
        self.assert_shown_by(&self.replicas, expected, known_projects, Duration::ZERO);
    }

    /// As [`Cluster::assert_all_show`], after a change made by hand.
    fn assert_all_show_hand_change(
        &self,
        expected: &BTreeMap<String, Vec<u8>>,
        known_projects: &[&str],
    ) {
        let within = self.backend.hand_changes_within;
        self.assert_shown_by(&self.replicas, expected, known_projects, within);
    }

    /// Asserts that each of `replicas` shows exactly `expected`, within `within`.
    fn assert_shown_by(
        &self,
        replicas: &[Replica],
        expected: &BTreeMap<String, Vec<u8>>,
        known_projects: &[&str],
        within: Duration,
    ) {
        let wanted = Shown::expected(expected, known_projects);
        let deadline = Instant::now() + within;
        for replica in replicas {
            let shown = loop {
                let shown = Shown::read(&self.client, replica, known_projects, expected);
                if shown == wanted || Instant::now() >= deadline {
                    break shown;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(
                shown, wanted,
                "{} replica {} disagrees with the directory",
                self.backend.name, replica.name
            );
        }
    }
}

/// What one replica shows, in a form that compares with what the directory holds.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    projects: BTreeSet<String>,
    /// Per project: filename -> sha256, from the JSON page and from the HTML page.
    json_pages: BTreeMap<String, BTreeMap<String, String>>,
    html_pages: BTreeMap<String, BTreeMap<String, String>>,
    /// Every filename under `/packages/`.
    all_files: BTreeSet<String>,
    /// path -> sha256 of what a download returns, and of what `.metadata` returns.
    downloads: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
}

impl Shown {
    fn expected(files: &BTreeMap<String, Vec<u8>>, known_projects: &[&str]) -> Self {
        let mut json_pages: BTreeMap<String, BTreeMap<String, String>> = known_projects
            .iter()
            .map(|p| ((*p).to_owned(), BTreeMap::new()))
            .collect();
        for (path, bytes) in files {
            let filename = filename_of(path);
            json_pages
                .entry(project_of(filename))
                .or_default()
                .insert(filename.to_owned(), sha256_hex(bytes));
        }
        Self {
            projects: json_pages
                .iter()
                .filter(|(_, files)| !files.is_empty())
                .map(|(p, _)| p.clone())
                .collect(),
            html_pages: json_pages.clone(),
            json_pages,
            all_files: files.keys().map(|p| filename_of(p).to_owned()).collect(),
            downloads: files
                .iter()
                .map(|(f, b)| (f.clone(), sha256_hex(b)))
                .collect(),
            metadata: files
                .iter()
                .map(|(f, b)| (f.clone(), sha256_hex(&metadata_of(b))))
                .collect(),
        }
    }

    fn read(
        client: &Client,
        replica: &Replica,
        known_projects: &[&str],
        files: &BTreeMap<String, Vec<u8>>,
    ) -> Self {
        let url = replica.url();
        let root = json_body(
            client
                .get(format!("{url}/simple/"))
                .header("Accept", SIMPLE_JSON)
                .send()
                .unwrap(),
        );
        let projects = root["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        let mut json_pages = BTreeMap::new();
        let mut html_pages = BTreeMap::new();
        for project in known_projects {
            let page = format!("{url}/simple/{project}/");
            let json = client
                .get(&page)
                .header("Accept", SIMPLE_JSON)
                .send()
                .unwrap();
            let listed = if json.status() == StatusCode::NOT_FOUND {
                BTreeMap::new()
            } else {
                json_body(json)["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        (
                            f["filename"].as_str().unwrap().to_owned(),
                            f["hashes"]["sha256"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            };
            json_pages.insert((*project).to_owned(), listed);
            let html = client.get(&page).send().unwrap();
            let listed = if html.status() == StatusCode::NOT_FOUND {
                BTreeMap::new()
            } else {
                sha256_links(&html.text().unwrap())
            };
            html_pages.insert((*project).to_owned(), listed);
        }
        let all_files = sha256_links(
            &client
                .get(format!("{url}/packages/"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        )
        .into_keys()
        .collect();
        let fetch = |path: String| -> Option<String> {
            let resp = client.get(format!("{url}/packages/{path}")).send().unwrap();
            (resp.status() == StatusCode::OK).then(|| sha256_hex(&resp.bytes().unwrap()))
        };
        // Asked for every file the directory holds, so a file a replica does not list but
        // would still serve (or the reverse) shows up as a difference.
        let downloads = files
            .keys()
            .filter_map(|f| fetch(f.clone()).map(|h| (f.clone(), h)))
            .collect();
        let metadata = files
            .keys()
            .filter_map(|f| fetch(format!("{f}.metadata")).map(|h| (f.clone(), h)))
            .collect();
        Self {
            projects,
            json_pages,
            html_pages,
            all_files,
            downloads,
            metadata,
        }
    }
}

fn filename_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

fn project_of(filename: &str) -> String {
    filename.split('-').next().unwrap().replace('_', "-")
}

/// The METADATA bytes inside a wheel: what `.metadata` must return.
fn metadata_of(wheel: &[u8]) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(wheel)).unwrap();
    let name = archive
        .file_names()
        .find(|n| n.ends_with(".dist-info/METADATA"))
        .unwrap()
        .to_owned();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_name(&name).unwrap(), &mut bytes).unwrap();
    bytes
}

/// A small deterministic generator, so that a failing random sequence can be replayed from
/// the seed it prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

#[test]
fn an_upload_through_one_replica_is_served_by_all_at_the_next_request() {
    for backend in BACKENDS {
        let cluster = Cluster::start(backend);
        let bytes = wheel("alpha", "1.0", None);
        let mut expected = BTreeMap::new();
        cluster.assert_all_show(&expected, &["alpha"]);
        assert_eq!(cluster.upload(0, "alpha", "1.0", &bytes), StatusCode::OK);
        expected.insert(wheel_filename("alpha", "1.0"), bytes);
        cluster.assert_all_show(&expected, &["alpha"]);

        assert_eq!(cluster.remove(2, "alpha", "1.0"), StatusCode::OK);
        expected.clear();
        cluster.assert_all_show(&expected, &["alpha"]);
    }
}

#[test]
fn files_copied_moved_or_deleted_by_hand_are_seen_at_the_next_request() {
    for backend in BACKENDS {
        let cluster = Cluster::start(backend);
        let known = ["beta", "gamma"];
        let mut expected = BTreeMap::new();
        cluster.assert_all_show(&expected, &known);

        // `cp`: written in place under its final name.
        let copied = wheel("beta", "1.0", None);
        std::fs::write(
            cluster.packages.join(wheel_filename("beta", "1.0")),
            &copied,
        )
        .unwrap();
        expected.insert(wheel_filename("beta", "1.0"), copied);
        cluster.assert_all_show_hand_change(&expected, &known);

        // `mv` from elsewhere, into a subdirectory made for it.
        let outside = cluster.packages.parent().unwrap().join("staging.whl");
        let moved = wheel("gamma", "2.0", None);
        std::fs::write(&outside, &moved).unwrap();
        std::fs::create_dir(cluster.packages.join("gamma")).unwrap();
        let target = cluster
            .packages
            .join("gamma")
            .join(wheel_filename("gamma", "2.0"));
        std::fs::rename(&outside, &target).unwrap();
        expected.insert(format!("gamma/{}", wheel_filename("gamma", "2.0")), moved);
        cluster.assert_all_show_hand_change(&expected, &known);

        // `cp` over an existing file: same name, same inode, new bytes.
        let rewritten = wheel("beta", "1.0", Some(">=3.9"));
        std::fs::write(
            cluster.packages.join(wheel_filename("beta", "1.0")),
            &rewritten,
        )
        .unwrap();
        expected.insert(wheel_filename("beta", "1.0"), rewritten);
        cluster.assert_all_show_hand_change(&expected, &known);

        // `rm`, and `rm -r` of the subdirectory.
        std::fs::remove_file(cluster.packages.join(wheel_filename("beta", "1.0"))).unwrap();
        expected.remove(&wheel_filename("beta", "1.0"));
        cluster.assert_all_show_hand_change(&expected, &known);
        std::fs::remove_dir_all(cluster.packages.join("gamma")).unwrap();
        expected.clear();
        cluster.assert_all_show_hand_change(&expected, &known);
    }
}

#[test]
fn replicas_racing_for_one_filename_store_exactly_the_winner() {
    for backend in BACKENDS {
        let cluster = Arc::new(Cluster::start(backend));
        for round in 0..5 {
            let version = format!("1.{round}");
            let barrier = Arc::new(Barrier::new(3));
            let contenders: Vec<_> = (0..3)
                .map(|via| {
                    let cluster = cluster.clone();
                    let barrier = barrier.clone();
                    let version = version.clone();
                    std::thread::spawn(move || {
                        // Three different files under one name: the stored bytes tell who won.
                        let python = [None, Some(">=3.8"), Some(">=3.9")][via];
                        let bytes = wheel("delta", &version, python);
                        barrier.wait();
                        (cluster.upload(via, "delta", &version, &bytes), bytes)
                    })
                })
                .collect();
            let outcomes: Vec<(StatusCode, Vec<u8>)> =
                contenders.into_iter().map(|t| t.join().unwrap()).collect();
            let winners: Vec<&Vec<u8>> = outcomes
                .iter()
                .filter(|(status, _)| *status == StatusCode::OK)
                .map(|(_, bytes)| bytes)
                .collect();
            let conflicts = outcomes
                .iter()
                .filter(|(status, _)| *status == StatusCode::CONFLICT)
                .count();
            assert_eq!(
                (winners.len(), conflicts),
                (1, 2),
                "{} round {round}: {:?}",
                backend.name,
                outcomes.iter().map(|(s, _)| *s).collect::<Vec<_>>()
            );
            let stored = std::fs::read(cluster.packages.join(wheel_filename("delta", &version)));
            assert_eq!(sha256_hex(&stored.unwrap()), sha256_hex(winners[0]));
            let leftovers: Vec<_> = std::fs::read_dir(&cluster.packages)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| {
                    name.starts_with('.') && name != wheelhouse::index::fs_clock::CLOCK_FILE
                })
                .collect();
            assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        }
    }
}

#[test]
fn a_replica_killed_mid_upload_never_exposes_the_partial_file() {
    for backend in BACKENDS {
        a_replica_killed_mid_upload_never_exposes_the_partial_file_on(backend);
    }
}

fn a_replica_killed_mid_upload_never_exposes_the_partial_file_on(backend: Backend) {
    let mut cluster = Cluster::start(backend);
    let bytes = wheel("epsilon", "1.0", None);
    let filename = wheel_filename("epsilon", "1.0");
    let sha = sha256_hex(&bytes);
    let (content_type, body) = multipart(
        &upload_fields("epsilon", "1.0", &sha),
        Some((&filename, &bytes)),
    );
    // Announce a body far larger than what is sent, then send part of it and stop.
    let padding = 64 * 1024 * 1024;
    let mut stream =
        TcpStream::connect(cluster.replicas[0].url().trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len() + padding
    )
    .unwrap();
    let split = body.len() - 100;
    stream.write_all(&body[..split]).unwrap();
    stream.write_all(&vec![0u8; 8 * 1024 * 1024]).unwrap();
    let partial = wait_for(Duration::from_secs(10), || {
        hidden_files(&cluster.packages)
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 1024 * 1024))
    })
    .expect("the upload's temp file appears and grows");
    cluster.replicas[0].kill_hard();
    drop(stream);
    assert!(partial.exists(), "SIGKILL leaves the temp file behind");
    let hidden_name = partial.file_name().unwrap().to_string_lossy().into_owned();
    let assert_hidden_by = |replicas: &[Replica]| {
        for replica in replicas {
            let resp = cluster
                .client
                .get(format!("{}/packages/{hidden_name}", replica.url()))
                .send()
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::NOT_FOUND,
                "{} replica {}: {hidden_name} is served",
                backend.name,
                replica.name
            );
        }
    };

    // The others, while it is down (a backend on one replica has none).
    let mut expected = BTreeMap::new();
    cluster.assert_shown_by(
        &cluster.replicas[1..],
        &expected,
        &["epsilon"],
        Duration::ZERO,
    );
    assert_hidden_by(&cluster.replicas[1..]);

    // Back up, it shows nothing of its lost upload either, and the file can be uploaded
    // again through any replica.
    cluster.replicas[0].restart();
    assert_hidden_by(&cluster.replicas);
    let last = cluster.replicas.len() - 1;
    assert_eq!(
        cluster.upload(last, "epsilon", "1.0", &bytes),
        StatusCode::OK
    );
    expected.insert(filename, bytes);
    cluster.assert_all_show(&expected, &["epsilon"]);
}

#[test]
fn a_random_sequence_of_changes_is_seen_alike_by_every_replica() {
    let seed = std::env::var("WHEELHOUSE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("seed {seed} (replay with WHEELHOUSE_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    for backend in BACKENDS {
        let cluster = Cluster::start(backend);
        let projects = ["zeta", "eta", "theta"];
        let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for step in 0..40 {
            let project = projects[rng.below(projects.len())];
            let version = format!("{}.{}", 1 + rng.below(2), rng.below(3));
            let filename = wheel_filename(project, &version);
            let via = rng.below(3);
            // 0-2 through a replica, 3-4 by hand.
            let choice = rng.below(5);
            let action = match choice {
                0 | 1 => {
                    let bytes = wheel(project, &version, [None, Some(">=3.8")][rng.below(2)]);
                    let status = cluster.upload(via, project, &version, &bytes);
                    let want = if expected.contains_key(&filename) {
                        StatusCode::CONFLICT
                    } else {
                        expected.insert(filename.clone(), bytes);
                        StatusCode::OK
                    };
                    assert_eq!(status, want, "step {step}: upload {filename} via {via}");
                    format!("upload {filename} via {via}")
                }
                2 => {
                    let status = cluster.remove(via, project, &version);
                    let want = if expected.remove(&filename).is_some() {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    };
                    assert_eq!(status, want, "step {step}: remove {filename} via {via}");
                    format!("remove {filename} via {via}")
                }
                3 if !expected.contains_key(&filename) => {
                    let bytes = wheel(project, &version, None);
                    let staged = cluster.packages.parent().unwrap().join("drop.tmp");
                    std::fs::write(&staged, &bytes).unwrap();
                    std::fs::rename(&staged, cluster.packages.join(&filename)).unwrap();
                    expected.insert(filename.clone(), bytes);
                    format!("mv {filename} in")
                }
                _ => match expected
                    .keys()
                    .nth(rng.below(expected.len().max(1)))
                    .cloned()
                {
                    Some(victim) => {
                        std::fs::remove_file(cluster.packages.join(&victim)).unwrap();
                        expected.remove(&victim);
                        format!("rm {victim}")
                    }
                    None => continue,
                },
            };
            println!("{} step {step}: {action}", backend.name);
            if choice >= 3 {
                cluster.assert_all_show_hand_change(&expected, &projects);
            } else {
                cluster.assert_all_show(&expected, &projects);
            }
        }
    }
}

/// On a filesystem with one-second timestamps, a change in the same second as a replica's
/// last read leaves the directory's mtime unchanged: it must be seen all the same.
#[test]
fn a_change_within_the_same_timestamp_tick_is_seen() {
    const NAME: &str = "consistency::a_change_within_the_same_timestamp_tick_is_seen";
    if !privileged::enabled() {
        privileged::report_not_run(NAME, "root and a loop device");
        return;
    }
    let fs = CoarseFilesystem::mount();
    let cluster = Cluster::on(&fs.mountpoint, BACKENDS[0]);
    let known = ["iota"];
    let mut expected = BTreeMap::new();
    let mut exercised = 0;
    for attempt in 0..20 {
        if exercised == 3 {
            break;
        }
        // Start just after a second begins, so that all of what follows fits in one tick.
        let into_second = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        std::thread::sleep(Duration::from_millis(u64::from(1020 - into_second)));
        let first = wheel("iota", &format!("{attempt}.0"), None);
        assert_eq!(
            cluster.upload(0, "iota", &format!("{attempt}.0"), &first),
            StatusCode::OK
        );
        expected.insert(wheel_filename("iota", &format!("{attempt}.0")), first);
        let stamp_before = mtime(&cluster.packages);
        // The replicas read the filesystem's clock here: it, not the host's clock with its
        // two-second margin, is what decides below that nothing was missed.
        assert!(cluster
            .packages
            .join(wheelhouse::index::fs_clock::CLOCK_FILE)
            .exists());
        // Every replica reads the directory now, inside the tick.
        for replica in &cluster.replicas {
            let resp = cluster
                .client
                .get(format!("{}/simple/iota/", replica.url()))
                .send()
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
        let second = wheel("iota", &format!("{attempt}.1"), None);
        if attempt % 2 == 0 {
            assert_eq!(
                cluster.upload(1, "iota", &format!("{attempt}.1"), &second),
                StatusCode::OK
            );
        } else {
            let target = wheel_filename("iota", &format!("{attempt}.1"));
            std::fs::write(cluster.packages.join(target), &second).unwrap();
        }
        expected.insert(wheel_filename("iota", &format!("{attempt}.1")), second);
        if mtime(&cluster.packages) != stamp_before {
            // The second ticked over in between: not the racy case; try again.
            cluster.assert_all_show(&expected, &known);
            continue;
        }
        exercised += 1;
        cluster.assert_all_show(&expected, &known);
    }
    assert_eq!(exercised, 3, "the same-tick case was not produced");
    privileged::report_ran(NAME);
}

/// On a one-second filesystem, a password file rewritten in place with the same size in the
/// same second as its last read keeps every field of its stamp (size, inode, mtime, ctime):
/// the new passwords must count all the same.
#[test]
fn a_same_size_password_file_rewrite_within_one_tick_is_seen() {
    use base64::Engine;
    use wheelhouse::auth::{Action, Authenticator, Verdict};
    const NAME: &str = "consistency::a_same_size_password_file_rewrite_within_one_tick_is_seen";
    if !privileged::enabled() {
        privileged::report_not_run(NAME, "root and a loop device");
        return;
    }
    let fs = CoarseFilesystem::mount();
    let path = fs.mountpoint.join("htpasswd");
    let basic = |password: &str| {
        let pair = format!("alice:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let line = |password: &str| format!("alice:{}\n", bcrypt::hash(password, 4).unwrap());
    let mut exercised = 0;
    for attempt in 0..20 {
        if exercised == 3 {
            break;
        }
        let (old, new) = (format!("old-{attempt}"), format!("new-{attempt}"));
        let (old_line, new_line) = (line(&old), line(&new));
        assert_eq!(old_line.len(), new_line.len());
        std::fs::write(&path, &old_line).unwrap();
        let auth = Authenticator::new(HashSet::from([Action::Update]), Some(path.clone()), vec![])
            .unwrap();
        // Start just after a second begins, so that the read and the rewrite share a tick.
        let into_second = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        std::thread::sleep(Duration::from_millis(u64::from(1020 - into_second)));
        std::fs::write(&path, &old_line).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        assert_eq!(
            auth.check(Some(&basic(&old))),
            Verdict::Allowed("alice".into())
        );
        // In place: the same inode, the same size.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(new_line.as_bytes())
            .unwrap();
        let after = std::fs::metadata(&path).unwrap();
        let same_stamp = {
            use std::os::unix::fs::MetadataExt;
            (
                before.mtime(),
                before.mtime_nsec(),
                before.ctime(),
                before.ctime_nsec(),
            ) == (
                after.mtime(),
                after.mtime_nsec(),
                after.ctime(),
                after.ctime_nsec(),
            ) && before.ino() == after.ino()
                && before.len() == after.len()
        };
        assert_eq!(auth.check(Some(&basic(&old))), Verdict::Denied);
        assert_eq!(
            auth.check(Some(&basic(&new))),
            Verdict::Allowed("alice".into())
        );
        if same_stamp {
            exercised += 1;
        }
    }
    assert_eq!(exercised, 3, "the same-stamp case was not produced");
    privileged::report_ran(NAME);
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(found) = probe() {
            return Some(found);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// An ext4 image with 128-byte inodes, whose timestamps have a granularity of one second,
/// loop-mounted for the test and unmounted after it. Needs root: runs only with
/// `WHEELHOUSE_PRIVILEGED_TESTS=1`.
struct CoarseFilesystem {
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl CoarseFilesystem {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("coarse.img");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 * 1024 * 1024)
            .unwrap();
        for cmd in [
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-I", "128"])
                .arg(&image),
            Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&image)
                .arg(&mountpoint),
        ] {
            let out = cmd.output().unwrap_or_else(|err| {
                panic!("{cmd:?}: {err} (this test needs e2fsprogs and mount)")
            });
            assert!(
                out.status.success(),
                "{cmd:?} failed (this test needs root and a loop device):\n{}",
                text(&out)
            );
        }
        Self {
            mountpoint,
            _dir: dir,
        }
    }
}

impl Drop for CoarseFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
    }
}
