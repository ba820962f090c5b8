//! Request guards: who is asking (HTTP Basic against the `-a` actions) and what page format
//! they accept (PEP 691 negotiation). Both reject before any filesystem work is done.

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};

use super::App;
use crate::auth::{Action, Verdict};

/// The user a request was authenticated as, for the access log.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestUser(pub(crate) Option<String>);

async fn authorize(req: &Request<'_>, action: Action) -> Outcome<(), ()> {
    let Some(app) = req.rocket().state::<App>() else {
        return Outcome::Error((Status::InternalServerError, ()));
    };
    if !app.auth.is_protected(action) {
        return Outcome::Success(());
    }
    let header = req.headers().get_one("Authorization").map(str::to_owned);
    let auth = app.auth.clone();
    // bcrypt is slow by design: keep it off the threads that drive connections.
    let verdict = rocket::tokio::task::spawn_blocking(move || auth.check(header.as_deref()))
        .await
        .unwrap_or(Verdict::Denied);
    match verdict {
        Verdict::Allowed(user) => {
            req.local_cache(|| RequestUser(Some(user)));
            Outcome::Success(())
        }
        Verdict::Missing => Outcome::Error((Status::Unauthorized, ())),
        Verdict::Denied => Outcome::Error((Status::Forbidden, ())),
    }
}

macro_rules! permission_guard {
    ($(#[$doc:meta])* $name:ident, $action:expr) => {
        $(#[$doc])*
        pub(crate) struct $name;

        #[rocket::async_trait]
        impl<'r> FromRequest<'r> for $name {
            type Error = ();
            async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
                authorize(req, $action).await.map(|()| $name)
            }
        }
    };
}

permission_guard!(
    /// Passes when listing is open or the credentials allow it.
    CanList,
    Action::List
);
permission_guard!(
    /// Passes when downloads are open or the credentials allow them.
    CanDownload,
    Action::Download
);
permission_guard!(
    /// Passes when uploads and removals are open or the credentials allow them.
    CanUpdate,
    Action::Update
);

/// The formats a simple page can be served in (PEP 691).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageFormat {
    /// `text/html`: what browsers and pre-PEP 691 clients get.
    LegacyHtml,
    JsonV1,
    HtmlV1,
}

impl PageFormat {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            PageFormat::LegacyHtml => "text/html; charset=utf-8",
            PageFormat::JsonV1 => "application/vnd.pypi.simple.v1+json",
            PageFormat::HtmlV1 => "application/vnd.pypi.simple.v1+html",
        }
    }

    /// The media types each format answers to, most specific first.
    fn names(self) -> &'static [&'static str] {
        match self {
            PageFormat::LegacyHtml => &["text/html"],
            PageFormat::JsonV1 => &[
                "application/vnd.pypi.simple.v1+json",
                "application/vnd.pypi.simple.latest+json",
            ],
            PageFormat::HtmlV1 => &[
                "application/vnd.pypi.simple.v1+html",
                "application/vnd.pypi.simple.latest+html",
            ],
        }
    }
}

/// Picks the format for an `Accept` header: the highest q-value wins, where each format takes
/// the q of the most specific range that names it (exact, then `type/*`, then `*/*`); on a
/// tie, `text/html` first (what `*/*` from a browser wants), then JSON. `None` means nothing
/// acceptable: 406.
pub(crate) fn negotiate(accept: Option<&str>) -> Option<PageFormat> {
    let accept = accept
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or("*/*");
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            if media.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())?;
            Some((media, q.clamp(0.0, 1.0)))
        })
        .collect();
    let quality = |format: PageFormat| -> f32 {
        let mut best: Option<(u8, f32)> = None;
        for (media, q) in &ranges {
            let specificity = if format.names().contains(&media.as_str()) {
                3
            } else if media.strip_suffix("/*").is_some_and(|ty| {
                format
                    .names()
                    .iter()
                    .any(|n| n.split('/').next() == Some(ty))
            }) {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, *q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let mut chosen: Option<(PageFormat, f32)> = None;
    for format in [
        PageFormat::LegacyHtml,
        PageFormat::JsonV1,
        PageFormat::HtmlV1,
    ] {
        let q = quality(format);
        if q > 0.0 && chosen.is_none_or(|(_, best)| q > best) {
            chosen = Some((format, q));
        }
    }
    chosen.map(|(format, _)| format)
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PageFormat {
    type Error = ();
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let accept: Vec<&str> = req.headers().get("Accept").collect();
        let joined = accept.join(",");
        match negotiate((!accept.is_empty()).then_some(joined.as_str())) {
            Some(format) => Outcome::Success(format),
            None => Outcome::Error((Status::NotAcceptable, ())),
        }
    }
}

/// Whether the request path ended in `/` (Rocket's routing ignores it; PEP 503 does not).
pub(crate) struct TrailingSlash(pub bool);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for TrailingSlash {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(TrailingSlash(req.uri().path().as_str().ends_with('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_gets_json() {
        let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
        assert_eq!(negotiate(Some(pip)), Some(PageFormat::JsonV1));
    }

    #[test]
    fn browsers_and_bare_clients_get_html() {
        assert_eq!(negotiate(None), Some(PageFormat::LegacyHtml));
        assert_eq!(
            negotiate(Some("text/html,application/xhtml+xml,*/*;q=0.8")),
            Some(PageFormat::LegacyHtml)
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+html")),
            Some(PageFormat::HtmlV1)
        );
        assert_eq!(
            negotiate(Some("application/*, text/html;q=0.5")),
            Some(PageFormat::JsonV1)
        );
    }

    #[test]
    fn nothing_acceptable() {
        assert_eq!(negotiate(Some("application/xml")), None);
        assert_eq!(negotiate(Some("text/html;q=0")), None);
        assert_eq!(negotiate(Some("application/vnd.pypi.simple.v2+json")), None);
    }
}
