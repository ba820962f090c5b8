//! The HTTP server: Rocket routes and guards only. Handlers parse the request, ask the index
//! and render; the index does the work.

mod access_log;
mod error;
mod files;
mod guards;
mod health;
mod in_flight;
mod page_cache;
mod pages;
mod render;
mod replica;
mod rpc;
mod upload;
mod warden;

use std::sync::Arc;
use std::time::Duration;

use rocket::config::{Ident, LogLevel, Shutdown};
use rocket::http::{Header, Method, Status};
use rocket::response::{self, Responder, Response};
use rocket::route::Route;
use rocket::{Build, Request, Rocket};

use crate::auth::{Authenticator, PasswordFileError};
use crate::config::ServerConfig;
use crate::index::{BackendKind, Index};

/// How long the last responses get to leave their connections after the last request is done.
const FLUSH_LINGER: Duration = Duration::from_secs(1);

/// Bytes of rendered project pages kept: a few thousand projects' pages, a small part of the
/// memory the server may use with 100k files.
const PROJECT_PAGES_BUDGET: usize = 8 << 20;

/// What a 503 for a full upload or download queue tells the client to wait.
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// How long a request waits for an upload or download slot before its 503. A burst (CI
/// pipelines finishing together) queues for a moment instead of failing; a request waiting
/// holds its connection and nothing else, since its body is not read until it has a slot.
pub(crate) const SLOT_WAIT: Duration = Duration::from_secs(5);

/// A slot from `slots`, waiting up to [`SLOT_WAIT`]; past that a 503 naming the `flag` that
/// sets how many there are.
pub(crate) async fn slot(
    slots: &Arc<rocket::tokio::sync::Semaphore>,
    what: &str,
    flag: &str,
) -> Result<rocket::tokio::sync::OwnedSemaphorePermit, error::ApiError> {
    match rocket::tokio::time::timeout(SLOT_WAIT, slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(error::ApiError::unavailable(
            format!("the server is {what} as many at once as it may ({flag}): retry shortly"),
            RETRY_AFTER_SECS,
        )),
    }
}

/// What every handler can reach.
pub struct App {
    pub index: Arc<Index>,
    pub auth: Arc<Authenticator>,
    pub settings: RequestSettings,
    pub(crate) root_pages: page_cache::RootPages,
    pub(crate) project_pages: page_cache::ProjectPages,
    /// One permit per upload being received (`--max-concurrent-uploads`).
    pub(crate) upload_slots: Arc<rocket::tokio::sync::Semaphore>,
    /// One permit per file being streamed (`--max-streamed-downloads`).
    pub(crate) stream_slots: Arc<rocket::tokio::sync::Semaphore>,
}

/// The request-time settings, from the command line.
pub struct RequestSettings {
    pub fallback_url: Option<String>,
    pub welcome_html: Option<String>,
    pub cache_control: Option<u64>,
    pub base_url: Option<String>,
    pub max_upload_size: u64,
    pub body_timeout: Duration,
    pub min_upload_rate: u64,
}

/// Answers 401 with the challenge that makes pip, uv and twine ask for credentials.
struct Challenge;

impl<'r> Responder<'r, 'static> for Challenge {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let body = "authentication required\n";
        Response::build()
            .status(Status::Unauthorized)
            .header(Header::new("WWW-Authenticate", "Basic realm=\"pypi\""))
            .header(rocket::http::ContentType::Plain)
            .sized_body(body.len(), std::io::Cursor::new(body))
            .ok()
    }
}

#[catch(401)]
fn unauthorized() -> Challenge {
    Challenge
}

#[catch(default)]
fn other_error(status: Status, _: &Request<'_>) -> (Status, String) {
    let reason = match status.code {
        404 => "not found",
        406 => "none of the media types in Accept can be served: use application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html or text/html",
        _ => status.reason().unwrap_or("error"),
    };
    (status, format!("{reason}\n"))
}

/// Builds the server from a checked configuration. Fails only if the password file cannot
/// be read.
pub fn build(config: &ServerConfig) -> Result<Rocket<Build>, PasswordFileError> {
    build_with(config, in_flight::InFlight::default())
}

fn build_with(
    config: &ServerConfig,
    in_flight: in_flight::InFlight,
) -> Result<Rocket<Build>, PasswordFileError> {
    let auth = Authenticator::new(
        config.protected.clone(),
        config.htpasswd.clone(),
        config.env_users.clone(),
    )?;
    if config.protected.iter().next().is_some() && !auth.has_credentials() {
        tracing::warn!(
            "actions {:?} need a password but no -P file or {}/{} is given: they will be refused",
            config.protected,
            crate::auth::ENV_USERNAME,
            crate::auth::ENV_PASSWORD
        );
    }
    if config.index.backend == BackendKind::CachedDir {
        tracing::warn!(
            "--backend cached-dir: changes made by another host sharing the directory (NFS, EFS) \
             are not seen; use consistent-dir (the default) with replicas"
        );
    }
    let app = App {
        index: Arc::new(Index::open(config.index.clone())),
        auth: Arc::new(auth),
        settings: RequestSettings {
            fallback_url: config.fallback_url.clone(),
            welcome_html: config.welcome_html.clone(),
            cache_control: config.cache_control,
            base_url: config.base_url.clone(),
            max_upload_size: config.max_upload_size,
            body_timeout: config.limits.body_timeout,
            min_upload_rate: config.limits.min_upload_rate,
        },
        root_pages: page_cache::RootPages::default(),
        project_pages: page_cache::ProjectPages::new(PROJECT_PAGES_BUDGET),
        upload_slots: Arc::new(rocket::tokio::sync::Semaphore::new(
            config.limits.max_concurrent_uploads as usize,
        )),
        stream_slots: Arc::new(rocket::tokio::sync::Semaphore::new(
            config.limits.max_streamed_downloads as usize,
        )),
    };
    let mut rocket_config = rocket::Config {
        address: config.address,
        port: config.port,
        log_level: LogLevel::Off,
        cli_colors: false,
        ident: Ident::try_new("wheelhouse").expect("a valid ident"),
        shutdown: Shutdown {
            grace: u32::try_from(config.shutdown_grace.as_secs()).unwrap_or(u32::MAX),
            mercy: 5,
            ..Shutdown::default()
        },
        ..rocket::Config::default()
    };
    if let Some(workers) = config.workers {
        rocket_config.workers = usize::from(workers);
    }
    let health = Route::ranked(
        0,
        Method::Get,
        &config.health_endpoint,
        health::Health {
            requires: config.health_requires.clone(),
        },
    );
    Ok(rocket::custom(rocket_config)
        .manage(app)
        .attach(in_flight)
        .attach(rocket::fairing::AdHoc::on_liftoff("announce", |rocket| {
            Box::pin(async move {
                let roots = rocket
                    .state::<App>()
                    .map(|app| {
                        app.index
                            .config()
                            .roots
                            .iter()
                            .map(|r| r.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let config = rocket.config();
                tracing::info!(
                    "wheelhouse {} serving {roots} on http://{}:{}",
                    env!("CARGO_PKG_VERSION"),
                    config.address,
                    config.port
                );
            })
        }))
        .attach(access_log::AccessLog)
        .attach(replica::ReplicaName::of_this_process())
        .mount("/", vec![health])
        .mount(
            "/",
            routes![
                pages::welcome,
                pages::simple_index,
                pages::simple_project,
                pages::all_files,
                pages::download,
                pages::project_json,
                pages::project_redirect,
                upload::post_root,
                upload::post_legacy,
                upload::post_simple,
                rpc::rpc,
            ],
        )
        .register("/", catchers![unauthorized, guards::forbidden, other_error]))
}

/// Why the server could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    PasswordFile(#[from] PasswordFileError),
    #[error("starting the server: {0}")]
    Ignite(Box<rocket::Error>),
    #[error("serving on {address}:{port}: {source}")]
    Serve {
        address: std::net::IpAddr,
        port: u16,
        source: Box<rocket::Error>,
    },
}

/// Runs the server until SIGTERM or Ctrl-C, then gives in-flight requests the grace period.
pub async fn launch(config: ServerConfig) -> Result<(), LaunchError> {
    warden::raise_open_files_limit();
    let in_flight = in_flight::InFlight::default();
    let limits = config.limits;
    let peers = in_flight.peers.clone();
    let rocket = build_with(&config, in_flight.clone())?;
    if let Some(app) = rocket.state::<App>() {
        app.index.start_sweeping();
    }
    let rocket = rocket
        // The port is known once bound (it may have been 0).
        .attach(rocket::fairing::AdHoc::on_liftoff(
            "connection warden",
            move |rocket| {
                let port = rocket.config().port;
                let address = std::net::SocketAddr::new(rocket.config().address, port);
                Box::pin(async move {
                    // What a supervisor (or a test) that passed `-p 0` waits for.
                    tracing::info!("listening on http://{address}");
                    warden::spawn(port, limits, peers)
                })
            },
        ));
    let rocket = rocket
        .ignite()
        .await
        .map_err(|err| LaunchError::Ignite(Box::new(err)))?;
    let shutdown = rocket.shutdown();
    rocket::tokio::select! {
        result = rocket.launch() => {
            result.map_err(|err| LaunchError::Serve {
                address: config.address,
                port: config.port,
                source: Box::new(err),
            })?;
        }
        () = async {
            shutdown.await;
            in_flight.idle().await;
            // A response's body is done when its last bytes are handed to the connection,
            // not when they have left it: give the connections a moment to flush.
            rocket::tokio::time::sleep(FLUSH_LINGER.min(config.shutdown_grace)).await;
        } => {
            tracing::info!("shutdown: no request in flight, exiting");
        }
    }
    Ok(())
}
