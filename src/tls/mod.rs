//! TLS termination: the certificate store and SNI resolver (hot: the folder is watched),
//! development certificate generation, client-certificate verification (mTLS), handshake
//! telemetry, and OCSP request building and response verification (`ocsp`) under the stapler
//! (`stapler`), and automatic certificates over ACME (`acme`). Must not make routing or
//! authentication decisions.

pub mod acme;
pub mod client_auth;
pub mod dev;
pub mod ocsp;
pub mod probe;
pub mod stapler;
pub mod store;
pub mod telemetry;

pub use store::{CertError, CertResolver, CertSet, CertStore};
