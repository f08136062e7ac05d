//! localstripe (a stateful fake Stripe that sends signed webhooks) as a child process, for the
//! tests that drive Stripe the way a third party does: real API calls in, webhooks out.
//!
//! Started like the [`crate::emulator`]: installed into the project's `.venv` on first use
//! (`infra/bootstrap.sh localstripe`, pinned), bound to a free port by `infra/localstripe_server.py`,
//! and gone when its parent exits (it exits when its stdin pipe closes). Its state is in memory
//! only.

use crate::child::PythonServer;

/// A running localstripe; stopped when dropped.
pub struct LocalStripe {
    _server: PythonServer,
    /// `http://127.0.0.1:{port}`: the Stripe API base (`/v1/…`) and its `/_config/…`.
    pub url: String,
}

impl LocalStripe {
    /// Installs localstripe if needed, starts it on a free port and waits until it accepts
    /// requests.
    pub fn start() -> anyhow::Result<LocalStripe> {
        let server = PythonServer::start(
            "localstripe",
            "localstripe.server",
            "infra/localstripe_server.py",
            &["--host", "127.0.0.1", "--port", "0"],
        )?;
        Ok(LocalStripe {
            url: server.url.clone(),
            _server: server,
        })
    }
}
