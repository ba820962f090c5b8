//! Helpers shared by the test binaries: real wheel and sdist files, upload forms.
#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

pub mod privileged;
pub mod python;
pub mod replica;
pub mod venv;

use std::io::Write;
use std::net::TcpListener;
use std::process::Output;

use sha2::{Digest, Sha256};

/// PEP 691's JSON media type, for `Accept`.
pub const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// A response's body parsed as JSON.
pub fn json_body(resp: reqwest::blocking::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.bytes().expect("a response body")).expect("a JSON body")
}

/// The METADATA a test wheel carries.
pub fn metadata_text(name: &str, version: &str, requires_python: Option<&str>) -> String {
    let mut text = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    if let Some(requires) = requires_python {
        text.push_str(&format!("Requires-Python: {requires}\n"));
    }
    text.push_str("\nA test package.\n");
    text
}

/// A minimal but valid wheel: a module, METADATA, WHEEL and RECORD.
pub fn wheel(name: &str, version: &str, requires_python: Option<&str>) -> Vec<u8> {
    let dist = name.replace('-', "_");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    let info = format!("{dist}-{version}.dist-info");
    let files = [
        (format!("{dist}/__init__.py"), "VALUE = 1\n".to_owned()),
        (
            format!("{info}/METADATA"),
            metadata_text(name, version, requires_python),
        ),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_owned(),
        ),
        (format!("{info}/RECORD"), String::new()),
    ];
    for (path, body) in files {
        zip.start_file(path, options).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

pub fn wheel_filename(name: &str, version: &str) -> String {
    format!("{}-{version}-py3-none-any.whl", name.replace('-', "_"))
}

/// A minimal sdist with a PKG-INFO.
pub fn sdist(name: &str, version: &str, requires_python: Option<&str>) -> Vec<u8> {
    let root = format!("{}-{version}", name.replace('-', "_"));
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(encoder);
    let pkg_info = metadata_text(name, version, requires_python);
    let mut header = tar::Header::new_gnu();
    header.set_size(pkg_info.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, format!("{root}/PKG-INFO"), pkg_info.as_bytes())
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A multipart/form-data body as twine sends it: text fields, then the file as `content`.
pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "wheelhouse-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
        .unwrap();
    }
    if let Some((filename, bytes)) = file {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The form twine sends for a file (the fields that matter to the server).
pub fn upload_fields<'a>(
    name: &'a str,
    version: &'a str,
    sha256: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("name", name),
        ("version", version),
        ("filetype", "bdist_wheel"),
        ("pyversion", "py3"),
        ("metadata_version", "2.1"),
        ("sha256_digest", sha256),
    ]
}

/// A command's exit status and output, for failure messages.
pub fn text(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts from a server's access log that `wheel` was resolved through its PEP 658
/// `.metadata` file and never downloaded itself.
pub fn assert_metadata_only(log: &str, wheel: &str) {
    let path = format!("path=/packages/{wheel}");
    assert!(
        log.contains(&format!("{path}.metadata status=200")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("{path} ")),
        "the wheel itself was fetched:\n{log}"
    );
}

/// filename -> sha256 of the `href="...name#sha256=hex"` links of a simple page.
pub fn sha256_links(html: &str) -> std::collections::BTreeMap<String, String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| {
            let href = &rest[..rest.find('"')?];
            let (path, fragment) = href.split_once("#sha256=")?;
            Some((path.rsplit('/').next()?.to_owned(), fragment.to_owned()))
        })
        .collect()
}

/// Uploads `bytes` as the wheel of `project` `version` to the server at `url`, as twine does,
/// with its sha256; the answer's status.
pub fn upload_wheel(
    client: &reqwest::blocking::Client,
    url: &str,
    credentials: Option<(&str, &str)>,
    (project, version): (&str, &str),
    bytes: &[u8],
) -> reqwest::StatusCode {
    let filename = wheel_filename(project, version);
    let (content_type, body) = multipart(
        &upload_fields(project, version, &sha256_hex(bytes)),
        Some((&filename, bytes)),
    );
    let mut request = client
        .post(format!("{url}/"))
        .header("Content-Type", content_type)
        .body(body);
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    request.send().expect("POST an upload").status()
}

/// Leaves out of a server's environment every user the developer's shell may define
/// (`WHEELHOUSE_USERNAME`, `WHEELHOUSE_PASSWORD` and their `_<SUFFIX>` pairs): a test gives the
/// users it means, and no others.
pub fn without_env_users(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("WHEELHOUSE_USERNAME") || key.starts_with("WHEELHOUSE_PASSWORD") {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
