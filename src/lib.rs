//! wheelhouse: a private Python package index.
//!
//! - [`names`]: project names and distribution filenames, validated when built.
//! - [`digest`]: the digests uploads carry and links advertise.
//! - [`index`]: the package store on a shared directory; no HTTP.
//! - [`auth`]: htpasswd and environment credentials, with a cache for bcrypt.
//! - [`config`]: the command line, checked in one place.
//! - [`server`]: Rocket routes and guards.
//! - [`healthcheck`]: the probe behind `wheelhouse healthcheck`.
//! - [`deploy`]: `wheelhouse-deploy`, the AWS appliance as one CloudFormation stack.

#[macro_use]
extern crate rocket;

pub mod auth;
pub mod config;
#[cfg(feature = "deploy")]
pub mod deploy;
pub mod digest;
pub mod healthcheck;
pub mod index;
pub mod names;
pub mod server;
