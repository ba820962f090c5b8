//! Every endpoint, status code and error of the server, through Rocket's local client against
//! real files in a temp directory.

use crate::common;

use std::path::{Path, PathBuf};

use base64::Engine;
use clap::Parser;
use rocket::http::{ContentType, Header, Status};
use rocket::local::blocking::{Client, LocalResponse};

use common::{multipart, sdist, sha256_hex, upload_fields, wheel, wheel_filename};
use wheelhouse::config::{Cli, Command, ServerConfig};

/// A server on a fresh package directory, built from a `wheelhouse run` command line.
struct TestApp {
    dir: tempfile::TempDir,
    client: Client,
}

fn config(args: &[&str], dir: &Path) -> ServerConfig {
    let mut argv = vec!["wheelhouse", "run"];
    argv.extend_from_slice(args);
    argv.push(dir.to_str().unwrap());
    let Command::Run(run) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not a run command")
    };
    // The developer's shell may define users; these tests give the ones they mean.
    run.into_config_with_env(std::iter::empty()).unwrap()
}

impl TestApp {
    /// Open server (`-P . -a .`) unless `args` say otherwise.
    fn open() -> Self {
        Self::with_args(&["-P", ".", "-a", "."])
    }

    fn with_args(args: &[&str]) -> Self {
        Self::with_config(args, |_| {})
    }

    fn with_config(args: &[&str], adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(args, dir.path());
        adjust(&mut config);
        let rocket = wheelhouse::server::build(&config).unwrap();
        let client = Client::tracked(rocket).unwrap();
        Self { dir, client }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn get(&self, uri: &str) -> LocalResponse<'_> {
        self.client.get(uri.to_owned()).dispatch()
    }

    fn get_with(&self, uri: &str, headers: &[(&'static str, &str)]) -> LocalResponse<'_> {
        let mut req = self.client.get(uri.to_owned());
        for (name, value) in headers {
            req = req.header(Header::new(*name, value.to_string()));
        }
        req.dispatch()
    }

    fn post_form(
        &self,
        uri: &str,
        fields: &[(&str, &str)],
        file: Option<(&str, &[u8])>,
        auth: Option<(&str, &str)>,
    ) -> LocalResponse<'_> {
        let (content_type, body) = multipart(fields, file);
        let mut req = self
            .client
            .post(uri.to_owned())
            .header(ContentType::parse_flexible(&content_type).unwrap())
            .body(body);
        if let Some((user, password)) = auth {
            req = req.header(Header::new("Authorization", basic(user, password)));
        }
        req.dispatch()
    }

    /// Uploads a test wheel as twine would; returns the response.
    fn upload_wheel(
        &self,
        name: &str,
        version: &str,
        auth: Option<(&str, &str)>,
    ) -> LocalResponse<'_> {
        let bytes = wheel(name, version, Some(">=3.8"));
        let sha = sha256_hex(&bytes);
        let filename = wheel_filename(name, version);
        self.post_form(
            "/",
            &upload_fields(name, version, &sha),
            Some((&filename, &bytes)),
            auth,
        )
    }

    /// Files in the package directory, hidden ones included (nothing half-written may remain).
    fn stored(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // The filesystem clock's probe, which every listing skips.
            .filter(|name| name != wheelhouse::index::fs_clock::CLOCK_FILE)
            .collect();
        names.sort();
        names
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

const JSON: &str = "application/vnd.pypi.simple.v1+json";
const PIP_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

/// The length the response will announce (hyper writes the header from it on the wire).
fn content_length(resp: &LocalResponse<'_>) -> Option<String> {
    resp.body().preset_size().map(|n| n.to_string())
}

fn header(resp: &LocalResponse<'_>, name: &str) -> Option<String> {
    resp.headers().get_one(name).map(str::to_owned)
}

/// Hashes and times change from run to run; the shape of the page must not.
macro_rules! assert_page_snapshot {
    ($name:expr, $body:expr) => {
        insta::with_settings!({filters => vec![
            (r"[0-9a-f]{64}", "[SHA256]"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", "[TIME]"),
            (r#""size":\d+"#, r#""size":[SIZE]"#),
        ]}, {
            insta::assert_snapshot!($name, $body);
        });
    };
}

fn demo_app() -> TestApp {
    let app = TestApp::open();
    app.put(
        &wheel_filename("demo-pkg", "1.0"),
        &wheel("demo-pkg", "1.0", Some(">=3.8, <4")),
    );
    app.put(
        "demo_pkg-0.9.tar.gz",
        &sdist("demo-pkg", "0.9", Some(">=3.7")),
    );
    app.put("sub/dir/other-2.0.tar.gz", &sdist("other", "2.0", None));
    app.put("notes.txt", b"not a package");
    app.put(".hidden-1.0.tar.gz", b"hidden");
    app
}

// ---- health, welcome ----

#[test]
fn health_answers_ok_without_auth() {
    let app = TestApp::with_args(&["-P", ".", "-a", "."]);
    let resp = app.get("/health");
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(resp.into_string().unwrap(), "Ok");

    let app = TestApp::with_config(
        &[
            "-a",
            "list,download,update",
            "--health-endpoint",
            "/healthz",
        ],
        |c| {
            c.env_users = vec![wheelhouse::auth::StaticUser {
                username: "u".into(),
                password: "p".into(),
            }]
        },
    );
    assert_eq!(app.get("/healthz").into_string().unwrap(), "Ok");
}

#[test]
fn every_response_names_the_replica_that_sent_it() {
    let app = TestApp::with_args(&["-a", "download,list,update"]);
    let names: Vec<String> = ["/health", "/simple/", "/packages/nothing-1.0.tar.gz"]
        .iter()
        .map(|path| {
            let resp = app.get(path);
            header(&resp, "X-Wheelhouse-Replica")
                .unwrap_or_else(|| panic!("{path} ({}) names no replica", resp.status()))
        })
        .collect();
    // One process: one name, whatever the status (200, 401, 404).
    assert!(names.iter().all(|n| n == &names[0]), "{names:?}");
    assert!(
        names[0].ends_with(&format!("/{}", std::process::id())),
        "{}",
        names[0]
    );
}

#[test]
fn welcome_page_default_and_replaced() {
    let app = TestApp::open();
    let resp = app.get_with("/", &[("Host", "pkgs.example:8080")]);
    assert_eq!(resp.status(), Status::Ok);
    let body = resp.into_string().unwrap();
    assert!(body.contains("Welcome to wheelhouse"), "{body}");
    assert!(body.contains("http://pkgs.example:8080/simple/"), "{body}");

    let welcome = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(welcome.path(), "<h1>Our packages</h1>").unwrap();
    let app = TestApp::with_args(&[
        "-P",
        ".",
        "-a",
        ".",
        "--welcome",
        welcome.path().to_str().unwrap(),
    ]);
    assert_eq!(app.get("/").into_string().unwrap(), "<h1>Our packages</h1>");
}

// ---- simple index ----

#[test]
fn simple_index_html_and_json() {
    let app = demo_app();
    let resp = app.get("/simple/");
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(
        header(&resp, "Content-Type").unwrap(),
        "text/html; charset=utf-8"
    );
    assert_page_snapshot!("simple_index_html", resp.into_string().unwrap());

    let resp = app.get_with("/simple/", &[("Accept", PIP_ACCEPT)]);
    assert_eq!(header(&resp, "Content-Type").unwrap(), JSON);
    assert_eq!(header(&resp, "Vary").unwrap(), "Accept");
    assert_page_snapshot!("simple_index_json", resp.into_string().unwrap());

    let resp = app.get("/simple");
    assert_eq!(resp.status(), Status::MovedPermanently);
    assert_eq!(header(&resp, "Location").unwrap(), "/simple/");
}

#[test]
fn project_page_html_and_json() {
    let app = demo_app();
    let resp = app.get("/simple/demo-pkg/");
    assert_eq!(resp.status(), Status::Ok);
    assert_page_snapshot!("project_html", resp.into_string().unwrap());

    let resp = app.get_with("/simple/demo-pkg/", &[("Accept", JSON)]);
    assert_eq!(resp.status(), Status::Ok);
    let body = resp.into_string().unwrap();
    assert_page_snapshot!("project_json", body.clone());

    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let wheel_bytes = std::fs::read(app.path(&wheel_filename("demo-pkg", "1.0"))).unwrap();
    let file = &json["files"][1];
    assert_eq!(file["hashes"]["sha256"], sha256_hex(&wheel_bytes));
    assert_eq!(file["size"], wheel_bytes.len() as u64);
    assert_eq!(json["versions"], serde_json::json!(["0.9", "1.0"]));

    let resp = app.get_with(
        "/simple/demo-pkg/",
        &[("Accept", "application/vnd.pypi.simple.v1+html")],
    );
    assert_eq!(
        header(&resp, "Content-Type").unwrap(),
        "application/vnd.pypi.simple.v1+html"
    );
}

#[test]
fn files_in_subdirectories_are_listed_and_served() {
    let app = demo_app();
    let body = app.get("/simple/other/").into_string().unwrap();
    assert!(
        body.contains("href=\"../../packages/sub/dir/other-2.0.tar.gz#sha256="),
        "{body}"
    );
    let resp = app.get("/packages/sub/dir/other-2.0.tar.gz");
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(resp.into_bytes().unwrap(), sdist("other", "2.0", None));
}

#[test]
fn project_redirects_to_canonical_url() {
    let app = demo_app();
    for uri in ["/simple/Demo_Pkg/", "/simple/demo-pkg", "/simple/DEMO.pkg"] {
        let resp = app.get(uri);
        assert_eq!(resp.status(), Status::MovedPermanently, "{uri}");
        assert_eq!(
            header(&resp, "Location").unwrap(),
            "/simple/demo-pkg/",
            "{uri}"
        );
    }
}

#[test]
fn unknown_project_falls_back_or_404s() {
    let app = demo_app();
    let resp = app.get("/simple/requests/");
    assert_eq!(resp.status(), Status::SeeOther);
    assert_eq!(
        header(&resp, "Location").unwrap(),
        "https://pypi.org/simple/requests/"
    );

    let app = TestApp::with_args(&[
        "-P",
        ".",
        "-a",
        ".",
        "--fallback-url",
        "https://mirror.example/simple",
    ]);
    let resp = app.get("/simple/requests/");
    assert_eq!(
        header(&resp, "Location").unwrap(),
        "https://mirror.example/simple/requests/"
    );

    let app = TestApp::with_args(&["-P", ".", "-a", ".", "--disable-fallback"]);
    let resp = app.get("/simple/requests/");
    assert_eq!(resp.status(), Status::NotFound);
    assert!(resp.into_string().unwrap().contains("\"requests\""));
}

#[test]
fn invalid_project_name_is_rejected_with_it_quoted() {
    let app = TestApp::open();
    let resp = app.get("/simple/-bad-/");
    assert_eq!(resp.status(), Status::BadRequest);
    assert!(resp.into_string().unwrap().contains("\"-bad-\""));
}

#[test]
fn not_acceptable_when_no_format_matches() {
    let app = demo_app();
    let resp = app.get_with("/simple/demo-pkg/", &[("Accept", "application/xml")]);
    assert_eq!(resp.status(), Status::NotAcceptable);
    let resp = app.get_with(
        "/simple/",
        &[("Accept", "application/vnd.pypi.simple.v2+json")],
    );
    assert_eq!(resp.status(), Status::NotAcceptable);
}

#[test]
fn hash_algo_choices() {
    use sha2::Digest;
    let bytes = wheel("demo-pkg", "1.0", None);
    let expected = [
        ("md5", hex::encode(md5::Md5::digest(&bytes))),
        ("sha1", hex::encode(sha1::Sha1::digest(&bytes))),
        ("sha224", hex::encode(sha2::Sha224::digest(&bytes))),
        ("sha256", hex::encode(sha2::Sha256::digest(&bytes))),
        ("sha384", hex::encode(sha2::Sha384::digest(&bytes))),
        ("sha512", hex::encode(sha2::Sha512::digest(&bytes))),
    ];
    for (algo, digest) in expected {
        let app = TestApp::with_args(&["-P", ".", "-a", ".", "--hash-algo", algo]);
        app.put(&wheel_filename("demo-pkg", "1.0"), &bytes);
        let body = app.get("/simple/demo-pkg/").into_string().unwrap();
        assert!(
            body.contains(&format!("#{algo}={digest}\"")),
            "{algo}: {body}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &app.get_with("/simple/demo-pkg/", &[("Accept", JSON)])
                .into_string()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            json["files"][0]["hashes"],
            serde_json::json!({ algo: digest }),
            "{algo}"
        );
    }

    // pypiserver's spellings of "no hash" all mean the same.
    for off in ["off", "false", "no", "0", "none", "OFF"] {
        let app = TestApp::with_args(&["-P", ".", "-a", ".", "--hash-algo", off]);
        app.put(&wheel_filename("demo-pkg", "1.0"), &bytes);
        let body = app.get("/simple/demo-pkg/").into_string().unwrap();
        assert!(!body.contains('#'), "{off}: {body}");
        let json: serde_json::Value = serde_json::from_str(
            &app.get_with("/simple/demo-pkg/", &[("Accept", JSON)])
                .into_string()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["files"][0]["hashes"], serde_json::json!({}), "{off}");
    }
}

#[test]
fn server_base_url_makes_links_and_redirects_absolute() {
    let app = TestApp::with_args(&[
        "-P",
        ".",
        "-a",
        ".",
        "--server-base-url",
        "https://pkgs.example/py/",
    ]);
    app.put(
        &wheel_filename("demo-pkg", "1.0"),
        &wheel("demo-pkg", "1.0", None),
    );
    let body = app.get("/simple/demo-pkg/").into_string().unwrap();
    assert!(
        body.contains("href=\"https://pkgs.example/py/packages/demo_pkg-1.0-py3-none-any.whl#"),
        "{body}"
    );
    let resp = app.get("/simple/Demo-Pkg/");
    assert_eq!(
        header(&resp, "Location").unwrap(),
        "https://pkgs.example/py/simple/demo-pkg/"
    );
}

// ---- PEP 658 metadata ----

#[test]
fn core_metadata_is_the_exact_bytes_advertised() {
    let app = demo_app();
    let json: serde_json::Value = serde_json::from_str(
        &app.get_with("/simple/demo-pkg/", &[("Accept", JSON)])
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let wheel_entry = &json["files"][1];
    let advertised = wheel_entry["core-metadata"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wheel_entry["requires-python"], ">=3.8, <4");
    let resp = app.get(&format!(
        "/packages/{}.metadata",
        wheel_filename("demo-pkg", "1.0")
    ));
    assert_eq!(resp.status(), Status::Ok);
    let bytes = resp.into_bytes().unwrap();
    assert_eq!(
        bytes,
        common::metadata_text("demo-pkg", "1.0", Some(">=3.8, <4")).into_bytes()
    );
    assert_eq!(sha256_hex(&bytes), advertised);
    // An sdist has no PEP 658 metadata, but its Requires-Python still shows.
    assert_eq!(json["files"][0]["core-metadata"], false);
    assert_eq!(json["files"][0]["requires-python"], ">=3.7");
    assert_eq!(
        app.get("/packages/demo_pkg-0.9.tar.gz.metadata").status(),
        Status::NotFound
    );
}

// ---- /packages ----

#[test]
fn packages_listing_has_every_file_and_nothing_else() {
    let app = demo_app();
    let resp = app.get("/packages/");
    assert_eq!(resp.status(), Status::Ok);
    assert_page_snapshot!("packages_listing", resp.into_string().unwrap());
    assert_eq!(app.get("/packages").status(), Status::MovedPermanently);
}

#[test]
fn download_headers_head_and_cache_control() {
    let app = TestApp::with_args(&["-P", ".", "-a", ".", "--cache-control", "3600"]);
    let bytes = sdist("demo-pkg", "1.0", None);
    app.put("demo_pkg-1.0.tar.gz", &bytes);
    let resp = app.get("/packages/demo_pkg-1.0.tar.gz");
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(header(&resp, "Content-Type").unwrap(), "application/gzip");
    assert_eq!(header(&resp, "Content-Encoding"), None);
    assert_eq!(content_length(&resp).unwrap(), bytes.len().to_string());
    assert_eq!(
        header(&resp, "Cache-Control").unwrap(),
        "public, max-age=3600"
    );
    assert_eq!(header(&resp, "Accept-Ranges").unwrap(), "bytes");
    assert_eq!(resp.into_bytes().unwrap(), bytes);

    let resp = app.client.head("/packages/demo_pkg-1.0.tar.gz").dispatch();
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(content_length(&resp).unwrap(), bytes.len().to_string());
    assert!(resp.into_bytes().unwrap_or_default().is_empty());
}

/// Checks full, ranged and unsatisfiable downloads of `bytes`, stored as `name`.
fn check_ranges(name: &str, bytes: &[u8]) {
    let app = TestApp::open();
    app.put(name, bytes);
    let uri = format!("/packages/{name}");
    let resp = app.get(&uri);
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(content_length(&resp).unwrap(), bytes.len().to_string());
    assert!(resp.into_bytes().unwrap() == bytes, "full body differs");

    let resp = app.get_with(&uri, &[("Range", "bytes=10-19")]);
    assert_eq!(resp.status(), Status::PartialContent);
    assert_eq!(
        header(&resp, "Content-Range").unwrap(),
        format!("bytes 10-19/{}", bytes.len())
    );
    assert_eq!(content_length(&resp).unwrap(), "10");
    assert_eq!(resp.into_bytes().unwrap(), &bytes[10..20]);

    // uv reads the zip's central directory from the end.
    let resp = app.get_with(&uri, &[("Range", "bytes=-22")]);
    assert_eq!(resp.status(), Status::PartialContent);
    assert_eq!(resp.into_bytes().unwrap(), &bytes[bytes.len() - 22..]);

    let resp = app.get_with(&uri, &[("Range", "bytes=5-")]);
    assert_eq!(resp.status(), Status::PartialContent);
    assert!(
        resp.into_bytes().unwrap() == bytes[5..],
        "open range differs"
    );

    let resp = app.get_with(&uri, &[("Range", &format!("bytes={}-", bytes.len()))]);
    assert_eq!(resp.status(), Status::RangeNotSatisfiable);
    assert_eq!(
        header(&resp, "Content-Range").unwrap(),
        format!("bytes */{}", bytes.len())
    );
}

#[test]
fn ranges_206_and_416() {
    let bytes = wheel("demo-pkg", "1.0", None);
    check_ranges(&wheel_filename("demo-pkg", "1.0"), &bytes);
}

/// If-Range: the range only while the file is still the one the client began with (its ETag);
/// a stale ETag, or a date (which cannot tell two versions within one second apart), gets the
/// whole file, never a piece of another version.
#[test]
fn if_range_serves_the_range_only_for_the_current_etag() {
    let app = TestApp::open();
    let name = wheel_filename("demo-pkg", "1.0");
    let bytes = wheel("demo-pkg", "1.0", None);
    app.put(&name, &bytes);
    let uri = format!("/packages/{name}");
    let first = app.get(&uri);
    let etag = header(&first, "ETag").unwrap();
    let last_modified = header(&first, "Last-Modified").unwrap();

    let resp = app.get_with(&uri, &[("Range", "bytes=10-19"), ("If-Range", &etag)]);
    assert_eq!(resp.status(), Status::PartialContent);
    assert_eq!(resp.into_bytes().unwrap(), &bytes[10..20]);

    for stale in ["\"not-this-file\"", last_modified.as_str()] {
        let resp = app.get_with(&uri, &[("Range", "bytes=10-19"), ("If-Range", stale)]);
        assert_eq!(resp.status(), Status::Ok, "If-Range: {stale}");
        assert_eq!(header(&resp, "Content-Range"), None, "If-Range: {stale}");
        assert!(resp.into_bytes().unwrap() == bytes, "If-Range: {stale}");
    }

    // The file replaced (another size, so another ETag): the old ETag now gets it whole.
    let replaced = wheel("demo-pkg", "1.0", Some(">=3.8"));
    assert_ne!(replaced.len(), bytes.len());
    app.put(&name, &replaced);
    let resp = app.get_with(&uri, &[("Range", "bytes=10-19"), ("If-Range", &etag)]);
    assert_eq!(resp.status(), Status::Ok);
    assert!(resp.into_bytes().unwrap() == replaced);
}

#[test]
fn ranges_of_a_file_streamed_in_several_chunks() {
    // Past the size read whole and past one streamed chunk, in bytes that show any
    // misplaced offset.
    let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    check_ranges("demo_pkg-2.0.tar.gz", &bytes);
}

#[test]
fn conditional_requests_304() {
    let app = TestApp::open();
    app.put("demo_pkg-1.0.tar.gz", &sdist("demo-pkg", "1.0", None));
    let resp = app.get("/packages/demo_pkg-1.0.tar.gz");
    let etag = header(&resp, "ETag").unwrap();
    let last_modified = header(&resp, "Last-Modified").unwrap();
    let resp = app.get_with("/packages/demo_pkg-1.0.tar.gz", &[("If-None-Match", &etag)]);
    assert_eq!(resp.status(), Status::NotModified);
    let resp = app.get_with(
        "/packages/demo_pkg-1.0.tar.gz",
        &[("If-Modified-Since", &last_modified)],
    );
    assert_eq!(resp.status(), Status::NotModified);
    let resp = app.get_with(
        "/packages/demo_pkg-1.0.tar.gz",
        &[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    );
    assert_eq!(resp.status(), Status::Ok);
    let resp = app.get_with(
        "/packages/demo_pkg-1.0.tar.gz",
        &[("If-None-Match", "\"other\"")],
    );
    assert_eq!(resp.status(), Status::Ok);
}

#[test]
fn only_distribution_files_are_served() {
    let app = demo_app();
    for uri in [
        "/packages/notes.txt",
        "/packages/.hidden-1.0.tar.gz",
        "/packages/missing-1.0.tar.gz",
        "/packages/sub/../demo_pkg-0.9.tar.gz",
        "/packages/%2e%2e/etc/passwd",
    ] {
        assert_eq!(app.get(uri).status(), Status::NotFound, "{uri}");
    }
}

// ---- pypiserver's extra routes ----

#[test]
fn project_json_and_redirects() {
    let app = demo_app();
    let resp = app.get("/demo-pkg/json");
    assert_eq!(resp.status(), Status::Ok);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(json["info"]["version"], "1.0");
    assert_eq!(json["releases"].as_object().unwrap().len(), 2);
    assert_eq!(
        json["urls"][0]["filename"],
        wheel_filename("demo-pkg", "1.0")
    );
    assert_eq!(app.get("/nothing-here/json").status(), Status::NotFound);

    for uri in ["/Demo_Pkg", "/demo-pkg/"] {
        let resp = app.get(uri);
        assert_eq!(resp.status(), Status::SeeOther, "{uri}");
        assert_eq!(header(&resp, "Location").unwrap(), "/simple/demo-pkg/");
    }
}

// ---- uploads ----

#[test]
fn upload_then_listed_and_downloadable() {
    let app = TestApp::open();
    let resp = app.upload_wheel("demo-pkg", "1.0", None);
    assert_eq!(resp.status(), Status::Ok, "{:?}", resp.into_string());
    let name = wheel_filename("demo-pkg", "1.0");
    assert_eq!(app.stored(), vec![name.clone()]);
    let body = app.get("/simple/demo-pkg/").into_string().unwrap();
    assert!(body.contains(&name));
    assert!(body.contains("data-requires-python=\"&gt;=3.8\""), "{body}");
    assert_eq!(
        app.get(&format!("/packages/{name}")).into_bytes().unwrap(),
        wheel("demo-pkg", "1.0", Some(">=3.8"))
    );
}

#[test]
fn upload_is_accepted_at_legacy_and_simple_without_redirect() {
    let app = TestApp::open();
    for (uri, version) in [("/legacy/", "1.0"), ("/legacy", "1.1"), ("/simple/", "1.2")] {
        let bytes = sdist("demo-pkg", version, None);
        let sha = sha256_hex(&bytes);
        let filename = format!("demo_pkg-{version}.tar.gz");
        let resp = app.post_form(
            uri,
            &upload_fields("demo-pkg", version, &sha),
            Some((&filename, &bytes)),
            None,
        );
        assert_eq!(resp.status(), Status::Ok, "{uri}");
    }
    assert_eq!(app.stored().len(), 3);
}

#[test]
fn second_upload_conflicts_unless_overwrite() {
    let app = TestApp::open();
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.0", None).status(),
        Status::Ok
    );
    let resp = app.upload_wheel("demo-pkg", "1.0", None);
    assert_eq!(resp.status(), Status::Conflict);
    assert!(resp.into_string().unwrap().contains("already exists"));
    assert_eq!(app.stored(), vec![wheel_filename("demo-pkg", "1.0")]);

    let app = TestApp::with_args(&["-P", ".", "-a", ".", "--overwrite"]);
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.0", None).status(),
        Status::Ok
    );
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.0", None).status(),
        Status::Ok
    );
    assert_eq!(app.stored(), vec![wheel_filename("demo-pkg", "1.0")]);
}

#[test]
fn wrong_digests_are_rejected_and_nothing_is_stored() {
    let app = TestApp::open();
    let bytes = wheel("demo-pkg", "1.0", None);
    let name = wheel_filename("demo-pkg", "1.0");
    let wrong = "0".repeat(64);
    for (field, value) in [
        ("sha256_digest", wrong.as_str()),
        ("md5_digest", "00000000000000000000000000000000"),
        ("blake2_256_digest", wrong.as_str()),
    ] {
        let fields = vec![
            (":action", "file_upload"),
            ("name", "demo-pkg"),
            ("version", "1.0"),
            (field, value),
        ];
        let resp = app.post_form("/", &fields, Some((&name, &bytes)), None);
        assert_eq!(resp.status(), Status::BadRequest, "{field}");
        let message = resp.into_string().unwrap();
        assert!(
            message.contains(field) && message.contains(value),
            "{message}"
        );
        assert!(app.stored().is_empty(), "{field}: {:?}", app.stored());
    }
}

#[test]
fn bad_filenames_are_rejected_with_the_name_quoted() {
    let app = TestApp::open();
    let bytes = sdist("demo-pkg", "1.0", None);
    for (filename, expected) in [
        ("../demo_pkg-1.0.tar.gz", "path separator"),
        ("sub\\demo_pkg-1.0.tar.gz", "path separator"),
        ("demo_pkg..-1.0.tar.gz", "'..'"),
        ("demo_pkg-1.0.exe", "neither a wheel"),
        ("demo_pkg-1.0.whl", "{name}-{version}"),
        ("other-1.0.tar.gz", "name field says"),
    ] {
        let fields = vec![
            (":action", "file_upload"),
            ("name", "demo-pkg"),
            ("version", "1.0"),
        ];
        let resp = app.post_form("/", &fields, Some((filename, &bytes)), None);
        assert_eq!(resp.status(), Status::BadRequest, "{filename}");
        let message = resp.into_string().unwrap();
        assert!(message.contains(expected), "{filename}: {message}");
        assert!(app.stored().is_empty());
    }
}

#[test]
fn oversized_upload_is_413_and_leaves_nothing() {
    let app = TestApp::with_args(&["-P", ".", "-a", ".", "--max-upload-size", "1K"]);
    let big = vec![7u8; 4096];
    let fields = vec![
        (":action", "file_upload"),
        ("name", "demo-pkg"),
        ("version", "1.0"),
    ];
    let resp = app.post_form("/", &fields, Some(("demo_pkg-1.0.tar.gz", &big)), None);
    assert_eq!(resp.status(), Status::PayloadTooLarge);
    assert!(resp.into_string().unwrap().contains("1024 bytes"));
    assert!(app.stored().is_empty(), "{:?}", app.stored());
}

#[test]
fn malformed_posts_are_400() {
    let app = TestApp::open();
    let resp = app.post_form("/", &[("name", "x")], None, None);
    assert_eq!(resp.status(), Status::BadRequest);
    assert!(resp.into_string().unwrap().contains(":action"));
    let resp = app.post_form("/", &[(":action", "frobnicate")], None, None);
    assert!(resp.into_string().unwrap().contains("\"frobnicate\""));
    let resp = app.post_form("/", &[(":action", "file_upload")], None, None);
    assert_eq!(resp.status(), Status::BadRequest);
    let resp = app
        .client
        .post("/")
        .header(ContentType::JSON)
        .body("{}")
        .dispatch();
    assert_eq!(resp.status(), Status::BadRequest);
    for action in ["doc_upload", "verify", "submit"] {
        assert_eq!(
            app.post_form("/", &[(":action", action)], None, None)
                .status(),
            Status::Ok,
            "{action}"
        );
    }
}

#[test]
fn remove_pkg_deletes_one_version() {
    let app = TestApp::open();
    assert_eq!(
        app.upload_wheel("Demo_Pkg", "1.0", None).status(),
        Status::Ok
    );
    assert_eq!(
        app.upload_wheel("demo-pkg", "2.0", None).status(),
        Status::Ok
    );
    let resp = app.post_form(
        "/",
        &[
            (":action", "remove_pkg"),
            ("name", "DEMO.pkg"),
            ("version", "1.0"),
        ],
        None,
        None,
    );
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(app.stored(), vec![wheel_filename("demo-pkg", "2.0")]);
    let resp = app.post_form(
        "/",
        &[
            (":action", "remove_pkg"),
            ("name", "demo-pkg"),
            ("version", "1.0"),
        ],
        None,
        None,
    );
    assert_eq!(resp.status(), Status::NotFound);
    // pypiserver's clients also send it urlencoded.
    let resp = app
        .client
        .post("/")
        .header(ContentType::Form)
        .body("%3Aaction=remove_pkg&name=demo-pkg&version=2.0")
        .dispatch();
    assert_eq!(resp.status(), Status::Ok);
    assert!(app.stored().is_empty());
}

#[test]
fn concurrent_uploads_of_one_file_have_one_winner() {
    use rocket::local::asynchronous::Client as AsyncClient;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&["-P", ".", "-a", "."], dir.path());
    let statuses = rocket::tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = AsyncClient::tracked(wheelhouse::server::build(&config).unwrap())
                .await
                .unwrap();
            let bytes = wheel("demo-pkg", "1.0", None);
            let sha = sha256_hex(&bytes);
            let name = wheel_filename("demo-pkg", "1.0");
            let (content_type, body) = multipart(
                &upload_fields("demo-pkg", "1.0", &sha),
                Some((&name, &bytes)),
            );
            let requests = (0..8).map(|_| {
                client
                    .post("/")
                    .header(ContentType::parse_flexible(&content_type).unwrap())
                    .body(body.clone())
                    .dispatch()
            });
            futures_util::future::join_all(requests)
                .await
                .into_iter()
                .map(|r| r.status())
                .collect::<Vec<_>>()
        });
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Ok).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Conflict).count(),
        7,
        "{statuses:?}"
    );
    let stored: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != wheelhouse::index::fs_clock::CLOCK_FILE)
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
}

/// An upload of `bytes` as `filename`, with the form's `name` field set to `name`.
fn upload_as(app: &TestApp, name: &str, filename: &str, bytes: &[u8]) -> (Status, String) {
    let sha = sha256_hex(bytes);
    let resp = app.post_form(
        "/",
        &upload_fields(name, "0", &sha),
        Some((filename, bytes)),
        None,
    );
    (resp.status(), resp.into_string().unwrap_or_default())
}

/// The filenames a project page links to, in order.
fn listed_filenames(app: &TestApp, project: &str) -> Vec<String> {
    let resp = app.get_with(&format!("/simple/{project}/"), &[("Accept", JSON)]);
    // Not here: off to the fallback index.
    if resp.status() == Status::SeeOther {
        return Vec::new();
    }
    assert_eq!(resp.status(), Status::Ok, "/simple/{project}/");
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_sdist_name_readers_would_misread_is_refused_with_its_pep625_name() {
    let app = TestApp::open();
    for (name, filename, reads_as, pep625) in [
        ("foo-2", "foo-2-1.tar.gz", "foo", "foo_2-1.tar.gz"),
        (
            "python-3parclient",
            "python-3parclient-4.2.12.tar.gz",
            "python",
            "python_3parclient-4.2.12.tar.gz",
        ),
    ] {
        let bytes = sdist(name, "1", None);
        let (status, message) = upload_as(&app, name, filename, &bytes);
        assert_eq!(status, Status::BadRequest, "{filename}: {message}");
        assert!(
            message.contains(&format!("{filename:?}")) && message.contains(&format!("{pep625:?}")),
            "{filename}: {message}"
        );
        assert!(app.stored().is_empty(), "{:?}", app.stored());
        assert!(listed_filenames(&app, reads_as).is_empty());

        // Under the name it was told to use, it is listed where it was uploaded, served and
        // removable.
        let (status, message) = upload_as(&app, name, pep625, &bytes);
        assert_eq!(status, Status::Ok, "{pep625}: {message}");
        assert_eq!(listed_filenames(&app, name), [pep625]);
        assert!(listed_filenames(&app, reads_as).is_empty());
        assert_eq!(
            app.get(&format!("/packages/{pep625}"))
                .into_bytes()
                .unwrap(),
            bytes
        );
        let version = pep625
            .rsplit_once('-')
            .unwrap()
            .1
            .trim_end_matches(".tar.gz");
        let resp = app.post_form(
            "/",
            &[
                (":action", "remove_pkg"),
                ("name", name),
                ("version", version),
            ],
            None,
            None,
        );
        assert_eq!(resp.status(), Status::Ok, "remove {name} {version}");
        assert!(app.stored().is_empty(), "{:?}", app.stored());
    }
}

#[test]
fn one_release_has_one_spelling() {
    let app = TestApp::open();
    let bytes = sdist("demo", "1.0", None);
    assert_eq!(
        upload_as(&app, "demo", "demo-1.0.tar.gz", &bytes).0,
        Status::Ok
    );
    for spelling in [
        "Demo-1.0.tar.gz",
        "demo-1.0.0.tar.gz",
        "demo-01.0.tar.gz",
        "demo-1.0.zip",
    ] {
        let (status, message) = upload_as(&app, "demo", spelling, &bytes);
        assert_eq!(status, Status::Conflict, "{spelling}: {message}");
        assert!(
            message.contains("already exists") && message.contains("\"demo-1.0.tar.gz\""),
            "{spelling}: {message}"
        );
    }
    assert_eq!(app.stored(), ["demo-1.0.tar.gz"]);

    let wheel_bytes = wheel("demo", "1.0", None);
    let wheel_name = "demo-1.0-py3-none-any.whl";
    assert_eq!(
        upload_as(&app, "demo", wheel_name, &wheel_bytes).0,
        Status::Ok
    );
    for spelling in [
        "demo-1.0.0-py3-none-any.whl",
        "Demo-1.0-PY3-None-Any.whl",
        "demo-1.0-py3-none-any.tar.gz",
    ] {
        let (status, message) = upload_as(&app, "demo", spelling, &wheel_bytes);
        if spelling.ends_with(".whl") {
            assert_eq!(status, Status::Conflict, "{spelling}: {message}");
            assert!(message.contains(&format!("{wheel_name:?}")), "{message}");
        } else {
            assert_eq!(status, Status::BadRequest, "{spelling}: {message}");
        }
    }
    // Another build or other tags are another file of the release.
    for other in [
        "demo-1.0-1-py3-none-any.whl",
        "demo-1.0-py2.py3-none-any.whl",
    ] {
        let (status, message) = upload_as(&app, "demo", other, &wheel_bytes);
        assert_eq!(status, Status::Ok, "{other}: {message}");
    }
    assert_eq!(listed_filenames(&app, "demo").len(), 4);
}

#[test]
fn overwrite_replaces_every_spelling_of_the_release() {
    let app = TestApp::with_args(&["-P", ".", "-a", ".", "--overwrite"]);
    app.put("demo-1.0.tar.gz", b"old");
    let bytes = sdist("demo", "1.0", None);
    let (status, message) = upload_as(&app, "demo", "demo-1.0.0.tar.gz", &bytes);
    assert_eq!(status, Status::Ok, "{message}");
    assert_eq!(app.stored(), ["demo-1.0.0.tar.gz"]);
    assert_eq!(listed_filenames(&app, "demo"), ["demo-1.0.0.tar.gz"]);
}

#[test]
fn json_versions_are_canonical() {
    let app = TestApp::open();
    app.put("demo-01.0.tar.gz", &sdist("demo", "01.0", None));
    app.put("demo-2.0-1-py3-none-any.whl", &wheel("demo", "2.0", None));
    app.put("demo-2.0.0-py3-none-any.whl", &wheel("demo", "2.0.0", None));
    app.put("demo-3.0RC1.tar.gz", &sdist("demo", "3.0rc1", None));
    let resp = app.get_with("/simple/demo/", &[("Accept", JSON)]);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(
        json["versions"],
        serde_json::json!(["1.0", "2.0", "3.0rc1"])
    );

    let resp = app.get("/demo/json");
    assert_eq!(resp.status(), Status::Ok);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(json["info"]["version"], "3.0rc1");
    let releases = json["releases"].as_object().unwrap();
    assert_eq!(
        releases.keys().collect::<Vec<_>>(),
        ["1.0", "2.0", "3.0rc1"],
        "{json}"
    );
    assert_eq!(releases["2.0"].as_array().unwrap().len(), 2);
}

#[test]
fn wheel_filenames_outside_the_tag_grammar_are_refused() {
    let app = TestApp::open();
    let bytes = wheel("demo", "1.0", None);
    for filename in [
        "demo-1.0-py3-none-any:x.whl",
        "demo-1.0-py3-none-linux x86_64.whl",
        "demo-1.0-py3-none-.any.whl",
        "demo-1.0-py3-none-any..x.whl",
        "demo-1.0-py3-no%ne-any.whl",
        "demo-1.0-x1-py3-none-any.whl",
        "demo-1.0-1.2-py3-none-any.whl",
        "demo-1.0:1-py3-none-any.whl",
        "demo- 1.0-py3-none-any.whl",
    ] {
        let (status, message) = upload_as(&app, "demo", filename, &bytes);
        assert_eq!(status, Status::BadRequest, "{filename}: {message}");
        assert!(message.contains(&format!("{filename:?}")), "{message}");
    }
    assert!(app.stored().is_empty(), "{:?}", app.stored());
    // What the grammar allows.
    for filename in [
        "demo-1.0-1_b-cp311.cp312-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "demo-1.0+local.1-py3-none-any.whl",
    ] {
        let (status, message) = upload_as(&app, "demo", filename, &bytes);
        assert_eq!(status, Status::Ok, "{filename}: {message}");
    }
}

#[test]
fn over_long_names_are_client_errors() {
    let app = TestApp::open();
    let long = "a".repeat(300);
    for uri in [
        format!("/simple/{long}/"),
        format!("/{long}/json"),
        format!("/packages/{long}-1.0.tar.gz"),
        format!("/packages/{long}/demo-1.0.tar.gz"),
        format!("/packages/{long}-1.0-py3-none-any.whl.metadata"),
        format!("/packages/{}/demo-1.0.tar.gz", "a/".repeat(3000)),
    ] {
        let status = app.get(&uri).status();
        assert!(
            status == Status::NotFound || status == Status::BadRequest,
            "{}…: {status}",
            &uri[..40]
        );
    }
    let bytes = sdist("demo", "1.0", None);
    for (name, filename) in [
        ("demo", format!("demo-1.0{}.tar.gz", ".0".repeat(150))),
        (long.as_str(), format!("{long}-1.0.tar.gz")),
    ] {
        let (status, message) = upload_as(&app, name, &filename, &bytes);
        assert_eq!(status, Status::BadRequest, "{message}");
        assert!(
            message.len() < 1024,
            "the whole name is not echoed: {message}"
        );
    }
    assert!(app.stored().is_empty(), "{:?}", app.stored());
}

#[test]
fn a_filename_in_two_directories_is_listed_once() {
    let app = TestApp::open();
    let first = sdist("demo", "1.0", None);
    app.put("demo-1.0.tar.gz", &first);
    app.put("sub/demo-1.0.tar.gz", b"another copy");
    app.put("sub/demo-2.0.tar.gz", &sdist("demo", "2.0", None));
    let resp = app.get_with("/simple/demo/", &[("Accept", JSON)]);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{json}");
    assert_eq!(files[0]["filename"], "demo-1.0.tar.gz");
    assert_eq!(files[0]["hashes"]["sha256"], sha256_hex(&first));
    let resp = app.get("/packages/");
    assert_eq!(
        resp.into_string()
            .unwrap()
            .matches(">demo-1.0.tar.gz<")
            .count(),
        1
    );
    let json: serde_json::Value =
        serde_json::from_str(&app.get("/demo/json").into_string().unwrap()).unwrap();
    assert_eq!(
        json["releases"]["1.0"].as_array().unwrap().len(),
        1,
        "{json}"
    );
}

#[test]
fn the_first_package_directory_wins_a_shared_filename() {
    // Named to sort before the upload directory: the order of the roots decides, not paths.
    let second = tempfile::Builder::new().prefix("!").tempdir().unwrap();
    let app = TestApp::with_config(&["-P", ".", "-a", "."], |c| {
        c.index.roots.push(second.path().to_owned());
    });
    let first = sdist("demo", "1.0", None);
    app.put("demo-1.0.tar.gz", &first);
    std::fs::write(second.path().join("demo-1.0.tar.gz"), b"shadowed").unwrap();
    let resp = app.get_with("/simple/demo/", &[("Accept", JSON)]);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{json}");
    assert_eq!(files[0]["hashes"]["sha256"], sha256_hex(&first));
    assert_eq!(
        app.get("/packages/demo-1.0.tar.gz").into_bytes().unwrap(),
        first
    );
}

#[test]
fn overwrite_replaces_the_served_copy_where_it_is() {
    let app = TestApp::with_args(&["-P", ".", "-a", ".", "--overwrite"]);
    let filename = wheel_filename("demo-pkg", "1.0");
    app.put(&format!("sub/{filename}"), b"old bytes");
    let resp = app.upload_wheel("demo-pkg", "1.0", None);
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(app.stored(), ["sub"], "nothing new at the top");
    let new = wheel("demo-pkg", "1.0", Some(">=3.8"));
    assert_eq!(
        std::fs::read(app.path(&format!("sub/{filename}"))).unwrap(),
        new
    );
    assert_eq!(listed_filenames(&app, "demo-pkg"), [filename.as_str()]);
    assert_eq!(
        app.get(&format!("/packages/sub/{filename}"))
            .into_bytes()
            .unwrap(),
        new
    );
}

#[test]
fn overwrite_refuses_a_release_served_from_another_directory() {
    let other = tempfile::tempdir().unwrap();
    let app = TestApp::with_config(&["-P", ".", "-a", ".", "--overwrite"], |c| {
        c.index.roots.push(other.path().to_owned());
    });
    let filename = wheel_filename("demo-pkg", "1.0");
    std::fs::write(other.path().join(&filename), b"old bytes").unwrap();
    let resp = app.upload_wheel("demo-pkg", "1.0", None);
    assert_eq!(resp.status(), Status::Conflict);
    let message = resp.into_string().unwrap();
    assert!(
        message.contains(&format!("{filename:?}")) && message.contains("upload directory"),
        "{message}"
    );
    assert!(app.stored().is_empty(), "{:?}", app.stored());
    assert_eq!(
        std::fs::read(other.path().join(&filename)).unwrap(),
        b"old bytes"
    );
}

// ---- auth ----

fn htpasswd_app(actions: &str) -> (TestApp, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        file.path(),
        format!("alice:{hash}\nbroken line\nbob:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n"),
    )
    .unwrap();
    let app = TestApp::with_args(&["-P", file.path().to_str().unwrap(), "-a", actions]);
    (app, file)
}

#[test]
fn missing_credentials_401_wrong_403_right_200() {
    let (app, _file) = htpasswd_app("download,list,update");
    app.put("demo_pkg-1.0.tar.gz", &sdist("demo-pkg", "1.0", None));
    for uri in [
        "/simple/",
        "/simple/demo-pkg/",
        "/packages/",
        "/packages/demo_pkg-1.0.tar.gz",
        "/demo-pkg/json",
    ] {
        let resp = app.get(uri);
        assert_eq!(resp.status(), Status::Unauthorized, "{uri}");
        assert_eq!(
            header(&resp, "WWW-Authenticate").unwrap(),
            "Basic realm=\"pypi\""
        );
        let resp = app.get_with(uri, &[("Authorization", &basic("alice", "wrong"))]);
        assert_eq!(resp.status(), Status::Forbidden, "{uri}");
        let resp = app.get_with(uri, &[("Authorization", &basic("nobody", "s3cret"))]);
        assert_eq!(resp.status(), Status::Forbidden, "{uri}");
        let resp = app.get_with(uri, &[("Authorization", &basic("alice", "s3cret"))]);
        assert_eq!(resp.status(), Status::Ok, "{uri}");
        let resp = app.get_with(uri, &[("Authorization", &basic("bob", "test"))]);
        assert_eq!(resp.status(), Status::Ok, "{uri}");
    }
    assert_eq!(
        app.upload_wheel("demo-pkg", "2.0", None).status(),
        Status::Unauthorized
    );
    assert_eq!(
        app.upload_wheel("demo-pkg", "2.0", Some(("alice", "nope")))
            .status(),
        Status::Forbidden
    );
    assert_eq!(
        app.upload_wheel("demo-pkg", "2.0", Some(("alice", "s3cret")))
            .status(),
        Status::Ok
    );
    // The health check stays open for load balancers.
    assert_eq!(app.get("/health").status(), Status::Ok);
}

#[test]
fn only_listed_actions_are_protected() {
    let (app, _file) = htpasswd_app("update");
    app.put("demo_pkg-1.0.tar.gz", &sdist("demo-pkg", "1.0", None));
    assert_eq!(app.get("/simple/demo-pkg/").status(), Status::Ok);
    assert_eq!(
        app.get("/packages/demo_pkg-1.0.tar.gz").status(),
        Status::Ok
    );
    assert_eq!(
        app.upload_wheel("demo-pkg", "2.0", None).status(),
        Status::Unauthorized
    );
}

#[test]
fn password_file_changes_apply_without_restart() {
    let (app, file) = htpasswd_app("list");
    let auth = [("Authorization", basic("carol", "new"))];
    let auth: Vec<(&'static str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(app.get_with("/simple/", &auth).status(), Status::Forbidden);
    let hash = bcrypt::hash("new", 4).unwrap();
    std::fs::write(file.path(), format!("carol:{hash}\n")).unwrap();
    assert_eq!(app.get_with("/simple/", &auth).status(), Status::Ok);
    let alice = basic("alice", "s3cret");
    assert_eq!(
        app.get_with("/simple/", &[("Authorization", &alice)])
            .status(),
        Status::Forbidden
    );
}

#[test]
fn environment_user_is_accepted() {
    let app = TestApp::with_config(&["-a", "update,list"], |c| {
        c.env_users = vec![wheelhouse::auth::StaticUser {
            username: "ci".into(),
            password: "from-secrets-manager".into(),
        }]
    });
    assert_eq!(app.get("/simple/").status(), Status::Unauthorized);
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.0", Some(("ci", "from-secrets-manager")))
            .status(),
        Status::Ok
    );
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.1", Some(("ci", "guess")))
            .status(),
        Status::Forbidden
    );
}

/// The configuration of `wheelhouse run ARGS DIR` in the environment `env`, as it starts.
fn config_in_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Result<ServerConfig, String> {
    let mut argv = vec!["wheelhouse", "run"];
    argv.extend_from_slice(args);
    argv.push(dir.to_str().unwrap());
    let Command::Run(run) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not a run command")
    };
    run.into_config_with_env(env.iter().map(|(k, v)| ((*k).into(), (*v).into())))
        .map_err(|err| err.to_string())
}

#[test]
fn every_user_of_the_environment_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WHEELHOUSE_USERNAME", "wheelhouse"),
        ("WHEELHOUSE_PASSWORD", "generated-1"),
        ("WHEELHOUSE_USERNAME_CIBOT", "ci-bot"),
        ("WHEELHOUSE_PASSWORD_CIBOT", "generated-2"),
        ("WHEELHOUSE_USERNAME_ALICE", "alice"),
        ("WHEELHOUSE_PASSWORD_ALICE", "generated-3"),
    ];
    let config = config_in_env(&["-a", "update,list"], dir.path(), &env).unwrap();
    let client = Client::tracked(wheelhouse::server::build(&config).unwrap()).unwrap();
    let app = TestApp { dir, client };
    for (version, user, password) in [
        ("1.0", "wheelhouse", "generated-1"),
        ("1.1", "ci-bot", "generated-2"),
        ("1.2", "alice", "generated-3"),
    ] {
        assert_eq!(
            app.upload_wheel("demo-pkg", version, Some((user, password)))
                .status(),
            Status::Ok,
            "{user}"
        );
        let auth = basic(user, password);
        assert_eq!(
            app.get_with("/simple/", &[("Authorization", &auth)])
                .status(),
            Status::Ok,
            "{user}"
        );
    }
    // Each password is its own user's only.
    assert_eq!(
        app.upload_wheel("demo-pkg", "2.0", Some(("alice", "generated-2")))
            .status(),
        Status::Forbidden
    );
    assert_eq!(app.get("/simple/").status(), Status::Unauthorized);
}

#[test]
fn err_a_user_of_the_environment_without_its_password_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = config_in_env(
        &["-a", "update"],
        dir.path(),
        &[
            ("WHEELHOUSE_USERNAME", "wheelhouse"),
            ("WHEELHOUSE_PASSWORD", "generated-1"),
            ("WHEELHOUSE_USERNAME_CIBOT", "ci-bot"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        err,
        "WHEELHOUSE_USERNAME_CIBOT is set but WHEELHOUSE_PASSWORD_CIBOT is not"
    );
    let err = config_in_env(
        &["-a", "update"],
        dir.path(),
        &[
            ("WHEELHOUSE_USERNAME_A", "ci"),
            ("WHEELHOUSE_PASSWORD_A", "one"),
            ("WHEELHOUSE_USERNAME_B", "ci"),
            ("WHEELHOUSE_PASSWORD_B", "two"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        err,
        "user \"ci\" is given twice, by WHEELHOUSE_USERNAME_A and by WHEELHOUSE_USERNAME_B"
    );
}

#[test]
fn protected_actions_without_any_credentials_are_refused() {
    let app = TestApp::with_args(&["-a", "update"]);
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.0", Some(("any", "thing")))
            .status(),
        Status::Forbidden
    );
    assert!(app.stored().is_empty());
}

#[test]
fn a_des_crypt_hash_is_not_a_password() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // What `htpasswd -nbd dave secret` writes, next to a usable line.
    std::fs::write(
        file.path(),
        "dave:abhWCwoTZY2c6\ncarol:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n",
    )
    .unwrap();
    let app = TestApp::with_args(&["-P", file.path().to_str().unwrap(), "-a", "list"]);
    let as_user = |user, password| {
        app.get_with("/simple/", &[("Authorization", &basic(user, password))])
            .status()
    };
    assert_eq!(as_user("dave", "abhWCwoTZY2c6"), Status::Forbidden);
    assert_eq!(as_user("carol", "test"), Status::Ok);
}

#[test]
fn a_deleted_password_file_lets_nobody_in_until_it_is_back() {
    let (app, file) = htpasswd_app("list");
    let alice = basic("alice", "s3cret");
    let status = || {
        app.get_with("/simple/", &[("Authorization", &alice)])
            .status()
    };
    assert_eq!(status(), Status::Ok);
    let text = std::fs::read(file.path()).unwrap();
    std::fs::remove_file(file.path()).unwrap();
    assert_eq!(status(), Status::Forbidden);
    assert_eq!(status(), Status::Forbidden);
    std::fs::write(file.path(), text).unwrap();
    assert_eq!(status(), Status::Ok);
}

/// A burst of bcrypt checks must leave the blocking threads that downloads read files with:
/// here the pool has room for every bcrypt lane plus a few, and 24 wrong passwords per lane
/// arrive at once. Before the lanes were bounded, the download's file reads queued behind
/// nearly all of them (2 CPUs: 380 ms of a 460 ms burst; now under 3 ms of 300 ms).
#[test]
fn a_burst_of_wrong_passwords_does_not_hold_up_downloads() {
    use rocket::local::asynchronous::Client as AsyncClient;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("htpasswd");
    std::fs::write(
        &passwords,
        format!("alice:{}\n", bcrypt::hash("s3cret", 8).unwrap()),
    )
    .unwrap();
    let packages = dir.path().join("packages");
    std::fs::create_dir(&packages).unwrap();
    let file = sdist("demo-pkg", "1.0", None);
    std::fs::write(packages.join("demo_pkg-1.0.tar.gz"), &file).unwrap();
    let config = config(
        &["-P", passwords.to_str().unwrap(), "-a", "update"],
        &packages,
    );
    let lanes = wheelhouse::auth::slow_check_lanes();
    let guesses = 24 * lanes;
    let (statuses, burst, download) = rocket::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(lanes + 4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = AsyncClient::tracked(wheelhouse::server::build(&config).unwrap())
                .await
                .unwrap();
            let started = Instant::now();
            let requests = futures_util::future::join_all((0..guesses).map(|i| {
                client
                    .post("/")
                    .header(ContentType::Form)
                    .header(Header::new(
                        "Authorization",
                        basic("alice", &format!("guess{i}")),
                    ))
                    .body(":action=remove_pkg&name=demo-pkg&version=1.0")
                    .dispatch()
            }));
            let burst = async {
                let statuses: Vec<Status> = requests.await.iter().map(|r| r.status()).collect();
                (statuses, started.elapsed())
            };
            let download = async {
                // Once every guess waits for its bcrypt.
                rocket::tokio::time::sleep(Duration::from_millis(20)).await;
                let asked = Instant::now();
                let resp = client.get("/packages/demo_pkg-1.0.tar.gz").dispatch().await;
                assert_eq!(resp.status(), Status::Ok);
                assert_eq!(resp.into_bytes().await.unwrap(), file);
                asked.elapsed()
            };
            let ((statuses, burst), download) = rocket::tokio::join!(burst, download);
            (statuses, burst, download)
        });
    assert!(
        statuses.iter().all(|s| *s == Status::Forbidden),
        "{statuses:?}"
    );
    assert!(
        download < burst / 4,
        "the download took {download:?} while {guesses} guesses took {burst:?}"
    );
    assert!(packages.join("demo_pkg-1.0.tar.gz").exists());
}

// ---- browsers: cross-site requests ----

/// A POST as a browser sends it from a page whose origin is `origin`, to this server as `host`.
fn browser_remove<'c>(
    app: &'c TestApp,
    host: &str,
    browser_headers: &[(&'static str, &str)],
    version: &str,
) -> LocalResponse<'c> {
    let mut req = app.client.post("/").header(ContentType::Form).body(format!(
        ":action=remove_pkg&name=demo-pkg&version={version}"
    ));
    req.inner_mut()
        .set_host(rocket::http::uri::Host::parse_owned(host.to_owned()).unwrap());
    for (name, value) in browser_headers {
        req = req.header(Header::new(*name, value.to_string()));
    }
    req.dispatch()
}

#[test]
fn cross_site_posts_are_refused_and_remove_nothing() {
    let app = TestApp::open();
    for version in ["1.0", "2.0", "3.0"] {
        assert_eq!(
            app.upload_wheel("demo-pkg", version, None).status(),
            Status::Ok
        );
    }
    let all = app.stored();
    for headers in [
        vec![("Origin", "http://evil.example")],
        vec![
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Origin", "http://localhost:9999")],
        vec![("Origin", "null")],
    ] {
        let resp = browser_remove(&app, "localhost:8080", &headers, "1.0");
        assert_eq!(resp.status(), Status::Forbidden, "{headers:?}");
        let body = resp.into_string().unwrap();
        assert!(body.starts_with("cross-site request refused"), "{body}");
        if let [("Origin", origin)] = headers[..] {
            assert!(body.contains(&format!("{origin:?}")), "{body}");
        }
    }
    assert_eq!(app.stored(), all);
    // A multipart upload from another site is refused the same way.
    let bytes = wheel("demo-pkg", "4.0", None);
    let (content_type, body) = multipart(
        &upload_fields("demo-pkg", "4.0", &sha256_hex(&bytes)),
        Some((&wheel_filename("demo-pkg", "4.0"), &bytes)),
    );
    let resp = app
        .client
        .post("/")
        .header(ContentType::parse_flexible(&content_type).unwrap())
        .header(Header::new("Origin", "https://evil.example"))
        .body(body)
        .dispatch();
    assert_eq!(resp.status(), Status::Forbidden);
    assert_eq!(app.stored(), all);

    // This server's own page, and twine, which sends neither header.
    let same_origin = [
        ("Origin", "http://localhost:8080"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let resp = browser_remove(&app, "localhost:8080", &same_origin, "1.0");
    assert_eq!(resp.status(), Status::Ok);
    let resp = browser_remove(&app, "localhost:8080", &[], "2.0");
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(app.stored(), vec![wheel_filename("demo-pkg", "3.0")]);
}

#[test]
fn behind_a_proxy_the_base_url_is_this_server_s_origin() {
    let app = TestApp::with_args(&[
        "-P",
        ".",
        "-a",
        ".",
        "--server-base-url",
        "https://pypi.example/",
    ]);
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.0", None).status(),
        Status::Ok
    );
    let resp = browser_remove(
        &app,
        "10.0.0.5:8080",
        &[("Origin", "https://evil.example")],
        "1.0",
    );
    assert_eq!(resp.status(), Status::Forbidden);
    let resp = browser_remove(
        &app,
        "10.0.0.5:8080",
        &[("Origin", "https://pypi.example")],
        "1.0",
    );
    assert_eq!(resp.status(), Status::Ok);
    assert!(app.stored().is_empty());
}

#[test]
fn cross_site_posts_are_refused_even_with_saved_credentials() {
    let (app, _file) = htpasswd_app("update");
    assert_eq!(
        app.upload_wheel("demo-pkg", "1.0", Some(("alice", "s3cret")))
            .status(),
        Status::Ok
    );
    let alice = basic("alice", "s3cret");
    let resp = browser_remove(
        &app,
        "localhost:8080",
        &[("Origin", "http://evil.example"), ("Authorization", &alice)],
        "1.0",
    );
    assert_eq!(resp.status(), Status::Forbidden);
    assert_eq!(app.stored(), vec![wheel_filename("demo-pkg", "1.0")]);
    // Wrong credentials still get the credentials' 403.
    let resp = browser_remove(
        &app,
        "localhost:8080",
        &[("Authorization", &basic("alice", "no"))],
        "1.0",
    );
    assert_eq!(resp.status(), Status::Forbidden);
    assert_eq!(
        resp.into_string().unwrap(),
        "access denied: these credentials may not do this\n"
    );
}

// ---- XML-RPC search ----

fn search_call(term: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>search</methodName>\n<params>\n<param>\n<value><struct>\n<member>\n<name>name</name>\n<value><array><data>\n<value><string>{term}</string></value>\n</data></array></value>\n</member>\n</struct></value>\n</param>\n<param>\n<value><string>or</string></value>\n</param>\n</params>\n</methodCall>\n"
    )
}

#[test]
fn rpc_search_finds_projects_by_name_with_their_latest_version() {
    let app = demo_app();
    let resp = app
        .client
        .post("/RPC2")
        .header(ContentType::XML)
        .body(search_call("Demo_"))
        .dispatch();
    assert_eq!(resp.status(), Status::Ok);
    let body = resp.into_string().unwrap();
    assert!(
        body.contains("<name>name</name><value><string>demo-pkg</string>"),
        "{body}"
    );
    assert!(
        body.contains("<name>version</name><value><string>1.0</string>"),
        "{body}"
    );
    assert!(!body.contains("other"), "{body}");

    let resp = app
        .client
        .post("/RPC2")
        .header(ContentType::XML)
        .body("<methodCall><methodName>list_packages</methodName></methodCall>")
        .dispatch();
    assert_eq!(resp.status(), Status::Ok);
    assert!(resp.into_string().unwrap().contains("<fault>"));

    let resp = app
        .client
        .post("/RPC2")
        .header(ContentType::XML)
        .body("<methodCall>")
        .dispatch();
    assert_eq!(resp.status(), Status::BadRequest);
}

#[test]
fn rpc_search_needs_list_permission() {
    let (app, _file) = htpasswd_app("list");
    let resp = app.client.post("/RPC2").body(search_call("x")).dispatch();
    assert_eq!(resp.status(), Status::Unauthorized);
}

/// The process's umask, as the kernel reports it (reading it with `umask()` would change it
/// for every thread of the test binary).
fn current_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))
        .expect("a Umask line");
    u32::from_str_radix(field.trim(), 8).unwrap()
}

#[test]
fn published_files_have_the_modes_the_umask_gives() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::open();
    let resp = app.upload_wheel("modes", "1.0", None);
    assert_eq!(resp.status(), Status::Ok);
    let mode = std::fs::metadata(app.path(&wheel_filename("modes", "1.0")))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666 & !current_umask(), "mode {mode:o}");
}

/// Bodies made of multipart's own pieces in any order, with junk between them: what a broken
/// or hostile client sends.
fn multipart_like_body() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just(b"--XyZ\r\n".to_vec()),
        Just(b"--XyZ--\r\n".to_vec()),
        Just(b"--XyZ".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b"Content-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload".to_vec()),
        Just(b"Content-Disposition: form-data; name=\":action\"\r\n\r\nremove_pkg".to_vec()),
        Just(b"Content-Disposition: form-data; name=\"name\"\r\n\r\nfuzz".to_vec()),
        Just(b"Content-Disposition: form-data; name=\"version\"\r\n\r\n1.0".to_vec()),
        Just(
            b"Content-Disposition: form-data; name=\"content\"; filename=\"fuzz-1.0.tar.gz\"\r\n"
                .to_vec()
        ),
        Just(b"Content-Disposition: form-data; name=\"content\"\r\n".to_vec()),
        Just(b"Content-Type: application/octet-stream\r\n".to_vec()),
        Just(b"Content-Disposition: form-data; name=\"sha256_digest\"\r\n\r\n00".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    /// No multipart body, however broken, crashes the server or gets a 5xx; and whatever it
    /// stored is a distribution file listed under its own project.
    #[test]
    fn any_multipart_body_gets_a_client_answer(body in multipart_like_body()) {
        let app = TestApp::open();
        let resp = app
            .client
            .post("/")
            .header(ContentType::parse_flexible("multipart/form-data; boundary=XyZ").unwrap())
            .body(body)
            .dispatch();
        let status = resp.status();
        proptest::prop_assert!(status.code < 500, "status {status}");
        drop(resp);
        for name in app.stored() {
            proptest::prop_assert!(!name.starts_with('.'), "left behind: {name}");
            let page = app.get("/simple/fuzz/").into_string().unwrap_or_default();
            proptest::prop_assert!(page.contains(&name), "{name} stored but not listed");
        }
    }
}

// ---- odd files on disk ----

/// Sets a file's mtime to `secs` since 1970 (negative: before), without following a symlink.
fn set_mtime(path: &Path, secs: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let time = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [time, time];
    // SAFETY: a valid NUL-terminated path and two timespecs, as utimensat(2) wants.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
}

#[test]
fn files_dated_before_1970_are_listed_and_served() {
    let app = TestApp::open();
    let old = wheel_filename("old-pkg", "1.0");
    app.put(&old, &wheel("old-pkg", "1.0", None));
    app.put("old_pkg-2.0.tar.gz", &sdist("old-pkg", "2.0", None));
    set_mtime(&app.path(&old), -300_000_000); // 1960
    for uri in ["/simple/old-pkg/", "/packages/", "/old-pkg/json"] {
        assert_eq!(app.get(uri).status(), Status::Ok, "{uri}");
    }
    let resp = app.get_with("/simple/old-pkg/", &[("Accept", JSON)]);
    assert_eq!(resp.status(), Status::Ok);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(
        json["files"][0]["upload-time"],
        "1960-06-29T18:40:00.000000Z"
    );
    let resp = app.get(&format!("/packages/{old}"));
    assert_eq!(resp.status(), Status::Ok);
    // No HTTP-date can say when it was written: better no Last-Modified than a wrong one,
    // and no If-Modified-Since can match it.
    assert_eq!(header(&resp, "Last-Modified"), None);
    let resp = app.get_with(
        &format!("/packages/{old}"),
        &[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    );
    assert_eq!(resp.status(), Status::Ok);
    let resp = app.get("/packages/old_pkg-2.0.tar.gz");
    assert!(header(&resp, "Last-Modified").is_some());
}

// ---- pypiserver's JSON API ----

#[test]
fn project_json_urls_are_absolute_and_download_the_file() {
    let app = demo_app();
    let resp = app.get_with("/demo-pkg/json", &[("Host", "pkgs.example:8080")]);
    assert_eq!(resp.status(), Status::Ok);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    let wheel_name = wheel_filename("demo-pkg", "1.0");
    let url = json["urls"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("http://pkgs.example:8080/packages/{wheel_name}")
    );
    let path = url.strip_prefix("http://pkgs.example:8080").unwrap();
    assert_eq!(
        app.get(path).into_bytes().unwrap(),
        std::fs::read(app.path(&wheel_name)).unwrap()
    );
    let older = json["releases"]["0.9"][0]["url"].as_str().unwrap();
    assert_eq!(
        older,
        "http://pkgs.example:8080/packages/demo_pkg-0.9.tar.gz"
    );

    // Behind a proxy that terminates TLS, as pypiserver does.
    let resp = app.get_with(
        "/demo-pkg/json",
        &[("Host", "pkgs.example"), ("X-Forwarded-Proto", "https")],
    );
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(
        json["urls"][0]["url"],
        format!("https://pkgs.example/packages/{wheel_name}")
    );

    let app = TestApp::with_args(&[
        "-P",
        ".",
        "-a",
        ".",
        "--server-base-url",
        "https://idx.example/py",
    ]);
    app.put(&wheel_name, &wheel("demo-pkg", "1.0", None));
    let resp = app.get_with("/demo-pkg/json", &[("Host", "internal:8080")]);
    let json: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(
        json["urls"][0]["url"],
        format!("https://idx.example/py/packages/{wheel_name}")
    );
}

// ---- entries that cannot be read, symlinks ----

const BACKENDS: [&str; 3] = ["consistent-dir", "simple-dir", "cached-dir"];

fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Root reads a 0700 or 000 directory: permissions only simulate unreadability for others.
fn permissions_apply() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}

/// The link texts of a page, in order.
fn links(body: &str) -> Vec<String> {
    body.split("<a href=\"")
        .skip(1)
        .filter_map(|rest| Some(rest.split_once('>')?.1.split_once("</a>")?.0.to_owned()))
        .collect()
}

#[test]
fn entries_that_cannot_be_read_are_left_out_and_the_rest_is_served() {
    for backend in BACKENDS {
        let app = TestApp::with_args(&["-P", ".", "-a", ".", "--backend", backend]);
        let wheel_name = wheel_filename("demo-pkg", "1.0");
        app.put(&wheel_name, &wheel("demo-pkg", "1.0", None));
        app.put("sub/demo_pkg-0.9.tar.gz", &sdist("demo-pkg", "0.9", None));
        // A dist-named symlink loop, and a directory linked into itself.
        symlink("demo_pkg-2.0.tar.gz", &app.path("demo_pkg-2.0.tar.gz"));
        symlink(".", &app.path("sub/again"));
        // A dangling link, a FIFO (opening it would block), a dist-named directory.
        symlink("nowhere", &app.path("demo_pkg-3.0.tar.gz"));
        mkfifo(&app.path("demo_pkg-4.0.tar.gz"));
        std::fs::create_dir(app.path("demo_pkg-5.0.tar.gz")).unwrap();
        let unreadable_wheel = wheel_filename("demo-pkg", "8.0");
        if permissions_apply() {
            use std::os::unix::fs::PermissionsExt;
            app.put("lost+found/demo_pkg-7.0.tar.gz", b"unreachable");
            app.put("demo_pkg-6.0.tar.gz", b"unreadable");
            app.put(&unreadable_wheel, &wheel("demo-pkg", "8.0", None));
            for name in [
                "lost+found",
                "demo_pkg-6.0.tar.gz",
                unreadable_wheel.as_str(),
            ] {
                std::fs::set_permissions(app.path(name), std::fs::Permissions::from_mode(0o000))
                    .unwrap();
            }
        } else if backend == BACKENDS[0] {
            common::privileged::report_left_out(
                "server::entries_that_cannot_be_read_are_left_out_and_the_rest_is_served, its \
                 000-mode entries",
                "root reads them whatever their mode; run the tests as another user",
            );
        }
        // Twice: what is logged or remembered the first time must not change the answer.
        for _ in 0..2 {
            for (page, expected) in [
                ("/simple/", vec!["demo-pkg"]),
                (
                    "/simple/demo-pkg/",
                    vec!["demo_pkg-0.9.tar.gz", wheel_name.as_str()],
                ),
                (
                    "/packages/",
                    vec!["sub/demo_pkg-0.9.tar.gz", wheel_name.as_str()],
                ),
            ] {
                let resp = app.get(page);
                assert_eq!(resp.status(), Status::Ok, "{backend} {page}");
                assert_eq!(
                    links(&resp.into_string().unwrap()),
                    expected,
                    "{backend} {page}"
                );
            }
            let resp = app.get("/demo-pkg/json");
            assert_eq!(resp.status(), Status::Ok, "{backend}");
            let json: serde_json::Value =
                serde_json::from_str(&resp.into_string().unwrap()).unwrap();
            let versions: Vec<&String> = json["releases"].as_object().unwrap().keys().collect();
            assert_eq!(versions, ["0.9", "1.0"], "{backend}");
        }
        for version in ["2.0", "3.0", "4.0", "5.0", "6.0"] {
            let uri = format!("/packages/demo_pkg-{version}.tar.gz");
            assert_eq!(app.get(&uri).status(), Status::NotFound, "{backend} {uri}");
        }
        // Not a server error either: a wheel the server may not read, and its metadata.
        for uri in [
            format!("/packages/{unreadable_wheel}"),
            format!("/packages/{unreadable_wheel}.metadata"),
        ] {
            assert_eq!(app.get(&uri).status(), Status::NotFound, "{backend} {uri}");
        }
        let resp = app.upload_wheel("fresh", "1.0", None);
        assert_eq!(resp.status(), Status::Ok, "{backend}");
        assert_eq!(app.get("/simple/fresh/").status(), Status::Ok, "{backend}");
    }
}

#[test]
fn symlinks_are_followed_only_inside_the_package_directories() {
    for backend in BACKENDS {
        let outside = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let secret = sdist("evil", "1.0", None);
        for name in ["evil-1.0.tar.gz", "evil-2.0.tar.gz", "evil-3.0.tar.gz"] {
            std::fs::write(outside.path().join(name), &secret).unwrap();
        }
        let store = second.path().join(".store");
        std::fs::create_dir(&store).unwrap();
        let from_second = sdist("fromsecond", "1.0", None);
        std::fs::write(store.join("fromsecond-1.0.tar.gz"), &from_second).unwrap();

        let second_root = second.path().to_str().unwrap();
        let app = TestApp::with_args(&["-P", ".", "-a", ".", "--backend", backend, second_root]);
        let inside = sdist("inside", "1.0", None);
        app.put(".store/inside-1.0.tar.gz", &inside);
        symlink(".store/inside-1.0.tar.gz", &app.path("inside-1.0.tar.gz"));
        symlink(
            store.join("fromsecond-1.0.tar.gz"),
            &app.path("fromsecond-1.0.tar.gz"),
        );
        symlink(
            outside.path().join("evil-1.0.tar.gz"),
            &app.path("evil-1.0.tar.gz"),
        );
        std::fs::create_dir(app.path("sub")).unwrap();
        symlink(
            outside.path().join("evil-2.0.tar.gz"),
            &app.path("sub/evil-2.0.tar.gz"),
        );
        // A directory link leading out: neither walked nor served through.
        symlink(outside.path(), &app.path("linked"));

        let resp = app.get("/packages/");
        assert_eq!(resp.status(), Status::Ok, "{backend}");
        assert_eq!(
            links(&resp.into_string().unwrap()),
            ["fromsecond-1.0.tar.gz", "inside-1.0.tar.gz"],
            "{backend}"
        );
        assert_eq!(
            app.get("/evil/json").status(),
            Status::NotFound,
            "{backend}"
        );
        for uri in [
            "/packages/evil-1.0.tar.gz",
            "/packages/sub/evil-2.0.tar.gz",
            "/packages/linked/evil-3.0.tar.gz",
        ] {
            assert_eq!(app.get(uri).status(), Status::NotFound, "{backend} {uri}");
        }
        let resp = app.get("/packages/inside-1.0.tar.gz");
        assert_eq!(resp.into_bytes().unwrap(), inside, "{backend}");
        let resp = app.get("/packages/fromsecond-1.0.tar.gz");
        assert_eq!(resp.into_bytes().unwrap(), from_second, "{backend}");
    }
}

// ---- archives whose reading costs too much ----

/// A wheel of demo-pkg 1.0 with `filler` tiny stored entries before its METADATA, so finding
/// the METADATA means walking all of them.
fn wheel_with_entries(filler: usize) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    for n in 0..filler {
        zip.start_file(format!("d/{n}"), options).unwrap();
    }
    zip.start_file("demo_pkg-1.0.dist-info/METADATA", options)
        .unwrap();
    zip.write_all(common::metadata_text("demo-pkg", "1.0", None).as_bytes())
        .unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn a_wheel_of_too_many_entries_is_refused_at_upload() {
    let app = TestApp::open();
    let bytes = wheel_with_entries(200_000);
    let filename = wheel_filename("demo-pkg", "1.0");
    let resp = app.post_form(
        "/",
        &upload_fields("demo-pkg", "1.0", &sha256_hex(&bytes)),
        Some((&filename, &bytes)),
        None,
    );
    assert_eq!(resp.status(), Status::BadRequest);
    assert_eq!(
        resp.into_string().unwrap(),
        format!("{filename:?} is refused: the archive has 200001 entries; at most 100000 are accepted\n")
    );
    assert!(app.stored().is_empty(), "{:?}", app.stored());
    // Under the limit, the same shape is accepted and its metadata served.
    let bytes = wheel_with_entries(1_000);
    let resp = app.post_form(
        "/",
        &upload_fields("demo-pkg", "1.0", &sha256_hex(&bytes)),
        Some((&filename, &bytes)),
        None,
    );
    assert_eq!(resp.status(), Status::Ok);
    let resp = app.get(&format!("/packages/{filename}.metadata"));
    assert_eq!(
        resp.into_string().unwrap(),
        common::metadata_text("demo-pkg", "1.0", None)
    );
}

/// `n` requests for `uri` at once; their statuses and bodies.
async fn all_at_once(
    client: &rocket::local::asynchronous::Client,
    uri: &str,
    n: usize,
) -> Vec<(Status, Vec<u8>)> {
    let requests = (0..n).map(|_| async {
        let resp = client.get(uri.to_owned()).dispatch().await;
        (resp.status(), resp.into_bytes().await.unwrap_or_default())
    });
    futures_util::future::join_all(requests).await
}

#[rocket::async_test]
async fn metadata_of_a_new_wheel_is_read_once_however_many_ask() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&["-P", ".", "-a", "."], dir.path());
    let client =
        rocket::local::asynchronous::Client::tracked(wheelhouse::server::build(&config).unwrap())
            .await
            .unwrap();
    let index = &client
        .rocket()
        .state::<wheelhouse::server::App>()
        .unwrap()
        .index;
    let expected = common::metadata_text("demo-pkg", "1.0", None).into_bytes();
    let wheel_name = wheel_filename("demo-pkg", "1.0");
    std::fs::write(dir.path().join(&wheel_name), wheel_with_entries(50_000)).unwrap();
    let uri = format!("/packages/{wheel_name}.metadata");
    for (status, body) in all_at_once(&client, &uri, 8).await {
        assert_eq!(status, Status::Ok);
        assert_eq!(body, expected);
    }
    assert_eq!(index.cache().reads(), 1, "one read for eight requests");
    for (status, body) in all_at_once(&client, &uri, 4).await {
        assert_eq!((status, body), (Status::Ok, expected.clone()));
    }
    let resp = client.get("/simple/demo-pkg/").dispatch().await;
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(index.cache().reads(), 1, "the listing reuses what was read");

    // Placed by hand past the limits: read once too, and served without metadata.
    let huge_name = wheel_filename("demo-pkg", "2.0");
    std::fs::write(dir.path().join(&huge_name), wheel_with_entries(200_000)).unwrap();
    let uri = format!("/packages/{huge_name}.metadata");
    for (status, _) in all_at_once(&client, &uri, 8).await {
        assert_eq!(status, Status::NotFound);
    }
    assert_eq!(index.cache().reads(), 2);
    assert_eq!(
        client.get(uri.clone()).dispatch().await.status(),
        Status::NotFound
    );
    assert_eq!(index.cache().reads(), 2);
    let resp = client
        .get(format!("/packages/{huge_name}"))
        .dispatch()
        .await;
    assert_eq!(resp.status(), Status::Ok);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    /// Any version string in `remove_pkg` is a client answer (400 or 404), never a crash, and
    /// removes nothing unless it is the stored version.
    #[test]
    fn any_remove_pkg_version_gets_a_client_answer(version in "\\PC{0,40}|[0-9!.+a-z_-]{0,24}") {
        let app = TestApp::open();
        app.put("keep-2.0.tar.gz", b"kept");
        let encoded: String = version
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        let resp = app
            .client
            .post("/")
            .header(ContentType::Form)
            .body(format!(":action=remove_pkg&name=keep&version={encoded}"))
            .dispatch();
        let status = resp.status();
        proptest::prop_assert!(status.code < 500, "status {status} for {version:?}");
        let removed = !app.path("keep-2.0.tar.gz").exists();
        let same_version = version.parse::<pep440_rs::Version>().ok()
            == "2.0".parse::<pep440_rs::Version>().ok();
        proptest::prop_assert_eq!(removed, same_version, "{:?}", version);
    }
}

#[test]
fn a_long_bad_version_is_quoted_by_its_start_only() {
    let app = TestApp::open();
    let version = "x".repeat(5_000);
    let resp = app
        .client
        .post("/")
        .header(ContentType::Form)
        .body(format!(":action=remove_pkg&name=demo&version={version}"))
        .dispatch();
    assert_eq!(resp.status(), Status::BadRequest);
    let body = resp.into_string().unwrap();
    assert!(body.contains(&"x".repeat(64)), "{body}");
    assert!(body.len() < 300, "{} bytes: {body:.100}", body.len());
}
