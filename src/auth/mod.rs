//! Who may do what: HTTP Basic credentials checked against an htpasswd file (re-read when it
//! changes) and against one user given through the environment (how ECS hands a Secrets
//! Manager secret to a container).
//!
//! bcrypt costs tens of milliseconds per check by design. A successful check is remembered,
//! keyed by a digest of the credentials and the stored hash, so the cost is paid once per
//! credential rather than once per request; the memory is bounded and dropped whenever the
//! file changes, so a removed user or a changed password takes effect at once.

pub mod htpasswd;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use htpasswd::{constant_time_eq, Htpasswd, StoredPassword};

/// The actions pypiserver's `-a` can protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Download,
    List,
    Update,
}

impl Action {
    pub fn parse_list(raw: &str) -> Result<HashSet<Action>, String> {
        let raw = raw.trim();
        if raw == "." || raw.is_empty() {
            return Ok(HashSet::new());
        }
        raw.split(',')
            .map(|item| match item.trim().to_ascii_lowercase().as_str() {
                "download" => Ok(Action::Download),
                "list" => Ok(Action::List),
                "update" => Ok(Action::Update),
                other => Err(format!(
                    "invalid action {other:?} in --authenticate {raw:?}: expected a comma-separated list of download, list, update, or '.' for none"
                )),
            })
            .collect()
    }
}

/// The environment variables that carry the user injected by the deployment.
pub const ENV_USERNAME: &str = "WHEELHOUSE_USERNAME";
pub const ENV_PASSWORD: &str = "WHEELHOUSE_PASSWORD";

/// How many verified credentials are remembered before the memory is emptied and refilled.
const VERIFIED_CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed(String),
    /// No (usable) credentials were sent: the client should ask its user.
    Missing,
    /// Credentials were sent and are wrong.
    Denied,
}

/// A user given directly (from the environment).
#[derive(Clone)]
pub struct StaticUser {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticUser")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl StaticUser {
    /// Reads `WHEELHOUSE_USERNAME` and `WHEELHOUSE_PASSWORD`; both or neither must be set.
    pub fn from_env() -> Result<Option<Self>, String> {
        let read = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        match (read(ENV_USERNAME), read(ENV_PASSWORD)) {
            (Some(username), Some(password)) => Ok(Some(Self { username, password })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(format!("{ENV_USERNAME} is set but {ENV_PASSWORD} is not")),
            (None, Some(_)) => Err(format!("{ENV_PASSWORD} is set but {ENV_USERNAME} is not")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

struct LoadedFile {
    stamp: Option<FileStamp>,
    users: std::collections::HashMap<String, StoredPassword>,
}

pub struct Authenticator {
    protected: HashSet<Action>,
    htpasswd: Option<PathBuf>,
    static_user: Option<StaticUser>,
    loaded: Mutex<LoadedFile>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Authenticator {
    /// Loads the htpasswd file once now, so that a missing or unreadable file is a start-up
    /// error rather than a surprise on the first upload.
    pub fn new(
        protected: HashSet<Action>,
        htpasswd: Option<PathBuf>,
        static_user: Option<StaticUser>,
    ) -> Result<Self, String> {
        let auth = Self {
            protected,
            htpasswd,
            static_user,
            loaded: Mutex::new(LoadedFile {
                stamp: None,
                users: Default::default(),
            }),
            verified: Mutex::new(HashSet::new()),
        };
        if let Some(path) = &auth.htpasswd {
            std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read password file {}: {err}", path.display()))?;
            auth.refresh();
        }
        Ok(auth)
    }

    pub fn is_protected(&self, action: Action) -> bool {
        self.protected.contains(&action)
    }

    pub fn has_credentials(&self) -> bool {
        self.htpasswd.is_some() || self.static_user.is_some()
    }

    /// Re-reads the htpasswd file if it changed since it was last read. One `stat` per call.
    fn refresh(&self) {
        let Some(path) = &self.htpasswd else { return };
        let stamp = std::fs::metadata(path).ok().map(|meta| {
            use std::os::unix::fs::MetadataExt;
            FileStamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                inode: meta.ino(),
            }
        });
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.stamp == stamp && stamp.is_some() {
            return;
        }
        let parsed = match std::fs::read_to_string(path) {
            Ok(text) => Htpasswd::parse(&text),
            Err(err) => {
                // Keep serving with what was last read: a file being replaced by an editor is
                // briefly absent, and locking everyone out for that moment helps nobody.
                tracing::error!("cannot read password file {}: {err}", path.display());
                return;
            }
        };
        for skipped in &parsed.skipped {
            tracing::warn!(
                "{}:{}: skipped: {}",
                path.display(),
                skipped.line,
                skipped.reason
            );
        }
        tracing::info!(
            "loaded {} user(s) from {}",
            parsed.users.len(),
            path.display()
        );
        loaded.stamp = stamp;
        loaded.users = parsed.users;
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Checks an `Authorization` header value. Blocking (bcrypt): run it off the runtime.
    pub fn check(&self, authorization: Option<&str>) -> Verdict {
        let Some((username, password)) = authorization.and_then(parse_basic) else {
            return Verdict::Missing;
        };
        if let Some(user) = &self.static_user {
            if constant_time_eq(&username, &user.username)
                && constant_time_eq(&password, &user.password)
            {
                return Verdict::Allowed(username);
            }
        }
        self.refresh();
        let stored = {
            let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            loaded.users.get(&username).cloned()
        };
        let Some(stored) = stored else {
            return Verdict::Denied;
        };
        if !stored.is_slow() {
            return if stored.verify(&password) {
                Verdict::Allowed(username)
            } else {
                Verdict::Denied
            };
        }
        let key = verification_key(&username, &password, &stored);
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return Verdict::Allowed(username);
        }
        if !stored.verify(&password) {
            return Verdict::Denied;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(key);
        Verdict::Allowed(username)
    }
}

/// The stored hash is part of the key, so a changed password can never match an old entry.
fn verification_key(username: &str, password: &str, stored: &StoredPassword) -> [u8; 32] {
    let StoredPassword::Bcrypt(hash) = stored else {
        return [0; 32];
    };
    let mut hasher = Sha256::new();
    for part in [username, password, hash] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Decodes `Basic base64(user:password)`. Anything else counts as no credentials.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn err_unknown_action_quotes_it() {
        let err = Action::parse_list("update,upload").unwrap_err();
        assert!(err.contains("\"upload\""), "{err}");
        assert!(Action::parse_list(".").unwrap().is_empty());
        assert_eq!(Action::parse_list("download, list").unwrap().len(), 2);
    }

    #[test]
    fn file_is_reread_when_it_changes_and_cache_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("one", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let auth =
            Authenticator::new(HashSet::from([Action::Update]), Some(path.clone()), None).unwrap();
        assert_eq!(
            auth.check(Some(&basic("alice", "one"))),
            Verdict::Allowed("alice".into())
        );
        // Cached now; a changed file must still win over the cache.
        let hash = bcrypt::hash("two", 4).unwrap();
        std::fs::write(
            &path,
            format!("alice:{hash}\n# longer so the size differs\n"),
        )
        .unwrap();
        assert_eq!(auth.check(Some(&basic("alice", "one"))), Verdict::Denied);
        assert_eq!(
            auth.check(Some(&basic("alice", "two"))),
            Verdict::Allowed("alice".into())
        );
    }

    #[test]
    fn static_user_and_missing_credentials() {
        let auth = Authenticator::new(
            HashSet::from([Action::Update]),
            None,
            Some(StaticUser {
                username: "svc".into(),
                password: "s3cret".into(),
            }),
        )
        .unwrap();
        assert_eq!(
            auth.check(Some(&basic("svc", "s3cret"))),
            Verdict::Allowed("svc".into())
        );
        assert_eq!(auth.check(Some(&basic("svc", "nope"))), Verdict::Denied);
        assert_eq!(auth.check(None), Verdict::Missing);
        assert_eq!(auth.check(Some("Bearer abc")), Verdict::Missing);
        assert!(!format!("{:?}", auth.static_user).contains("s3cret"));
    }

    #[test]
    fn err_missing_password_file_names_it() {
        let err = Authenticator::new(
            HashSet::from([Action::Update]),
            Some("/nonexistent/htpasswd".into()),
            None,
        )
        .err()
        .unwrap();
        assert!(err.contains("/nonexistent/htpasswd"), "{err}");
    }
}
