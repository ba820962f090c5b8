//! Request guards: who is asking (HTTP Basic against the `-a` actions), whether a browser
//! sent a change on behalf of another site, and what page format they accept (PEP 691
//! negotiation). All reject before any filesystem work is done.

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
    let verdict = app.auth.clone().check_async(header).await;
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

/// Passes when the request is not a browser's cross-site one and uploads and removals are
/// open or the credentials allow them.
pub(crate) struct CanUpdate;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for CanUpdate {
    type Error = ();
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let Some(app) = req.rocket().state::<App>() else {
            return Outcome::Error((Status::InternalServerError, ()));
        };
        // Before the credentials, so that a refused request costs no bcrypt.
        if let Err(refused) = check_same_site(req, app.settings.base_url.as_deref()) {
            tracing::warn!("{refused}");
            req.local_cache(|| Refusal(Some(refused.to_string())));
            return Outcome::Error((Status::Forbidden, ()));
        }
        authorize(req, Action::Update).await.map(|()| CanUpdate)
    }
}

/// Why a guard answered 403, when it was not the credentials, for [`forbidden`].
struct Refusal(Option<String>);

/// 403 with the reason a guard gave, or else the credentials' fault.
#[catch(403)]
pub(crate) fn forbidden(req: &Request<'_>) -> (Status, String) {
    let reason = req
        .local_cache(|| Refusal(None))
        .0
        .as_deref()
        .unwrap_or("access denied: these credentials may not do this");
    (Status::Forbidden, format!("{reason}\n"))
}

/// A change a browser sent on behalf of another site. A form on any web page can POST
/// `:action=remove_pkg` here, and the browser attaches the Basic credentials its user saved
/// for this server; the browser also says where the request comes from, which no page can
/// forge. twine, pip and uv send neither header, so they are never refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CrossSite {
    #[error(
        "cross-site request refused: the browser sent it from another site \
         (Sec-Fetch-Site: cross-site); upload and remove with twine, uv, or a page of this server"
    )]
    FetchSite,
    #[error(
        "cross-site request refused: Origin {origin:?} is not this server ({host}); \
         upload and remove with twine, uv, or a page of this server"
    )]
    Origin { origin: String, host: String },
}

fn check_same_site(req: &Request<'_>, base_url: Option<&str>) -> Result<(), CrossSite> {
    let headers = req.headers();
    if headers
        .get("Sec-Fetch-Site")
        .any(|site| site.trim().eq_ignore_ascii_case("cross-site"))
    {
        return Err(CrossSite::FetchSite);
    }
    let host = req
        .host()
        .map(|host| Authority::from_host(host.domain().as_str(), host.port()));
    let base = base_url.and_then(Origin::parse);
    for origin in headers.get("Origin") {
        if !is_own_origin(origin, host.as_ref(), base.as_ref()) {
            return Err(CrossSite::Origin {
                origin: origin.to_owned(),
                host: req
                    .host()
                    .map_or_else(|| "no Host header".to_owned(), |h| format!("Host {h}")),
            });
        }
    }
    Ok(())
}

/// The host and port a request was sent to, from its Host header. Without a port the scheme's
/// default applies, which the Host header does not say: it is matched against the Origin's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn from_host(domain: &str, port: Option<u16>) -> Self {
        Self {
            host: domain.to_ascii_lowercase(),
            port,
        }
    }
}

/// A serialized origin (`scheme://host[:port]`), with the scheme's default port filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Also reads a base URL: what follows the authority is ignored. `None` for anything
    /// else, such as the `null` origin of a sandboxed page.
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next()?;
        // A port follows the last colon, unless that colon is inside an IPv6 literal.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
            _ => (authority, default_port),
        };
        if host.is_empty() || host.contains('@') {
            return None;
        }
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn default_port(&self) -> u16 {
        if self.scheme == "https" {
            443
        } else {
            80
        }
    }
}

/// Whether a browser's `Origin` is this server: the host the request was sent to (its
/// scheme is unknown here, behind a proxy that ends TLS), or the `--server-base-url`.
fn is_own_origin(origin: &str, host: Option<&Authority>, base: Option<&Origin>) -> bool {
    let Some(origin) = Origin::parse(origin) else {
        return false;
    };
    let same_host = host.is_some_and(|host| {
        host.host == origin.host && host.port.unwrap_or(origin.default_port()) == origin.port
    });
    same_host || base == Some(&origin)
}

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
                .map_or(Some(1.0), |(_, v)| {
                    v.trim().parse::<f32>().ok().filter(|q| q.is_finite())
                })?;
            Some((media, q.clamp(0.0, 1.0)))
        })
        .collect();
    // Nothing in the header could be read (a q of "abc", say): answer as if it were absent,
    // which RFC 9110 allows, rather than refusing a client over a malformed header.
    let ranges = if ranges.is_empty() {
        vec![("*/*".to_owned(), 1.0)]
    } else {
        ranges
    };
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
            // A range given twice counts with its highest q.
            if best.is_none_or(|(s, best_q)| specificity > s || (specificity == s && *q > best_q)) {
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
    fn a_repeated_range_counts_with_its_highest_q() {
        let json = "application/vnd.pypi.simple.v1+json";
        assert_eq!(
            negotiate(Some(&format!(
                "{json};q=0.1, text/html;q=0.5, {json};q=0.9"
            ))),
            Some(PageFormat::JsonV1)
        );
        // The two names of one format are one range too.
        assert_eq!(
            negotiate(Some(&format!(
                "{json};q=0, text/html;q=0.5, application/vnd.pypi.simple.latest+json"
            ))),
            Some(PageFormat::JsonV1)
        );
        // Only among equally specific ranges: the exact one still beats `*/*`.
        assert_eq!(
            negotiate(Some(&format!("{json};q=0.1, text/html;q=0.5, */*"))),
            Some(PageFormat::HtmlV1)
        );
    }

    fn own(origin: &str, host: Option<(&str, Option<u16>)>, base: Option<&str>) -> bool {
        let host = host.map(|(domain, port)| Authority::from_host(domain, port));
        is_own_origin(origin, host.as_ref(), base.and_then(Origin::parse).as_ref())
    }

    #[test]
    fn origins_of_this_server() {
        let local = Some(("localhost", Some(8080)));
        assert!(own("http://localhost:8080", local, None));
        assert!(own("HTTP://LocalHost:8080", local, None));
        // Behind a proxy that ends TLS: the scheme is not known, the default port is.
        assert!(own(
            "https://pypi.example",
            Some(("pypi.example", None)),
            None
        ));
        assert!(own(
            "http://pypi.example",
            Some(("pypi.example", None)),
            None
        ));
        assert!(own(
            "https://pypi.example",
            Some(("pypi.example", Some(443))),
            None
        ));
        // A proxy that rewrites Host: --server-base-url says what the browser sees.
        let base = Some("https://pypi.example/sub/");
        assert!(own(
            "https://pypi.example",
            Some(("10.0.0.5", Some(8080))),
            base
        ));
        assert!(own("https://pypi.example:443", None, base));
    }

    #[test]
    fn err_foreign_origins() {
        let local = Some(("localhost", Some(8080)));
        for origin in [
            "http://evil.example",
            "http://localhost:8081",
            "http://localhost",
            "http://localhost.evil.example:8080",
            "http://user@localhost:8080",
            "null",
            "",
            "file://",
            "localhost:8080",
        ] {
            assert!(!own(origin, local, None), "{origin}");
        }
        assert!(!own(
            "http://pypi.example",
            None,
            Some("https://pypi.example")
        ));
        assert!(!own(
            "https://pypi.example:8443",
            None,
            Some("https://pypi.example")
        ));
        assert!(!own("http://localhost:8080", None, None));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        const MEDIA: [&str; 8] = [
            "text/html",
            "application/vnd.pypi.simple.v1+json",
            "application/vnd.pypi.simple.latest+json",
            "application/vnd.pypi.simple.v1+html",
            "application/vnd.pypi.simple.latest+html",
            "application/*",
            "text/*",
            "*/*",
        ];

        /// The q a format gets from ranges, written from RFC 9110 §12.5.1 rather than from
        /// `negotiate`: the most specific ranges that match it, and among those the highest q.
        fn expected_q(format: PageFormat, ranges: &[(usize, u16)]) -> f32 {
            let matches = |media: &str| -> Option<u8> {
                let names = format.names();
                if names.contains(&media) {
                    Some(3)
                } else if media == "*/*" {
                    Some(1)
                } else {
                    let ty = media.strip_suffix("/*")?;
                    names
                        .iter()
                        .any(|n| n.starts_with(&format!("{ty}/")))
                        .then_some(2)
                }
            };
            let scored: Vec<(u8, f32)> = ranges
                .iter()
                .filter_map(|&(m, q)| Some((matches(MEDIA[m])?, f32::from(q) / 1000.0)))
                .collect();
            let Some(top) = scored.iter().map(|(s, _)| *s).max() else {
                return 0.0;
            };
            scored
                .iter()
                .filter(|(s, _)| *s == top)
                .map(|(_, q)| *q)
                .fold(0.0, f32::max)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn negotiate_never_panics(accept in any::<String>()) {
                let _ = negotiate(Some(&accept));
            }

            #[test]
            fn negotiate_never_panics_on_header_like_text(
                accept in "([a-z*+./]{0,12}(;[ ]?[qQ]=[-0-9.eE]{0,6})?, ?){0,6}"
            ) {
                let _ = negotiate(Some(&accept));
            }

            #[test]
            fn negotiate_picks_a_format_with_the_highest_q(
                ranges in proptest::collection::vec((0..MEDIA.len(), 0u16..=1000), 1..8)
            ) {
                let accept = ranges
                    .iter()
                    .map(|&(m, q)| format!("{};q={}", MEDIA[m], f32::from(q) / 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ");
                let formats = [PageFormat::LegacyHtml, PageFormat::JsonV1, PageFormat::HtmlV1];
                let best = formats
                    .iter()
                    .map(|&f| expected_q(f, &ranges))
                    .fold(0.0, f32::max);
                match negotiate(Some(&accept)) {
                    None => prop_assert!(best == 0.0, "{accept}: nothing chosen, best q {best}"),
                    Some(chosen) => prop_assert_eq!(expected_q(chosen, &ranges), best, "{}", accept),
                }
            }

            #[test]
            fn origin_checks_never_panic(origin in any::<String>(), host in any::<String>()) {
                let host = Authority::from_host(&host, None);
                let _ = is_own_origin(&origin, Some(&host), Origin::parse(&origin).as_ref());
            }

            #[test]
            fn an_origin_matches_its_own_host(
                host in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z]{2,6}){0,2}",
                port in proptest::option::of(1u16..),
                https in any::<bool>(),
            ) {
                let scheme = if https { "https" } else { "http" };
                let origin = match port {
                    Some(port) => format!("{scheme}://{host}:{port}"),
                    None => format!("{scheme}://{host}"),
                };
                let authority = Authority::from_host(&host, port);
                prop_assert!(is_own_origin(&origin, Some(&authority), None), "{}", origin);
                let other = Authority::from_host(&format!("x{host}"), port);
                prop_assert!(!is_own_origin(&origin, Some(&other), None), "{}", origin);
            }
        }
    }

    #[test]
    fn nothing_acceptable() {
        assert_eq!(negotiate(Some("application/xml")), None);
        assert_eq!(negotiate(Some("text/html;q=0")), None);
        // An unreadable header is answered as if absent.
        assert_eq!(negotiate(Some("text/html;q=abc")), negotiate(None));
        assert_eq!(negotiate(Some("text/html;q=NaN")), negotiate(None));
        assert_eq!(negotiate(Some("application/vnd.pypi.simple.v2+json")), None);
    }
}
