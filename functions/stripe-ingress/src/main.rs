//! Lambda entry point of the Stripe ingress function: read config, build clients once, serve.

use sluice::{Config, aws::AwsClients, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let state = stripe_ingress::IngressState::new(config, AwsClients::from_env().await)?;
    lambda_http::run(stripe_ingress::router(state)).await
}
