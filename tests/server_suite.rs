//! The server's tests, in one binary: the HTTP surface in process (`server`), the real binary
//! with the real Python clients and hostile ones (`e2e`), and replicas sharing one directory
//! (`consistency`).

mod common;

#[path = "consistency.rs"]
mod consistency;
#[path = "e2e.rs"]
mod e2e;
#[path = "server.rs"]
mod server;
