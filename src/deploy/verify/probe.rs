//! The probe: a wheel made up on the spot, with a version of its own per run, so that a
//! listing that shows it proves the listing is fresh and two runs never collide.

use std::io::Write;

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

/// The probe's project: a name no real package takes, that says what it is.
pub const PROJECT: &str = "wheelhouse-verify-probe";

pub struct Probe {
    pub version: String,
    pub filename: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// The wheel's METADATA file, which `.metadata` must return byte for byte.
    pub metadata: String,
}

impl Probe {
    /// A probe whose version is `0.0.<stamp>`: the caller passes the time (or anything unique).
    pub fn new(stamp: u128) -> Self {
        let version = format!("0.0.{stamp}");
        let stem = format!("{}-{version}", PROJECT.replace('-', "_"));
        let filename = format!("{stem}-py3-none-any.whl");
        let dist_info = format!("{stem}.dist-info");
        let metadata = format!(
            "Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {version}\nSummary: Uploaded and removed by wheelhouse-deploy verify\n"
        );
        let wheel = "Wheel-Version: 1.0\nGenerator: wheelhouse-deploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
        let files = [
            (format!("{dist_info}/METADATA"), metadata.clone()),
            (format!("{dist_info}/WHEEL"), wheel.to_owned()),
        ];
        let mut record = String::new();
        for (path, content) in &files {
            let digest = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                Sha256::digest(content.as_bytes()),
            );
            record.push_str(&format!("{path},sha256={digest},{}\n", content.len()));
        }
        record.push_str(&format!("{dist_info}/RECORD,,\n"));

        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default();
        for (path, content) in files
            .iter()
            .chain(std::iter::once(&(format!("{dist_info}/RECORD"), record)))
        {
            zip.start_file(path.as_str(), options)
                .expect("writing to memory");
            zip.write_all(content.as_bytes())
                .expect("writing to memory");
        }
        let bytes = zip.finish().expect("writing to memory").into_inner();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Probe {
            version,
            filename,
            bytes,
            sha256,
            metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_wheel_the_index_reads() {
        let probe = Probe::new(1_764_547_200);
        assert_eq!(
            probe.filename,
            "wheelhouse_verify_probe-0.0.1764547200-py3-none-any.whl"
        );
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&probe.bytes)).unwrap();
        let mut metadata = String::new();
        std::io::Read::read_to_string(
            &mut archive
                .by_name("wheelhouse_verify_probe-0.0.1764547200.dist-info/METADATA")
                .unwrap(),
            &mut metadata,
        )
        .unwrap();
        assert_eq!(metadata, probe.metadata);
        assert!(metadata.contains("Version: 0.0.1764547200\n"));
        assert_eq!(probe.sha256, hex::encode(Sha256::digest(&probe.bytes)));
    }
}
