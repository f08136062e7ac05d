//! moto's server as a child process: the local AWS (DynamoDB, SQS, KMS).
//!
//! The child watches its stdin and exits when the pipe closes, so it dies with its parent even if
//! the parent is killed — no emulator is ever left running after a test binary or the runner.

use std::net::TcpListener;

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

use crate::child::PythonServer;

/// A running emulator; stopped when dropped.
pub struct Emulator {
    _server: PythonServer,
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
}

impl Emulator {
    /// Installs moto into the project's `.venv` if needed, starts it on `port` and waits until it
    /// accepts requests.
    pub fn start(port: u16) -> anyhow::Result<Emulator> {
        Self::start_with_args(port, &[])
    }

    /// [`Emulator::start`] with more of `infra/emulator.py`'s options (e.g. `--latency …`).
    pub fn start_with_args(port: u16, extra: &[&str]) -> anyhow::Result<Emulator> {
        let port = port.to_string();
        let mut args = vec!["--host", "127.0.0.1", "--port", &port];
        args.extend_from_slice(extra);
        let server = PythonServer::start("moto", "moto.server", "infra/emulator.py", &args)?;
        Ok(Emulator {
            endpoint: server.url.clone(),
            _server: server,
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
