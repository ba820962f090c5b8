//! `POST /` (and `/legacy/`, `/simple/`): the legacy upload API that twine, uv publish, poetry
//! and pdm speak, plus pypiserver's `remove_pkg`. Never redirects: twine aborts on a redirect.
//!
//! The multipart body is parsed as a stream; the `content` part goes straight into the
//! index's staging file, so memory does not grow with the size of the upload.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use rocket::data::{Data, ToByteUnit};
use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::State;
use tokio_util::io::ReaderStream;

use super::error::{blocking, ApiError};
use super::guards::CanUpdate;
use super::App;
use crate::index::upload::{StagedUpload, UploadClaim};
use crate::names::ProjectName;

/// The text fields the server reads; every other one is read through and dropped, whatever
/// its size (the long description is the big one), so a form holds little memory.
const KEPT_FIELDS: &[&str] = &[
    ":action",
    "name",
    "version",
    "md5_digest",
    "sha256_digest",
    "blake2_256_digest",
];

/// Longest value of a kept field: digests, names and versions are short.
const MAX_KEPT_FIELD_BYTES: u64 = 4 * 1024;

/// Parts a form may have: twine sends one per metadata value (each classifier is one), a few
/// dozen in practice.
const MAX_PARTS: usize = 1_000;

/// How much of the body multer may hold without handing anything out: a preamble whose
/// boundary never comes, or a part's header block that never ends, is refused past it instead
/// of being buffered (and re-scanned) up to the whole upload size. Well above what one pace
/// ([`PACE_BYTES`]) and one read add between two hand-outs of a part's data.
const MAX_UNPARSED_BYTES: usize = 1024 * 1024;

/// Largest urlencoded form (`remove_pkg` and friends).
const MAX_URLENCODED_BYTES: usize = 64 * 1024;

/// The headers that decide how a POST body is read.
pub(crate) struct BodyInfo {
    content_type: Option<String>,
    content_length: Option<u64>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for BodyInfo {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(BodyInfo {
            content_type: req.headers().get_one("Content-Type").map(str::to_owned),
            content_length: req
                .headers()
                .get_one("Content-Length")
                .and_then(|v| v.trim().parse().ok()),
        })
    }
}

#[post("/", data = "<data>")]
pub(crate) async fn post_root(
    _allowed: CanUpdate,
    body: BodyInfo,
    data: Data<'_>,
    app: &State<App>,
) -> Result<String, ApiError> {
    handle(body, data, app).await
}

#[post("/legacy", data = "<data>")]
pub(crate) async fn post_legacy(
    _allowed: CanUpdate,
    body: BodyInfo,
    data: Data<'_>,
    app: &State<App>,
) -> Result<String, ApiError> {
    handle(body, data, app).await
}

#[post("/simple", data = "<data>")]
pub(crate) async fn post_simple(
    _allowed: CanUpdate,
    body: BodyInfo,
    data: Data<'_>,
    app: &State<App>,
) -> Result<String, ApiError> {
    handle(body, data, app).await
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        Status::PayloadTooLarge,
        format!(
            "the upload is larger than the server's limit of {limit} bytes (--max-upload-size)"
        ),
    )
}

/// The form as received: text fields (first value of each) and the staged file.
struct Received {
    fields: HashMap<String, String>,
    content: Option<(String, StagedUpload)>,
}

async fn handle(body: BodyInfo, data: Data<'_>, app: &App) -> Result<String, ApiError> {
    let limit = app.settings.max_upload_size;
    if body.content_length.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let content_type = body.content_type.unwrap_or_default();
    let received = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        // Held until the upload is published or refused.
        let _slot = super::slot(
            &app.upload_slots,
            "receiving uploads",
            "--max-concurrent-uploads",
        )
        .await?;
        let received = read_multipart(&content_type, data, app).await?;
        return dispatch(received, app).await;
    } else if content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        read_urlencoded(data, app.settings.body_timeout).await?
    } else {
        return Err(ApiError::bad_request(format!(
            "expected a multipart/form-data or urlencoded form, got Content-Type {content_type:?}"
        )));
    };
    dispatch(received, app).await
}

async fn dispatch(received: Received, app: &App) -> Result<String, ApiError> {
    let action = received
        .fields
        .get(":action")
        .map(String::as_str)
        .unwrap_or("");
    match action {
        "file_upload" => file_upload(received, app).await,
        "remove_pkg" => remove_pkg(&received.fields, app).await,
        // pypiserver accepts these and does nothing; so do we.
        "doc_upload" | "verify" | "submit" => {
            tracing::info!("ignored :action={action}");
            Ok(String::new())
        }
        "" => Err(ApiError::bad_request("missing :action field")),
        other => Err(ApiError::bad_request(format!(
            "unsupported :action {other:?} (expected file_upload, remove_pkg, doc_upload, verify or submit)"
        ))),
    }
}

/// Why the body stream stopped, when the stream itself decided it.
#[derive(Default)]
struct BodyWatch {
    over_limit: AtomicBool,
    timed_out: AtomicBool,
    too_slow: AtomicBool,
    /// Bytes handed to multer since it last handed out a part or a piece of one.
    unparsed: AtomicUsize,
    unparsed_over_limit: AtomicBool,
}

async fn read_multipart(
    content_type: &str,
    data: Data<'_>,
    app: &App,
) -> Result<Received, ApiError> {
    let limit = app.settings.max_upload_size;
    let idle_timeout = app.settings.body_timeout;
    let boundary = multer::parse_boundary(content_type).map_err(|err| {
        ApiError::bad_request(format!(
            "bad multipart Content-Type {content_type:?}: {err}"
        ))
    })?;
    let watch = Arc::new(BodyWatch::default());
    let watcher = watch.clone();
    let mut total = 0u64;
    // Read one byte past the limit: seeing it is how an over-long body without a
    // Content-Length is told apart from one that is exactly at the limit.
    let body = data.open((limit + 1).bytes());
    let stream = BodyPace::new(
        ReaderStream::with_capacity(body, READ_CHUNK),
        idle_timeout,
        app.settings.min_upload_rate,
        watch.clone(),
    )
    .map(move |chunk| {
        if let Ok(bytes) = &chunk {
            total += bytes.len() as u64;
            if total > limit {
                watcher.over_limit.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("upload over the size limit"));
            }
            let unparsed = watcher.unparsed.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
            if unparsed > MAX_UNPARSED_BYTES {
                watcher.unparsed_over_limit.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("multipart framing never completed"));
            }
        }
        chunk
    });
    let mut kept_sizes = multer::SizeLimit::new();
    for field in KEPT_FIELDS {
        kept_sizes = kept_sizes.for_field(*field, MAX_KEPT_FIELD_BYTES);
    }
    let mut multipart = multer::Multipart::with_constraints(
        Paced::new(stream),
        boundary,
        multer::Constraints::new().size_limit(kept_sizes),
    );
    let parsed = || watch.unparsed.store(0, Ordering::Relaxed);
    let form_error = |err: multer::Error| {
        if watch.over_limit.load(Ordering::Relaxed) {
            too_large(limit)
        } else if watch.timed_out.load(Ordering::Relaxed) {
            ApiError::new(
                Status::RequestTimeout,
                format!(
                    "the upload sent nothing for {} s (--body-timeout)",
                    idle_timeout.as_secs()
                ),
            )
        } else if watch.too_slow.load(Ordering::Relaxed) {
            ApiError::new(
                Status::RequestTimeout,
                format!(
                    "the upload arrived at less than {} bytes per second (--min-upload-rate)",
                    app.settings.min_upload_rate
                ),
            )
        } else if watch.unparsed_over_limit.load(Ordering::Relaxed) {
            ApiError::bad_request(format!(
                "malformed multipart upload: no boundary or no end of a part's headers within \
                 {MAX_UNPARSED_BYTES} bytes"
            ))
        } else {
            ApiError::bad_request(format!("malformed multipart upload: {err}"))
        }
    };
    let mut received = Received {
        fields: HashMap::new(),
        content: None,
    };
    let mut parts = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(form_error)? {
        parsed();
        parts += 1;
        if parts > MAX_PARTS {
            return Err(ApiError::bad_request(format!(
                "the form has more than {MAX_PARTS} parts"
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if name == "content" {
            let filename = field.file_name().unwrap_or_default().to_owned();
            if received.content.is_some() {
                return Err(ApiError::bad_request("more than one content field"));
            }
            let mut staged = StagedUpload::create(app.index.upload_dir())?;
            while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                parsed();
                staged.write(chunk).await?;
            }
            received.content = Some((filename, staged));
        } else if field.file_name().is_some() || !KEPT_FIELDS.contains(&name.as_str()) {
            // Signatures, attestations and metadata the server has no use for: read through
            // so the rest of the form can be, never kept.
            while field.chunk().await.map_err(form_error)?.is_some() {
                parsed();
            }
        } else {
            let mut text = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                parsed();
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(text).map_err(|_| {
                ApiError::bad_request(format!("form field {name:?} is not valid UTF-8"))
            })?;
            received.fields.entry(name).or_insert(text);
        }
    }
    Ok(received)
}

async fn read_urlencoded(data: Data<'_>, timeout: Duration) -> Result<Received, ApiError> {
    let read = data.open(MAX_URLENCODED_BYTES.bytes()).into_string();
    let capped = rocket::tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| {
            ApiError::new(
                Status::RequestTimeout,
                format!(
                    "the form did not arrive within {} s (--body-timeout)",
                    timeout.as_secs()
                ),
            )
        })?
        .map_err(|err| ApiError::bad_request(format!("unreadable form: {err}")))?;
    if !capped.is_complete() {
        return Err(ApiError::new(
            Status::PayloadTooLarge,
            format!("a urlencoded form may be at most {MAX_URLENCODED_BYTES} bytes"),
        ));
    }
    let mut fields = HashMap::new();
    for pair in capped.value.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| rocket::http::RawStr::new(s).url_decode_lossy().into_owned();
        fields.entry(decode(key)).or_insert_with(|| decode(value));
    }
    Ok(Received {
        fields,
        content: None,
    })
}

async fn file_upload(received: Received, app: &App) -> Result<String, ApiError> {
    let Some((filename, staged)) = received.content else {
        return Err(ApiError::bad_request("file_upload without a content field"));
    };
    let fields = received.fields;
    let project = fields
        .get("name")
        .filter(|n| !n.is_empty())
        .map(|n| ProjectName::new(n).map_err(|err| ApiError::bad_request(err.to_string())))
        .transpose()?;
    let digest = |key: &str| fields.get(key).map(|v| v.trim().to_owned());
    let claim = UploadClaim {
        project,
        filename,
        md5_digest: digest("md5_digest"),
        sha256_digest: digest("sha256_digest"),
        blake2_256_digest: digest("blake2_256_digest"),
    };
    let received = staged.finish().await?;
    let size = received.size;
    let index = app.index.clone();
    let published = blocking(move || index.publish(received, &claim)).await?;
    tracing::info!("stored {} ({size} bytes)", published.filename());
    Ok(String::new())
}

async fn remove_pkg(fields: &HashMap<String, String>, app: &App) -> Result<String, ApiError> {
    let field = |key: &str| {
        fields
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("remove_pkg needs a {key:?} field")))
    };
    let project =
        ProjectName::new(&field("name")?).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let version = field("version")?;
    let index = app.index.clone();
    let removed = blocking(move || index.remove(&project, &version)).await?;
    for filename in &removed {
        tracing::info!("removed {filename}");
    }
    Ok(String::new())
}

/// The most the body is read in at once (tokio-util's default, 4 KiB, made a 100 MB upload
/// 25,000 trips through multer and the lanes).
const READ_CHUNK: usize = 64 * 1024;

/// How much of the body multer may take in before it must hand out what it holds: also the
/// largest chunk the upload's lanes are handed, so it bounds what they hold in flight.
const PACE_BYTES: usize = 256 * 1024;

/// multer reads its input until the input is not ready. On loopback a fast client keeps it
/// ready, so multer would buffer an upload without bound while the disk lags (a 300 MB upload
/// peaked at 143 MB of RSS). This input pauses, as if not ready, after every [`PACE_BYTES`]
/// (waking itself at once), so multer hands the part on and the disk sets the pace.
struct Paced<S> {
    inner: S,
    since_pause: usize,
}

impl<S> Paced<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            since_pause: 0,
        }
    }
}

impl<S, E> futures_util::Stream for Paced<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.since_pause >= PACE_BYTES {
            self.since_pause = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => self.since_pause += chunk.len(),
            Poll::Pending => self.since_pause = 0,
            Poll::Ready(_) => {}
        }
        polled
    }
}

/// Ends a body stream with a `TimedOut` error when the client sends nothing for `idle`, or
/// when, once the upload has run for `idle`, it has averaged less than `min_rate` bytes a
/// second: a client that stops or trickles mid-upload must not hold its connection, buffers
/// and upload slot for ever. Only time spent waiting for the client counts as idle, not time
/// the server itself took between two reads (a slow disk), so that clock starts when a read
/// first finds nothing.
struct BodyPace<S> {
    inner: S,
    idle: Duration,
    min_rate: u64,
    started: rocket::tokio::time::Instant,
    received: u64,
    deadline: Pin<Box<rocket::tokio::time::Sleep>>,
    waiting: bool,
    watch: Arc<BodyWatch>,
}

impl<S> BodyPace<S> {
    fn new(inner: S, idle: Duration, min_rate: u64, watch: Arc<BodyWatch>) -> Self {
        Self {
            inner,
            idle,
            min_rate,
            started: rocket::tokio::time::Instant::now(),
            received: 0,
            deadline: Box::pin(rocket::tokio::time::sleep(idle)),
            waiting: false,
            watch,
        }
    }

    fn too_slow(&self) -> bool {
        let elapsed = self.started.elapsed();
        elapsed > self.idle
            && u128::from(self.received) * 1000 < u128::from(self.min_rate) * elapsed.as_millis()
    }
}

impl<S> futures_util::Stream for BodyPace<S>
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            this.waiting = false;
            if let Some(Ok(chunk)) = &item {
                this.received += chunk.len() as u64;
                if this.too_slow() {
                    this.watch.too_slow.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sends too slowly",
                    ))));
                }
            }
            return Poll::Ready(item);
        }
        if !this.waiting {
            this.waiting = true;
            let deadline = rocket::tokio::time::Instant::now() + this.idle;
            this.deadline.as_mut().reset(deadline);
        }
        match std::future::Future::poll(this.deadline.as_mut(), cx) {
            Poll::Ready(()) => {
                this.watch.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
