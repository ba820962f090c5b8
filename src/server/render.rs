//! The simple pages as PEP 503/629 HTML and PEP 691/700 JSON, from one list of entries so the
//! two can never disagree.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::digest::HashAlgo;
use crate::index::{DistFile, FileDetails};
use crate::names::ProjectName;

/// PEP 629 / PEP 691 API version; 1.1 adds PEP 700's `versions`, `size` and `upload-time`.
pub(crate) const API_VERSION: &str = "1.1";

/// One file as a simple page shows it.
pub(crate) struct FileEntry<'a> {
    pub(crate) file: &'a DistFile,
    pub(crate) details: &'a FileDetails,
    /// Where the file is served, as the link should say it.
    pub(crate) url: String,
}

pub(crate) fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path for a URL, leaving `/` and the characters filenames normally use.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n    <title>{title}</title>\n  </head>\n  <body>\n    <h1>{title}</h1>\n{body}  </body>\n</html>\n"
    )
}

fn fragment(details: &FileDetails) -> String {
    details
        .link_hash
        .as_ref()
        .map(|(algo, hex)| format!("#{algo}={hex}"))
        .unwrap_or_default()
}

pub(crate) fn project_list_html(projects: &[&ProjectName]) -> String {
    let mut body = String::new();
    for project in projects {
        let name = escape_html(project.as_str());
        let _ = writeln!(body, "    <a href=\"{name}/\">{name}</a><br>");
    }
    page("Simple Index", &body)
}

pub(crate) fn project_html(project: &ProjectName, files: &[FileEntry<'_>]) -> String {
    let mut body = String::new();
    for entry in files {
        let mut attributes = String::new();
        if let Some(requires) = &entry.details.requires_python {
            let _ = write!(
                attributes,
                " data-requires-python=\"{}\"",
                escape_html(requires)
            );
        }
        if let Some(sha) = &entry.details.core_metadata_sha256 {
            // PEP 714: the new name for pip >= 23.2 and uv, the old one for older pips.
            let _ = write!(
                attributes,
                " data-core-metadata=\"sha256={sha}\" data-dist-info-metadata=\"sha256={sha}\""
            );
        }
        let _ = writeln!(
            body,
            "    <a href=\"{}{}\"{attributes}>{}</a><br>",
            escape_html(&entry.url),
            fragment(entry.details),
            escape_html(entry.file.name.filename()),
        );
    }
    page(
        &format!("Links for {}", escape_html(project.as_str())),
        &body,
    )
}

/// pypiserver's `/packages/` page: every file, linked.
pub(crate) fn all_files_html(files: &[FileEntry<'_>]) -> String {
    let mut body = String::new();
    for entry in files {
        let _ = writeln!(
            body,
            "    <a href=\"{}{}\">{}</a><br>",
            escape_html(&entry.url),
            fragment(entry.details),
            escape_html(&entry.file.relative_path),
        );
    }
    page("Index of packages", &body)
}

#[derive(Serialize)]
struct Meta {
    #[serde(rename = "api-version")]
    api_version: &'static str,
}

const META: Meta = Meta {
    api_version: API_VERSION,
};

#[derive(Serialize)]
struct ProjectListJson<'a> {
    meta: Meta,
    projects: Vec<ProjectRef<'a>>,
}

#[derive(Serialize)]
struct ProjectRef<'a> {
    name: &'a str,
}

pub(crate) fn project_list_json(projects: &[&ProjectName]) -> String {
    let list = ProjectListJson {
        meta: META,
        projects: projects
            .iter()
            .map(|p| ProjectRef { name: p.as_str() })
            .collect(),
    };
    serde_json::to_string(&list).expect("plain structs serialize")
}

#[derive(Serialize)]
#[serde(untagged)]
enum MetadataFlag {
    Absent(bool),
    Hashes(BTreeMap<&'static str, String>),
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct FileJson<'a> {
    filename: &'a str,
    url: &'a str,
    hashes: BTreeMap<&'static str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requires_python: Option<&'a str>,
    core_metadata: MetadataFlag,
    dist_info_metadata: MetadataFlag,
    yanked: bool,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_time: Option<String>,
}

#[derive(Serialize)]
struct ProjectJson<'a> {
    meta: Meta,
    name: &'a str,
    versions: Vec<String>,
    files: Vec<FileJson<'a>>,
}

/// PEP 700's timestamp format, always in UTC with microseconds; `None` for a time outside
/// years 1 to 9999, which the format cannot write (a file's mtime can be anything:
/// `OffsetDateTime::from` panics on such a time).
pub(crate) fn upload_time(modified: std::time::SystemTime) -> Option<String> {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let epoch = time::OffsetDateTime::UNIX_EPOCH;
    let at = match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => epoch.checked_add(time::Duration::try_from(after).ok()?),
        Err(before) => epoch.checked_sub(time::Duration::try_from(before.duration()).ok()?),
    }?;
    at.format(&format).ok()
}

pub(crate) fn project_json(project: &ProjectName, files: &[FileEntry<'_>]) -> String {
    let metadata_flag = |details: &FileDetails| match &details.core_metadata_sha256 {
        Some(sha) => MetadataFlag::Hashes(BTreeMap::from([("sha256", sha.clone())])),
        None => MetadataFlag::Absent(false),
    };
    // As PEP 440 spells them, one per version however many spellings the files use.
    let mut versions: Vec<&pep440_rs::Version> =
        files.iter().map(|e| e.file.name.parsed_version()).collect();
    versions.sort();
    versions.dedup();
    let detail = ProjectJson {
        meta: META,
        name: project.as_str(),
        versions: versions.into_iter().map(ToString::to_string).collect(),
        files: files
            .iter()
            .map(|entry| FileJson {
                filename: entry.file.name.filename(),
                url: &entry.url,
                hashes: entry
                    .details
                    .link_hash
                    .iter()
                    .map(|(algo, hex): &(HashAlgo, String)| (algo.name(), hex.as_str()))
                    .collect(),
                requires_python: entry.details.requires_python.as_deref(),
                core_metadata: metadata_flag(entry.details),
                dist_info_metadata: metadata_flag(entry.details),
                yanked: false,
                size: entry.file.identity.size,
                upload_time: upload_time(entry.file.identity.modified),
            })
            .collect(),
    };
    serde_json::to_string(&detail).expect("plain structs serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes() {
        assert_eq!(escape_html(">=3.8,<4"), "&gt;=3.8,&lt;4");
        assert_eq!(
            encode_path("sub dir/foo-1.0+local.tar.gz"),
            "sub%20dir/foo-1.0+local.tar.gz"
        );
        assert_eq!(encode_path("a#b?c%"), "a%23b%3Fc%25");
    }

    #[test]
    fn upload_time_has_microseconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(upload_time(t).unwrap(), "2023-11-14T22:13:20.123456Z");
        let before = std::time::UNIX_EPOCH - std::time::Duration::from_secs(300_000_000);
        assert_eq!(upload_time(before).unwrap(), "1960-06-29T18:40:00.000000Z");
        let far = std::time::UNIX_EPOCH + std::time::Duration::from_secs(300_000_000_000);
        assert_eq!(upload_time(far), None);
    }
}
