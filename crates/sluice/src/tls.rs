//! One TLS stack for the whole bundle: rustls with the `ring` provider.
//!
//! The AWS SDK client is built with `ring` explicitly (see [`crate::aws`]); `reqwest` (webhook
//! delivery, the local tools and tests) uses rustls' process-wide default provider, which must be
//! installed before the first client is built.

/// Installs `ring` as the process-wide rustls provider. Idempotent; call before building a
/// `reqwest::Client`.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
