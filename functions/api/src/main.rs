//! Lambda entry point of the API function: read config, build clients once, serve HTTP API
//! events and the reconciliation schedule (`sluice_api::lambda`).

use sluice::{Config, aws::AwsClients, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let state = sluice_api::AppState::new(config, AwsClients::from_env().await)?;
    sluice_api::lambda::run(state).await
}
