//! Apache htpasswd files: bcrypt (`$2y$`, `$2a$`, `$2b$`), `$apr1$` (Apache's MD5-crypt),
//! `{SHA}` and plain text, the formats `htpasswd` writes and pypiserver (through passlib)
//! reads. A line that cannot be used is reported with its number and skipped: one bad line
//! must not lock every user out.

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

impl StoredPassword {
    fn parse(field: &str) -> Result<Self, &'static str> {
        if ["$2y$", "$2a$", "$2b$"]
            .iter()
            .any(|p| field.starts_with(p))
        {
            return Ok(Self::Bcrypt(field.to_owned()));
        }
        if let Some(rest) = field.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or("an $apr1$ entry must be $apr1$SALT$HASH")?;
            return Ok(Self::Apr1 {
                salt: salt.to_owned(),
                hash: hash.to_owned(),
            });
        }
        if let Some(digest) = field.strip_prefix("{SHA}") {
            return Ok(Self::Sha1(digest.to_owned()));
        }
        if field.starts_with('$') {
            return Err("unsupported hash scheme (expected bcrypt $2y$/$2a$/$2b$, $apr1$, {SHA} or a plain password)");
        }
        Ok(Self::Plain(field.to_owned()))
    }

    /// Whether checking this password costs enough that a successful check is worth caching.
    pub fn is_slow(&self) -> bool {
        matches!(self, Self::Bcrypt(_))
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
    pub reason: &'static str,
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
                skip("expected user:password");
                continue;
            };
            if user.is_empty() {
                skip("the user name is empty");
                continue;
            }
            if stored.is_empty() {
                skip("the password field is empty");
                continue;
            }
            match StoredPassword::parse(stored) {
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
        assert_eq!(parsed.skipped[0].reason, "expected user:password");
    }
}
