//! Serving package files: HEAD, single byte ranges (206/416), ETag / If-None-Match,
//! If-Modified-Since (304), exact Content-Length, a Content-Type that no client decompresses
//! behind pip's back, and `--cache-control`.

use std::io::SeekFrom;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocket::http::{Header, Status};
use rocket::response::{self, Responder, Response};
use rocket::tokio::fs::File;
use std::io::Seek;

use rocket::tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, ReadBuf};
use rocket::Request;

use crate::index::FileIdentity;

/// Content types by extension. Deliberately no `Content-Encoding: gzip` for `.tar.gz`: an HTTP
/// client would then hand the user a decompressed file whose hash does not match.
pub(crate) fn content_type(filename: &str) -> &'static str {
    let lower = filename.to_ascii_lowercase();
    if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        "application/gzip"
    } else if lower.ends_with(".tar.bz2") {
        "application/x-bzip2"
    } else if lower.ends_with(".tar.xz") {
        "application/x-xz"
    } else if lower.ends_with(".tar") {
        "application/x-tar"
    } else if lower.ends_with(".zip") || lower.ends_with(".whl") {
        "application/zip"
    } else {
        "application/octet-stream"
    }
}

pub(crate) fn etag(identity: &FileIdentity) -> String {
    let nanos = identity
        .modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("\"{:x}-{nanos:x}-{:x}\"", identity.size, identity.inode)
}

/// A requested byte range, resolved against the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// No (usable) Range header: the whole file.
    Full,
    /// Bytes `start..=end`.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Parses a `Range` header. Only one range is served; a header this server does not
/// understand, or a list of ranges, is answered with the whole file, which RFC 9110 allows.
pub(crate) fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Some(suffix) = byte_position(last) else {
            return RangeRequest::Full;
        };
        if suffix == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial {
            start: len.saturating_sub(suffix),
            end: len - 1,
        };
    }
    let Some(start) = byte_position(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        len.saturating_sub(1)
    } else {
        match byte_position(last) {
            Some(end) if end >= start => end.min(len.saturating_sub(1)),
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial { start, end }
}

/// A byte position of a range: digits only. One too large for 64 bits is past any file, so it
/// counts as the largest position rather than as a malformed range (RFC 9110 clamps an end
/// past the file to its last byte).
fn byte_position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// The request headers that decide what a download answers.
#[derive(Debug, Default, Clone)]
pub(crate) struct Conditions {
    pub(crate) if_none_match: Option<String>,
    pub(crate) if_modified_since: Option<String>,
    pub(crate) if_range: Option<String>,
    pub(crate) range: Option<String>,
}

impl Conditions {
    pub(crate) fn from_request(req: &Request<'_>) -> Self {
        let get = |name| req.headers().get_one(name).map(str::to_owned);
        Self {
            if_none_match: get("If-None-Match"),
            if_modified_since: get("If-Modified-Since"),
            if_range: get("If-Range"),
            range: get("Range"),
        }
    }

    fn not_modified(&self, etag: &str, modified: SystemTime) -> bool {
        if let Some(list) = &self.if_none_match {
            // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
            return list.split(',').any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == etag
            });
        }
        // A file with no Last-Modified has no date to compare with (RFC 9110 13.1.3).
        if http_date(modified).is_none() {
            return false;
        }
        let Some(since) = self
            .if_modified_since
            .as_deref()
            .and_then(|s| httpdate::parse_http_date(s).ok())
        else {
            return false;
        };
        truncate_to_seconds(modified) <= since
    }
}

fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The first second an HTTP-date cannot write (year 10000).
const HTTP_DATE_END: Duration = Duration::from_secs(253_402_300_800);

/// `Last-Modified` for an mtime, or `None` when the mtime is before 1970 or after 9999: an
/// HTTP-date cannot say those, and `httpdate` panics on them.
fn http_date(modified: SystemTime) -> Option<String> {
    let since_epoch = modified.duration_since(UNIX_EPOCH).ok()?;
    (since_epoch < HTTP_DATE_END).then(|| httpdate::fmt_http_date(modified))
}

/// A package file, ready to be answered with.
pub(crate) struct FileResponse {
    pub(crate) body: FileBody,
    pub(crate) filename: String,
    pub(crate) identity: FileIdentity,
    pub(crate) conditions: Conditions,
    pub(crate) cache_control: Option<u64>,
    /// Held by a streamed body until it is sent or dropped (`--max-streamed-downloads`).
    pub(crate) slot: Option<rocket::tokio::sync::OwnedSemaphorePermit>,
}

/// Files up to this size are read whole where they are opened; bigger ones are streamed.
/// Streaming costs at least two more trips to tokio's blocking pool per request (a read and
/// the read that finds the end), which for a small wheel is most of the work.
const READ_WHOLE_UP_TO: u64 = 64 * 1024;

/// A file's bytes: already read, or an open file (opened off the runtime) to stream from.
pub(crate) enum FileBody {
    Read(Vec<u8>),
    Open(std::fs::File),
}

impl FileBody {
    /// The body of a file the index opened: read whole if it is small. Blocking. The size is
    /// that of the bytes read, should the file change while being read.
    pub(crate) fn of(
        mut file: std::fs::File,
        mut identity: FileIdentity,
    ) -> std::io::Result<(Self, FileIdentity)> {
        use std::io::Read;
        if identity.size > READ_WHOLE_UP_TO {
            return Ok((FileBody::Open(file), identity));
        }
        let mut bytes = Vec::with_capacity(identity.size as usize);
        file.read_to_end(&mut bytes)?;
        identity.size = bytes.len() as u64;
        Ok((FileBody::Read(bytes), identity))
    }
}

/// Bytes read from a file per chunk sent. Each read is a trip to tokio's blocking pool, so
/// Rocket's default of 4 KiB capped a 100 MB download at about 110 MB/s; 256 KiB reaches the
/// page cache's speed while keeping per-download memory small.
const FILE_CHUNK: usize = 256 * 1024;

impl<'r> Responder<'r, 'static> for FileResponse {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let len = self.identity.size;
        let etag = etag(&self.identity);
        let mut response = Response::build();
        response
            .raw_header("ETag", etag.clone())
            .raw_header("Accept-Ranges", "bytes");
        if let Some(date) = http_date(self.identity.modified) {
            response.raw_header("Last-Modified", date);
        }
        if let Some(age) = self.cache_control {
            response.raw_header("Cache-Control", format!("public, max-age={age}"));
        }
        if self.conditions.not_modified(&etag, self.identity.modified) {
            return response.status(Status::NotModified).ok();
        }
        response.raw_header("Content-Type", content_type(&self.filename));
        let range_applies = self
            .conditions
            .if_range
            .as_deref()
            .is_none_or(|tag| tag.trim() == etag);
        let range = if range_applies {
            parse_range(self.conditions.range.as_deref(), len)
        } else {
            RangeRequest::Full
        };
        match (range, self.body) {
            (RangeRequest::Full, FileBody::Read(bytes)) => response
                .status(Status::Ok)
                .sized_body(bytes.len(), std::io::Cursor::new(bytes))
                .ok(),
            (RangeRequest::Full, FileBody::Open(file)) => response
                .status(Status::Ok)
                .sized_body(
                    usize::try_from(len).ok(),
                    StreamedBody {
                        reader: File::from_std(file).take(len),
                        _slot: self.slot,
                    },
                )
                .max_chunk_size(FILE_CHUNK)
                .ok(),
            (RangeRequest::Partial { start, end }, body) => {
                let window = end - start + 1;
                response.status(Status::PartialContent).header(Header::new(
                    "Content-Range",
                    format!("bytes {start}-{end}/{len}"),
                ));
                match body {
                    // Both ends are within the file: parse_range saw its length.
                    FileBody::Read(bytes) => {
                        let part = bytes[start as usize..=end as usize].to_vec();
                        response.sized_body(part.len(), std::io::Cursor::new(part))
                    }
                    FileBody::Open(mut file) => {
                        // lseek only moves an offset: no I/O, so doing it here does not block.
                        if let Err(err) = file.seek(SeekFrom::Start(start)) {
                            tracing::error!("seeking in {}: {err}", self.filename);
                            return Err(Status::InternalServerError);
                        }
                        response
                            .sized_body(
                                usize::try_from(window).ok(),
                                StreamedBody {
                                    reader: File::from_std(file).take(window),
                                    _slot: self.slot,
                                },
                            )
                            .max_chunk_size(FILE_CHUNK)
                    }
                };
                response.ok()
            }
            (RangeRequest::Unsatisfiable, _) => response
                .status(Status::RangeNotSatisfiable)
                .raw_header("Content-Range", format!("bytes */{len}"))
                .ok(),
        }
    }
}

/// The bytes of a file or of a range of it, streamed, with the download slot they hold. Rocket
/// wants a seekable body to learn its size; the size is given up front, so seeking is never
/// asked of it.
struct StreamedBody {
    reader: rocket::tokio::io::Take<File>,
    _slot: Option<rocket::tokio::sync::OwnedSemaphorePermit>,
}

impl AsyncRead for StreamedBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncSeek for StreamedBody {
    fn start_seek(self: Pin<&mut Self>, _: SeekFrom) -> std::io::Result<()> {
        Err(std::io::Error::other("a range body is not seekable"))
    }
    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_past_64_bits_are_clamped_not_ignored() {
        let huge = "99999999999999999999999";
        assert!(matches!(
            parse_range(Some(&format!("bytes=0-{huge}")), 10),
            RangeRequest::Partial { start: 0, end: 9 }
        ));
        assert!(matches!(
            parse_range(Some(&format!("bytes=-{huge}")), 10),
            RangeRequest::Partial { start: 0, end: 9 }
        ));
        assert!(matches!(
            parse_range(Some(&format!("bytes={huge}-")), 10),
            RangeRequest::Unsatisfiable
        ));
        assert!(matches!(
            parse_range(Some("bytes=+1-2"), 10),
            RangeRequest::Full
        ));
    }

    #[test]
    fn http_dates_only_for_times_an_http_date_can_write() {
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)).as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        assert_eq!(http_date(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(http_date(UNIX_EPOCH + HTTP_DATE_END), None);
        assert!(http_date(UNIX_EPOCH + HTTP_DATE_END - Duration::from_secs(1)).is_some());
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-3"), 10),
            Partial { start: 0, end: 3 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-4"), 10),
            Partial { start: 6, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Partial { start: 8, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn assert_within(range: RangeRequest, len: u64) -> Result<(), TestCaseError> {
            if let RangeRequest::Partial { start, end } = range {
                prop_assert!(start <= end && end < len, "{start}-{end} of {len}");
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_header_gives_a_range_inside_the_file(header in any::<String>(), len in any::<u64>()) {
                assert_within(parse_range(Some(&header), len), len)?;
            }

            #[test]
            fn range_like_headers_give_ranges_inside_the_file(
                header in "bytes= ?[0-9]{0,21} ?- ?[0-9]{0,21}",
                len in prop_oneof![0u64..64, any::<u64>()],
            ) {
                assert_within(parse_range(Some(&header), len), len)?;
            }

            #[test]
            fn a_range_inside_the_file_is_served_as_asked(
                len in 1u64..,
                a in any::<u64>(),
                b in any::<u64>(),
            ) {
                let (start, end) = (a % len, b % len);
                let (start, end) = (start.min(end), start.max(end));
                prop_assert_eq!(
                    parse_range(Some(&format!("bytes={start}-{end}")), len),
                    RangeRequest::Partial { start, end }
                );
            }
        }
    }
}
