//! Apache htpasswd files: bcrypt (`$2y$`, `$2a$`, `$2b$`), `$apr1$` (Apache's MD5-crypt),
//! `{SHA}` and plain text, the formats `htpasswd` writes and pypiserver (through passlib)
//! reads. A line that cannot be used is reported with its number and skipped: one bad line
//! must not lock every user out.
//!
//! A field is plain text only when no hash format fits it. Hashes this module cannot verify
//! (DES-crypt, what `htpasswd -d` writes; `$1$`, `$5$`, `$6$`; `{SSHA}` and the other LDAP
//! schemes) are recognised as such and their lines skipped: read as plain text, the hash
//! string itself would be the password.

use std::collections::HashMap;

use base64::Engine;
use md5::{Digest, Md5};

/// A stored password, by scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPassword {
    Bcrypt(String),
    Apr1 { salt: String, hash: String },
    Sha1(String),
    Plain(String),
}

/// Why a line of an htpasswd file was skipped. Each message quotes what was wrong, and the
/// user it concerns where there is one, so the log says which entry to re-create.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected user:password")]
    NoColon,
    #[error("the user name is empty")]
    EmptyUser,
    #[error("the password field of user {user:?} is empty")]
    EmptyPassword { user: String },
    #[error("user {user:?}: an $apr1$ entry must be $apr1$SALT$HASH")]
    MalformedApr1 { user: String },
    /// A hash this server cannot check. Taking it for a plain password would let the hash
    /// string itself log in, so the user is refused until the entry is re-created.
    #[error(
        "user {user:?} has a {scheme} hash, which cannot be verified here: \
         re-create the entry with `htpasswd -B` (bcrypt)"
    )]
    UnsupportedHash { user: String, scheme: String },
}

/// bcrypt's prefixes. `$2x$` (what PHP's buggy bcrypt wrote for 8-bit passwords) is left out:
/// checked as `$2a$`, it would refuse the very passwords it was made for.
const BCRYPT_PREFIXES: [&str; 3] = ["$2y$", "$2a$", "$2b$"];

/// The alphabet of every crypt(3) hash: a string made only of it may be a hash, so it is never
/// taken for a plain password when its length is that of one.
fn is_crypt_alphabet(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// Names the crypt(3) or LDAP scheme `field` is written in, if it is one this server cannot
/// verify. Passlib (pypiserver's verifier) identifies these the same way; in particular any 13
/// characters of the crypt alphabet are a traditional DES-crypt hash, what `htpasswd -d` writes.
fn unsupported_scheme(field: &str) -> Option<String> {
    if field.len() == 13 && is_crypt_alphabet(field) {
        return Some("DES-crypt".to_owned());
    }
    if field.len() == 20 && field.starts_with('_') && is_crypt_alphabet(&field[1..]) {
        return Some("BSDi extended DES-crypt".to_owned());
    }
    if let Some(rest) = field.strip_prefix('$') {
        let id = rest.split('$').next().unwrap_or_default();
        let scheme = match id {
            "1" => "MD5-crypt ($1$)".to_owned(),
            "5" => "SHA-256-crypt ($5$)".to_owned(),
            "6" => "SHA-512-crypt ($6$)".to_owned(),
            "y" => "yescrypt ($y$)".to_owned(),
            other => format!("${other}$"),
        };
        return Some(scheme);
    }
    // LDAP-style `{SCHEME}` prefixes ({SSHA}, {SHA256}, {MD5}, {CRYPT}...): every one but
    // {SHA}, which is handled before this is asked.
    let scheme = field.strip_prefix('{')?.split_once('}')?.0;
    let is_scheme_name = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    is_scheme_name.then(|| format!("{{{scheme}}}"))
}

impl StoredPassword {
    /// Reads the password field of `user`'s line. Plain text only where no hash format fits.
    fn parse(user: &str, field: &str) -> Result<Self, LineError> {
        if BCRYPT_PREFIXES.iter().any(|p| field.starts_with(p)) {
            return Ok(Self::Bcrypt(field.to_owned()));
        }
        if let Some(rest) = field.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or_else(|| LineError::MalformedApr1 {
                    user: user.to_owned(),
                })?;
            return Ok(Self::Apr1 {
                salt: salt.to_owned(),
                hash: hash.to_owned(),
            });
        }
        if let Some(digest) = field.strip_prefix("{SHA}") {
            return Ok(Self::Sha1(digest.to_owned()));
        }
        if let Some(scheme) = unsupported_scheme(field) {
            return Err(LineError::UnsupportedHash {
                user: user.to_owned(),
                scheme,
            });
        }
        Ok(Self::Plain(field.to_owned()))
    }

    /// Whether checking this password costs enough that a successful check is worth caching.
    pub fn is_slow(&self) -> bool {
        matches!(self, Self::Bcrypt(_))
    }

    /// The bcrypt cost (log2 of the rounds) of a bcrypt entry.
    pub fn bcrypt_cost(&self) -> Option<u32> {
        let Self::Bcrypt(hash) = self else {
            return None;
        };
        hash.get(4..6)?.parse().ok()
    }

    /// Checks `password` against the stored value. bcrypt takes tens of milliseconds by
    /// design: call this off the async runtime.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Apr1 { salt, hash } => constant_time_eq(&apr1_hash(password, salt), hash),
            Self::Sha1(digest) => {
                let computed = base64::engine::general_purpose::STANDARD
                    .encode(<sha1::Sha1 as sha1::Digest>::digest(password.as_bytes()));
                constant_time_eq(&computed, digest)
            }
            Self::Plain(stored) => constant_time_eq(password, stored),
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how much matched.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A parsed htpasswd file, and the lines it had to skip.
#[derive(Debug, Default)]
pub struct Htpasswd {
    pub users: HashMap<String, StoredPassword>,
    pub skipped: Vec<SkippedLine>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    pub line: usize,
    pub reason: LineError,
}

impl Htpasswd {
    pub fn parse(text: &str) -> Self {
        let mut parsed = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let trimmed = line.trim_end_matches('\r');
            if trimmed.trim().is_empty() || trimmed.trim_start().starts_with('#') {
                continue;
            }
            let mut skip = |reason| {
                parsed.skipped.push(SkippedLine {
                    line: line_number,
                    reason,
                })
            };
            let Some((user, stored)) = trimmed.split_once(':') else {
                skip(LineError::NoColon);
                continue;
            };
            if user.is_empty() {
                skip(LineError::EmptyUser);
                continue;
            }
            if stored.is_empty() {
                skip(LineError::EmptyPassword {
                    user: user.to_owned(),
                });
                continue;
            }
            match StoredPassword::parse(user, stored) {
                Ok(password) => {
                    parsed.users.insert(user.to_owned(), password);
                }
                Err(reason) => skip(reason),
            }
        }
        parsed
    }
}

/// Apache's `$apr1$` MD5-crypt (the FreeBSD MD5 crypt with Apache's magic string).
fn apr1_hash(password: &str, salt: &str) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let password = password.as_bytes();
    let salt = &salt.as_bytes()[..salt.len().min(8)];

    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut context = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut remaining = password.len();
    while remaining > 0 {
        let take = remaining.min(16);
        context.update(&alternate[..take]);
        remaining -= take;
    }
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 != 0 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();
    // The thousand rounds exist only to make the hash slow; their order is the algorithm.
    for round in 0..1000 {
        let mut step = Md5::new();
        if round & 1 != 0 {
            step.update(password);
        } else {
            step.update(digest);
        }
        if round % 3 != 0 {
            step.update(salt);
        }
        if round % 7 != 0 {
            step.update(password);
        }
        if round & 1 != 0 {
            step.update(digest);
        } else {
            step.update(password);
        }
        digest = step.finalize();
    }

    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut push = |value: u32, chars: usize| {
        let mut value = value;
        for _ in 0..chars {
            out.push(ALPHABET[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    push(d(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from `openssl passwd -apr1 -salt SALT PASSWORD`.
    #[test]
    fn apr1_matches_openssl() {
        assert_eq!(apr1_hash("secret", "abcdefgh"), "h9FWgUz3n9YxylKLlR5SQ/");
        assert_eq!(
            apr1_hash("pässwörd longer than sixteen chars", "xy"),
            "tgkmzvuGn7.eGcFocWTlj/"
        );
    }

    #[test]
    fn verifies_every_scheme() {
        let bcrypt_hash = bcrypt::hash("pw", 4).unwrap();
        let file = format!(
            "b:{bcrypt_hash}\ny:{}\na:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\ns:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\np:plain\n",
            bcrypt_hash.replacen("$2b$", "$2y$", 1)
        );
        let parsed = Htpasswd::parse(&file);
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        assert!(parsed.users["b"].verify("pw"));
        assert!(parsed.users["y"].verify("pw"));
        assert!(parsed.users["a"].verify("secret"));
        assert!(parsed.users["s"].verify("test"));
        assert!(parsed.users["p"].verify("plain"));
        for user in ["b", "y", "a", "s", "p"] {
            assert!(!parsed.users[user].verify("wrong"), "{user}");
        }
    }

    #[test]
    fn malformed_lines_are_reported_with_numbers() {
        let parsed = Htpasswd::parse("# comment\n\nnocolon\n:nouser\nok:pw\nbad:$6$x$y\nempty:\n");
        assert_eq!(parsed.users.len(), 1);
        let lines: Vec<usize> = parsed.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![3, 4, 6, 7]);
        assert_eq!(parsed.skipped[0].reason, LineError::NoColon);
        assert_eq!(
            parsed.skipped[3].reason.to_string(),
            "the password field of user \"empty\" is empty"
        );
    }

    #[test]
    fn err_des_crypt_is_refused_not_taken_for_its_own_password() {
        // What `htpasswd -nbd dave secret` writes.
        let parsed = Htpasswd::parse("alice:pw\ndave:abhWCwoTZY2c6\n");
        assert!(!parsed.users.contains_key("dave"), "{:?}", parsed.users);
        assert_eq!(parsed.skipped.len(), 1);
        assert_eq!(parsed.skipped[0].line, 2);
        assert_eq!(
            parsed.skipped[0].reason.to_string(),
            "user \"dave\" has a DES-crypt hash, which cannot be verified here: \
             re-create the entry with `htpasswd -B` (bcrypt)"
        );
    }

    #[test]
    fn err_every_unverifiable_hash_is_refused_with_its_scheme() {
        let cases = [
            ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "MD5-crypt ($1$)"),
            ("$5$rounds=5000$salt$abc", "SHA-256-crypt ($5$)"),
            ("$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9AjRbLCelDCy.g.", "SHA-512-crypt ($6$)"),
            ("$y$j9T$salt$hash", "yescrypt ($y$)"),
            ("$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA", "$argon2id$"),
            ("$2x$05$abcdefghijklmnopqrstuuKQ2v1f1nDd0FXeplkgL6sr3XBmXq0/m", "$2x$"),
            ("{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g9dFRy", "{SSHA}"),
            ("{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=", "{SHA256}"),
            ("{CRYPT}abhWCwoTZY2c6", "{CRYPT}"),
            ("_J9..CCCCXBrJUJV154M", "BSDi extended DES-crypt"),
        ];
        for (field, scheme) in cases {
            let parsed = Htpasswd::parse(&format!("eve:{field}\n"));
            assert!(parsed.users.is_empty(), "{field}");
            assert_eq!(
                parsed.skipped[0].reason,
                LineError::UnsupportedHash {
                    user: "eve".into(),
                    scheme: scheme.into()
                },
                "{field}"
            );
        }
    }

    #[test]
    fn plain_text_only_where_no_hash_fits() {
        // 12 and 14 crypt characters, 13 with one outside the alphabet, a brace that opens
        // no scheme name: none of them is a hash.
        for password in [
            "abhWCwoTZY2c",
            "abhWCwoTZY2c6x",
            "abhWCwoTZY2c!",
            "{not a scheme}",
            "{sha}lowercase",
            "_short",
        ] {
            let parsed = Htpasswd::parse(&format!("pat:{password}\n"));
            assert_eq!(
                parsed.users.get("pat"),
                Some(&StoredPassword::Plain(password.to_owned())),
                "{password}: {:?}",
                parsed.skipped
            );
        }
    }

    #[test]
    fn bcrypt_cost_is_read_from_the_hash() {
        let hash = bcrypt::hash("pw", 5).unwrap();
        assert_eq!(StoredPassword::Bcrypt(hash).bcrypt_cost(), Some(5));
        assert_eq!(StoredPassword::Bcrypt("$2y$".into()).bcrypt_cost(), None);
        assert_eq!(StoredPassword::Plain("$2y$10$".into()).bcrypt_cost(), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// A password no hash format fits: it holds a character outside the crypt alphabet and
        /// starts with none of `$`, `{`, `_`.
        const PLAIN: &str = "[a-zA-Z0-9]{0,8}[ !#%&*+,:;=?@^~-][ -~]{0,12}";

        fn entry(scheme: u8, password: &str, salt: &str) -> String {
            match scheme {
                0 => password.to_owned(),
                1 => format!(
                    "{{SHA}}{}",
                    base64::engine::general_purpose::STANDARD
                        .encode(<sha1::Sha1 as sha1::Digest>::digest(password.as_bytes()))
                ),
                _ => format!("$apr1${salt}${}", apr1_hash(password, salt)),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn parse_never_panics(text in any::<String>()) {
                let parsed = Htpasswd::parse(&text);
                for skipped in &parsed.skipped {
                    let _ = skipped.reason.to_string();
                }
            }

            #[test]
            fn parse_never_panics_on_line_like_text(
                text in "([a-z]{0,4}(:[$_{}A-Za-z0-9./]{0,24})?\r?\n){0,8}"
            ) {
                let _ = Htpasswd::parse(&text);
            }

            #[test]
            fn an_added_user_verifies_with_its_password_only(
                before in any::<String>(),
                user in "[A-Za-z0-9_.@-]{1,16}",
                scheme in 0u8..3,
                password in PLAIN,
                other in PLAIN,
                salt in "[./0-9A-Za-z]{1,8}",
            ) {
                // Whatever comes before, the last line for a user is the one that counts.
                let text = format!("{before}\n{user}:{}\n", entry(scheme, &password, &salt));
                let parsed = Htpasswd::parse(&text);
                let stored = parsed.users.get(&user);
                prop_assert!(stored.is_some(), "{:?} in {:?}", user, parsed.skipped);
                let stored = stored.unwrap();
                prop_assert!(stored.verify(&password));
                prop_assert_eq!(stored.verify(&other), password == other);
            }
        }
    }
}
