//! The webhook's certificate, reloaded when its files change (see [`quiver_tls`]).

pub use quiver_tls::{CertReloader, server_config};
