//! moto's server as a child process: the local AWS (DynamoDB, SQS, KMS).
//!
//! The child watches its stdin and exits when the pipe closes, so it dies with its parent even if
//! the parent is killed — no emulator is ever left running after a test binary or the runner.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::{Context, bail};
use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

use crate::repo_root;

/// A running emulator; stopped when dropped.
pub struct Emulator {
    child: Child,
    // Held open: closing it tells the emulator to exit.
    _stdin: ChildStdin,
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
}

impl Emulator {
    /// Installs moto into the project's `.venv` if needed, starts it on `port` and waits until it
    /// accepts requests.
    pub fn start(port: u16) -> anyhow::Result<Emulator> {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        let installed = Command::new(&python)
            .args(["-c", "import moto.server"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let status = Command::new(root.join("infra/bootstrap.sh"))
                .arg("moto")
                .status()
                .context("running infra/bootstrap.sh moto")?;
            if !status.success() {
                bail!("infra/bootstrap.sh moto failed: {status}");
            }
        }
        let mut child = Command::new(&python)
            .arg(root.join("infra/emulator.py"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--exit-on-stdin-eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdin = child.stdin.take().expect("stdin piped");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped")).read_line(&mut ready)?;
        if !ready.starts_with("ready") {
            let _ = child.kill();
            bail!("the emulator did not start on port {port} (is the port in use?)");
        }
        Ok(Emulator {
            child,
            _stdin: stdin,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Starts an emulator on a free port (tests: one emulator per test binary).
    pub fn start_on_free_port() -> anyhow::Result<Emulator> {
        Self::start(free_port()?)
    }

    /// SDK configuration pointing at this emulator, with dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }
}

/// SDK configuration for an emulator at `endpoint` (the same chain as in Lambda, only the endpoint,
/// region and credentials are set here).
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    sluice::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "sluice-local",
        ))
        .load()
        .await
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
