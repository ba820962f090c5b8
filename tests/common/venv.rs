//! The one way the tests make a Python venv: from a lock file of exact versions with hashes
//! (`tests/python/*.txt`, written by `tests/python/lock`), installed with `--require-hashes`,
//! once per lock and reused while the lock stays the same.

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
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(lock) {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv));
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, lock).unwrap();
    // The lock holds the whole tree, so nothing is resolved here (`--no-deps`).
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--require-hashes", "--no-deps", "-r"])
        .arg(&requirements));
    // Written last: an interrupted install is redone on the next run.
    std::fs::write(&marker, lock).unwrap();
    venv
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
