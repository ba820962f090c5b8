//! One log line per request: method, path, status, bytes, duration and the authenticated
//! user. The query string and every header are left out, so no credential can reach the log.

use std::time::Instant;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Data, Request, Response};

use super::guards::RequestUser;

pub(crate) struct AccessLog;

/// When the request arrived, and its method before Rocket answers a HEAD through the GET route.
struct Started(Instant, rocket::http::Method);

#[rocket::async_trait]
impl Fairing for AccessLog {
    fn info(&self) -> Info {
        Info {
            name: "access log",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        let method = req.method();
        req.local_cache(|| Started(Instant::now(), method));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let started = req.local_cache(|| Started(Instant::now(), req.method()));
        let user = req.local_cache(RequestUser::default);
        let bytes = res
            .body()
            .preset_size()
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        tracing::info!(
            target: "wheelhouse::access",
            method = %started.1,
            path = %req.uri().path(),
            status = res.status().code,
            bytes = %bytes,
            duration_ms = format_args!("{:.3}", started.0.elapsed().as_secs_f64() * 1000.0),
            user = %user.0.as_deref().unwrap_or("-"),
        );
    }
}
