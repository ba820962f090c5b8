//! Hostile and broken clients against the real binary: stalled uploads, half requests, endless
//! framing. Each test holds the server to a bound that a client must not be able to break.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Server;

const BOUNDARY: &str = "hostileboundary";

/// The head of an upload whose body is announced as `length` bytes, and the start of its form
/// up to the first bytes of the `content` part.
fn upload_head(length: usize) -> (String, String) {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    );
    let form = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"stall-1.0.tar.gz\"\r\n\
         Content-Type: application/octet-stream\r\n\r\nthe first bytes of a file"
    );
    (head, form)
}

/// An upload that sends the start of its file and then nothing.
fn stalled_upload(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    let (head, form) = upload_head(10 << 20);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(form.as_bytes()).unwrap();
    stream
}

/// Everything the server sends until it closes the connection, or `None` if it is still open
/// after `wait`.
fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&received).into_owned()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&received).into_owned())
            }
            Err(_) => return None,
        }
    }
    None
}

fn get_within(server: &Server, path: &str, deadline: Duration) -> reqwest::blocking::Response {
    reqwest::blocking::Client::builder()
        .timeout(deadline)
        .build()
        .unwrap()
        .get(format!("{}{path}", server.url()))
        .send()
        .unwrap_or_else(|err| panic!("GET {path} did not answer within {deadline:?}: {err}"))
}

#[test]
fn stalled_uploads_hold_no_thread_and_the_cap_answers_503() {
    // More stalled uploads than tokio has blocking threads for two lanes each (512 / 2).
    let server = Server::start(
        &["-P", ".", "-a", ".", "--max-concurrent-uploads", "300"],
        &[],
    );
    std::fs::write(
        server.packages().join("here-1.0.tar.gz"),
        b"a package already stored",
    )
    .unwrap();
    let stalled: Vec<TcpStream> = (0..300).map(|_| stalled_upload(&server)).collect();
    // Every one of them has reached its content part, and holds a slot and a temp file.
    assert!(
        super::wait_until(Duration::from_secs(30), || server.uploads_in_flight()
            == 300),
        "{} of 300 stalled uploads reached the server",
        server.uploads_in_flight()
    );
    let page = get_within(&server, "/simple/here/", Duration::from_secs(5));
    assert_eq!(page.status(), 200);
    let download = get_within(&server, "/packages/here-1.0.tar.gz", Duration::from_secs(5));
    assert_eq!(
        download.bytes().unwrap().as_ref(),
        b"a package already stored"
    );
    assert_eq!(
        get_within(&server, "/health", Duration::from_secs(5)).status(),
        200
    );

    // One more upload than the cap: it waits for a slot, then is refused with when to retry.
    let mut extra = stalled_upload(&server);
    let answer = read_until_closed(&mut extra, Duration::from_secs(10))
        .expect("the upload over the cap was neither answered nor closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 5"),
        "{answer}"
    );
    assert!(answer.contains("--max-concurrent-uploads"), "{answer}");
    drop(stalled);
    assert!(server
        .stored()
        .iter()
        .all(|name| !name.starts_with("stall")));
}

#[test]
fn a_stalled_upload_body_gets_408_after_the_body_timeout() {
    let server = Server::start(&["-P", ".", "-a", ".", "--body-timeout", "2"], &[]);
    let started = Instant::now();
    let mut stream = stalled_upload(&server);
    let answer = read_until_closed(&mut stream, Duration::from_secs(15))
        .expect("a stalled upload was kept open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Nothing half-written stays behind, visible or hidden.
    assert_eq!(server.stored(), Vec::<String>::new());
}

#[test]
fn half_requests_and_idle_connections_are_closed_after_the_header_timeout() {
    let server = Server::start(&["-P", ".", "-a", ".", "--header-timeout", "2"], &[]);
    let mut half = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    half.write_all(b"GET /simple/ HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    // A keep-alive connection that asked once and then went quiet.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(
        read_until_closed(&mut half, Duration::from_secs(10)).is_some(),
        "a half request was kept open"
    );
    let answered = read_until_closed(&mut idle, Duration::from_secs(10))
        .expect("an idle keep-alive connection was kept open");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // The server still serves.
    assert_eq!(
        get_within(&server, "/health", Duration::from_secs(5)).status(),
        200
    );
}

#[test]
fn connections_past_the_cap_are_closed_idle_first() {
    let server = Server::start(&["-P", ".", "-a", ".", "--max-connections", "20"], &[]);
    let mut idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port())).unwrap())
        .collect();
    // The warden looks once a second; a loaded machine may make it late.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut open: Vec<&mut TcpStream> = idle.iter_mut().collect();
    let mut closed = 0;
    while closed < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let before = open.len();
        open.retain_mut(|s| read_until_closed(s, Duration::from_millis(20)).is_none());
        closed += before - open.len();
    }
    assert!(closed >= 40, "only {closed} of 60 idle connections closed");
    assert_eq!(
        get_within(&server, "/health", Duration::from_secs(5)).status(),
        200
    );
}

/// POSTs `body` as a multipart form with this file's boundary.
fn post_form(
    server: &Server,
    body: impl Into<reqwest::blocking::Body>,
) -> reqwest::Result<reqwest::blocking::Response> {
    reqwest::blocking::Client::new()
        .post(format!("{}/", server.url()))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
}

#[test]
fn a_body_without_boundary_or_with_endless_headers_is_400_in_bounded_memory() {
    let server = Server::start(&["-P", ".", "-a", "."], &[]);
    let before = server.peak_rss_kib();
    // Big enough that holding any of it shows far above the allowance below.
    let junk = vec![b'x'; 96 << 20];
    // No boundary ever comes.
    let resp = post_form(&server, junk.clone());
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 400);
        assert!(resp.text().unwrap().contains("no boundary"));
    }
    // A part whose header block never ends.
    let mut body =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Filler: ")
            .into_bytes();
    body.extend_from_slice(&junk);
    let resp = post_form(&server, body);
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 400);
    }
    // Many small text fields: read through, never kept.
    let mut body = String::new();
    for i in 0..990 {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"classifier{i}\"\r\n\r\n{}\r\n",
            "y".repeat(60_000)
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    let resp = post_form(&server, body).unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("missing :action"));
    let grown_mib = (server.peak_rss_kib() - before) / 1024;
    // The allowance covers the runtime's own growth under a loaded machine (threads, arenas);
    // holding a body or the fields would add 58 to 96 MiB.
    assert!(
        grown_mib < 40,
        "malformed bodies raised the peak RSS by {grown_mib} MiB"
    );
}

#[test]
fn a_trickling_upload_gets_408_below_the_minimum_rate() {
    let server = Server::start(
        &[
            "-P",
            ".",
            "-a",
            ".",
            "--body-timeout",
            "2",
            "--min-upload-rate",
            "1000",
        ],
        &[],
    );
    let mut stream = stalled_upload(&server);
    // A byte every half second: never idle for the body timeout, far below the rate.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answer = None;
    while answer.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if stream.write_all(b"x").is_err() {
            answer = read_until_closed(&mut stream, Duration::from_secs(5));
            break;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf) {
            let mut text = String::from_utf8_lossy(&buf[..n]).into_owned();
            text.push_str(
                &read_until_closed(&mut stream, Duration::from_secs(5)).unwrap_or_default(),
            );
            answer = Some(text);
        }
    }
    let answer = answer.expect("a trickling upload was kept");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--min-upload-rate"), "{answer}");
    assert_eq!(server.stored(), Vec::<String>::new());
}

#[test]
fn a_download_whose_client_stops_reading_is_closed_after_the_send_timeout() {
    let server = Server::start(&["-P", ".", "-a", ".", "--send-timeout", "2"], &[]);
    let size = 64 << 20;
    std::fs::write(server.packages().join("big-1.0.tar.gz"), vec![7u8; size]).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .write_all(b"GET /packages/big-1.0.tar.gz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // Read nothing while the server fills the socket buffers and waits.
    std::thread::sleep(Duration::from_secs(6));
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received += n,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "the stalled download was neither finished nor closed"
    );
    assert!(
        received < size,
        "the whole file arrived ({received} bytes): the response was never cut"
    );
    assert_eq!(
        get_within(&server, "/health", Duration::from_secs(5)).status(),
        200
    );
}

#[test]
fn streamed_downloads_past_the_cap_get_503_and_small_files_still_flow() {
    let server = Server::start(
        &["-P", ".", "-a", ".", "--max-streamed-downloads", "2"],
        &[],
    );
    std::fs::write(
        server.packages().join("big-1.0.tar.gz"),
        vec![7u8; 64 << 20],
    )
    .unwrap();
    std::fs::write(server.packages().join("small-1.0.tar.gz"), b"small").unwrap();
    // Two clients that ask for the big file and do not read it hold both slots.
    let holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
            stream
                .write_all(b"GET /packages/big-1.0.tar.gz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let refused = get_within(&server, "/packages/big-1.0.tar.gz", Duration::from_secs(20));
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.text().unwrap().contains("--max-streamed-downloads"));
    let small = get_within(
        &server,
        "/packages/small-1.0.tar.gz",
        Duration::from_secs(5),
    );
    assert_eq!(small.bytes().unwrap().as_ref(), b"small");
    // A slot comes back when its client goes.
    drop(holders);
    let big = get_within(&server, "/packages/big-1.0.tar.gz", Duration::from_secs(20));
    assert_eq!(big.status(), 200);
    assert_eq!(big.bytes().unwrap().len(), 64 << 20);
}
