//! Who may do what: HTTP Basic credentials checked against an htpasswd file (re-read when it
//! changes) and against users given through the environment (how ECS hands Secrets Manager
//! secrets to a container).
//!
//! bcrypt costs tens of milliseconds per check by design. A successful check is remembered,
//! keyed by a digest of the credentials and the stored hash, so the cost is paid once per
//! credential rather than once per request; the memory is bounded and dropped whenever the
//! file changes, so a removed user or a changed password takes effect at once. A failed check
//! is never remembered: guessing must keep costing what bcrypt costs.
//!
//! A user name that is not in the file is checked against a decoy, the stored password of the
//! costliest kind in the file (bcrypt: its highest cost), and so is a known user of a faster
//! kind whose password is wrong, so that an unknown user
//! costs what a wrong password costs and the time of a 403 does not tell which names exist.
//!
//! bcrypt runs on the blocking pool, at most [`slow_check_lanes`] at once; the requests past
//! that wait on a semaphore, which holds no thread, so a burst of guesses cannot take the
//! blocking threads that downloads read files with.
//!
//! A password file that disappears or becomes unreadable grants nothing until it is back:
//! keeping the users last read would go on admitting them after the file that named them is
//! gone.

pub mod htpasswd;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::index::consistent::SETTLE_WINDOW;

use htpasswd::{constant_time_eq, Htpasswd, StoredPassword};

/// The actions pypiserver's `-a` can protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Download,
    List,
    Update,
}

/// An `-a` list with a word that is not an action.
#[derive(Debug, thiserror::Error)]
#[error("invalid action {action:?} in --authenticate {list:?}: expected a comma-separated list of download, list, update, or '.' for none")]
pub struct UnknownAction {
    pub action: String,
    pub list: String,
}

/// The password file could not be read at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot read password file {}: {source}", path.display())]
pub struct PasswordFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl Action {
    pub fn parse_list(raw: &str) -> Result<HashSet<Action>, UnknownAction> {
        let raw = raw.trim();
        if raw == "." || raw.is_empty() {
            return Ok(HashSet::new());
        }
        raw.split(',')
            .map(|item| match item.trim().to_ascii_lowercase().as_str() {
                "download" => Ok(Action::Download),
                "list" => Ok(Action::List),
                "update" => Ok(Action::Update),
                other => Err(UnknownAction {
                    action: other.to_owned(),
                    list: raw.to_owned(),
                }),
            })
            .collect()
    }
}

/// The environment variables that carry the user injected by the deployment.
pub const ENV_USERNAME: &str = "WHEELHOUSE_USERNAME";
pub const ENV_PASSWORD: &str = "WHEELHOUSE_PASSWORD";
/// More users, as pairs `WHEELHOUSE_USERNAME_<SUFFIX>` and `WHEELHOUSE_PASSWORD_<SUFFIX>`.
pub const ENV_USERNAME_PREFIX: &str = "WHEELHOUSE_USERNAME_";
pub const ENV_PASSWORD_PREFIX: &str = "WHEELHOUSE_PASSWORD_";

/// How many verified credentials are remembered before the memory is emptied and refilled.
const VERIFIED_CAPACITY: usize = 4096;

/// How many bcrypt checks run at once: one per CPU. bcrypt is pure computation, so more at
/// once than there are cores finish no sooner; they would only hold more blocking threads,
/// which file reads and directory scans need too.
pub fn slow_check_lanes() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

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

/// Why the users in the environment cannot be used. The server does not start: a user the
/// deployment meant to create would otherwise be refused at the first upload, far from the
/// cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvUserError {
    #[error("{set} is set but {missing} is not")]
    Unpaired { set: String, missing: String },
    #[error("{var} is not valid UTF-8")]
    NotUtf8 { var: String },
    /// HTTP Basic credentials end the name at the first ':', so such a user could never log in.
    #[error("{var} = {name:?}: a user name cannot contain ':'")]
    Colon { var: String, name: String },
    #[error("user {name:?} is given twice, by {first} and by {second}")]
    Twice {
        name: String,
        first: String,
        second: String,
    },
}

/// One half of a pair, by the variable that gave it.
type Half = Option<(String, String)>;

impl StaticUser {
    /// The users of the process's environment (see [`StaticUser::from_vars`]).
    pub fn all_from_env() -> Result<Vec<Self>, EnvUserError> {
        Self::from_vars(std::env::vars_os())
    }

    /// The users given by `WHEELHOUSE_USERNAME` and `WHEELHOUSE_PASSWORD`, and by every pair
    /// `WHEELHOUSE_USERNAME_<SUFFIX>` and `WHEELHOUSE_PASSWORD_<SUFFIX>` with the same suffix.
    /// Both halves of a pair or neither; an empty value counts as unset.
    ///
    /// Pairs rather than htpasswd lines: the password arrives verbatim (a line's password that
    /// looked like a hash would be read as one), and ECS fills each half from one JSON key of
    /// a Secrets Manager secret, which is all it can do without writing the secret anywhere.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Vec<Self>, EnvUserError> {
        // None: the unsuffixed pair. Sorted, so users and errors come in one order.
        let mut pairs: BTreeMap<Option<String>, (Half, Half)> = BTreeMap::new();
        for (name, value) in vars {
            let Some(name) = name.to_str() else { continue };
            let (suffix, is_username) = if name == ENV_USERNAME {
                (None, true)
            } else if name == ENV_PASSWORD {
                (None, false)
            } else if let Some(suffix) = name.strip_prefix(ENV_USERNAME_PREFIX) {
                (Some(suffix.to_owned()), true)
            } else if let Some(suffix) = name.strip_prefix(ENV_PASSWORD_PREFIX) {
                (Some(suffix.to_owned()), false)
            } else {
                continue;
            };
            let value = value.into_string().map_err(|_| EnvUserError::NotUtf8 {
                var: name.to_owned(),
            })?;
            if value.is_empty() {
                continue;
            }
            let pair = pairs.entry(suffix).or_default();
            let half = if is_username {
                &mut pair.0
            } else {
                &mut pair.1
            };
            *half = Some((name.to_owned(), value));
        }
        let mut users: Vec<Self> = Vec::new();
        let mut given_by: HashMap<String, String> = HashMap::new();
        for (suffix, pair) in pairs {
            let var = |prefix_or_name: &str| match &suffix {
                None => prefix_or_name.to_owned(),
                Some(suffix) => format!("{prefix_or_name}_{suffix}"),
            };
            let ((username_var, username), (_, password)) = match pair {
                (Some(username), Some(password)) => (username, password),
                (Some((set, _)), None) => {
                    return Err(EnvUserError::Unpaired {
                        set,
                        missing: var(ENV_PASSWORD),
                    })
                }
                (None, Some((set, _))) => {
                    return Err(EnvUserError::Unpaired {
                        set,
                        missing: var(ENV_USERNAME),
                    })
                }
                (None, None) => continue,
            };
            if username.contains(':') {
                return Err(EnvUserError::Colon {
                    var: username_var,
                    name: username,
                });
            }
            if let Some(first) = given_by.get(&username) {
                return Err(EnvUserError::Twice {
                    name: username,
                    first: first.clone(),
                    second: username_var,
                });
            }
            given_by.insert(username.clone(), username_var);
            users.push(Self { username, password });
        }
        Ok(users)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    /// The inode change time: a `chmod` that makes the file unreadable moves only this.
    changed: (i64, i64),
}

#[derive(Default)]
struct LoadedFile {
    /// The file's stamp, and when this process first saw it.
    stamp: Option<(FileStamp, Instant)>,
    /// The text was read at least [`SETTLE_WINDOW`] after the stamp was first seen, so the
    /// stamp's timestamp tick had passed by then on the filesystem's clock too (whatever its
    /// skew, clocks run at one rate): any later change moves the stamp. Before that, a rewrite
    /// of the same size in the same tick (a second on some filesystems) would leave every
    /// field of the stamp as it was, so the text itself is compared at each request.
    settled: bool,
    /// The text the users were parsed from.
    text: String,
    users: HashMap<String, StoredPassword>,
    /// What an unknown user's password is checked against, so that it costs what a known
    /// user's wrong password costs. Its result is never used.
    decoy: Option<StoredPassword>,
    /// The file is gone or unreadable: its users are refused (and this was logged once).
    unavailable: bool,
}

impl LoadedFile {
    fn is_settled(&self, stamp: FileStamp) -> bool {
        self.settled && matches!(self.stamp, Some((known, _)) if known == stamp)
    }
}

/// The stored password whose check costs the most: bcrypt of the highest cost, else the next
/// slowest kind. Every failed login pays at least one check this costly (see
/// [`Authenticator::check`]), so neither an unknown name nor a known user of a fast kind
/// answers faster than the rest. The smallest user name of that kind, so the choice does not
/// change from one load to the next.
fn pick_decoy(users: &HashMap<String, StoredPassword>) -> Option<StoredPassword> {
    let cost = |stored: &StoredPassword| match stored {
        StoredPassword::Bcrypt(_) => (3, stored.bcrypt_cost().unwrap_or(0)),
        StoredPassword::Apr1 { .. } => (2, 0),
        StoredPassword::Sha1(_) => (1, 0),
        StoredPassword::Plain(_) => (0, 0),
    };
    users
        .iter()
        .max_by(|(a_name, a), (b_name, b)| cost(a).cmp(&cost(b)).then(b_name.cmp(a_name)))
        .map(|(_, stored)| stored.clone())
}

/// A check whose bcrypt part is still to do.
pub struct SlowCheck {
    username: String,
    password: String,
    stored: StoredPassword,
    /// False when `stored` is the decoy: the answer is then "denied" whatever bcrypt says.
    known: bool,
}

enum Step {
    Done(Verdict),
    Slow(SlowCheck),
}

pub struct Authenticator {
    protected: HashSet<Action>,
    htpasswd: Option<PathBuf>,
    env_users: Vec<StaticUser>,
    loaded: Mutex<LoadedFile>,
    verified: Mutex<HashSet<[u8; 32]>>,
    slow_lanes: Arc<tokio::sync::Semaphore>,
}

impl Authenticator {
    /// Loads the htpasswd file once now, so that a missing or unreadable file is a start-up
    /// error rather than a surprise on the first upload.
    pub fn new(
        protected: HashSet<Action>,
        htpasswd: Option<PathBuf>,
        env_users: Vec<StaticUser>,
    ) -> Result<Self, PasswordFileError> {
        let auth = Self {
            protected,
            htpasswd,
            env_users,
            loaded: Mutex::new(LoadedFile::default()),
            verified: Mutex::new(HashSet::new()),
            slow_lanes: Arc::new(tokio::sync::Semaphore::new(slow_check_lanes())),
        };
        if let Some(path) = &auth.htpasswd {
            std::fs::read_to_string(path).map_err(|source| PasswordFileError {
                path: path.clone(),
                source,
            })?;
            auth.refresh();
        }
        Ok(auth)
    }

    pub fn is_protected(&self, action: Action) -> bool {
        self.protected.contains(&action)
    }

    pub fn has_credentials(&self) -> bool {
        self.htpasswd.is_some() || !self.env_users.is_empty()
    }

    /// Re-reads the htpasswd file if it changed since it was last read: one `stat` per call,
    /// and a read while its stamp is younger than [`SETTLE_WINDOW`] in this process's eyes (as
    /// the package directory's backend does, for the same reason: timestamps too coarse to
    /// show a change). The host's clock is never compared with the file's timestamps, which
    /// another host's clock may have written.
    fn refresh(&self) {
        let Some(path) = &self.htpasswd else { return };
        let stamp = match std::fs::metadata(path) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                FileStamp {
                    modified: meta.modified().ok(),
                    len: meta.len(),
                    inode: meta.ino(),
                    changed: (meta.ctime(), meta.ctime_nsec()),
                }
            }
            Err(err) => return self.lose_file(&mut self.lock_loaded(), path, &err),
        };
        if self.lock_loaded().is_settled(stamp) {
            return;
        }
        // Taken before the read, and the read done outside the lock: while the file settles,
        // requests must not queue behind each other's reads.
        let reading_at = Instant::now();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => return self.lose_file(&mut self.lock_loaded(), path, &err),
        };
        let mut loaded = self.lock_loaded();
        let first_seen = match loaded.stamp {
            Some((known, seen)) if known == stamp => seen,
            _ => reading_at,
        };
        let settled = reading_at.duration_since(first_seen) >= SETTLE_WINDOW;
        if !loaded.unavailable && loaded.stamp.is_some() && loaded.text == text {
            loaded.stamp = Some((stamp, first_seen));
            loaded.settled = settled;
            return;
        }
        let parsed = Htpasswd::parse(&text);
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
        *loaded = LoadedFile {
            stamp: Some((stamp, first_seen)),
            settled,
            text,
            decoy: pick_decoy(&parsed.users),
            users: parsed.users,
            unavailable: false,
        };
        self.forget_verified();
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, LoadedFile> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The password file cannot be read: its users are refused until it can. Keeping the last
    /// users instead would let in, for as long as the process lives, whoever the file no longer
    /// names; an editor that briefly removes the file costs a few refused requests at most.
    fn lose_file(&self, loaded: &mut LoadedFile, path: &Path, err: &std::io::Error) {
        if !loaded.unavailable {
            tracing::error!(
                "cannot read password file {}: {err}; refusing its users until it is back",
                path.display()
            );
        }
        loaded.unavailable = true;
        loaded.stamp = None;
        loaded.settled = false;
        loaded.text.clear();
        loaded.users.clear();
        self.forget_verified();
    }

    fn forget_verified(&self) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Checks an `Authorization` header value on the blocking pool, bcrypt behind the
    /// [`slow_check_lanes`] semaphore.
    pub async fn check_async(self: Arc<Self>, authorization: Option<String>) -> Verdict {
        use tokio::task::spawn_blocking;
        let auth = Arc::clone(&self);
        let step = spawn_blocking(move || auth.begin(authorization.as_deref())).await;
        let slow = match step {
            Ok(Step::Done(verdict)) => return verdict,
            Ok(Step::Slow(slow)) => slow,
            Err(_) => return Verdict::Denied,
        };
        // Waiting here holds no thread; the permit travels with the work, so a request whose
        // client has gone still counts until its bcrypt is done.
        let Ok(permit) = Arc::clone(&self.slow_lanes).acquire_owned().await else {
            return Verdict::Denied;
        };
        spawn_blocking(move || {
            let verdict = self.finish(slow);
            drop(permit);
            verdict
        })
        .await
        .unwrap_or(Verdict::Denied)
    }

    /// Checks an `Authorization` header value. Blocking (bcrypt): run it off the runtime.
    pub fn check(&self, authorization: Option<&str>) -> Verdict {
        match self.begin(authorization) {
            Step::Done(verdict) => verdict,
            Step::Slow(slow) => self.finish(slow),
        }
    }

    /// Everything but bcrypt: the environment's users, the file's fast schemes and the memory of
    /// verified credentials. Blocking (a `stat`, and a read when the file changed).
    fn begin(&self, authorization: Option<&str>) -> Step {
        let Some((username, password)) = authorization.and_then(parse_basic) else {
            return Step::Done(Verdict::Missing);
        };
        if self.env_users.iter().any(|user| {
            constant_time_eq(&username, &user.username)
                && constant_time_eq(&password, &user.password)
        }) {
            return Step::Done(Verdict::Allowed(username));
        }
        self.refresh();
        let (stored, known) = {
            let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            match loaded.users.get(&username) {
                Some(stored) => (stored.clone(), true),
                None => match &loaded.decoy {
                    Some(decoy) => (decoy.clone(), false),
                    None => return Step::Done(Verdict::Denied),
                },
            }
        };
        let check = SlowCheck {
            username,
            password,
            stored,
            known,
        };
        if !check.stored.is_slow() {
            let verdict = self.finish(check);
            // A fast kind's failure pays for the costliest check too, as an unknown name does.
            if verdict == Verdict::Denied {
                let decoy = self
                    .loaded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .decoy
                    .clone();
                if let Some(decoy) = decoy.filter(StoredPassword::is_slow) {
                    return Step::Slow(SlowCheck {
                        username: String::new(),
                        password: String::new(),
                        stored: decoy,
                        known: false,
                    });
                }
            }
            return Step::Done(verdict);
        }
        if known
            && self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&verification_key(&check))
        {
            return Step::Done(Verdict::Allowed(check.username));
        }
        Step::Slow(check)
    }

    /// The password check itself, remembered when it succeeds and is worth remembering.
    fn finish(&self, check: SlowCheck) -> Verdict {
        // The decoy is checked like a real entry, for its time only.
        let matches = check.stored.verify(&check.password);
        if !(matches && check.known) {
            return Verdict::Denied;
        }
        if check.stored.is_slow() {
            let key = verification_key(&check);
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(key);
        }
        Verdict::Allowed(check.username)
    }
}

/// The stored hash is part of the key, so a changed password can never match an old entry.
fn verification_key(check: &SlowCheck) -> [u8; 32] {
    let StoredPassword::Bcrypt(hash) = &check.stored else {
        return [0; 32];
    };
    let mut hasher = Sha256::new();
    for part in [&check.username, &check.password, hash] {
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
    use std::time::{Duration, Instant};

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn err_unknown_action_quotes_it() {
        let err = Action::parse_list("update,upload").unwrap_err().to_string();
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
        let auth = Authenticator::new(
            HashSet::from([Action::Update]),
            Some(path.clone()),
            Vec::new(),
        )
        .unwrap();
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

    /// The fastest of `runs` refused checks of each header, taken in turn: other work on the
    /// machine can only add time, so the fastest run is the one closest to the check's cost,
    /// and interleaving exposes both headers to the same load.
    fn fastest_check_times<const N: usize>(
        auth: &Authenticator,
        headers: [&str; N],
        runs: usize,
    ) -> [Duration; N] {
        let mut fastest = [Duration::MAX; N];
        for _ in 0..runs {
            for (header, best) in headers.iter().zip(fastest.iter_mut()) {
                let start = Instant::now();
                assert_eq!(auth.check(Some(header)), Verdict::Denied, "{header}");
                *best = (*best).min(start.elapsed());
            }
        }
        fastest
    }

    #[test]
    fn unknown_user_costs_what_a_wrong_password_costs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hashes: Vec<String> = ["one", "two"]
            .iter()
            .map(|pw| bcrypt::hash(pw, 8).unwrap())
            .collect();
        std::fs::write(
            &path,
            format!("alice:{}\nbob:{}\ncarol:plain\n", hashes[0], hashes[1]),
        )
        .unwrap();
        let auth =
            Authenticator::new(HashSet::from([Action::Update]), Some(path), Vec::new()).unwrap();
        // The same unknown name every time: a remembered refusal would make repeats cheap.
        let [wrong, unknown] = fastest_check_times(
            &auth,
            [&basic("alice", "guess"), &basic("mallory", "guess")],
            9,
        );
        assert!(
            unknown.as_secs_f64() >= 0.5 * wrong.as_secs_f64(),
            "unknown user {unknown:?}, wrong password {wrong:?}"
        );
        // Not even the decoy's own password lets an unknown name in.
        assert_eq!(auth.check(Some(&basic("mallory", "one"))), Verdict::Denied);
    }

    #[test]
    fn the_decoy_is_the_costliest_check() {
        let users = |entries: &[(&str, StoredPassword)]| -> HashMap<String, StoredPassword> {
            entries
                .iter()
                .map(|(name, stored)| ((*name).to_owned(), stored.clone()))
                .collect()
        };
        let cost = |c: u32| StoredPassword::Bcrypt(format!("$2y${c:02}$abcdefghijklmnopqrstuv"));
        let apr1 = StoredPassword::Apr1 {
            salt: "s".into(),
            hash: "h".into(),
        };
        assert_eq!(pick_decoy(&HashMap::new()), None);
        assert_eq!(
            pick_decoy(&users(&[("a", cost(5)), ("b", cost(10)), ("c", cost(10))])),
            Some(cost(10))
        );
        assert_eq!(
            pick_decoy(&users(&[
                ("a", apr1.clone()),
                ("b", apr1.clone()),
                ("c", cost(12))
            ])),
            Some(cost(12))
        );
        assert_eq!(
            pick_decoy(&users(&[
                ("a", apr1.clone()),
                ("b", StoredPassword::Plain("x".into()))
            ])),
            Some(apr1)
        );
    }

    #[test]
    fn a_wrong_password_of_a_fast_kind_costs_what_an_unknown_user_costs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        let bcrypt_hash = bcrypt::hash("secret", 8).unwrap();
        std::fs::write(
            &file,
            format!("slow:{bcrypt_hash}\nfast:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"),
        )
        .unwrap();
        let auth = Authenticator::new(
            [Action::Update].into_iter().collect(),
            Some(file),
            Vec::new(),
        )
        .unwrap();
        let [unknown, fast_wrong] = fastest_check_times(
            &auth,
            [&basic("nobody", "guess"), &basic("fast", "guess")],
            9,
        );
        assert!(
            fast_wrong * 2 >= unknown,
            "a wrong {{SHA}} password took {fast_wrong:?}, an unknown user {unknown:?}"
        );
        // The right password still lets the fast user in, without the decoy.
        assert_eq!(
            auth.check(Some(&basic("fast", "secret"))),
            Verdict::Allowed("fast".into())
        );
    }

    #[test]
    fn a_deleted_password_file_grants_nothing_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("one", 4).unwrap();
        let text = format!("alice:{hash}\nbob:plain\n");
        std::fs::write(&path, &text).unwrap();
        let auth = Authenticator::new(
            HashSet::from([Action::Update]),
            Some(path.clone()),
            vec![StaticUser {
                username: "svc".into(),
                password: "env".into(),
            }],
        )
        .unwrap();
        let alice = basic("alice", "one");
        assert_eq!(auth.check(Some(&alice)), Verdict::Allowed("alice".into()));
        std::fs::remove_file(&path).unwrap();
        // Remembered verifications go with the file.
        assert_eq!(auth.check(Some(&alice)), Verdict::Denied);
        assert_eq!(auth.check(Some(&basic("bob", "plain"))), Verdict::Denied);
        // The environment's user does not come from the file.
        assert_eq!(
            auth.check(Some(&basic("svc", "env"))),
            Verdict::Allowed("svc".into())
        );
        std::fs::write(&path, &text).unwrap();
        assert_eq!(auth.check(Some(&alice)), Verdict::Allowed("alice".into()));
    }

    #[test]
    fn an_unreadable_password_file_grants_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "bob:plain\n").unwrap();
        let auth = Authenticator::new(
            HashSet::from([Action::Update]),
            Some(path.clone()),
            Vec::new(),
        )
        .unwrap();
        let bob = basic("bob", "plain");
        assert_eq!(auth.check(Some(&bob)), Verdict::Allowed("bob".into()));
        // A path that `stat` finds and no one, root included, can read as a file.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert_eq!(auth.check(Some(&bob)), Verdict::Denied);
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, "bob:plain\n").unwrap();
        assert_eq!(auth.check(Some(&bob)), Verdict::Allowed("bob".into()));
    }

    #[test]
    fn static_users_and_missing_credentials() {
        let auth = Authenticator::new(
            HashSet::from([Action::Update]),
            None,
            vec![
                StaticUser {
                    username: "svc".into(),
                    password: "s3cret".into(),
                },
                StaticUser {
                    username: "ci".into(),
                    password: "other".into(),
                },
            ],
        )
        .unwrap();
        assert_eq!(
            auth.check(Some(&basic("svc", "s3cret"))),
            Verdict::Allowed("svc".into())
        );
        assert_eq!(
            auth.check(Some(&basic("ci", "other"))),
            Verdict::Allowed("ci".into())
        );
        assert_eq!(auth.check(Some(&basic("svc", "nope"))), Verdict::Denied);
        // One user's password is not another's.
        assert_eq!(auth.check(Some(&basic("ci", "s3cret"))), Verdict::Denied);
        assert_eq!(auth.check(None), Verdict::Missing);
        assert_eq!(auth.check(Some("Bearer abc")), Verdict::Missing);
        assert!(!format!("{:?}", auth.env_users).contains("s3cret"));
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(users: &[StaticUser]) -> Vec<(&str, &str)> {
        users
            .iter()
            .map(|u| (u.username.as_str(), u.password.as_str()))
            .collect()
    }

    #[test]
    fn environment_users_come_in_pairs_by_suffix() {
        let users = StaticUser::from_vars(vars(&[
            ("WHEELHOUSE_PASSWORD_CIBOT", "p2"),
            ("WHEELHOUSE_USERNAME", "wheelhouse"),
            ("HOME", "/root"),
            ("WHEELHOUSE_PASSWORD", "p1"),
            ("WHEELHOUSE_USERNAME_CIBOT", "ci-bot"),
            ("WHEELHOUSE_USERNAME_ALICE", "alice"),
            ("WHEELHOUSE_PASSWORD_ALICE", "p:3"),
            // Empty is unset, in both halves.
            ("WHEELHOUSE_USERNAME_GONE", ""),
            ("WHEELHOUSE_PASSWORD_GONE", ""),
        ]))
        .unwrap();
        assert_eq!(
            names(&users),
            [("wheelhouse", "p1"), ("alice", "p:3"), ("ci-bot", "p2")]
        );
        assert!(StaticUser::from_vars(vars(&[("PATH", "/bin")]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn err_environment_users_name_the_variable() {
        let error =
            |pairs: &[(&str, &str)]| StaticUser::from_vars(vars(pairs)).unwrap_err().to_string();
        assert_eq!(
            error(&[("WHEELHOUSE_USERNAME_CI", "ci")]),
            "WHEELHOUSE_USERNAME_CI is set but WHEELHOUSE_PASSWORD_CI is not"
        );
        assert_eq!(
            error(&[("WHEELHOUSE_PASSWORD", "x")]),
            "WHEELHOUSE_PASSWORD is set but WHEELHOUSE_USERNAME is not"
        );
        assert_eq!(
            error(&[
                ("WHEELHOUSE_USERNAME_CI", "ci"),
                ("WHEELHOUSE_PASSWORD_CL", "x")
            ]),
            "WHEELHOUSE_USERNAME_CI is set but WHEELHOUSE_PASSWORD_CI is not"
        );
        assert_eq!(
            error(&[
                ("WHEELHOUSE_USERNAME_X", "a:b"),
                ("WHEELHOUSE_PASSWORD_X", "x")
            ]),
            "WHEELHOUSE_USERNAME_X = \"a:b\": a user name cannot contain ':'"
        );
        assert_eq!(
            error(&[
                ("WHEELHOUSE_USERNAME", "ci"),
                ("WHEELHOUSE_PASSWORD", "x"),
                ("WHEELHOUSE_USERNAME_2", "ci"),
                ("WHEELHOUSE_PASSWORD_2", "y"),
            ]),
            "user \"ci\" is given twice, by WHEELHOUSE_USERNAME and by WHEELHOUSE_USERNAME_2"
        );
        use std::os::unix::ffi::OsStringExt;
        let invalid = vec![(
            OsString::from("WHEELHOUSE_PASSWORD_X"),
            OsString::from_vec(vec![0xff, 0xfe]),
        )];
        assert_eq!(
            StaticUser::from_vars(invalid).unwrap_err().to_string(),
            "WHEELHOUSE_PASSWORD_X is not valid UTF-8"
        );
    }

    #[test]
    fn err_missing_password_file_names_it() {
        let err = Authenticator::new(
            HashSet::from([Action::Update]),
            Some("/nonexistent/htpasswd".into()),
            Vec::new(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("/nonexistent/htpasswd"), "{err}");
    }

    mod properties {
        use super::super::*;
        use base64::Engine;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn parse_basic_never_panics(header in any::<String>()) {
                let _ = parse_basic(&header);
            }

            #[test]
            fn parse_basic_never_panics_on_basic_like_text(
                header in "[bB][aA][sS][iI][cC] {0,2}[A-Za-z0-9+/=]{0,40}"
            ) {
                let _ = parse_basic(&header);
            }

            #[test]
            fn parse_basic_round_trips(
                user in "[^:\\x00]{0,16}",
                password in any::<String>(),
                scheme in "[bB][aA][sS][iI][cC]",
            ) {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{password}"));
                prop_assert_eq!(
                    parse_basic(&format!("{scheme} {encoded}")),
                    Some((user, password))
                );
            }
        }
    }
}
