//! TLS termination: the certificate store and SNI resolver (hot: the folder is watched), and
//! development certificate generation, client-certificate verification (mTLS). Must not make
//! routing or authentication decisions.

pub mod client_auth;
pub mod dev;
pub mod probe;
pub mod store;
pub mod telemetry;

pub use store::{CertError, CertResolver, CertSet, CertStore};
