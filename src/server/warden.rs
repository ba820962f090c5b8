//! The connection warden: closes client connections that hold the server without asking it
//! anything, and keeps their number bounded.
//!
//! Rocket 0.5 builds its hyper server itself, with hyper's header-read timeout switched off and
//! no way to hand it a listener of our own, so a connection that sends half a request head (or
//! stays idle between keep-alive requests) would stay open for ever: about 1,100 of them used up
//! the file descriptors of a replica reached without a load balancer. The warden polices the
//! connections from the side instead. Once a second it lists this process's sockets connected
//! to the server's port (`/proc/self/fd`), and asks [`Peers`] (fed by the in-flight fairing)
//! whether each peer has a request in progress. A connection with none for `--header-timeout`,
//! or the longest-idle ones when there are more than `--max-connections`, is shut down: the
//! connection's task then sees the end of its input and closes it as if the client had.
//!
//! A connection whose response has not moved for `--send-timeout` (a client that asked and
//! then stopped reading, holding the response's buffers and its open file) is shut down too.
//!
//! A connection is shut down through a duplicate of its descriptor whose inode is checked
//! first, so a descriptor number reused by a new connection in between is never touched.
//! Requests in progress are never cut here: uploads have their own body timeout and cap.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// How often the connections are looked at: the precision of both limits.
const TICK: Duration = Duration::from_secs(1);

/// What the server knows of each peer's requests, by the peer's address (one connection each).
#[derive(Default)]
pub(crate) struct Peers {
    by_address: Mutex<HashMap<SocketAddr, PeerActivity>>,
}

struct PeerActivity {
    in_progress: u32,
    last_done: Instant,
    /// Set once a response of the connection has started to be sent.
    responding: Option<Arc<Progress>>,
}

/// When a response last handed bytes to its connection.
pub(crate) struct Progress {
    since: Instant,
    millis: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            millis: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Called for every piece of a response body that is sent.
    pub(crate) fn moved(&self) {
        let millis = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis
            .store(millis, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.millis.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Peers {
    pub(crate) fn request_started(&self, peer: SocketAddr) {
        let mut peers = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .entry(peer)
            .or_insert(PeerActivity {
                in_progress: 0,
                last_done: Instant::now(),
                responding: None,
            })
            .in_progress += 1;
    }

    /// A response of `peer`'s is about to be sent: what its body reports its progress to.
    pub(crate) fn response_started(&self, peer: SocketAddr) -> Arc<Progress> {
        let mut peers = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let progress = Arc::new(Progress::new());
        if let Some(activity) = peers.get_mut(&peer) {
            // Several streams of one connection: any of them moving keeps it alive.
            let shared = activity
                .responding
                .get_or_insert_with(|| progress.clone())
                .clone();
            shared.moved();
            return shared;
        }
        progress
    }

    /// When a response of `peer`'s in progress last moved, if one is being sent.
    fn response_moved(&self, peer: &SocketAddr) -> Option<Instant> {
        let peers = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let activity = peers.get(peer)?;
        if activity.in_progress == 0 {
            return None;
        }
        activity.responding.as_ref().map(|progress| progress.last())
    }

    pub(crate) fn request_done(&self, peer: SocketAddr) {
        let mut peers = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(activity) = peers.get_mut(&peer) {
            activity.in_progress = activity.in_progress.saturating_sub(1);
            activity.last_done = Instant::now();
            if activity.in_progress == 0 {
                activity.responding = None;
            }
        }
    }

    /// `None` while a request is in progress, else when the last one ended.
    fn idle_since(&self, peer: &SocketAddr) -> Option<Option<Instant>> {
        let peers = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(peer) {
            Some(activity) if activity.in_progress > 0 => None,
            Some(activity) => Some(Some(activity.last_done)),
            None => Some(None),
        }
    }

    /// Forgets the peers whose connections are gone.
    fn retain(&self, open: &HashSet<SocketAddr>) {
        let mut peers = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|peer, activity| activity.in_progress > 0 || open.contains(peer));
    }
}

/// Raises the soft limit on open files to the hard limit: the default soft limit (1,024 on most
/// systems) is far below what a server with thousands of connections and open downloads needs,
/// and the hard limit is what the administrator allowed.
pub(crate) fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let before = limit.rlim_cur;
        if before >= limit.rlim_max {
            return;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(
                "open files limit raised from {before} to {}",
                limit.rlim_max
            );
        } else {
            tracing::warn!(
                "cannot raise the open files limit from {before}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Starts policing the connections to `port`.
pub(crate) fn spawn(port: u16, limits: Limits, peers: Arc<Peers>) {
    if !cfg!(target_os = "linux") {
        tracing::warn!(
            "--header-timeout and --max-connections are enforced on Linux only: \
             put a proxy with timeouts in front of this server"
        );
        return;
    }
    rocket::tokio::spawn(async move {
        let mut first_seen: HashMap<u64, Instant> = HashMap::new();
        let mut every = rocket::tokio::time::interval(TICK);
        every.set_missed_tick_behavior(rocket::tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let peers = peers.clone();
            let seen = std::mem::take(&mut first_seen);
            match rocket::tokio::task::spawn_blocking(move || {
                police(port, limits, &peers, seen, Instant::now())
            })
            .await
            {
                Ok(seen) => first_seen = seen,
                Err(err) => tracing::error!("connection warden failed: {err}"),
            }
        }
    });
}

/// One round: closes what is over the limits; returns when each open connection was first seen.
fn police(
    port: u16,
    limits: Limits,
    peers: &Peers,
    mut first_seen: HashMap<u64, Instant>,
    now: Instant,
) -> HashMap<u64, Instant> {
    let connections = match sockets::connected_to(port) {
        Ok(connections) => connections,
        Err(err) => {
            tracing::warn!("cannot list connections: {err}");
            return first_seen;
        }
    };
    let inodes: HashSet<u64> = connections.iter().map(|c| c.inode).collect();
    first_seen.retain(|inode, _| inodes.contains(inode));
    let mut idle = Vec::new();
    for connection in &connections {
        let seen = *first_seen.entry(connection.inode).or_insert(now);
        if let Some(last_done) = peers.idle_since(&connection.peer) {
            let since = last_done.map_or(seen, |done| done.max(seen));
            idle.push((since, connection));
        }
    }
    let mut closed_stalled = 0;
    for connection in &connections {
        let stalled = peers
            .response_moved(&connection.peer)
            .is_some_and(|moved| now.saturating_duration_since(moved) >= limits.send_timeout);
        if stalled && sockets::shut_down(connection) {
            closed_stalled += 1;
        }
    }
    if closed_stalled > 0 {
        tracing::info!(
            "closed {closed_stalled} connection(s) whose response did not move for {:?} \
             (--send-timeout)",
            limits.send_timeout
        );
    }
    let open: HashSet<SocketAddr> = connections.iter().map(|c| c.peer).collect();
    peers.retain(&open);
    // Longest idle first: those go first when there are too many.
    idle.sort_by_key(|(since, _)| *since);
    let excess = connections
        .len()
        .saturating_sub(limits.max_connections as usize);
    let mut closed_over_limit = 0;
    let mut closed_idle = 0;
    for (index, (since, connection)) in idle.iter().enumerate() {
        let over_limit = index < excess;
        let timed_out = now.duration_since(*since) >= limits.header_timeout;
        if !(over_limit || timed_out) {
            continue;
        }
        // A request may have started since the look above.
        if peers.idle_since(&connection.peer).is_none() {
            continue;
        }
        if sockets::shut_down(connection) {
            if over_limit {
                closed_over_limit += 1;
            } else {
                closed_idle += 1;
            }
        }
    }
    if closed_idle > 0 {
        tracing::info!(
            "closed {closed_idle} connection(s) without a request for {:?} (--header-timeout)",
            limits.header_timeout
        );
    }
    if closed_over_limit > 0 {
        tracing::warn!(
            "closed {closed_over_limit} idle connection(s): {} open, --max-connections is {}",
            connections.len(),
            limits.max_connections
        );
    }
    first_seen
}

#[cfg(target_os = "linux")]
mod sockets {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;

    /// A client connection of this process.
    pub(super) struct Connection {
        pub(super) fd: RawFd,
        pub(super) inode: u64,
        pub(super) peer: SocketAddr,
    }

    /// Every connected TCP socket of this process whose local port is `port`.
    pub(super) fn connected_to(port: u16) -> std::io::Result<Vec<Connection>> {
        let mut connections = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let Ok(entry) = entry else { continue };
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            else {
                continue;
            };
            let local = address(fd, libc::getsockname);
            if local.map(|a| a.port()) != Some(port) {
                continue;
            }
            // The listening socket has no peer.
            if let Some(peer) = address(fd, libc::getpeername) {
                connections.push(Connection { fd, inode, peer });
            }
        }
        Ok(connections)
    }

    type AddressCall =
        unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

    fn address(fd: RawFd, call: AddressCall) -> Option<SocketAddr> {
        // SAFETY: sockaddr_storage is plain data, large enough for any address the call writes,
        // and its length is passed with it.
        unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if call(fd, (&raw mut storage).cast(), &mut len) != 0 {
                return None;
            }
            match i32::from(storage.ss_family) {
                libc::AF_INET => {
                    let v4: &libc::sockaddr_in = &*(&raw const storage).cast();
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                        u16::from_be(v4.sin_port),
                    )))
                }
                libc::AF_INET6 => {
                    let v6: &libc::sockaddr_in6 = &*(&raw const storage).cast();
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(v6.sin6_addr.s6_addr),
                        u16::from_be(v6.sin6_port),
                        v6.sin6_flowinfo,
                        v6.sin6_scope_id,
                    )))
                }
                _ => None,
            }
        }
    }

    /// Shuts the connection down if its descriptor still refers to the same socket.
    pub(super) fn shut_down(connection: &Connection) -> bool {
        // SAFETY: dup, fstat, shutdown and close act on the duplicate this function owns; the
        // original descriptor is never closed here.
        unsafe {
            let dup = libc::fcntl(connection.fd, libc::F_DUPFD_CLOEXEC, 0);
            if dup < 0 {
                return false;
            }
            let mut stat: libc::stat = std::mem::zeroed();
            let same = libc::fstat(dup, &mut stat) == 0 && stat.st_ino == connection.inode;
            let done = same && libc::shutdown(dup, libc::SHUT_RDWR) == 0;
            libc::close(dup);
            done
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sockets {
    use std::net::SocketAddr;

    pub(super) struct Connection {
        pub(super) inode: u64,
        pub(super) peer: SocketAddr,
    }

    pub(super) fn connected_to(_port: u16) -> std::io::Result<Vec<Connection>> {
        Ok(Vec::new())
    }

    pub(super) fn shut_down(_connection: &Connection) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn limits(header_timeout: Duration, max_connections: u32) -> Limits {
        Limits {
            max_concurrent_uploads: 1,
            header_timeout,
            body_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(60),
            min_upload_rate: 1,
            max_streamed_downloads: 1,
            max_connections,
        }
    }

    /// A server socket with `n` accepted connections, and the clients' ends.
    fn accepted(n: usize) -> (TcpListener, Vec<TcpStream>, Vec<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let served = (0..n).map(|_| listener.accept().unwrap().0).collect();
        (listener, clients, served)
    }

    fn is_closed(client: &mut TcpStream) -> bool {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut byte = [0u8; 1];
        matches!(client.read(&mut byte), Ok(0))
    }

    #[test]
    fn idle_connections_are_closed_after_the_timeout_and_busy_ones_never() {
        let (listener, mut clients, _served) = accepted(2);
        let port = listener.local_addr().unwrap().port();
        let peers = Peers::default();
        peers.request_started(clients[1].local_addr().unwrap());
        let start = Instant::now();
        let limits = limits(Duration::from_secs(30), 100);
        let seen = police(port, limits, &peers, HashMap::new(), start);
        assert_eq!(seen.len(), 2, "both connections are found");
        assert!(!is_closed(&mut clients[0]), "closed before its time");
        police(port, limits, &peers, seen, start + Duration::from_secs(31));
        assert!(is_closed(&mut clients[0]), "the idle connection stays open");
        assert!(
            !is_closed(&mut clients[1]),
            "a connection with a request in progress was closed"
        );
    }

    #[test]
    fn a_response_that_does_not_move_is_closed_after_the_send_timeout() {
        let (listener, mut clients, _served) = accepted(2);
        let port = listener.local_addr().unwrap().port();
        let peers = Peers::default();
        let moving = clients[0].local_addr().unwrap();
        let stalled = clients[1].local_addr().unwrap();
        let mut progress = Vec::new();
        for peer in [moving, stalled] {
            peers.request_started(peer);
            progress.push(peers.response_started(peer));
        }
        let start = Instant::now();
        let limits = limits(Duration::from_secs(30), 100);
        let seen = police(port, limits, &peers, HashMap::new(), start);
        std::thread::sleep(Duration::from_millis(20));
        progress[0].moved();
        // Just past the timeout for the stalled one, which last moved at `start` or before.
        let later = progress[0].last() + limits.send_timeout - Duration::from_millis(1);
        police(port, limits, &peers, seen, later);
        assert!(!is_closed(&mut clients[0]), "a moving response was cut");
        assert!(is_closed(&mut clients[1]), "a stalled response was kept");
    }

    #[test]
    fn past_the_cap_the_longest_idle_connections_go_first() {
        let (listener, mut clients, _served) = accepted(5);
        let port = listener.local_addr().unwrap().port();
        let peers = Peers::default();
        // Connections 3 and 4 end a request later than the others were first seen.
        let seen = police(
            port,
            limits(Duration::from_secs(30), 100),
            &peers,
            HashMap::new(),
            Instant::now(),
        );
        for client in &clients[3..] {
            peers.request_started(client.local_addr().unwrap());
            peers.request_done(client.local_addr().unwrap());
        }
        police(
            port,
            limits(Duration::from_secs(30), 2),
            &peers,
            seen,
            Instant::now(),
        );
        let closed: Vec<bool> = clients.iter_mut().map(is_closed).collect();
        assert_eq!(closed, [true, true, true, false, false]);
    }
}
