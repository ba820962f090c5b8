//! Read-only routes: the welcome page, the simple index (PEP 503/691), `/packages/`, package
//! and `.metadata` downloads, pypiserver's `/<project>/json` and its redirects. Handlers only
//! parse, ask the index and render.

use std::sync::{Arc, Mutex};

use rocket::http::uri::{fmt::Path, Segments};
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::response::{self, Redirect, Responder, Response};
use rocket::{Request, State};

use super::error::{blocking, ApiError};
use super::files::{Conditions, FileResponse};
use super::guards::{CanDownload, CanList, PageFormat, TrailingSlash};
use super::render::{self, encode_path, FileEntry};
use super::App;
use crate::index::{metadata, DistFile, FileDetails, FileIdentity, Index, Snapshot};
use crate::names::{is_normalized, DistKind, ProjectName};

/// A simple page in the negotiated format.
pub(crate) struct Page {
    body: PageBody,
    content_type: &'static str,
}

/// A page rendered for this request, or one rendered once and shared (the root index).
pub(crate) enum PageBody {
    Owned(String),
    Shared(Arc<[u8]>),
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

/// The root index, rendered once per snapshot and format. With 100k files it is a page of 10k
/// links: rebuilding it per request cost a clone of every name and a fresh page per request in
/// flight (65 MB of peak RSS at 32 connections).
#[derive(Default)]
pub(crate) struct RootPages {
    cached: Mutex<Option<RootPagesOf>>,
}

/// The root index of one snapshot, in each format asked for so far.
struct RootPagesOf {
    snapshot: Arc<Snapshot>,
    html: Option<Arc<[u8]>>,
    json: Option<Arc<[u8]>>,
}

impl RootPages {
    fn get(&self, snapshot: &Arc<Snapshot>, json: bool) -> Arc<[u8]> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let pages = match &mut *cached {
            Some(pages) if Arc::ptr_eq(&pages.snapshot, snapshot) => pages,
            stale => stale.insert(RootPagesOf {
                snapshot: snapshot.clone(),
                html: None,
                json: None,
            }),
        };
        let page = if json {
            &mut pages.json
        } else {
            &mut pages.html
        };
        page.get_or_insert_with(|| {
            let names: Vec<&ProjectName> = snapshot.projects.keys().collect();
            let body = if json {
                render::project_list_json(&names)
            } else {
                render::project_list_html(&names)
            };
            body.into_bytes().into()
        })
        .clone()
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

/// Reads the snapshot and every listed file's details, off the runtime. Each file is checked
/// against the disk, so a file rewritten in place is listed with its new digest.
async fn with_details(
    index: &Arc<Index>,
    pick: impl FnOnce(&Snapshot) -> Vec<Arc<DistFile>> + Send + 'static,
) -> Result<Vec<(Arc<DistFile>, Arc<FileDetails>)>, ApiError> {
    let index = index.clone();
    blocking(move || -> std::io::Result<_> {
        let snapshot = index.snapshot()?;
        let mut listed = Vec::new();
        for file in pick(&snapshot) {
            if let Some(file) = index.as_on_disk(&file)? {
                let details = index.details(&file)?;
                listed.push((file, details));
            }
        }
        Ok(listed)
    })
    .await
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
    let index = app.index.clone();
    let snapshot = blocking(move || index.snapshot()).await?;
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
    let files = with_details(&app.index, move |snapshot| {
        snapshot.project(&wanted).unwrap_or_default().to_vec()
    })
    .await?;
    if files.is_empty() {
        return app.not_here(&name);
    }
    let entries = entries(&files, |file| app.file_url("../../", &file.relative_path));
    let body = match format {
        PageFormat::JsonV1 => render::project_json(&name, &entries),
        PageFormat::LegacyHtml | PageFormat::HtmlV1 => render::project_html(&name, &entries),
    };
    Ok(Reply::Page(Page {
        body: body.into(),
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
    let files = with_details(&app.index, |snapshot| snapshot.files().cloned().collect()).await?;
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
                Some(file) if file.name.kind() == DistKind::Wheel => {
                    Ok(metadata::wheel_metadata(&file.path).ok())
                }
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
        let Some(found) = index.find(&lookup)? else {
            return Ok(None);
        };
        let file = std::fs::File::open(&found.path)?;
        // Describe the file that was opened, not the one that was looked up: a replacement
        // in between must not pair new bytes with an old ETag.
        let identity = FileIdentity::of(&file.metadata()?);
        Ok(Some((file, found.name.filename().to_owned(), identity)))
    })
    .await?;
    let (file, filename, identity) = opened.ok_or_else(not_found)?;
    Ok(Reply::File(FileResponse {
        file,
        filename,
        identity,
        conditions: conditions.0,
        cache_control: app.settings.cache_control,
    }))
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
    upload_time_iso_8601: String,
}

/// pypiserver's minimal JSON API: `info.version` (the latest), `releases` and `urls`.
#[get("/<project>/json", rank = 5)]
pub(crate) async fn project_json(
    project: &str,
    _allowed: CanList,
    app: &State<App>,
) -> Result<Reply, ApiError> {
    let name = project_name(project)?;
    let wanted = name.clone();
    let files = with_details(&app.index, move |snapshot| {
        snapshot.project(&wanted).unwrap_or_default().to_vec()
    })
    .await?;
    let Some((latest, _)) = files.last() else {
        return Err(ApiError::new(
            Status::NotFound,
            format!("project {name:?} not found"),
        ));
    };
    let latest_version = latest.name.version().to_owned();
    let mut releases: std::collections::BTreeMap<String, Vec<ReleaseFile>> = Default::default();
    for (file, details) in &files {
        releases
            .entry(file.name.version().to_owned())
            .or_default()
            .push(ReleaseFile {
                filename: file.name.filename().to_owned(),
                url: app.file_url("../", &file.relative_path),
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
