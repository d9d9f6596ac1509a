//! Portcullis: a security-hardening edge gateway on Pingora.
//!
//! `app` assembles the gateway from a static `Config` and a policy folder; `decide` holds the
//! request's decisions and `proxy` adapts them to Pingora (docs/architecture.md). `main.rs` is a
//! thin CLI over [`serve`] and [`check`].

#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backends;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod config;
pub mod connections;
pub mod decide;
pub mod dryrun;
pub mod env;
pub mod fetch;
pub mod files;
pub mod handles;
pub mod http;
pub mod limits;
pub mod observability;
pub mod policy;
pub mod posture;
pub mod proxy;
pub mod redact;
pub mod sessions;
pub mod shared;
pub mod tls;
pub mod upstreams;
pub mod watch;

pub use app::checks::posture;
pub use app::{ensure_dev_certs, serve, StartError};
pub use cli::check::{check, CheckReport};
pub use handles::Shared;
pub use tls::{install_crypto_provider, install_crypto_provider_for};
