//! The command line, in one place: every option of `pypi-server run` with its meaning and
//! default, plus wheelhouse's own. Parsing turns it into a checked [`ServerConfig`]; nothing
//! else reads the arguments.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::auth::{Action, EnvUserError, StaticUser, UnknownAction, ENV_PASSWORD, ENV_USERNAME};
use crate::digest::{HashAlgo, UnknownHashAlgo};
use crate::index::{BackendKind, IndexConfig};

#[derive(Debug, Parser)]
#[command(
    name = "wheelhouse",
    version,
    about = "A private Python package index: a drop-in for pypiserver that stays consistent across replicas sharing one directory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the package directories (takes every option of `pypi-server run`).
    Run(Box<RunArgs>),
    /// Probe a running server's health endpoint: exit 0 when it answers 200, 1 otherwise
    /// (for container health checks in an image without a shell).
    Healthcheck {
        /// The health endpoint to probe.
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Credentials: besides -P, users can be given through the environment, as a container ",
    "platform injects secrets: one by WHEELHOUSE_USERNAME and WHEELHOUSE_PASSWORD, and any ",
    "number more by pairs WHEELHOUSE_USERNAME_<SUFFIX> and WHEELHOUSE_PASSWORD_<SUFFIX> with ",
    "the same suffix (e.g. WHEELHOUSE_USERNAME_CI=ci-bot and WHEELHOUSE_PASSWORD_CI=...). ",
    "Both halves of a pair or neither; the password is plain text, compared as it is; an ",
    "empty value counts as unset. A pair with a half missing, a user name with ':' or a user ",
    "given twice stops the server at start-up.",
    "\n\nLog filtering can be refined with RUST_LOG (e.g. RUST_LOG=wheelhouse=debug)."
))]
pub struct RunArgs {
    /// Package directories; uploads go to the first. Each is scanned recursively.
    #[arg(value_name = "PACKAGES_DIRECTORY")]
    pub directories: Vec<PathBuf>,

    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 8080)]
    pub port: u16,

    /// Address or host name to listen on.
    #[arg(
        short = 'i',
        visible_short_alias = 'H',
        long = "interface",
        visible_alias = "host",
        default_value = "0.0.0.0"
    )]
    pub interface: String,

    /// Actions that need a password: a comma-separated list of download, list, update, or '.'
    /// for none.
    #[arg(short = 'a', long, default_value = "update")]
    pub authenticate: String,

    /// htpasswd file with the users (bcrypt, $apr1$, {SHA} or plain entries), or '.' for none
    /// (then -a must be '.' too). Re-read when it changes.
    #[arg(short = 'P', long)]
    pub passwords: Option<String>,

    /// Answer 404 for projects that are not here instead of redirecting to --fallback-url.
    #[arg(long)]
    pub disable_fallback: bool,

    /// Where requests for projects that are not here are redirected.
    #[arg(long, default_value = "https://pypi.org/simple/")]
    pub fallback_url: String,

    /// Path of the health check, which answers "Ok" without touching the disk.
    #[arg(long, default_value = "/health")]
    pub health_endpoint: String,

    /// The health check answers 503 while this file does not exist. Point it at a file that
    /// only the shared volume holds: a replica whose package directory is not that volume (a
    /// mount that failed after a reboot) is then taken out of service instead of serving an
    /// empty index.
    #[arg(long, value_name = "FILE")]
    pub health_requires: Option<PathBuf>,

    /// Accepted for compatibility and ignored: wheelhouse always serves with its own
    /// asynchronous HTTP server (sized by --workers).
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,

    /// Allow an upload to replace the file served for the same release (in place, where it
    /// is under the upload directory).
    #[arg(short = 'o', long)]
    pub overwrite: bool,

    /// HTML file served as the welcome page at / (read once at start-up).
    #[arg(long, value_name = "HTML_FILE")]
    pub welcome: Option<PathBuf>,

    /// Add `Cache-Control: public, max-age=AGE` to package downloads.
    #[arg(long, value_name = "AGE")]
    pub cache_control: Option<u64>,

    /// Digest put in links for pip to check: md5, sha1, sha224, sha256, sha384, sha512, or
    /// off.
    #[arg(long, default_value = "sha256")]
    pub hash_algo: String,

    /// How listings follow the directories: consistent-dir (what auto means) re-reads a
    /// directory only when it changed and stays consistent across replicas sharing it;
    /// simple-dir scans on every request; cached-dir caches per process (stale across hosts).
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,

    /// External base URL (e.g. https://pypi.example.com/prefix) used in links and redirects,
    /// for when a proxy serves the index under another URL.
    #[arg(long, value_name = "URL")]
    pub server_base_url: Option<String>,

    /// More logging: -v debug, -vv trace (the default, info, shows the access log).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// Also write the log to this file (appended).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Where the log goes: stderr, stdout or none.
    #[arg(long, default_value = "stderr")]
    pub log_stream: String,

    /// Accepted for compatibility and ignored: Python logging formats do not apply; wheelhouse
    /// logs one structured line per event and request.
    #[arg(long, value_name = "FORMAT")]
    pub log_frmt: Option<String>,

    /// Accepted and ignored (see --log-frmt); the access log line has method, path, status,
    /// bytes, duration and user.
    #[arg(long, value_name = "FORMAT")]
    pub log_req_frmt: Option<String>,

    /// Accepted and ignored (see --log-frmt).
    #[arg(long, value_name = "FORMAT")]
    pub log_res_frmt: Option<String>,

    /// Accepted and ignored (see --log-frmt).
    #[arg(long, value_name = "FORMAT")]
    pub log_err_frmt: Option<String>,

    /// Request threads (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Largest upload accepted, e.g. 500M, 1G, 2GiB or a number of bytes; bigger ones get 413
    /// before their body is read.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_upload_size: u64,

    /// Seconds that in-flight requests (uploads) get to finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub shutdown_grace: u32,

    /// Uploads received at once; past it an upload waits up to 5 s for a slot (its body
    /// unread), then gets 503 with Retry-After. Each upload holds up to about 2 MiB of buffers.
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_uploads: u32,

    /// Seconds a connection may stay open without a request in progress: an idle keep-alive
    /// connection, or one whose request head has not fully arrived, is then closed (Linux).
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub header_timeout: u32,

    /// Seconds an upload's body may send nothing before the upload is refused with 408 and
    /// its connection closed.
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub body_timeout: u32,

    /// Files larger than 64 KiB sent at once; past it a download waits up to 5 s, then gets
    /// 503 with Retry-After. Each holds about 1.5 MiB of buffers while its client reads.
    #[arg(long, default_value_t = 128, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streamed_downloads: u32,

    /// Seconds a response may wait for its client to read before the connection is closed
    /// (Linux): a client that asks for a file and stops reading holds its buffers.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub send_timeout: u32,

    /// Bytes per second an upload must average once it has run for --body-timeout seconds;
    /// a slower one gets 408, so that trickling clients cannot keep the upload slots.
    #[arg(long, default_value_t = 1024, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub min_upload_rate: u64,

    /// Open client connections kept at most; past it the longest-idle connections without a
    /// request in progress are closed (Linux).
    #[arg(long, default_value_t = 4096, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stderr,
    Stdout,
    None,
}

/// A checked configuration of the server.
#[derive(Debug)]
pub struct ServerConfig {
    pub address: IpAddr,
    pub port: u16,
    pub index: IndexConfig,
    pub protected: HashSet<Action>,
    pub htpasswd: Option<PathBuf>,
    /// The users of the environment (`WHEELHOUSE_USERNAME`/`WHEELHOUSE_PASSWORD` and their
    /// suffixed pairs).
    pub env_users: Vec<StaticUser>,
    pub fallback_url: Option<String>,
    pub health_endpoint: String,
    pub health_requires: Option<PathBuf>,
    pub welcome_html: Option<String>,
    pub cache_control: Option<u64>,
    pub base_url: Option<String>,
    pub workers: Option<u16>,
    pub max_upload_size: u64,
    pub shutdown_grace: Duration,
    pub limits: Limits,
    pub verbosity: u8,
    pub log_file: Option<PathBuf>,
    pub log_stream: LogStream,
    /// Options that were accepted for compatibility but have no effect, to tell the user.
    pub ignored: Vec<String>,
}

/// What one client, or all of them together, may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_concurrent_uploads: u32,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub min_upload_rate: u64,
    pub max_streamed_downloads: u32,
    pub max_connections: u32,
}

/// A size option that is not one.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {0:?}: expected a number of bytes or e.g. 500M, 1GiB")]
    NotANumber(String),
    #[error("invalid size {raw:?}: unknown unit {unit:?} (use K, M, G or T)")]
    UnknownUnit { raw: String, unit: String },
    #[error("invalid size {0:?}: too large")]
    TooLarge(String),
    #[error("invalid size {0:?}: must be more than 0")]
    Zero(String),
}

/// Parses sizes such as `1GiB`, `500M`, `2g` or `1048576` (K/M/G/T are binary multiples, as
/// for `ulimit` and nginx's `client_max_body_size`).
pub fn parse_size(raw: &str) -> Result<u64, SizeError> {
    let trimmed = raw.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotANumber(raw.to_owned()))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(SizeError::UnknownUnit {
                raw: raw.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    let size = number
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::TooLarge(raw.to_owned()))?;
    if size == 0 {
        return Err(SizeError::Zero(raw.to_owned()));
    }
    Ok(size)
}

fn parse_hash_algo(raw: &str) -> Result<Option<HashAlgo>, UnknownHashAlgo> {
    match raw.trim().to_ascii_lowercase().as_str() {
        // pypiserver also reads these as "off".
        "off" | "false" | "no" | "0" | "none" => Ok(None),
        _ => raw.parse::<HashAlgo>().map(Some),
    }
}

fn resolve_interface(raw: &str) -> Result<IpAddr, ConfigError> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(ip);
    }
    (raw, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| addr.ip())
        .ok_or_else(|| ConfigError::Interface(raw.to_owned()))
}

/// Why `wheelhouse run`'s options cannot be served; each names the option and the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no PACKAGES_DIRECTORY given and HOME is not set to find the default ~/packages")]
    NoHome,
    #[error("package directory {} does not exist or is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error(transparent)]
    Authenticate(#[from] UnknownAction),
    #[error("-P . (no password file) needs -a . (no protected actions), but -a is {0:?}")]
    ProtectedWithoutPasswords(String),
    #[error(transparent)]
    EnvUsers(#[from] EnvUserError),
    #[error("invalid --hash-algo: {0}")]
    HashAlgo(#[from] UnknownHashAlgo),
    #[error("invalid --health-endpoint {0:?}: it must be a path like /health")]
    HealthEndpointNotAPath(String),
    #[error("invalid --health-endpoint {0:?}: it must be a plain path")]
    HealthEndpointNotPlain(String),
    #[error("invalid --server-base-url {0:?}: it must start with http:// or https://")]
    BaseUrl(String),
    #[error("cannot read --welcome file {}: {source}", path.display())]
    Welcome {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid --log-stream {0:?}: expected stderr, stdout or none")]
    LogStream(String),
    #[error("invalid --interface {0:?}: not an IP address or a resolvable host name")]
    Interface(String),
}

impl RunArgs {
    /// Checks every option and reads the environment; every error names the option and the
    /// bad value.
    pub fn into_config(self) -> Result<ServerConfig, ConfigError> {
        self.into_config_with_env(std::env::vars_os())
    }

    /// [`RunArgs::into_config`] with the environment given, not read from the process.
    pub fn into_config_with_env(
        self,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<ServerConfig, ConfigError> {
        let directories = if self.directories.is_empty() {
            let home = std::env::var_os("HOME").ok_or(ConfigError::NoHome)?;
            vec![PathBuf::from(home).join("packages")]
        } else {
            self.directories
        };
        for dir in &directories {
            if !dir.is_dir() {
                return Err(ConfigError::NotADirectory(dir.clone()));
            }
        }
        let protected = Action::parse_list(&self.authenticate)?;
        let htpasswd = match self.passwords.as_deref() {
            None | Some(".") => None,
            Some(path) => Some(PathBuf::from(path)),
        };
        if self.passwords.as_deref() == Some(".") && !protected.is_empty() {
            return Err(ConfigError::ProtectedWithoutPasswords(self.authenticate));
        }
        let env_users = StaticUser::from_vars(env)?;
        if protected.is_empty() && (htpasswd.is_some() || !env_users.is_empty()) {
            tracing::warn!(
                "-a . protects nothing: the password file and the users of {ENV_USERNAME}/{ENV_PASSWORD} are not used"
            );
        }
        let hash_algo = parse_hash_algo(&self.hash_algo)?;
        if !self.health_endpoint.starts_with('/') || self.health_endpoint.len() < 2 {
            return Err(ConfigError::HealthEndpointNotAPath(self.health_endpoint));
        }
        if self.health_endpoint.contains(['?', '#', '<', '>', ' ']) {
            return Err(ConfigError::HealthEndpointNotPlain(self.health_endpoint));
        }
        let base_url = match self.server_base_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(url) => return Err(ConfigError::BaseUrl(url)),
            None => None,
        };
        let welcome_html = self
            .welcome
            .map(|path| {
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Welcome {
                    path: path.clone(),
                    source,
                })
            })
            .transpose()?;
        let log_stream = match self.log_stream.to_ascii_lowercase().as_str() {
            "stderr" => LogStream::Stderr,
            "stdout" => LogStream::Stdout,
            "none" => LogStream::None,
            other => return Err(ConfigError::LogStream(other.to_owned())),
        };
        let mut ignored = Vec::new();
        if let Some(server) = self.server {
            ignored.push(format!(
                "--server {server} (wheelhouse uses its own HTTP server)"
            ));
        }
        for (flag, value) in [
            ("--log-frmt", self.log_frmt),
            ("--log-req-frmt", self.log_req_frmt),
            ("--log-res-frmt", self.log_res_frmt),
            ("--log-err-frmt", self.log_err_frmt),
        ] {
            if let Some(value) = value {
                ignored.push(format!(
                    "{flag} {value:?} (Python logging formats do not apply)"
                ));
            }
        }
        Ok(ServerConfig {
            address: resolve_interface(&self.interface)?,
            port: self.port,
            index: IndexConfig {
                roots: directories,
                hash_algo,
                overwrite: self.overwrite,
                backend: self.backend,
            },
            protected,
            htpasswd,
            env_users,
            fallback_url: (!self.disable_fallback).then_some(self.fallback_url),
            health_endpoint: self.health_endpoint,
            health_requires: self.health_requires,
            welcome_html,
            cache_control: self.cache_control,
            base_url,
            workers: self.workers,
            max_upload_size: self.max_upload_size,
            shutdown_grace: Duration::from_secs(self.shutdown_grace.into()),
            limits: Limits {
                max_concurrent_uploads: self.max_concurrent_uploads,
                header_timeout: Duration::from_secs(self.header_timeout.into()),
                body_timeout: Duration::from_secs(self.body_timeout.into()),
                send_timeout: Duration::from_secs(self.send_timeout.into()),
                min_upload_rate: self.min_upload_rate,
                max_streamed_downloads: self.max_streamed_downloads,
                max_connections: self.max_connections,
            },
            verbosity: self.verbose,
            log_file: self.log_file,
            log_stream,
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<ServerConfig, String> {
        let cli = Cli::try_parse_from(["wheelhouse", "run"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Run(run) = cli.command else {
            unreachable!("the command line above is a run command")
        };
        // Not the process's environment: a developer's shell may define users.
        run.into_config_with_env(std::iter::empty())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn pypiserver_command_lines_parse() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let config = run_args(&["-p", "9000", "-H", "127.0.0.1", "-P", ".", "-a", ".", d]).unwrap();
        assert_eq!(config.port, 9000);
        assert!(config.protected.is_empty());
        let config = run_args(&[
            "--host",
            "localhost",
            "--hash-algo",
            "off",
            "--disable-fallback",
            d,
        ])
        .unwrap();
        assert!(config.address.is_loopback());
        assert_eq!(config.index.hash_algo, None);
        assert_eq!(config.fallback_url, None);
        let config = run_args(&["--server", "gunicorn", "--log-frmt", "%(message)s", d]).unwrap();
        assert_eq!(config.ignored.len(), 2);
    }

    #[test]
    fn err_each_bad_value_is_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let cases: &[(&[&str], &str)] = &[
            (&["-a", "upload"], "\"upload\""),
            (&["-P", ".", "-a", "update"], "-a is \"update\""),
            (&["--hash-algo", "crc32"], "\"crc32\""),
            (&["--health-endpoint", "health"], "\"health\""),
            (&["--server-base-url", "ftp://x"], "\"ftp://x\""),
            (&["--log-stream", "syslog"], "\"syslog\""),
            (&["--max-upload-size", "12Q"], "\"12Q\""),
            (&["-i", "no such host.invalid"], "\"no such host.invalid\""),
        ];
        for (args, expected) in cases {
            let mut all: Vec<&str> = args.to_vec();
            all.push(d);
            let err = run_args(&all).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
        let err = run_args(&["/nonexistent/packages"]).unwrap_err();
        assert!(err.contains("/nonexistent/packages"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }
}
