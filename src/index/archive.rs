//! The parts of a zip archive the index reads itself: the end of central directory record
//! (zip64 too), the central directory one record at a time, and the data of one entry.
//!
//! `zip::ZipArchive` reads the whole central directory into memory before it answers
//! anything: a wheel of a million entries cost about 5 s and 580 MiB per open. The index
//! only ever wants one entry (a wheel's METADATA, an sdist's PKG-INFO), so it walks the
//! directory record by record through a small buffer, after checking the sizes the end
//! record declares against [`MAX_ENTRIES`] and [`MAX_DIRECTORY_BYTES`]. What it finds is a
//! [`EntryLocation`]: enough to read the entry again later without the directory.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

/// The most entries an archive may have. The largest wheels on PyPI (CUDA builds of torch)
/// have some 20,000; a hundred thousand leaves room and refuses the absurd.
pub const MAX_ENTRIES: u64 = 100_000;

/// The most bytes a central directory may take: 100,000 entries with 60-byte paths.
pub const MAX_DIRECTORY_BYTES: u64 = 10 << 20;

/// Upper bound on the entry read (a METADATA or PKG-INFO): a long description can be large,
/// but a "metadata" file of more than this is not one, and it is held in memory whole.
pub const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// The end of central directory record with an empty comment; a comment adds up to 64 KiB.
const END_RECORD: usize = 22;
const ZIP64_LOCATOR: usize = 20;
const ZIP64_END_RECORD: usize = 56;
const DIRECTORY_RECORD: usize = 46;
const LOCAL_HEADER: usize = 30;

const STORED: u16 = 0;
const DEFLATED: u16 = 8;

/// What is wrong with an archive. The messages name no path: at upload the file is a temp
/// file, and the caller knows the name the client gave.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Io(std::io::Error),
    #[error("not a zip archive: {0}")]
    NotZip(&'static str),
    #[error("the archive has {0} entries; at most {MAX_ENTRIES} are accepted")]
    TooManyEntries(u64),
    #[error(
        "the archive's central directory is {0} bytes; at most {MAX_DIRECTORY_BYTES} are accepted"
    )]
    DirectoryTooLarge(u64),
    #[error("{name:?} is {size} bytes; at most {MAX_ENTRY_BYTES} are accepted")]
    EntryTooLarge { name: String, size: u64 },
    #[error("{name:?} is compressed with zip method {method}; only stored and deflated entries are read")]
    UnsupportedMethod { name: String, method: u16 },
    #[error("{name:?} does not match the size and checksum the archive gives for it")]
    Corrupt { name: String },
}

impl From<std::io::Error> for ArchiveError {
    /// The length is known before anything is read, so running out of bytes means a record
    /// points past the end: a broken archive, not a failing disk.
    fn from(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            ArchiveError::NotZip("a record points past its end")
        } else {
            ArchiveError::Io(err)
        }
    }
}

impl ArchiveError {
    /// True for an archive the index refuses to store: one whose size would make every
    /// later read of it costly. A merely broken archive is not one (see `metadata::upload_metadata`).
    pub fn is_over_a_limit(&self) -> bool {
        matches!(
            self,
            ArchiveError::TooManyEntries(_)
                | ArchiveError::DirectoryTooLarge(_)
                | ArchiveError::EntryTooLarge { .. }
        )
    }
}

/// Where an entry's bytes are, and how to check them once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLocation {
    /// Offset of the (compressed) data in the file.
    pub data_start: u64,
    pub compressed_size: u64,
    pub size: u64,
    pub method: u16,
    pub crc32: u32,
}

/// Where the central directory is, as the end record declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Directory {
    entries: u64,
    offset: u64,
    size: u64,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut le = [0; 8];
    le.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(le)
}

/// Reads `len` bytes at `offset`.
fn read_at<R: Read + Seek>(file: &mut R, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; len];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Finds the central directory from the end of the archive (`len` bytes long), and checks
/// what the end record declares against the limits before anything else is read.
fn find_directory<R: Read + Seek>(file: &mut R, len: u64) -> Result<Directory, ArchiveError> {
    let tail_len = len.min((END_RECORD + usize::from(u16::MAX)) as u64);
    let tail_start = len - tail_len;
    let tail = read_at(file, tail_start, tail_len as usize)?;
    // The last record whose comment fits in what follows it: the search the zip crate and
    // Python's zipfile make too.
    let at = (0..tail.len().saturating_sub(END_RECORD - 1))
        .rev()
        .find(|&at| {
            tail[at..].starts_with(b"PK\x05\x06")
                && at + END_RECORD + usize::from(u16_at(&tail, at + 20)) <= tail.len()
        })
        .ok_or(ArchiveError::NotZip("no end of central directory record"))?;
    let record = &tail[at..at + END_RECORD];
    let mut directory = Directory {
        entries: u64::from(u16_at(record, 10)),
        size: u64::from(u32_at(record, 12)),
        offset: u64::from(u32_at(record, 16)),
    };
    let end_record_at = tail_start + at as u64;
    let zip64 = directory.entries == u64::from(u16::MAX)
        || directory.size == u64::from(u32::MAX)
        || directory.offset == u64::from(u32::MAX);
    if zip64 {
        let locator = at
            .checked_sub(ZIP64_LOCATOR)
            .map(|start| &tail[start..at])
            .filter(|locator| locator.starts_with(b"PK\x06\x07"))
            .ok_or(ArchiveError::NotZip(
                "no zip64 end of central directory locator",
            ))?;
        let record_at = u64_at(locator, 8);
        if record_at
            .checked_add(ZIP64_END_RECORD as u64)
            .is_none_or(|end| end > end_record_at)
        {
            return Err(ArchiveError::NotZip(
                "a zip64 end record outside the archive",
            ));
        }
        let record = read_at(file, record_at, ZIP64_END_RECORD)?;
        if !record.starts_with(b"PK\x06\x06") {
            return Err(ArchiveError::NotZip(
                "no zip64 end of central directory record",
            ));
        }
        directory = Directory {
            entries: u64_at(&record, 32),
            size: u64_at(&record, 40),
            offset: u64_at(&record, 48),
        };
    }
    if directory.entries > MAX_ENTRIES {
        return Err(ArchiveError::TooManyEntries(directory.entries));
    }
    if directory.size > MAX_DIRECTORY_BYTES {
        return Err(ArchiveError::DirectoryTooLarge(directory.size));
    }
    if directory
        .offset
        .checked_add(directory.size)
        .is_none_or(|end| end > end_record_at)
    {
        return Err(ArchiveError::NotZip(
            "a central directory outside the archive",
        ));
    }
    Ok(directory)
}

/// One central directory record, as far as the index needs it.
struct Record {
    name: String,
    method: u16,
    crc32: u32,
    compressed_size: u64,
    size: u64,
    header_offset: u64,
}

/// Reads the next record of a central directory.
fn next_record(directory: &mut impl Read) -> Result<Record, ArchiveError> {
    let mut fixed = [0; DIRECTORY_RECORD];
    directory.read_exact(&mut fixed)?;
    if !fixed.starts_with(b"PK\x01\x02") {
        return Err(ArchiveError::NotZip("a broken central directory record"));
    }
    let mut variable = vec![
        0;
        usize::from(u16_at(&fixed, 28))
            + usize::from(u16_at(&fixed, 30))
            + usize::from(u16_at(&fixed, 32))
    ];
    directory.read_exact(&mut variable)?;
    let (name, rest) = variable.split_at(usize::from(u16_at(&fixed, 28)));
    let extra = &rest[..usize::from(u16_at(&fixed, 30))];
    let mut record = Record {
        name: String::from_utf8_lossy(name).into_owned(),
        method: u16_at(&fixed, 10),
        crc32: u32_at(&fixed, 16),
        compressed_size: u64::from(u32_at(&fixed, 20)),
        size: u64::from(u32_at(&fixed, 24)),
        header_offset: u64::from(u32_at(&fixed, 42)),
    };
    apply_zip64_extra(&mut record, extra);
    Ok(record)
}

/// Replaces the 32-bit fields that say "see the zip64 extra field" with its values, which
/// come in a fixed order, each present only if its field overflowed.
fn apply_zip64_extra(record: &mut Record, mut extra: &[u8]) {
    while extra.len() >= 4 {
        let (id, len) = (u16_at(extra, 0), usize::from(u16_at(extra, 2)));
        let Some(data) = extra.get(4..4 + len) else {
            return;
        };
        if id == 0x0001 {
            let mut values = data.chunks_exact(8).map(|v| u64_at(v, 0));
            for field in [
                &mut record.size,
                &mut record.compressed_size,
                &mut record.header_offset,
            ] {
                if *field == u64::from(u32::MAX) {
                    match values.next() {
                        Some(value) => *field = value,
                        None => return,
                    }
                }
            }
            return;
        }
        extra = &extra[4 + len..];
    }
}

/// Finds the first entry (in central directory order, as the zip crate lists them) whose
/// name `wanted` accepts. `Ok(None)` when there is none.
pub fn find_entry(
    file: &mut File,
    wanted: impl Fn(&str) -> bool,
) -> Result<Option<(String, EntryLocation)>, ArchiveError> {
    let len = file.metadata()?.len();
    let directory = find_directory(file, len)?;
    file.seek(SeekFrom::Start(directory.offset))?;
    let mut records = BufReader::new(Read::take(&mut *file, directory.size));
    let mut found = None;
    for _ in 0..directory.entries {
        let record = next_record(&mut records)?;
        if wanted(&record.name) {
            found = Some(record);
            break;
        }
    }
    drop(records);
    let Some(record) = found else {
        return Ok(None);
    };
    if record.size > MAX_ENTRY_BYTES {
        return Err(ArchiveError::EntryTooLarge {
            name: record.name,
            size: record.size,
        });
    }
    let header = read_at(file, record.header_offset, LOCAL_HEADER)?;
    if !header.starts_with(b"PK\x03\x04") {
        return Err(ArchiveError::NotZip("a broken local file header"));
    }
    let data_start = record.header_offset
        + LOCAL_HEADER as u64
        + u64::from(u16_at(&header, 26))
        + u64::from(u16_at(&header, 28));
    if data_start
        .checked_add(record.compressed_size)
        .is_none_or(|end| end > len)
    {
        return Err(ArchiveError::Corrupt { name: record.name });
    }
    let location = EntryLocation {
        data_start,
        compressed_size: record.compressed_size,
        size: record.size,
        method: record.method,
        crc32: record.crc32,
    };
    Ok(Some((record.name, location)))
}

/// Reads an entry's bytes from where [`find_entry`] found it, checking them against the size
/// and CRC-32 the directory gave, so a file changed since is never mistaken for its old self.
pub fn read_entry(
    file: &mut File,
    name: &str,
    at: &EntryLocation,
) -> Result<Vec<u8>, ArchiveError> {
    let corrupt = || ArchiveError::Corrupt {
        name: name.to_owned(),
    };
    if at.size > MAX_ENTRY_BYTES {
        return Err(ArchiveError::EntryTooLarge {
            name: name.to_owned(),
            size: at.size,
        });
    }
    file.seek(SeekFrom::Start(at.data_start))?;
    let compressed = Read::take(&mut *file, at.compressed_size);
    let mut bytes = Vec::new();
    let limit = at.size + 1;
    match at.method {
        STORED => compressed.take(limit).read_to_end(&mut bytes)?,
        DEFLATED => flate2::read::DeflateDecoder::new(compressed)
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|_| corrupt())?,
        method => {
            return Err(ArchiveError::UnsupportedMethod {
                name: name.to_owned(),
                method,
            })
        }
    };
    let mut crc = flate2::Crc::new();
    crc.update(&bytes);
    if bytes.len() as u64 != at.size || crc.sum() != at.crc32 {
        return Err(corrupt());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{Cursor, Write};

    fn archive(entries: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, body) in entries {
            zip.start_file(*name, options).unwrap();
            zip.write_all(body).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn on_disk(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut temp = tempfile::NamedTempFile::new().unwrap();
        temp.write_all(bytes).unwrap();
        let file = File::open(temp.path()).unwrap();
        (temp, file)
    }

    #[test]
    fn finds_and_reads_an_entry_stored_or_deflated() {
        let metadata = b"Metadata-Version: 2.1\nName: demo\n\n".repeat(50);
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let bytes = archive(
                &[
                    ("demo/__init__.py", b"x = 1\n"),
                    ("demo-1.0.dist-info/METADATA", &metadata),
                ],
                method,
            );
            let (_temp, mut file) = on_disk(&bytes);
            let (name, at) = find_entry(&mut file, |n| n.ends_with("/METADATA"))
                .unwrap()
                .unwrap();
            assert_eq!(name, "demo-1.0.dist-info/METADATA");
            assert_eq!(read_entry(&mut file, &name, &at).unwrap(), metadata);
            assert!(find_entry(&mut file, |n| n == "PKG-INFO")
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn err_changed_bytes_are_caught_by_the_checksum() {
        let bytes = archive(
            &[("a/METADATA", b"Name: demo\n")],
            zip::CompressionMethod::Stored,
        );
        let (temp, mut file) = on_disk(&bytes);
        let (name, at) = find_entry(&mut file, |_| true).unwrap().unwrap();
        let mut changed = bytes.clone();
        changed[at.data_start as usize] ^= 1;
        std::fs::write(temp.path(), &changed).unwrap();
        let err = read_entry(&mut File::open(temp.path()).unwrap(), &name, &at).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"a/METADATA\" does not match the size and checksum the archive gives for it"
        );
    }

    #[test]
    fn err_too_many_entries_is_refused_from_the_end_record_alone() {
        // An end record that declares more entries than allowed, with nothing before it: the
        // limit is checked before any directory is read.
        let mut end = b"PK\x05\x06".to_vec();
        end.extend_from_slice(&[0, 0, 0, 0]);
        end.extend_from_slice(&u16::MAX.to_le_bytes());
        end.extend_from_slice(&u16::MAX.to_le_bytes());
        end.extend_from_slice(&[0; 10]);
        let mut zip64 = b"PK\x06\x06".to_vec();
        zip64.extend_from_slice(&[0; 28]);
        zip64.extend_from_slice(&200_001u64.to_le_bytes());
        zip64.extend_from_slice(&1u64.to_le_bytes());
        zip64.extend_from_slice(&0u64.to_le_bytes());
        let mut locator = b"PK\x06\x07".to_vec();
        locator.extend_from_slice(&[0; 4]);
        locator.extend_from_slice(&0u64.to_le_bytes());
        locator.extend_from_slice(&1u32.to_le_bytes());
        let bytes = [zip64, locator, end].concat();
        let err = find_directory(&mut Cursor::new(&bytes), bytes.len() as u64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the archive has 200001 entries; at most 100000 are accepted"
        );
    }

    #[test]
    fn err_not_a_zip() {
        let (_temp, mut file) = on_disk(b"just some bytes, no archive");
        let err = find_entry(&mut file, |_| true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a zip archive: no end of central directory record"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the bytes, the walk ends without a panic, and what it finds it can read
        /// without one.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (_temp, mut file) = on_disk(&bytes);
            if let Ok(Some((name, at))) = find_entry(&mut file, |_| true) {
                let _ = read_entry(&mut file, &name, &at);
            }
        }

        /// A real archive with damage anywhere: no panic either.
        #[test]
        fn damaged_archives_never_panic(at in any::<prop::sample::Index>(), value in any::<u8>()) {
            let mut bytes = archive(
                &[("a/b", b"12345"), ("demo-1.0.dist-info/METADATA", b"Name: demo\n")],
                zip::CompressionMethod::Deflated,
            );
            let at = at.index(bytes.len());
            bytes[at] = value;
            let (_temp, mut file) = on_disk(&bytes);
            if let Ok(Some((name, at))) = find_entry(&mut file, |n| n.ends_with("METADATA")) {
                let _ = read_entry(&mut file, &name, &at);
            }
        }

        /// What the zip crate writes, the walk finds byte for byte.
        #[test]
        fn entries_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6), deflate in any::<bool>()) {
            let names: Vec<String> = (0..bodies.len()).map(|i| format!("d/{i}")).collect();
            let entries: Vec<(&str, &[u8])> =
                names.iter().map(String::as_str).zip(bodies.iter().map(Vec::as_slice)).collect();
            let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
            let (_temp, mut file) = on_disk(&archive(&entries, method));
            for (name, body) in &entries {
                let (found, at) = find_entry(&mut file, |n| n == *name).unwrap().unwrap();
                prop_assert_eq!(&found, name);
                prop_assert_eq!(&read_entry(&mut file, &found, &at).unwrap(), body);
            }
        }
    }
}
