//! Every response names the replica that answered (`X-Wheelhouse-Replica`), so that a client
//! behind a load balancer can tell the replicas apart: `wheelhouse-deploy verify` downloads its
//! probe until every healthy target has answered, and an operator can tell which replica gave
//! an odd answer.

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Request, Response};

pub(crate) const HEADER: &str = "X-Wheelhouse-Replica";

pub(crate) struct ReplicaName(String);

impl ReplicaName {
    /// The host name and the process id: in a container the host name is the container's
    /// (one per task), and replicas run as processes on one host differ by their process id.
    pub(crate) fn of_this_process() -> Self {
        ReplicaName(format!("{}/{}", host_name(), std::process::id()))
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length, and gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[rocket::async_trait]
impl Fairing for ReplicaName {
    fn info(&self) -> Info {
        Info {
            name: "replica name",
            kind: Kind::Response,
        }
    }

    async fn on_response<'r>(&self, _: &'r Request<'_>, res: &mut Response<'r>) {
        res.set_header(Header::new(HEADER, self.0.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_holds_the_host_name_and_the_process_id() {
        let ReplicaName(name) = ReplicaName::of_this_process();
        let (host, pid) = name.rsplit_once('/').expect("host/pid");
        assert!(!host.is_empty() && host != "unknown", "{name}");
        assert_eq!(pid, std::process::id().to_string());
    }
}
