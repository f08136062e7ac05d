//! AWS SDK clients, built once per cold start from the standard configuration chain.
//!
//! `AWS_ENDPOINT_URL` (honoured by the chain) is what points every client at the local emulator;
//! nothing else differs between local and deployed runs.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::{
    Builder,
    tls::{self, rustls_provider::CryptoMode},
};

/// The three clients every function may need. Cheap to clone (each is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub kms: aws_sdk_kms::Client,
}

/// Loads the shared SDK configuration with a rustls + ring HTTPS client (one TLS stack, no
/// aws-lc build) — region, credentials and endpoint come from the environment.
pub async fn load_sdk_config() -> SdkConfig {
    config_loader().load().await
}

/// The standard configuration chain with our HTTP client; callers may override more (the local
/// runner sets the emulator's endpoint and dummy credentials).
pub fn config_loader() -> aws_config::ConfigLoader {
    let http_client = Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client)
}

impl AwsClients {
    /// Builds all three clients from one SDK configuration.
    pub fn new(config: &SdkConfig) -> Self {
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
        }
    }

    /// The same clients with one more SDK interceptor on each (tests and the bench count, time,
    /// record or fail requests this way); the interceptors they already have stay.
    pub fn with_interceptor(
        &self,
        interceptor: impl aws_smithy_runtime_api::client::interceptors::Intercept + Clone + 'static,
    ) -> Self {
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                self.dynamodb
                    .config()
                    .to_builder()
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                self.sqs
                    .config()
                    .to_builder()
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                self.kms
                    .config()
                    .to_builder()
                    .interceptor(interceptor)
                    .build(),
            ),
        }
    }

    /// Loads the environment's configuration and builds the clients.
    pub async fn from_env() -> Self {
        Self::new(&load_sdk_config().await)
    }
}
