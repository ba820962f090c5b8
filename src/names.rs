//! Project names and distribution filenames, validated when built.
//!
//! A `ProjectName` is always normalized (PEP 503), so two spellings of one project can never be
//! told apart by accident. A `DistFilename` is a wheel or sdist filename that has been parsed
//! into project and version; a string that is not one cannot become one, and the error quotes it.

use std::fmt;
use std::str::FromStr;

use pep440_rs::Version;

/// A PEP 503-normalized project name: lowercase, runs of `-`, `_` and `.` collapsed to one `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("the project name {0:?} is invalid: it must start and end with a letter or digit and contain only letters, digits, '-', '_' and '.'")]
    InvalidProject(String),
    #[error("the filename {name:?} is invalid: {reason}")]
    InvalidFilename { name: String, reason: &'static str },
    #[error("the filename {name:?} has an invalid version {version:?}: {reason}")]
    InvalidVersion {
        name: String,
        version: String,
        reason: String,
    },
}

impl ProjectName {
    pub fn new(raw: &str) -> Result<Self, NameError> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let valid_ends = raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && raw
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !valid_chars || !valid_ends {
            return Err(NameError::InvalidProject(raw.to_owned()));
        }
        Ok(Self(normalize(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `raw` is already spelled the canonical way (so no redirect is needed).
pub fn is_normalized(raw: &str) -> bool {
    normalize(raw) == raw
}

fn normalize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_separator_run = false;
    for c in raw.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator_run {
                out.push('-');
            }
            in_separator_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator_run = false;
        }
    }
    out
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProjectName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The archive formats pypiserver recognises as source distributions.
const SDIST_EXTENSIONS: &[&str] = &[".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".tar"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    Wheel,
    Sdist,
}

/// A wheel or sdist filename, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFilename {
    filename: String,
    project: ProjectName,
    version: String,
    parsed_version: Version,
    kind: DistKind,
}

impl DistFilename {
    /// Parses a filename found in the directory or sent by a client. An sdist name such as
    /// `a-b-1.0.tar.gz` is ambiguous without the project's name (project `a` version `b-1.0`,
    /// or `a-b` version `1.0`); when `project` is known (an upload's `name` field) it decides,
    /// otherwise the version is taken to start at the first `-` followed by a digit, which is
    /// how pypiserver guesses.
    pub fn parse(filename: &str, project: Option<&ProjectName>) -> Result<Self, NameError> {
        let invalid = |reason| NameError::InvalidFilename {
            name: filename.to_owned(),
            reason,
        };
        if filename.contains(['/', '\\']) {
            return Err(invalid("it contains a path separator"));
        }
        if filename.contains('\0') {
            return Err(invalid("it contains a NUL byte"));
        }
        if filename.contains("..") {
            return Err(invalid("it contains '..'"));
        }
        if filename.starts_with('.') {
            return Err(invalid("it starts with '.'"));
        }
        if let Some(stem) = filename.strip_suffix(".whl") {
            let parts: Vec<&str> = stem.split('-').collect();
            if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid(
                    "a wheel filename must be {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl",
                ));
            }
            return Self::build(filename, parts[0], parts[1], DistKind::Wheel);
        }
        let Some(stem) = SDIST_EXTENSIONS
            .iter()
            .find_map(|ext| filename.strip_suffix(ext))
        else {
            return Err(invalid(
                "it is neither a wheel (.whl) nor an sdist (.tar.gz, .tgz, .tar.bz2, .tar.xz, .zip, .tar)",
            ));
        };
        let split_at = match project {
            Some(project) => stem
                .char_indices()
                .filter(|&(_, c)| c == '-')
                .map(|(i, _)| i)
                .find(|&i| normalize(&stem[..i]) == project.as_str()),
            None => stem
                .char_indices()
                .zip(stem.chars().skip(1))
                .find(|&((_, c), next)| c == '-' && next.is_ascii_digit())
                .map(|((i, _), _)| i),
        };
        let Some(split_at) = split_at else {
            return Err(invalid(
                "an sdist filename must be {name}-{version} followed by its archive extension",
            ));
        };
        Self::build(
            filename,
            &stem[..split_at],
            &stem[split_at + 1..],
            DistKind::Sdist,
        )
    }

    fn build(
        filename: &str,
        raw_name: &str,
        version: &str,
        kind: DistKind,
    ) -> Result<Self, NameError> {
        let project = ProjectName::new(raw_name).map_err(|_| NameError::InvalidFilename {
            name: filename.to_owned(),
            reason: "its project part is not a valid project name",
        })?;
        let parsed_version =
            Version::from_str(version).map_err(|err| NameError::InvalidVersion {
                name: filename.to_owned(),
                version: version.to_owned(),
                reason: err.to_string(),
            })?;
        Ok(Self {
            filename: filename.to_owned(),
            project,
            version: version.to_owned(),
            parsed_version,
            kind,
        })
    }

    pub fn filename(&self) -> &str {
        &self.filename
    }
    pub fn project(&self) -> &ProjectName {
        &self.project
    }
    /// The version as spelled in the filename.
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn parsed_version(&self) -> &Version {
        &self.parsed_version
    }
    pub fn kind(&self) -> DistKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ProjectName {
        ProjectName::new(s).unwrap()
    }

    #[test]
    fn normalizes_separator_runs_and_case() {
        assert_eq!(name("Foo._-Bar").as_str(), "foo-bar");
        assert_eq!(name("zope.interface").as_str(), "zope-interface");
        assert!(is_normalized("foo-bar"));
        assert!(!is_normalized("Foo_bar"));
    }

    #[test]
    fn err_invalid_project_quotes_it() {
        let err = ProjectName::new("-bad").unwrap_err();
        assert!(err.to_string().contains("\"-bad\""), "{err}");
        assert!(ProjectName::new("").is_err());
        assert!(ProjectName::new("a b").is_err());
    }

    #[test]
    fn parses_wheels_with_and_without_build_tag() {
        let w = DistFilename::parse("Foo_Bar-1.0-py3-none-any.whl", None).unwrap();
        assert_eq!(w.project().as_str(), "foo-bar");
        assert_eq!(w.version(), "1.0");
        assert_eq!(w.kind(), DistKind::Wheel);
        let w = DistFilename::parse("foo-2.0-1-cp311-cp311-linux_x86_64.whl", None).unwrap();
        assert_eq!(w.version(), "2.0");
    }

    #[test]
    fn parses_sdists_guessing_or_with_hint() {
        let s = DistFilename::parse("foo-bar-1.0.tar.gz", None).unwrap();
        assert_eq!(s.project().as_str(), "foo-bar");
        assert_eq!(s.version(), "1.0");
        let s = DistFilename::parse("a-b-1.0.zip", Some(&name("a"))).unwrap_err();
        assert!(matches!(s, NameError::InvalidVersion { .. }), "{s}");
        let s = DistFilename::parse("a-b-1.0.zip", Some(&name("A_B"))).unwrap();
        assert_eq!(s.version(), "1.0");
    }

    #[test]
    fn err_path_separator() {
        let err = DistFilename::parse("../foo-1.0.tar.gz", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the filename \"../foo-1.0.tar.gz\" is invalid: it contains a path separator"
        );
    }

    #[test]
    fn err_dotdot_and_nul() {
        assert!(DistFilename::parse("foo..-1.0.tar.gz", None)
            .unwrap_err()
            .to_string()
            .contains("'..'"));
        assert!(DistFilename::parse("foo-1.0\0.tar.gz", None)
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }

    #[test]
    fn err_unknown_extension() {
        let err = DistFilename::parse("foo-1.0.exe", None).unwrap_err();
        assert!(err.to_string().contains("neither a wheel"), "{err}");
    }

    #[test]
    fn err_wheel_shape() {
        let err = DistFilename::parse("foo-1.0.whl", None).unwrap_err();
        assert!(err.to_string().contains("{name}-{version}"), "{err}");
    }

    #[test]
    fn err_bad_version_quotes_it() {
        let err = DistFilename::parse("foo-notaversion-py3-none-any.whl", None).unwrap_err();
        assert!(err.to_string().contains("\"notaversion\""), "{err}");
    }
}
