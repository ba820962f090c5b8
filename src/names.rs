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
    #[error("the project name {0:?} is too long: at most {MAX_PROJECT_BYTES} bytes are allowed")]
    ProjectTooLong(String),
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
        if raw.len() > MAX_PROJECT_BYTES {
            return Err(NameError::ProjectTooLong(quoted_prefix(raw)));
        }
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

/// The longest filename accepted: `NAME_MAX` on every filesystem a package directory lives on.
/// A longer one could never be stored, and looking it up fails with `ENAMETOOLONG`.
pub const MAX_FILENAME_BYTES: usize = 255;

/// The longest project name accepted: room enough for any real project, and for a version and
/// an extension after it within [`MAX_FILENAME_BYTES`].
pub const MAX_PROJECT_BYTES: usize = 200;

/// How much of an over-long value an error message quotes.
const QUOTED_PREFIX_CHARS: usize = 64;

/// The start of `raw`, marked as cut when it is cut, for error messages about long values.
pub(crate) fn quoted_prefix(raw: &str) -> String {
    match raw.char_indices().nth(QUOTED_PREFIX_CHARS) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    Wheel,
    Sdist,
}

/// The tags of a wheel filename, as spelled in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelTags {
    pub build: Option<String>,
    pub python: String,
    pub abi: String,
    pub platform: String,
}

/// A wheel or sdist filename, parsed.
///
/// There is one parse, the one every reader of the directories uses; an upload is accepted only
/// under a name that parses to the project it was uploaded to, so what was acknowledged is
/// what is listed. An sdist name such as `a-b-1.0.tar.gz` is read as project `a-b` because the
/// version starts at the first `-` followed by a digit (pypiserver's rule): so a project whose
/// name has such a `-` (`python-3parclient`) must spell it `_`, as PEP 625 asks
/// ([`DistFilename::pep625_sdist_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFilename {
    filename: String,
    project: ProjectName,
    version: String,
    parsed_version: Version,
    kind: DistKind,
    wheel_tags: Option<WheelTags>,
}

impl DistFilename {
    /// Parses a filename found in a package directory or sent by a client.
    pub fn parse(filename: &str) -> Result<Self, NameError> {
        let invalid = |reason| NameError::InvalidFilename {
            name: quoted_prefix(filename),
            reason,
        };
        if filename.len() > MAX_FILENAME_BYTES {
            return Err(invalid("it is longer than 255 bytes"));
        }
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
            return Self::parse_wheel(filename, stem);
        }
        let Some(stem) = SDIST_EXTENSIONS
            .iter()
            .find_map(|ext| filename.strip_suffix(ext))
        else {
            return Err(invalid(
                "it is neither a wheel (.whl) nor an sdist (.tar.gz, .tgz, .tar.bz2, .tar.xz, .zip, .tar)",
            ));
        };
        let Some(split_at) = stem
            .char_indices()
            .zip(stem.chars().skip(1))
            .find(|&((_, c), next)| c == '-' && next.is_ascii_digit())
            .map(|((i, _), _)| i)
        else {
            return Err(invalid(
                "an sdist filename must be {name}-{version} followed by its archive extension",
            ));
        };
        Self::build(
            filename,
            &stem[..split_at],
            &stem[split_at + 1..],
            DistKind::Sdist,
            None,
        )
    }

    /// `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`, each tag set made of
    /// `[A-Za-z0-9_]` tags joined by `.`, the build tag a digit then `[A-Za-z0-9_]`.
    fn parse_wheel(filename: &str, stem: &str) -> Result<Self, NameError> {
        let invalid = |reason| NameError::InvalidFilename {
            name: quoted_prefix(filename),
            reason,
        };
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, build, [python, abi, platform]) = match parts.as_slice() {
            [name, version, python, abi, platform] => {
                (name, version, None, [python, abi, platform])
            }
            [name, version, build, python, abi, platform] => {
                (name, version, Some(*build), [python, abi, platform])
            }
            _ => {
                return Err(invalid(
                    "a wheel filename must be {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl",
                ))
            }
        };
        if build.is_some_and(|build| !is_build_tag(build)) {
            return Err(invalid(
                "its build tag must start with a digit and contain only letters, digits and '_'",
            ));
        }
        if ![python, abi, platform].iter().all(|set| is_tag_set(set)) {
            return Err(invalid(
                "its python, abi and platform tags must be letters, digits and '_', several joined by '.'",
            ));
        }
        let tags = WheelTags {
            build: build.map(str::to_owned),
            python: (*python).to_owned(),
            abi: (*abi).to_owned(),
            platform: (*platform).to_owned(),
        };
        Self::build(filename, name, version, DistKind::Wheel, Some(tags))
    }

    fn build(
        filename: &str,
        raw_name: &str,
        version: &str,
        kind: DistKind,
        wheel_tags: Option<WheelTags>,
    ) -> Result<Self, NameError> {
        let project = ProjectName::new(raw_name).map_err(|_| NameError::InvalidFilename {
            name: quoted_prefix(filename),
            reason: "its project part is not a valid project name",
        })?;
        let invalid_version = |reason: String| NameError::InvalidVersion {
            name: quoted_prefix(filename),
            version: quoted_prefix(version),
            reason,
        };
        // PEP 440's parser forgives what a filename may not hold (surrounding whitespace).
        if !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'!' | b'+'))
        {
            return Err(invalid_version(
                "a version in a filename holds only letters, digits and '.', '_', '-', '!', '+'"
                    .to_owned(),
            ));
        }
        let parsed_version =
            Version::from_str(version).map_err(|err| invalid_version(err.to_string()))?;
        Ok(Self {
            filename: filename.to_owned(),
            project,
            version: version.to_owned(),
            parsed_version,
            kind,
            wheel_tags,
        })
    }

    /// How `filename`, an sdist of `project` that does not parse as one, must be spelled to be
    /// read as one (PEP 625: the name normalized, with `_` for `-`, and the version
    /// normalized), keeping its archive extension. `None` when `filename` does not start with
    /// the project's name followed by a version, or when even that spelling would not parse.
    pub fn pep625_sdist_name(filename: &str, project: &ProjectName) -> Option<String> {
        let (stem, extension) = SDIST_EXTENSIONS
            .iter()
            .find_map(|ext| Some((filename.strip_suffix(ext)?, *ext)))?;
        let version = stem
            .char_indices()
            .filter(|&(_, c)| c == '-')
            .find(|&(i, _)| normalize(&stem[..i]) == project.as_str())
            .and_then(|(i, _)| Version::from_str(&stem[i + 1..]).ok())?;
        let spelled = format!(
            "{}-{version}{extension}",
            project.as_str().replace('-', "_")
        );
        Self::parse(&spelled)
            .ok()
            .filter(|parsed| parsed.project() == project)
            .map(|_| spelled)
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
    /// The tags, for a wheel.
    pub fn wheel_tags(&self) -> Option<&WheelTags> {
        self.wheel_tags.as_ref()
    }

    /// What makes this file the same release file as another, however each is spelled.
    pub fn release_key(&self) -> ReleaseKey {
        let file = match &self.wheel_tags {
            None => ReleaseFile::Sdist,
            Some(tags) => ReleaseFile::Wheel {
                build: tags.build.as_deref().map(build_sort_key),
                python: tags.python.to_ascii_lowercase(),
                abi: tags.abi.to_ascii_lowercase(),
                platform: tags.platform.to_ascii_lowercase(),
            },
        };
        ReleaseKey {
            project: self.project.clone(),
            version: self.parsed_version.clone(),
            file,
        }
    }
}

/// One file of one release as PyPI tells them apart: the project, the PEP 440 version (so
/// `1.0`, `1.0.0` and `01.0` are one), and either "the sdist" (one per release, whatever its
/// archive format) or a wheel's build and tags (tags compared without case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseKey {
    project: ProjectName,
    version: Version,
    file: ReleaseFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ReleaseFile {
    Sdist,
    Wheel {
        /// The build tag as the wheel spec sorts it: its leading digits as a number, the rest.
        build: Option<(String, String)>,
        python: String,
        abi: String,
        platform: String,
    },
}

/// `007b` and `7b` are one build: the leading digits are compared as a number.
fn build_sort_key(build: &str) -> (String, String) {
    let digits = build.bytes().take_while(u8::is_ascii_digit).count();
    let number = build[..digits].trim_start_matches('0');
    let number = if number.is_empty() { "0" } else { number };
    (number.to_owned(), build[digits..].to_owned())
}

fn is_build_tag(tag: &str) -> bool {
    tag.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_tag_set(set: &str) -> bool {
    set.split('.')
        .all(|tag| !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
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
        let w = DistFilename::parse("Foo_Bar-1.0-py3-none-any.whl").unwrap();
        assert_eq!(w.project().as_str(), "foo-bar");
        assert_eq!(w.version(), "1.0");
        assert_eq!(w.kind(), DistKind::Wheel);
        let w = DistFilename::parse("foo-2.0-1-cp311-cp311-linux_x86_64.whl").unwrap();
        assert_eq!(w.version(), "2.0");
    }

    #[test]
    fn sdist_versions_start_at_the_first_dash_before_a_digit() {
        let s = DistFilename::parse("foo-bar-1.0.tar.gz").unwrap();
        assert_eq!((s.project().as_str(), s.version()), ("foo-bar", "1.0"));
        let s = DistFilename::parse("foo-2-1.tar.gz").unwrap();
        assert_eq!((s.project().as_str(), s.version()), ("foo", "2-1"));
        assert!(DistFilename::parse("python-3parclient-4.2.12.tar.gz").is_err());
    }

    #[test]
    fn pep625_names_read_as_their_project() {
        let spelled = |filename, project| DistFilename::pep625_sdist_name(filename, &name(project));
        assert_eq!(
            spelled("python-3parclient-4.2.12.tar.gz", "python-3parclient").as_deref(),
            Some("python_3parclient-4.2.12.tar.gz")
        );
        assert_eq!(
            spelled("Foo.2-01.0-1.zip", "foo-2").as_deref(),
            Some("foo_2-1.0.post1.zip")
        );
        assert_eq!(spelled("foo-2-1.tar.gz", "bar"), None);
        assert_eq!(spelled("foo-2-x.tar.gz", "foo-2"), None);
        assert_eq!(spelled("foo_2-1-py3-none-any.whl", "foo-2"), None);
    }

    #[test]
    fn wheel_tags_follow_the_grammar() {
        let w = DistFilename::parse(
            "demo-1.0-7_b-cp311.cp312-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        let tags = w.wheel_tags().unwrap();
        assert_eq!(tags.build.as_deref(), Some("7_b"));
        assert_eq!(tags.python, "cp311.cp312");
        assert_eq!(tags.platform, "manylinux_2_17_x86_64.manylinux2014_x86_64");
        for bad in [
            "demo-1.0-py3-none-any:x.whl",
            "demo-1.0-py3-none-.any.whl",
            "demo-1.0-py3-none-any..x.whl",
            "demo-1.0-py3-no ne-any.whl",
            "demo-1.0-x1-py3-none-any.whl",
            "demo-1.0-1.2-py3-none-any.whl",
        ] {
            let err = DistFilename::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn err_version_characters_outside_a_filename() {
        for bad in [
            "demo-1.0:1-py3-none-any.whl",
            "demo- 1.0-py3-none-any.whl",
            "demo-1.0 .tar.gz",
        ] {
            let err = DistFilename::parse(bad).unwrap_err();
            assert!(
                matches!(err, NameError::InvalidVersion { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn err_over_long_names_quote_only_their_start() {
        let long = "a".repeat(MAX_PROJECT_BYTES + 1);
        let err = ProjectName::new(&long).unwrap_err();
        assert!(matches!(err, NameError::ProjectTooLong(_)), "{err}");
        assert!(err.to_string().len() < 200, "{err}");
        assert!(ProjectName::new(&long[1..]).is_ok());
        let filename = format!("{}-1.0.tar.gz", "a".repeat(MAX_FILENAME_BYTES));
        let err = DistFilename::parse(&filename).unwrap_err();
        assert!(err.to_string().contains("longer than 255 bytes"), "{err}");
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn one_release_file_has_one_key_however_spelled() {
        let key = |filename| DistFilename::parse(filename).unwrap().release_key();
        assert_eq!(key("demo-1.0.tar.gz"), key("Demo-1.0.0.zip"));
        assert_eq!(key("demo-1.0.tar.gz"), key("demo-01.0.tar.bz2"));
        assert_ne!(key("demo-1.0.tar.gz"), key("demo-1.0.post0.tar.gz"));
        assert_eq!(
            key("demo-1.0-07-py3-none-any.whl"),
            key("Demo-1.0.0-7-PY3-None-ANY.whl")
        );
        assert_ne!(
            key("demo-1.0-py3-none-any.whl"),
            key("demo-1.0-1-py3-none-any.whl")
        );
        assert_ne!(key("demo-1.0-py3-none-any.whl"), key("demo-1.0.tar.gz"));
        assert_ne!(
            key("demo-1.0-py3-none-any.whl"),
            key("demo-1.0-py2.py3-none-any.whl")
        );
    }

    #[test]
    fn err_path_separator() {
        let err = DistFilename::parse("../foo-1.0.tar.gz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the filename \"../foo-1.0.tar.gz\" is invalid: it contains a path separator"
        );
    }

    #[test]
    fn err_dotdot_and_nul() {
        assert!(DistFilename::parse("foo..-1.0.tar.gz")
            .unwrap_err()
            .to_string()
            .contains("'..'"));
        assert!(DistFilename::parse("foo-1.0\0.tar.gz")
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }

    #[test]
    fn err_unknown_extension() {
        let err = DistFilename::parse("foo-1.0.exe").unwrap_err();
        assert!(err.to_string().contains("neither a wheel"), "{err}");
    }

    #[test]
    fn err_wheel_shape() {
        let err = DistFilename::parse("foo-1.0.whl").unwrap_err();
        assert!(err.to_string().contains("{name}-{version}"), "{err}");
    }

    #[test]
    fn err_bad_version_quotes_it() {
        let err = DistFilename::parse("foo-notaversion-py3-none-any.whl").unwrap_err();
        assert!(err.to_string().contains("\"notaversion\""), "{err}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A project name as its canonical parts: lowercase segments, each starting with a
        /// letter (so a `-` before one never reads as the start of a version).
        fn segments() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec("[a-z][a-z0-9]{0,7}", 1..4)
        }

        /// `segments` spelled another way: other separators, some letters uppercase.
        fn respelled(segments: &[String], separators: &[char], upper: &[bool]) -> String {
            let mut out = String::new();
            for (i, segment) in segments.iter().enumerate() {
                if i > 0 {
                    out.push(separators[i % separators.len()]);
                }
                for (j, c) in segment.chars().enumerate() {
                    let up = upper[(i * 8 + j) % upper.len()];
                    out.push(if up { c.to_ascii_uppercase() } else { c });
                }
            }
            out
        }

        #[derive(Debug, Clone)]
        struct VersionParts {
            release: Vec<u32>,
            pre: Option<(&'static str, u32)>,
            post: Option<u32>,
            dev: Option<u32>,
            local: Option<String>,
        }

        fn versions() -> impl Strategy<Value = VersionParts> {
            (
                prop::collection::vec(0u32..1000, 1..4),
                prop::option::of((prop::sample::select(&["a", "b", "rc"][..]), 0u32..20)),
                prop::option::of(0u32..20),
                prop::option::of(0u32..20),
                prop::option::of("[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){0,2}"),
            )
                .prop_map(|(release, pre, post, dev, local)| VersionParts {
                    release,
                    pre,
                    post,
                    dev,
                    local,
                })
        }

        impl VersionParts {
            /// Spelled with `zeros` trailing `.0`s, leading zeros on the release numbers when
            /// `padded`, the pre-release tag uppercase when `shout`.
            fn spelled(&self, zeros: usize, padded: bool, shout: bool) -> String {
                let mut release: Vec<String> = self
                    .release
                    .iter()
                    .map(|n| {
                        if padded {
                            format!("0{n}")
                        } else {
                            n.to_string()
                        }
                    })
                    .collect();
                release.extend(std::iter::repeat_n("0".to_owned(), zeros));
                let mut out = release.join(".");
                if let Some((kind, n)) = self.pre {
                    let kind = if shout {
                        kind.to_ascii_uppercase()
                    } else {
                        kind.to_owned()
                    };
                    out.push_str(&format!("{kind}{n}"));
                }
                if let Some(n) = self.post {
                    out.push_str(&format!(".post{n}"));
                }
                if let Some(n) = self.dev {
                    out.push_str(&format!(".dev{n}"));
                }
                if let Some(local) = &self.local {
                    out.push_str(&format!("+{local}"));
                }
                out
            }
        }

        fn tag_set() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_]{1,8}(\\.[A-Za-z0-9_]{1,8}){0,2}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn project_names_never_panic_and_normalize_once(
                raw in prop_oneof!["\\PC{0,64}", "[A-Za-z0-9._-]{1,64}", "[a-z]{190,210}"],
            ) {
                if let Ok(name) = ProjectName::new(&raw) {
                    prop_assert!(is_normalized(name.as_str()));
                    prop_assert!(name.as_str().len() <= MAX_PROJECT_BYTES);
                    prop_assert_eq!(ProjectName::new(name.as_str()), Ok(name.clone()));
                    prop_assert_eq!(ProjectName::new(&raw.to_ascii_uppercase()), Ok(name));
                }
            }

            #[test]
            fn dist_filenames_never_panic(
                raw in prop_oneof![
                    "\\PC{0,300}",
                    "[A-Za-z0-9_.+!: -]{0,40}(\\.whl|\\.tar\\.gz|\\.zip|\\.tgz)",
                    "[a-z]{1,8}(-[A-Za-z0-9_.!+:]{0,8}){1,7}\\.whl",
                ],
            ) {
                if let Ok(parsed) = DistFilename::parse(&raw) {
                    prop_assert!(raw.len() <= MAX_FILENAME_BYTES);
                    prop_assert_eq!(parsed.filename(), raw.as_str());
                    prop_assert!(raw.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
                }
            }

            #[test]
            fn wheel_filenames_round_trip(
                segments in segments(),
                version in versions(),
                build in prop::option::of("[0-9][A-Za-z0-9_]{0,4}"),
                python in tag_set(),
                abi in tag_set(),
                platform in tag_set(),
            ) {
                let name = segments.join("_");
                let version = version.spelled(0, false, false);
                let build_part = build.as_deref().map(|b| format!("-{b}")).unwrap_or_default();
                let filename = format!("{name}-{version}{build_part}-{python}-{abi}-{platform}.whl");
                let parsed = DistFilename::parse(&filename).unwrap();
                prop_assert_eq!(parsed.project(), &ProjectName::new(&name).unwrap());
                prop_assert_eq!(parsed.version(), version.as_str());
                prop_assert_eq!(parsed.parsed_version(), &Version::from_str(&version).unwrap());
                prop_assert_eq!(parsed.kind(), DistKind::Wheel);
                let tags = parsed.wheel_tags().unwrap();
                prop_assert_eq!(tags.build.as_deref(), build.as_deref());
                prop_assert_eq!((&tags.python, &tags.abi, &tags.platform), (&python, &abi, &platform));
            }

            #[test]
            fn sdist_filenames_round_trip_and_pep625_names_read_as_their_project(
                segments in segments(),
                separators in prop::collection::vec(prop::sample::select(&['-', '_', '.'][..]), 1..4),
                upper in prop::collection::vec(any::<bool>(), 1..8),
                digit_segment in any::<bool>(),
                version in versions(),
                extension in prop::sample::select(SDIST_EXTENSIONS),
            ) {
                let version = version.spelled(0, false, false);
                let name = respelled(&segments, &separators, &upper);
                let filename = format!("{name}-{version}{extension}");
                let parsed = DistFilename::parse(&filename).unwrap();
                let project = ProjectName::new(&name).unwrap();
                prop_assert_eq!(parsed.project(), &project);
                prop_assert_eq!(parsed.version(), version.as_str());
                prop_assert_eq!(parsed.kind(), DistKind::Sdist);

                // A name with a `-` before a digit misreads, and its PEP 625 spelling does not.
                let name = if digit_segment { format!("{name}-3x") } else { name };
                let project = ProjectName::new(&name).unwrap();
                let legacy = format!("{name}-{version}{extension}");
                let spelled = DistFilename::pep625_sdist_name(&legacy, &project).unwrap();
                let parsed = DistFilename::parse(&spelled).unwrap();
                prop_assert_eq!(parsed.project(), &project);
                prop_assert_eq!(parsed.parsed_version(), &Version::from_str(&version).unwrap());
            }

            #[test]
            fn two_spellings_of_one_release_file_have_one_key(
                segments in segments(),
                separators in prop::collection::vec(prop::sample::select(&['_', '.'][..]), 1..4),
                upper in prop::collection::vec(any::<bool>(), 1..8),
                version in versions(),
                (zeros, padded, shout) in (0usize..3, any::<bool>(), any::<bool>()),
                wheel in prop::option::of((
                    prop::option::of("[0-9]{1,3}[A-Za-z_]{0,3}"),
                    tag_set(),
                    tag_set(),
                    tag_set(),
                )),
                extensions in (prop::sample::select(SDIST_EXTENSIONS), prop::sample::select(SDIST_EXTENSIONS)),
            ) {
                let one = segments.join("_");
                let other = respelled(&segments, &separators, &upper);
                let (one_version, other_version) =
                    (version.spelled(0, false, false), version.spelled(zeros, padded, shout));
                let (one, other) = match &wheel {
                    Some((build, python, abi, platform)) => {
                        let tags = |shout: bool| {
                            let case = |s: &String| if shout { s.to_ascii_uppercase() } else { s.to_ascii_lowercase() };
                            let build = build.as_deref().map(|b| format!("-{b}")).unwrap_or_default();
                            format!("{build}-{}-{}-{}", case(python), case(abi), case(platform))
                        };
                        (
                            format!("{one}-{one_version}{}.whl", tags(false)),
                            format!("{other}-{other_version}{}.whl", tags(shout)),
                        )
                    }
                    None => (
                        format!("{one}-{one_version}{}", extensions.0),
                        format!("{other}-{other_version}{}", extensions.1),
                    ),
                };
                let key = |filename: &str| DistFilename::parse(filename).unwrap().release_key();
                prop_assert_eq!(key(&one), key(&other), "{} and {}", one, other);
            }
        }
    }
}
