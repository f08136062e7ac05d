//! localstripe (a stateful fake Stripe that sends signed webhooks) as a child process, for the
//! tests that drive Stripe the way a third party does: real API calls in, webhooks out.
//!
//! Started like the [`crate::emulator`]: installed into the project's `.venv` on first use
//! (`infra/bootstrap.sh localstripe`, pinned), bound to a free port by `infra/localstripe_server.py`,
//! and gone when its parent exits (it exits when its stdin pipe closes). Its state is in memory
//! only.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::{Context, bail};

use crate::repo_root;

/// A running localstripe; stopped when dropped.
pub struct LocalStripe {
    child: Child,
    // Held open: closing it tells localstripe to exit.
    _stdin: ChildStdin,
    /// `http://127.0.0.1:{port}`: the Stripe API base (`/v1/…`) and its `/_config/…`.
    pub url: String,
}

impl LocalStripe {
    /// Installs localstripe if needed, starts it on a free port and waits until it accepts
    /// requests.
    pub fn start() -> anyhow::Result<LocalStripe> {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        let installed = Command::new(&python)
            .args(["-c", "import localstripe.server"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let status = Command::new(root.join("infra/bootstrap.sh"))
                .arg("localstripe")
                .status()
                .context("running infra/bootstrap.sh localstripe")?;
            if !status.success() {
                bail!("infra/bootstrap.sh localstripe failed: {status}");
            }
        }
        let mut child = Command::new(&python)
            .arg(root.join("infra/localstripe_server.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdin = child.stdin.take().expect("stdin piped");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped")).read_line(&mut ready)?;
        let Some(url) = ready.trim().strip_prefix("ready ") else {
            let _ = child.kill();
            bail!("localstripe did not start: {ready:?}");
        };
        Ok(LocalStripe {
            url: url.to_owned(),
            child,
            _stdin: stdin,
        })
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
