//! File digests: the ones an upload carries (md5, sha256, blake2b-256) and the one the index
//! advertises in links (`--hash-algo`).

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use blake2::digest::consts::U32;
use blake2::Blake2b;
use sha2::Digest;

/// The hash algorithms pip verifies in a link's `#<algo>=<hex>` fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgo {
    pub const ALL: [HashAlgo; 6] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha224,
        HashAlgo::Sha256,
        HashAlgo::Sha384,
        HashAlgo::Sha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha224 => "sha224",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha384 => "sha384",
            HashAlgo::Sha512 => "sha512",
        }
    }

    fn hasher(self) -> Hasher {
        match self {
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--hash-algo` that names no algorithm pip checks.
#[derive(Debug, thiserror::Error)]
#[error("unsupported hash algorithm {0:?}: expected one of md5, sha1, sha224, sha256, sha384, sha512, or off")]
pub struct UnknownHashAlgo(pub String);

impl FromStr for HashAlgo {
    type Err = UnknownHashAlgo;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlgo::ALL
            .into_iter()
            .find(|algo| algo.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownHashAlgo(s.to_owned()))
    }
}

enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha224(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha224(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// The digests twine and uv send with an upload, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadDigests {
    pub md5: String,
    pub sha256: String,
    pub blake2_256: String,
}

/// The upload digests, computed over a stream one chunk at a time (so the file is never read
/// twice or held in memory) in two lanes that can run on two threads: md5 alone costs about
/// as much as sha256 and blake2b-256 together.
#[derive(Default)]
pub struct Md5Lane(md5::Md5);

/// The other lane of the upload digests: sha256 and blake2b-256.
pub struct Sha256Blake2Lane {
    sha256: sha2::Sha256,
    blake2_256: Blake2b<U32>,
}

impl Md5Lane {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Default for Sha256Blake2Lane {
    fn default() -> Self {
        Self {
            sha256: sha2::Sha256::new(),
            blake2_256: Blake2b::<U32>::new(),
        }
    }
}

impl Sha256Blake2Lane {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.blake2_256.update(bytes);
    }
}

impl UploadDigests {
    pub fn from_lanes(md5: Md5Lane, rest: Sha256Blake2Lane) -> Self {
        Self {
            md5: hex::encode(md5.0.finalize()),
            sha256: hex::encode(rest.sha256.finalize()),
            blake2_256: hex::encode(rest.blake2_256.finalize()),
        }
    }
}

/// Hashes `bytes` with one algorithm.
pub fn hex_digest(algo: HashAlgo, bytes: &[u8]) -> String {
    let mut hasher = algo.hasher();
    hasher.update(bytes);
    hasher.finish()
}

/// Reads a file once and returns its digest for each of `algos`, in the same order.
pub fn hash_file(path: &Path, algos: &[HashAlgo]) -> std::io::Result<Vec<String>> {
    let mut hashers: Vec<Hasher> = algos.iter().map(|a| a.hasher()).collect();
    let mut file = crate::index::open_regular(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for h in &mut hashers {
            h.update(&buf[..n]);
        }
    }
    Ok(hashers.into_iter().map(Hasher::finish).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            hex_digest(HashAlgo::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex_digest(HashAlgo::Md5, b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        let (mut md5, mut rest) = (Md5Lane::default(), Sha256Blake2Lane::default());
        for chunk in [&b"a"[..], b"bc"] {
            md5.update(chunk);
            rest.update(chunk);
        }
        let d = UploadDigests::from_lanes(md5, rest);
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(d.sha256, hex_digest(HashAlgo::Sha256, b"abc"));
        assert_eq!(
            d.blake2_256,
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
    }

    #[test]
    fn err_unknown_algo_quotes_it() {
        let err = "crc32".parse::<HashAlgo>().unwrap_err().to_string();
        assert!(err.contains("\"crc32\""), "{err}");
        assert_eq!("SHA512".parse::<HashAlgo>().unwrap(), HashAlgo::Sha512);
    }
}
