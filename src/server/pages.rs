//! Read-only routes: the welcome page, the simple index (PEP 503/691), `/packages/`, package
//! and `.metadata` downloads, pypiserver's `/<project>/json` and its redirects. Handlers only
//! parse, ask the index and render.

use std::sync::Arc;

use rocket::http::uri::{fmt::Path, Segments};
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::response::{self, Redirect, Responder, Response};
use rocket::{Request, State};

use super::error::{blocking, ApiError};
use super::files::{Conditions, FileBody, FileResponse};
use super::guards::{CanDownload, CanList, PageFormat, TrailingSlash};
use super::page_cache::PageBytes;
use super::render::{self, encode_path, FileEntry};
use super::App;
use crate::index::{DistFile, FileDetails, Index, Snapshot};
use crate::names::{is_normalized, DistKind, ProjectName};

/// A simple page in the negotiated format.
pub(crate) struct Page {
    body: PageBody,
    content_type: &'static str,
}

/// A page rendered for this request, or one rendered once and shared.
pub(crate) enum PageBody {
    Owned(String),
    Shared(PageBytes),
}

impl From<String> for PageBody {
    fn from(body: String) -> Self {
        PageBody::Owned(body)
    }
}

impl<'r> Responder<'r, 'static> for Page {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let mut response = Response::build();
        response
            .raw_header("Content-Type", self.content_type)
            .raw_header("Vary", "Accept");
        match self.body {
            PageBody::Owned(body) => response.sized_body(body.len(), std::io::Cursor::new(body)),
            PageBody::Shared(body) => response.sized_body(body.len(), std::io::Cursor::new(body)),
        };
        response.ok()
    }
}

#[derive(Responder)]
pub(crate) enum Reply {
    Page(Page),
    Redirect(Redirect),
    File(FileResponse),
    Metadata((rocket::http::ContentType, Vec<u8>)),
    Json((rocket::http::ContentType, String)),
}

fn project_name(raw: &str) -> Result<ProjectName, ApiError> {
    ProjectName::new(raw).map_err(|err| ApiError::bad_request(err.to_string()))
}

/// The files `pick` chooses from the current snapshot, each as the disk holds it now (off
/// the runtime), so a file rewritten in place is listed as its new version.
async fn listed_files(
    index: &Arc<Index>,
    pick: impl FnOnce(&Snapshot) -> Vec<Arc<DistFile>> + Send + 'static,
) -> Result<Vec<Arc<DistFile>>, ApiError> {
    let listed = index
        .with_snapshot(move |index, snapshot| {
            let mut listed = Vec::new();
            for file in pick(&snapshot) {
                listed.extend(index.as_on_disk(&file)?);
            }
            Ok(listed)
        })
        .await?;
    Ok(listed)
}

/// What the pages say about each file (off the runtime: a version never seen is read). A
/// file gone since it was listed, or that cannot be read, is left out.
async fn with_details(
    index: &Arc<Index>,
    files: Vec<Arc<DistFile>>,
) -> Result<Vec<(Arc<DistFile>, Arc<FileDetails>)>, ApiError> {
    let index = index.clone();
    blocking(move || -> std::io::Result<_> { Ok(index.described(files)) }).await
}

fn entries<'a>(
    files: &'a [(Arc<DistFile>, Arc<FileDetails>)],
    url: impl Fn(&DistFile) -> String,
) -> Vec<FileEntry<'a>> {
    files
        .iter()
        .map(|(file, details)| FileEntry {
            file,
            details,
            url: url(file),
        })
        .collect()
}

#[get("/")]
pub(crate) fn welcome(app: &State<App>, host: HostHeader) -> RawHtml<String> {
    if let Some(html) = &app.settings.welcome_html {
        return RawHtml(html.clone());
    }
    let url = app
        .settings
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", host.0.as_deref().unwrap_or("localhost:8080")));
    let url = render::escape_html(&url);
    RawHtml(format!(
        "<!DOCTYPE html>\n<html>\n  <head><title>Welcome to wheelhouse</title></head>\n  <body>\n    <h1>Welcome to wheelhouse {version}</h1>\n    <p>This is a private Python package index.</p>\n    <p>Install from it with <code>pip install --index-url {url}/simple/ PACKAGE</code>\n       or <code>uv pip install --index-url {url}/simple/ PACKAGE</code>.</p>\n    <p>Upload to it with <code>twine upload --repository-url {url}/ dist/*</code>.</p>\n    <p>See the <a href=\"simple/\">simple index</a> or the <a href=\"packages/\">list of all files</a>.</p>\n  </body>\n</html>\n",
        version = env!("CARGO_PKG_VERSION"),
    ))
}

/// The `Host` header, for the welcome page's example commands.
pub(crate) struct HostHeader(Option<String>);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for HostHeader {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> rocket::request::Outcome<Self, Self::Error> {
        rocket::request::Outcome::Success(HostHeader(
            req.headers().get_one("Host").map(str::to_owned),
        ))
    }
}

#[get("/simple", rank = 1)]
pub(crate) async fn simple_index(
    _allowed: CanList,
    format: PageFormat,
    slash: TrailingSlash,
    app: &State<App>,
) -> Result<Reply, ApiError> {
    if !slash.0 {
        return Ok(Reply::Redirect(Redirect::moved(app.location("/simple/"))));
    }
    let snapshot = app.index.with_snapshot(|_, snapshot| Ok(snapshot)).await?;
    let body = app.root_pages.get(&snapshot, format == PageFormat::JsonV1);
    Ok(Reply::Page(Page {
        body: PageBody::Shared(body),
        content_type: format.content_type(),
    }))
}

#[get("/simple/<project>", rank = 1)]
pub(crate) async fn simple_project(
    project: &str,
    _allowed: CanList,
    format: PageFormat,
    slash: TrailingSlash,
    app: &State<App>,
) -> Result<Reply, ApiError> {
    let name = project_name(project)?;
    if !slash.0 || !is_normalized(project) {
        let target = app.location(&format!("/simple/{name}/"));
        return Ok(Reply::Redirect(Redirect::moved(target)));
    }
    let wanted = name.clone();
    let listed = listed_files(&app.index, move |snapshot| {
        snapshot.project(&wanted).unwrap_or_default().to_vec()
    })
    .await?;
    if listed.is_empty() {
        return app.not_here(&name);
    }
    let json = format == PageFormat::JsonV1;
    let body = match app.project_pages.get(&name, json, &listed) {
        Some(body) => body,
        None => {
            let files = with_details(&app.index, listed).await?;
            if files.is_empty() {
                return app.not_here(&name);
            }
            let entries = entries(&files, |file| app.file_url("../../", &file.relative_path));
            let body: PageBytes = if json {
                render::project_json(&name, &entries)
            } else {
                render::project_html(&name, &entries)
            }
            .into_bytes()
            .into();
            let rendered_from = files.iter().map(|(file, _)| file.clone()).collect();
            app.project_pages
                .insert(&name, json, rendered_from, body.clone());
            body
        }
    };
    Ok(Reply::Page(Page {
        body: PageBody::Shared(body),
        content_type: format.content_type(),
    }))
}

#[get("/packages", rank = 1)]
pub(crate) async fn all_files(
    _allowed: CanList,
    slash: TrailingSlash,
    app: &State<App>,
) -> Result<Reply, ApiError> {
    if !slash.0 {
        return Ok(Reply::Redirect(Redirect::moved(app.location("/packages/"))));
    }
    let listed = listed_files(&app.index, |snapshot| snapshot.files().cloned().collect()).await?;
    let files = with_details(&app.index, listed).await?;
    let entries = entries(&files, |file| app.file_url("", &file.relative_path));
    Ok(Reply::Page(Page {
        body: render::all_files_html(&entries).into(),
        content_type: PageFormat::LegacyHtml.content_type(),
    }))
}

#[get("/packages/<path..>", rank = 2)]
pub(crate) async fn download(
    path: Segments<'_, Path>,
    _allowed: CanDownload,
    conditions: RequestConditions,
    app: &State<App>,
) -> Result<Reply, ApiError> {
    let relative: String = path.collect::<Vec<_>>().join("/");
    let not_found = || ApiError::new(Status::NotFound, format!("no file {relative:?} here"));
    if let Some(wheel) = relative.strip_suffix(".metadata") {
        let index = app.index.clone();
        let wheel = wheel.to_owned();
        let bytes = blocking(move || -> std::io::Result<Option<Vec<u8>>> {
            match index.find(&wheel)? {
                Some(file) if file.name.kind() == DistKind::Wheel => index.core_metadata(&file),
                _ => Ok(None),
            }
        })
        .await?;
        let bytes = bytes.ok_or_else(not_found)?;
        return Ok(Reply::Metadata((
            rocket::http::ContentType::new("application", "octet-stream"),
            bytes,
        )));
    }
    let index = app.index.clone();
    let lookup = relative.clone();
    let opened = blocking(move || -> std::io::Result<_> {
        let Some(opened) = index.open_file(&lookup)? else {
            return Ok(None);
        };
        let (body, identity) = FileBody::of(opened.file, opened.identity)?;
        Ok(Some((body, opened.filename, identity)))
    })
    .await?;
    let (body, filename, identity) = opened.ok_or_else(not_found)?;
    let slot = match body {
        FileBody::Open(_) => Some(stream_slot(app).await?),
        FileBody::Read(_) => None,
    };
    Ok(Reply::File(FileResponse {
        body,
        filename,
        identity,
        conditions: conditions.0,
        cache_control: app.settings.cache_control,
        slot,
    }))
}

/// A slot for a streamed download: each one holds about 1.5 MiB of buffers while its client
/// reads, so their number bounds what downloads can make the server hold, whatever their
/// clients do. Waits a little, then answers 503 so the client retries (pip and uv do).
async fn stream_slot(app: &App) -> Result<rocket::tokio::sync::OwnedSemaphorePermit, ApiError> {
    super::slot(
        &app.stream_slots,
        "sending large files",
        "--max-streamed-downloads",
    )
    .await
}

/// The conditional and range headers of a download.
pub(crate) struct RequestConditions(Conditions);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for RequestConditions {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> rocket::request::Outcome<Self, Self::Error> {
        rocket::request::Outcome::Success(RequestConditions(Conditions::from_request(req)))
    }
}

#[derive(serde::Serialize)]
struct ReleaseFile {
    filename: String,
    url: String,
    digests: std::collections::BTreeMap<&'static str, String>,
    requires_python: Option<String>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_time_iso_8601: Option<String>,
}

/// Where the client reached this server, `scheme://host[:port]`: the scheme a proxy says it
/// terminated (`X-Forwarded-Proto`, which pypiserver's bottle reads too) or http, and the
/// `Host` header. `None` without a valid `Host` (HTTP/1.0).
pub(crate) struct RequestOrigin(Option<String>);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for RequestOrigin {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> rocket::request::Outcome<Self, Self::Error> {
        let headers = req.headers();
        rocket::request::Outcome::Success(RequestOrigin(request_origin(
            headers.get_one("X-Forwarded-Proto"),
            headers.get_one("Host"),
        )))
    }
}

/// See [`RequestOrigin`]. The host goes through Rocket's own authority parser (the one it
/// applies to `Host` on the wire), which drops any user info, so what comes back is always
/// a bare origin.
fn request_origin(forwarded_proto: Option<&str>, host: Option<&str>) -> Option<String> {
    let host = rocket::http::uri::Host::parse(host?.trim()).ok()?;
    if host.domain().is_empty() {
        return None;
    }
    // The first value is what the proxy nearest the client saw.
    let scheme = match forwarded_proto.and_then(|p| p.split(',').next()) {
        Some(proto) if proto.trim().eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{host}"))
}

/// pypiserver's minimal JSON API: `info.version` (the latest), `releases` and `urls`. The
/// file URLs are absolute, as pypiserver's are: MicroPython's `upip`, the client this
/// endpoint exists for, splits them into host and path and cannot follow a relative one.
#[get("/<project>/json", rank = 5)]
pub(crate) async fn project_json(
    project: &str,
    _allowed: CanList,
    origin: RequestOrigin,
    app: &State<App>,
) -> Result<Reply, ApiError> {
    let name = project_name(project)?;
    let wanted = name.clone();
    let listed = listed_files(&app.index, move |snapshot| {
        snapshot.project(&wanted).unwrap_or_default().to_vec()
    })
    .await?;
    let files = with_details(&app.index, listed).await?;
    if files.is_empty() {
        return Err(ApiError::new(
            Status::NotFound,
            format!("project {name:?} not found"),
        ));
    }
    // One release per PEP 440 version (`1.0` and `01.0` are one), keyed as PEP 440 spells it.
    let mut by_version: std::collections::BTreeMap<&pep440_rs::Version, Vec<ReleaseFile>> =
        Default::default();
    for (file, details) in &files {
        by_version
            .entry(file.name.parsed_version())
            .or_default()
            .push(ReleaseFile {
                filename: file.name.filename().to_owned(),
                url: app.absolute_file_url(origin.0.as_deref(), &file.relative_path),
                digests: details
                    .link_hash
                    .iter()
                    .map(|(algo, hex)| (algo.name(), hex.clone()))
                    .collect(),
                requires_python: details.requires_python.clone(),
                size: file.identity.size,
                upload_time_iso_8601: render::upload_time(file.identity.modified),
            });
    }
    // The files come in version order: the last release is the latest.
    let latest_version = by_version
        .keys()
        .next_back()
        .map_or_else(String::new, ToString::to_string);
    let releases: std::collections::BTreeMap<String, Vec<ReleaseFile>> = by_version
        .into_iter()
        .map(|(version, files)| (version.to_string(), files))
        .collect();
    let urls = releases.get(&latest_version);
    let body = serde_json::json!({
        "info": {"name": name.as_str(), "version": latest_version},
        "releases": releases,
        "urls": urls,
    });
    Ok(Reply::Json((
        rocket::http::ContentType::JSON,
        body.to_string(),
    )))
}

/// `/<project>` and `/<project>/`: pypiserver sends these to the simple page.
#[get("/<project>", rank = 10)]
pub(crate) fn project_redirect(project: &str, app: &State<App>) -> Result<Redirect, ApiError> {
    let name = project_name(project)?;
    Ok(Redirect::to(app.location(&format!("/simple/{name}/"))))
}

impl App {
    /// A path on this server as clients must see it (behind `--server-base-url`).
    pub(crate) fn location(&self, path: &str) -> String {
        match &self.settings.base_url {
            Some(base) => format!("{base}{path}"),
            None => path.to_owned(),
        }
    }

    /// A link to a package file: absolute under `--server-base-url`, otherwise relative to
    /// the page (`relative_prefix` climbs from the page to the root), so the index works
    /// unchanged behind a proxy that mounts it under a path.
    pub(crate) fn file_url(&self, relative_prefix: &str, relative_path: &str) -> String {
        let path = encode_path(relative_path);
        match &self.settings.base_url {
            Some(base) => format!("{base}/packages/{path}"),
            None if relative_prefix.is_empty() => path,
            None => format!("{relative_prefix}packages/{path}"),
        }
    }

    /// A link to a package file that does not depend on the page it is on: under
    /// `--server-base-url`, else on the request's origin, else (no `Host`) relative to
    /// `/<project>/json`.
    pub(crate) fn absolute_file_url(&self, origin: Option<&str>, relative_path: &str) -> String {
        match (&self.settings.base_url, origin) {
            (None, Some(origin)) => format!("{origin}/packages/{}", encode_path(relative_path)),
            _ => self.file_url("../", relative_path),
        }
    }

    /// A project with no files here: off to the fallback index, or 404.
    fn not_here(&self, name: &ProjectName) -> Result<Reply, ApiError> {
        match &self.settings.fallback_url {
            Some(fallback) => Ok(Reply::Redirect(Redirect::to(format!(
                "{}/{name}/",
                fallback.trim_end_matches('/')
            )))),
            None => Err(ApiError::new(
                Status::NotFound,
                format!("project {:?} not found", name.as_str()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn origin_from_host_and_forwarded_proto() {
        assert_eq!(
            request_origin(None, Some("pkgs.example:8080")).as_deref(),
            Some("http://pkgs.example:8080")
        );
        assert_eq!(
            request_origin(Some("HTTPS, http"), Some("pkgs.example")).as_deref(),
            Some("https://pkgs.example")
        );
        assert_eq!(
            request_origin(Some("gopher"), Some("[::1]:80")).as_deref(),
            Some("http://[::1]:80")
        );
        assert_eq!(
            request_origin(None, Some("user@pkgs.example")).as_deref(),
            Some("http://pkgs.example")
        );
        for bad in ["", "a b", "pkgs.example/path", "http://pkgs.example", "x?y"] {
            assert_eq!(request_origin(None, Some(bad)), None, "{bad:?}");
        }
        assert_eq!(request_origin(Some("https"), None), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the headers say, the result is a bare origin: a scheme, then a host with
        /// nothing that would start a path, query, fragment or user info.
        #[test]
        fn origin_is_always_bare(proto in proptest::option::of(".{0,20}"), host in proptest::option::of(".{0,40}")) {
            if let Some(origin) = request_origin(proto.as_deref(), host.as_deref()) {
                let rest = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"))
                    .expect("an http(s) scheme");
                prop_assert!(!rest.is_empty());
                prop_assert!(!rest.contains(['/', '?', '#', '@', '"', '<', '>', '\\']), "{origin:?}");
                prop_assert!(!rest.chars().any(|c| c.is_whitespace() || c.is_control()), "{origin:?}");
            }
        }

        #[test]
        fn a_plain_host_round_trips(host in "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9]{1,10}){0,3}", port in proptest::option::of(1u16..)) {
            let authority = match port {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            };
            prop_assert_eq!(request_origin(None, Some(&authority)), Some(format!("http://{authority}")));
        }
    }
}
