//! Counts requests until their response body has been sent (or dropped), so that after
//! SIGTERM the process exits as soon as the last one is done. Rocket alone stops accepting and
//! then waits out the whole grace period whenever any request was in flight at the signal,
//! which would make every rolling restart take the full grace.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use rocket::fairing::{Fairing, Info, Kind};
use rocket::tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use rocket::tokio::sync::Notify;
use rocket::{Data, Request, Response};

#[derive(Clone, Default)]
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    /// Which connections have a request in progress, for the connection warden.
    pub(crate) peers: Arc<super::warden::Peers>,
}

impl InFlight {
    /// Resolves once no request is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn ticket(&self, peer: Option<SocketAddr>) -> Ticket {
        Ticket {
            in_flight: self.clone(),
            peer,
        }
    }
}

/// Held by a response body; its drop is the end of the request.
struct Ticket {
    in_flight: InFlight,
    peer: Option<SocketAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            self.in_flight.peers.request_done(peer);
        }
        if self.in_flight.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.in_flight.idle.notify_waiters();
        }
    }
}

/// The original body, carrying the ticket until it is sent or dropped, and telling the warden
/// each time a piece of it is sent.
struct Tracked<'r> {
    body: rocket::response::Body<'r>,
    progress: Option<Arc<super::warden::Progress>>,
    _ticket: Ticket,
}

impl AsyncRead for Tracked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.body).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(progress)) = (&polled, &self.progress) {
            progress.moved();
        }
        polled
    }
}

/// Only ever given to Rocket with its size preset, so it is never asked to seek.
impl AsyncSeek for Tracked<'_> {
    fn start_seek(self: Pin<&mut Self>, _: std::io::SeekFrom) -> std::io::Result<()> {
        Err(std::io::Error::other("a tracked body is not seekable"))
    }
    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}

#[rocket::async_trait]
impl Fairing for InFlight {
    fn info(&self) -> Info {
        Info {
            name: "in-flight requests",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        self.count.fetch_add(1, Ordering::SeqCst);
        if let Some(peer) = req.remote() {
            self.peers.request_started(peer);
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let body = res.body_mut().take();
        let size = body.preset_size();
        // Setting a body resets its chunk size to Rocket's 4 KiB: keep the handler's (file
        // downloads ask for more; at 4 KiB a 100 MB download runs at about 110 MB/s).
        let chunk = body.max_chunk_size();
        let tracked = Tracked {
            body,
            progress: req.remote().map(|peer| self.peers.response_started(peer)),
            _ticket: self.ticket(req.remote()),
        };
        match size {
            Some(size) => res.set_sized_body(size, tracked),
            None => res.set_streamed_body(tracked),
        };
        res.set_max_chunk_size(chunk);
    }
}
