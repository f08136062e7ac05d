//! Lambda entry point of the egress function: read config, build clients once, run. One function
//! serves two event sources (the delivery queue and the table's stream): [`webhook_egress::handle_any`].

use lambda_runtime::{LambdaEvent, service_fn};
use sluice::{Config, aws::AwsClients, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let state = webhook_egress::EgressState::new(config, AwsClients::from_env().await)?;
    let state = &state;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, lambda_runtime::Error>(webhook_egress::handle_any(state, event).await?)
        },
    ))
    .await
}
