//! The index as its clients see it, through the load balancer (or any address given).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{ACCEPT, LOCATION};
use reqwest::{redirect, Client, StatusCode, Url};
use sha2::{Digest, Sha256};

use super::probe::{Probe, PROJECT};
use super::{error_chain, Row};

/// The header a wheelhouse server names itself with (see `server::replica`).
pub const REPLICA_HEADER: &str = "x-wheelhouse-replica";

/// How long any one request may take: the probe is a few hundred bytes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Downloads through the load balancer per replica expected, before giving up on hearing from
/// every one: round robin reaches each in as many requests as there are replicas, and a
/// balancer that routes by least outstanding requests still spreads sequential requests.
const TRIES_PER_REPLICA: usize = 10;

const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// What the removal row says when the index had no probe to remove.
const NOTHING_STORED: &str = "nothing was stored";

/// The most of an index page read (the probe's page lists one file).
const PAGE_CAP: usize = 1 << 20;
/// The most of an error answer read, for its first line.
const ERROR_CAP: usize = 4 << 10;

/// Where the probe is downloaded from, to hear from every replica.
#[derive(Debug, Clone)]
pub enum Replicas {
    /// Each task at its own address: every one is asked once.
    Each(Vec<Url>),
    /// Through the load balancer, again and again until this many replicas have answered
    /// (the healthy targets; `None` when their number could not be read).
    Through(Option<usize>),
}

/// What to check and with what.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The index's address, e.g. `https://pypi.example.com/`.
    pub base: Url,
    /// Every name the index answers to: each must resolve and be on the certificate.
    pub names: Vec<String>,
    pub username: String,
    pub password: String,
    pub replicas: Replicas,
}

/// Every check of the endpoint, in order. A probe that was uploaded is removed again, whatever
/// failed after its upload.
pub async fn check(endpoint: &Endpoint, probe: &Probe) -> Vec<Row> {
    let client = match Client::builder()
        .redirect(redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!(
            "wheelhouse-deploy/",
            env!("CARGO_PKG_VERSION"),
            " verify"
        ))
        .build()
    {
        Ok(client) => client,
        // The system's root certificates could not be loaded: no HTTPS row could mean anything.
        Err(err) => {
            return vec![Row::fail(
                "HTTPS client",
                format!(
                    "{}: are the system's CA certificates installed?",
                    error_chain(&err)
                ),
            )]
        }
    };
    let mut rows = Vec::new();
    let https = endpoint.base.scheme() == "https";
    let port = endpoint.base.port_or_known_default().unwrap_or(443);
    for name in &endpoint.names {
        rows.push(resolves(name, port).await);
    }
    if https {
        for name in &endpoint.names {
            rows.push(certificate(&client, &endpoint.base, name).await);
        }
        rows.push(redirects_to_https(&client, &endpoint.base).await);
    }
    rows.push(asks_for_credentials(&client, &endpoint.base).await);

    let uploaded = upload(&client, endpoint, probe).await;
    let stored = uploaded.passed;
    rows.push(uploaded);
    if !stored {
        rows.push(Row::fail(
            "probe listed, read and downloaded",
            "not tried: the upload failed",
        ));
        // An upload that timed out, or whose answer the load balancer lost, may still have
        // been stored: remove it, and say so only if there was something to remove.
        let removed = remove(&client, endpoint, probe).await;
        if removed.detail != NOTHING_STORED {
            rows.push(removed);
        }
        return rows;
    }
    let listed = listing(&client, endpoint, probe).await;
    match listed {
        Ok((row, file_url)) => {
            rows.push(row);
            rows.push(core_metadata(&client, endpoint, probe, &file_url).await);
            rows.extend(downloads(&client, endpoint, probe, &file_url).await);
        }
        Err(row) => rows.push(row),
    }
    rows.push(remove(&client, endpoint, probe).await);
    rows
}

async fn resolves(name: &str, port: u16) -> Row {
    let check = format!("DNS {name}");
    match tokio::net::lookup_host((name, port)).await {
        Ok(addresses) => {
            let mut ips: Vec<String> = addresses.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                Row::fail(check, "resolves to no address")
            } else {
                Row::pass(check, ips.join(", "))
            }
        }
        Err(err) => Row::fail(
            check,
            format!("does not resolve ({err}): the record is made by the stack in its hosted zone; a new record can take a minute to be seen"),
        ),
    }
}

/// The name at the base's port: any answer at all means the TLS handshake, with the system's
/// roots and the name checked, succeeded.
async fn certificate(client: &Client, base: &Url, name: &str) -> Row {
    let check = format!("certificate {name}");
    let mut url = base.clone();
    if url.set_host(Some(name)).is_err() {
        return Row::fail(check, format!("{name:?} is not a host name"));
    }
    url.set_path("/");
    match client.get(url).send().await {
        Ok(_) => Row::pass(check, "valid for the name, from a trusted authority"),
        Err(err) => Row::fail(check, error_chain(&err)),
    }
}

async fn redirects_to_https(client: &Client, base: &Url) -> Row {
    let check = "HTTP redirects to HTTPS";
    let mut url = base.clone();
    // Only the port of the scheme changes: http on 80.
    let _ = url.set_scheme("http");
    let _ = url.set_port(None);
    url.set_path("/simple/");
    match client.get(url.clone()).send().await {
        Ok(response) => {
            let location = header_text(&response, LOCATION);
            if response.status().is_redirection() && location.starts_with("https://") {
                Row::pass(
                    check,
                    format!("{} to {location}", response.status().as_u16()),
                )
            } else {
                Row::fail(
                    check,
                    format!(
                        "{url} answered {} (Location {location:?}): plain HTTP must only redirect",
                        response.status()
                    ),
                )
            }
        }
        Err(err) => Row::fail(check, format!("{url}: {}", error_chain(&err))),
    }
}

async fn asks_for_credentials(client: &Client, base: &Url) -> Row {
    let check = "/simple/ without credentials is 401";
    let url = join(base, "simple/");
    match client.get(url.clone()).send().await {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
            let challenge = header_text(&response, reqwest::header::WWW_AUTHENTICATE);
            if challenge.to_ascii_lowercase().starts_with("basic") {
                Row::pass(check, "401, with a Basic challenge")
            } else {
                Row::fail(
                    check,
                    format!("401 without a Basic challenge (WWW-Authenticate {challenge:?}): pip and uv would not send credentials"),
                )
            }
        }
        Ok(response) => Row::fail(
            check,
            format!(
                "{url} answered {} to a request without credentials: the index is open to anyone who reaches it",
                response.status()
            ),
        ),
        Err(err) => Row::fail(check, format!("{url}: {}", error_chain(&err))),
    }
}

async fn upload(client: &Client, endpoint: &Endpoint, probe: &Probe) -> Row {
    let check = "probe upload";
    let part = reqwest::multipart::Part::bytes(probe.bytes.clone())
        .file_name(probe.filename.clone())
        .mime_str("application/octet-stream")
        .expect("a valid media type");
    let form = reqwest::multipart::Form::new()
        .text(":action", "file_upload")
        .text("protocol_version", "1")
        .text("metadata_version", "2.1")
        .text("name", PROJECT)
        .text("version", probe.version.clone())
        .text("filetype", "bdist_wheel")
        .text("pyversion", "py3")
        .text("sha256_digest", probe.sha256.clone())
        .part("content", part);
    let sent = client
        .post(endpoint.base.clone())
        .basic_auth(&endpoint.username, Some(&endpoint.password))
        .multipart(form)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Row::pass(
            check,
            format!(
                "{} ({} bytes) stored as {}",
                probe.filename,
                probe.bytes.len(),
                endpoint.username
            ),
        ),
        Ok(response) => {
            let status = response.status();
            let body = text_of(read_capped(response, ERROR_CAP).await.unwrap_or_default());
            Row::fail(check, format!("{status}: {}", first_line(&body)))
        }
        Err(err) => Row::fail(check, error_chain(&err)),
    }
}

/// The probe's project page (PEP 691 JSON) lists the probe with its sha256 and its core
/// metadata; returns the file's address.
async fn listing(client: &Client, endpoint: &Endpoint, probe: &Probe) -> Result<(Row, Url), Row> {
    let check = "probe listed";
    let page = probe_page(endpoint);
    let fail = |detail: String| Row::fail(check, format!("{page}: {detail}"));
    let response = get_page(client, endpoint, &page)
        .await
        .map_err(|err| fail(error_chain(&err)))?;
    if !response.status().is_success() {
        return Err(fail(format!("answered {}", response.status())));
    }
    let bytes = read_capped(response, PAGE_CAP).await.map_err(fail)?;
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|err| fail(format!("not a PEP 691 page: {err}")))?;
    let file = body["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == probe.filename.as_str())
        .ok_or_else(|| fail(format!("{} is not listed", probe.filename)))?;
    if file["hashes"]["sha256"] != probe.sha256.as_str() {
        return Err(fail(format!(
            "listed with sha256 {}, uploaded {}",
            file["hashes"]["sha256"], probe.sha256
        )));
    }
    let metadata_sha256 = hex::encode(Sha256::digest(probe.metadata.as_bytes()));
    match file.get("core-metadata") {
        None | Some(serde_json::Value::Bool(false)) => {
            return Err(fail("listed without core-metadata (PEP 658)".to_owned()))
        }
        Some(serde_json::Value::Object(hashes))
            if hashes
                .get("sha256")
                .is_some_and(|h| h != metadata_sha256.as_str()) =>
        {
            return Err(fail(format!(
                "core-metadata sha256 {}, but the wheel's METADATA has {metadata_sha256}: pip and uv would refuse it",
                hashes["sha256"]
            )))
        }
        Some(_) => {}
    }
    let href = file["url"].as_str().unwrap_or_default();
    let listed_url = page
        .join(href)
        .map_err(|err| fail(format!("file url {href:?}: {err}")))?;
    // The credentials go only where they were sent first: the file's path, at the address
    // being verified, whatever host the page names.
    let file_url = join(&endpoint.base, listed_url.path().trim_start_matches('/'));
    Ok((
        Row::pass(check, "listed with its sha256 and core-metadata"),
        file_url,
    ))
}

async fn core_metadata(client: &Client, endpoint: &Endpoint, probe: &Probe, file_url: &Url) -> Row {
    let check = "probe .metadata (PEP 658)";
    let mut url = file_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.set_path(&format!("{}.metadata", file_url.path()));
    let response = client
        .get(url.clone())
        .basic_auth(&endpoint.username, Some(&endpoint.password))
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => {
            match read_capped(response, probe.metadata.len() + 1).await {
                Ok(body) if body == probe.metadata.as_bytes() => {
                    Row::pass(check, "the wheel's METADATA, byte for byte")
                }
                Ok(body) => Row::fail(
                    check,
                    format!(
                        "{url} is not the wheel's METADATA: {:?}",
                        first_line(&text_of(body))
                    ),
                ),
                Err(err) => Row::fail(check, format!("{url}: {err}")),
            }
        }
        Ok(response) => Row::fail(check, format!("{url} answered {}", response.status())),
        Err(err) => Row::fail(check, format!("{url}: {}", error_chain(&err))),
    }
}

/// What one download gave: which replica sent it, and the sha256 of what it sent.
struct Downloaded {
    replica: String,
    sha256: Result<String, String>,
}

async fn download(
    client: &Client,
    endpoint: &Endpoint,
    url: &Url,
    probe_size: usize,
) -> Downloaded {
    let response = client
        .get(url.clone())
        .basic_auth(&endpoint.username, Some(&endpoint.password))
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            return Downloaded {
                replica: String::new(),
                sha256: Err(error_chain(&err)),
            }
        }
    };
    let replica = header_text(&response, REPLICA_HEADER);
    let status = response.status();
    let sha256 = if status.is_success() {
        // One byte more than the probe is enough to tell a wrong file.
        read_capped(response, probe_size + 1)
            .await
            .map(|body| hex::encode(Sha256::digest(&body)))
    } else {
        Err(format!("answered {status}"))
    };
    Downloaded { replica, sha256 }
}

fn download_row(check: String, probe: &Probe, got: &Result<String, String>) -> Row {
    match got {
        Ok(sha256) if *sha256 == probe.sha256 => {
            Row::pass(check, format!("sha256 {}…", &sha256[..16]))
        }
        Ok(sha256) => Row::fail(check, format!("sha256 {sha256}, uploaded {}", probe.sha256)),
        Err(err) => Row::fail(check, err.clone()),
    }
}

async fn downloads(
    client: &Client,
    endpoint: &Endpoint,
    probe: &Probe,
    file_url: &Url,
) -> Vec<Row> {
    match &endpoint.replicas {
        Replicas::Each(targets) => {
            let mut rows = Vec::new();
            for target in targets {
                let url = join(target, file_url.path().trim_start_matches('/'));
                let got = download(client, endpoint, &url, probe.bytes.len()).await;
                let name = if got.replica.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", got.replica)
                };
                rows.push(download_row(
                    format!("download from {target}{name}"),
                    probe,
                    &got.sha256,
                ));
            }
            rows
        }
        Replicas::Through(expected) => {
            let wanted = expected.unwrap_or(1).max(1);
            let mut heard: BTreeMap<String, Result<String, String>> = BTreeMap::new();
            let mut failures = Vec::new();
            let mut requests = 0;
            while heard.len() < wanted && requests < wanted * TRIES_PER_REPLICA {
                requests += 1;
                let got = download(client, endpoint, file_url, probe.bytes.len()).await;
                if got.replica.is_empty() {
                    failures.push(
                        got.sha256
                            .err()
                            .unwrap_or_else(|| format!("no {REPLICA_HEADER} header in the answer")),
                    );
                    continue;
                }
                // A replica that once sent something wrong keeps its wrong answer on record.
                let entry = heard
                    .entry(got.replica)
                    .or_insert_with(|| got.sha256.clone());
                if entry.is_ok() && got.sha256.is_err() {
                    *entry = got.sha256;
                }
            }
            let mut rows: Vec<Row> = heard
                .iter()
                .map(|(replica, got)| {
                    download_row(format!("download via replica {replica}"), probe, got)
                })
                .collect();
            let check = "every healthy target answered";
            rows.push(match expected {
                None => Row::fail(check, format!("{} replica(s) answered in {requests} requests, but how many targets are healthy is unknown (see the targets row)", heard.len())),
                Some(0) => Row::fail(check, "no target is healthy (see the targets row)"),
                                Some(n) if heard.len() >= *n && failures.is_empty() => Row::pass(check, format!("{} of {n} in {requests} requests", heard.len())),
                Some(n) => Row::fail(
                    check,
                    format!(
                        "{} of {n} answered in {requests} requests{}",
                        heard.len(),
                        failures.first().map(|f| format!("; failed requests: {} (first: {f})", failures.len())).unwrap_or_default()
                    ),
                ),
            });
            rows
        }
    }
}

/// Removes the probe, and proves it is gone.
async fn remove(client: &Client, endpoint: &Endpoint, probe: &Probe) -> Row {
    let check = "probe removed";
    let sent = client
        .post(endpoint.base.clone())
        .basic_auth(&endpoint.username, Some(&endpoint.password))
        .form(&[
            (":action", "remove_pkg"),
            ("name", PROJECT),
            ("version", probe.version.as_str()),
        ])
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => {}
        Ok(response) if response.status() == StatusCode::NOT_FOUND => {
            return Row::pass(check, NOTHING_STORED)
        }
        Ok(response) => {
            let status = response.status();
            let body = text_of(read_capped(response, ERROR_CAP).await.unwrap_or_default());
            return Row::fail(
                check,
                format!(
                    "{status}: {} — remove {} by hand",
                    first_line(&body),
                    probe.filename
                ),
            );
        }
        Err(err) => {
            return Row::fail(
                check,
                format!("{} — remove {} by hand", error_chain(&err), probe.filename),
            )
        }
    }
    let page = probe_page(endpoint);
    let listed = get_page(client, endpoint, &page).await;
    let unconfirmed = |why: String| {
        Row::fail(
            check,
            format!("removed, but that it is gone could not be confirmed: {page} {why}"),
        )
    };
    match listed {
        // The project had no other file: it is gone with the probe.
        Ok(response) if response.status() == StatusCode::NOT_FOUND => {
            Row::pass(check, "and no longer listed")
        }
        Ok(response) if response.status().is_success() => {
            match read_capped(response, PAGE_CAP).await {
                Ok(body) if !String::from_utf8_lossy(&body).contains(&probe.filename) => {
                    Row::pass(check, "and no longer listed")
                }
                Ok(_) => Row::fail(
                    check,
                    format!("removed, but {} is still listed", probe.filename),
                ),
                Err(err) => unconfirmed(err),
            }
        }
        Ok(response) => unconfirmed(format!("answered {}", response.status())),
        Err(err) => unconfirmed(error_chain(&err)),
    }
}

/// The probe project's page at the address being verified.
fn probe_page(endpoint: &Endpoint) -> Url {
    join(&endpoint.base, &format!("simple/{PROJECT}/"))
}

/// `page` in PEP 691's JSON, with the credentials.
async fn get_page(
    client: &Client,
    endpoint: &Endpoint,
    page: &Url,
) -> reqwest::Result<reqwest::Response> {
    client
        .get(page.clone())
        .header(ACCEPT, SIMPLE_JSON)
        .basic_auth(&endpoint.username, Some(&endpoint.password))
        .send()
        .await
}

/// A header's value as text, empty when absent or not text.
fn header_text(response: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `base` joined with a relative path, as a directory: `https://h/` + `simple/` is
/// `https://h/simple/`, and a base with a path keeps it.
fn join(base: &Url, relative: &str) -> Url {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(relative).expect("a relative path joins")
}

/// A body, read up to `cap` bytes: an index that sends more than it should (or endlessly)
/// costs this tool no more memory than that.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| error_chain(&err))? {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    Ok(body)
}

fn text_of(body: Vec<u8>) -> String {
    String::from_utf8_lossy(&body).into_owned()
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((end, _)) => &line[..end],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_the_base() {
        let base = Url::parse("https://pypi.example.com/team").unwrap();
        assert_eq!(
            join(&base, "simple/").as_str(),
            "https://pypi.example.com/team/simple/"
        );
        let root = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            join(&root, "packages/a.whl").as_str(),
            "http://127.0.0.1:8080/packages/a.whl"
        );
    }

    #[tokio::test]
    async fn a_body_is_read_no_further_than_its_cap() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 8 << 20]))
            .mount(&server)
            .await;
        let response = Client::new().get(server.uri()).send().await.unwrap();
        let body = read_capped(response, 1000).await.unwrap();
        assert_eq!(body.len(), 1000, "8 MiB sent, 1000 bytes kept");
    }

    #[test]
    fn a_long_first_line_is_cut_on_a_character() {
        let text = "é".repeat(300);
        assert_eq!(first_line(&text).chars().count(), 200);
        assert_eq!(first_line("one\ntwo"), "one");
    }
}
