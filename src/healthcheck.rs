//! `wheelhouse healthcheck`: probes the health endpoint and exits 0 or 1, so a container
//! health check needs no shell, curl or Python in the image.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a probe failed; each says which address and step.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("unsupported URL {0:?}: only http:// is probed")]
    UnsupportedUrl(String),
    #[error("cannot resolve {address:?}: {source}")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("{0:?} resolves to nothing")]
    NoAddress(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("{url} answered {status_line:?}")]
    NotOk { url: String, status_line: String },
}

/// Fetches `url` (plain `http://host:port/path`) and succeeds on a 200 answer.
pub fn probe(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::UnsupportedUrl(url.to_owned()))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let socket = address
        .to_socket_addrs()
        .map_err(|source| ProbeError::Resolve {
            address: address.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| ProbeError::NoAddress(address.clone()))?;
    let mut stream =
        TcpStream::connect_timeout(&socket, timeout).map_err(|source| ProbeError::Connect {
            address: address.clone(),
            source,
        })?;
    let io = |step| move |source| ProbeError::Io { step, source };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("setting the read timeout"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(io("setting the write timeout"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: wheelhouse-healthcheck\r\n\r\n"
    )
    .map_err(io("sending the request"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(io("reading the answer"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(ProbeError::NotOk {
            url: url.to_owned(),
            status_line: status_line.lines().next().unwrap_or("").to_owned(),
        })
    }
}
