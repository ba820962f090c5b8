//! The one error type handlers return. The policy: a client's mistake gets its 4xx status and
//! a plain-text message that quotes the offending value; anything else is logged in full and
//! answered with a bare 500, so internals (paths, OS errors) are not shown to clients.

use rocket::http::{ContentType, Status};
use rocket::response::{self, Responder, Response};
use rocket::Request;

use crate::index::archive::ArchiveError;
use crate::index::upload::UploadError;
use crate::index::IndexError;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: Status,
    pub(crate) message: String,
    /// Seconds for `Retry-After`, when the refusal is temporary.
    pub(crate) retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 503: the server is at a limit; the client may retry after `retry_after` seconds.
    pub(crate) fn unavailable(message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(Status::ServiceUnavailable, message)
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, message)
    }

    pub(crate) fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {err}");
        Self::new(Status::InternalServerError, "internal server error")
    }
}

impl From<std::io::Error> for ApiError {
    fn from(err: std::io::Error) -> Self {
        Self::from_io("I/O error", err)
    }
}

impl ApiError {
    /// A full disk or quota is the operator's to fix, and the client's to know about (twine
    /// shows the message): 507 rather than a bare 500. Anything else stays internal.
    fn from_io(context: &str, err: std::io::Error) -> Self {
        if matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            tracing::error!("{context}: {err}");
            return Self::new(
                Status::InsufficientStorage,
                "the package directory is full: nothing was stored",
            );
        }
        Self::internal(context, err)
    }
}

impl From<UploadError> for ApiError {
    fn from(err: UploadError) -> Self {
        match err {
            UploadError::AlreadyExists { .. } | UploadError::OutsideUploadDir { .. } => {
                Self::new(Status::Conflict, err.to_string())
            }
            UploadError::Io(io) => Self::from_io("storing an upload", io),
            UploadError::Archive {
                source: ArchiveError::Io(io),
                ..
            } => Self::internal("checking an upload", io),
            UploadError::Archive { .. } => Self::bad_request(err.to_string()),
            UploadError::InvalidFilename(_)
            | UploadError::AmbiguousSdistName { .. }
            | UploadError::ProjectMismatch { .. }
            | UploadError::DigestMismatch { .. } => Self::bad_request(err.to_string()),
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(err: IndexError) -> Self {
        match err {
            IndexError::InvalidVersion { .. } => Self::bad_request(err.to_string()),
            IndexError::NothingToRemove { .. } => Self::new(Status::NotFound, err.to_string()),
            IndexError::Io(io) => Self::internal("removing files", io),
        }
    }
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let mut body = self.message;
        body.push('\n');
        let mut response = Response::build();
        response
            .status(self.status)
            .header(ContentType::Plain)
            .sized_body(body.len(), std::io::Cursor::new(body));
        if let Some(seconds) = self.retry_after {
            response.raw_header("Retry-After", seconds.to_string());
        }
        // The body of a refused upload may still be arriving: end the connection rather than
        // read the rest of it.
        if self.status == Status::RequestTimeout || self.status == Status::ServiceUnavailable {
            response.raw_header("Connection", "close");
        }
        response.ok()
    }
}

/// Runs filesystem work off the async runtime.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match rocket::tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(join) => Err(ApiError::internal("blocking task failed", join)),
    }
}
