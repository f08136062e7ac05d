//! Lambda entry point of the egress function: read config, build clients once, run.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use sluice::{Config, aws::AwsClients, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let state = webhook_egress::EgressState::new(config, AwsClients::from_env().await)?;
    let state = &state;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(webhook_egress::handle_invocation(state, event).await)
    }))
    .await
}
