//! The health endpoint: "Ok" while the replica can serve, 503 when it cannot, so that a load
//! balancer takes a stuck replica out instead of sending it traffic it will never answer.
//!
//! Answering from the async threads alone proved nothing: with the blocking pool exhausted every
//! route that touches the disk hung while the health check still said 200. So it runs a trivial
//! job on the blocking pool, and fails when that job does not start within a short deadline.
//!
//! With `--health-requires FILE`, that job also looks for FILE: a replica that lost its shared
//! volume would otherwise answer 200 and serve an empty directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rocket::http::Status;
use rocket::route::{Handler, Outcome};
use rocket::{Data, Request};

/// Well under a load balancer's health-check timeout (the appliance's is 5 s), well over what
/// a healthy pool takes (microseconds).
const BLOCKING_POOL_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub(crate) struct Health {
    /// `--health-requires`.
    pub(crate) requires: Option<PathBuf>,
}

#[rocket::async_trait]
impl Handler for Health {
    async fn handle<'r>(&self, req: &'r Request<'_>, _: Data<'r>) -> Outcome<'r> {
        let requires = self.requires.clone();
        let found = blocking_pool_runs(BLOCKING_POOL_DEADLINE, move || {
            requires.as_deref().is_none_or(|file| file.exists())
        })
        .await;
        match found {
            Some(true) => Outcome::from(req, "Ok"),
            Some(false) => {
                let file = self.requires.as_deref().unwrap_or(Path::new(""));
                tracing::error!(
                    "health: {} does not exist (--health-requires)",
                    file.display()
                );
                Outcome::from(
                    req,
                    (
                        Status::ServiceUnavailable,
                        format!(
                            "unhealthy: {} does not exist: the package directory is not the volume it should be\n",
                            file.display()
                        ),
                    ),
                )
            }
            None => {
                tracing::error!(
                    "health: the blocking pool did not run a job within {BLOCKING_POOL_DEADLINE:?}"
                );
                Outcome::from(
                    req,
                    (
                        Status::ServiceUnavailable,
                        "unhealthy: the file-serving threads are all busy\n".to_owned(),
                    ),
                )
            }
        }
    }
}

/// `job`'s result, if the blocking pool finishes it within `deadline`.
async fn blocking_pool_runs<T: Send + 'static>(
    deadline: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match rocket::tokio::time::timeout(deadline, rocket::tokio::task::spawn_blocking(job)).await {
        Ok(Ok(result)) => Some(result),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn blocking_pool_answers(deadline: Duration) -> bool {
        blocking_pool_runs(deadline, || ()).await.is_some()
    }

    #[test]
    fn an_exhausted_blocking_pool_is_reported() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let deadline = Duration::from_millis(200);
            assert!(blocking_pool_answers(deadline).await);
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let occupied = tokio::task::spawn_blocking(move || wait.recv());
            assert!(!blocking_pool_answers(deadline).await);
            release.send(()).unwrap();
            occupied.await.unwrap().unwrap();
            assert!(blocking_pool_answers(deadline).await);
        });
    }
}
