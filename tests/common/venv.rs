//! The one way the tests make a Python venv: from a lock file of exact versions with hashes
//! (`tests/python/*.txt`, written by `tests/python/lock`), installed with `--require-hashes`,
//! once per lock and interpreter and reused while both stay the same.

use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The venv `name` under `CARGO_TARGET_TMPDIR`, holding exactly what `lock` lists. Test
/// binaries may ask for the same venv at once: one builds it, the others wait on a file lock
/// and then find it complete.
pub fn locked(name: &str, lock: &str) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&tmp).unwrap();
    let guard = std::fs::File::create(tmp.join(format!("{name}.lock"))).unwrap();
    // SAFETY: flock on a descriptor that `guard` keeps open until the end of this function.
    let locked = unsafe { libc::flock(guard.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());

    let venv = tmp.join(name);
    let marker = venv.join("installed-lock.txt");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // The interpreter is part of what was installed: a venv of another Python is made again.
    let installed = format!("{}\n{BUILD_LOCK}\n{lock}", python_version(&python));
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(installed.as_str()) {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv));
    // The build tools first, from their own lock; then the lock, whose few packages that PyPI
    // has only as sources are built with those tools (`--no-build-isolation`) instead of with
    // whatever an isolated build would fetch. The lock holds the whole tree, so nothing is
    // resolved here (`--no-deps`).
    for (file, text, isolation) in [
        ("build-requirements.txt", BUILD_LOCK, None),
        ("requirements.txt", lock, Some("--no-build-isolation")),
    ] {
        let requirements = venv.join(file);
        std::fs::write(&requirements, text).unwrap();
        run(Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--require-hashes", "--no-deps"])
            .args(isolation)
            .arg("-r")
            .arg(&requirements));
    }
    // Written last: an interrupted install is redone on the next run.
    std::fs::write(&marker, installed).unwrap();
    venv
}

/// Forgets that `name` was made, so that the next [`locked`] makes it again: for a venv whose
/// install finished but does not work.
pub fn discard(name: &str) {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(venv.join("installed-lock.txt"));
}

/// What the sources-only packages of the locks are built with (`tests/python/build.in`).
const BUILD_LOCK: &str = include_str!("../python/build.txt");

fn python_version(python: &str) -> String {
    let output = Command::new(python)
        .arg("--version")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {python}: {err}"));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
