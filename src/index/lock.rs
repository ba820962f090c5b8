//! Locks that tell a live upload's temp file from a dead one's, across processes and hosts.
//!
//! An upload holds an exclusive lock on its temp file for as long as it runs; the sweeper deletes
//! a temp file only if it can take that lock itself. On Linux these are open-file-description
//! locks: unlike classic POSIX record locks they conflict within one process too (the sweeper
//! and the uploads of one replica share a process, and a classic lock is also dropped when *any*
//! descriptor of the file is closed), while like them they are byte-range locks that the NFS
//! client turns into NFSv4 locks, so EFS enforces them between hosts, and they vanish with the
//! process that held them (after the NFS lease expires for a host that died). Elsewhere `flock`
//! gives the same semantics on a local disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Whether a lock was taken, or someone else holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    Yes,
    HeldElsewhere,
}

/// Takes the exclusive lock on `file` without waiting. The file must be open for writing.
pub(super) fn try_exclusive(file: &File) -> io::Result<Taken> {
    match set_lock(file) {
        Ok(()) => Ok(Taken::Yes),
        // EWOULDBLOCK is EAGAIN on Linux but not everywhere; fcntl may also say EACCES.
        Err(err)
            if err.raw_os_error().is_some_and(|code| {
                code == libc::EAGAIN || code == libc::EWOULDBLOCK || code == libc::EACCES
            }) =>
        {
            Ok(Taken::HeldElsewhere)
        }
        Err(err) => Err(err),
    }
}

/// Takes the lock for an upload's temp file, which nobody else can know of yet.
pub(super) fn hold(file: &File) -> io::Result<()> {
    match try_exclusive(file)? {
        Taken::Yes => Ok(()),
        Taken::HeldElsewhere => Err(io::Error::other(
            "a new upload temp file is already locked by another process",
        )),
    }
}

#[cfg(target_os = "linux")]
fn set_lock(file: &File) -> io::Result<()> {
    // SAFETY: a zeroed flock is a valid value; every field the call reads is set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0; // to the end of the file, whatever its size
    lock.l_pid = 0; // required by open-file-description locks
                    // SAFETY: the descriptor is open for the duration of the call and `lock` is a valid flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_lock(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_conflicts_within_the_process_and_dies_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let holder = File::create(&path).unwrap();
        hold(&holder).unwrap();
        let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(try_exclusive(&other).unwrap(), Taken::HeldElsewhere);
        // A duplicate of the holder's descriptor shares its lock: closing it frees nothing.
        drop(holder.try_clone().unwrap());
        assert_eq!(try_exclusive(&other).unwrap(), Taken::HeldElsewhere);
        drop(holder);
        assert_eq!(try_exclusive(&other).unwrap(), Taken::Yes);
    }
}
