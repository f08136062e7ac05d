//! Counts the AWS requests the functions make, by service and operation, with an SDK interceptor
//! — how tests and `make bench` check figures like "a duplicate Stripe event costs one DynamoDB
//! request".

use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{Intercept, context::BeforeTransmitInterceptorContextRef},
        orchestrator::Metadata,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::ConfigBag;
use sluice::aws::AwsClients;

/// Records every request sent (retries included), as `(service, operation)`.
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// DynamoDB, SQS and KMS clients that report to this counter.
    pub fn clients(&self, sdk: &SdkConfig) -> AwsClients {
        AwsClients::new(sdk).with_interceptor(self.clone())
    }

    /// Every `(service, operation)` sent since the last reset, in order.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }

    /// Operations sent to one service (`"DynamoDB"`, `"SQS"`, `"KMS"`), in order.
    pub fn operations(&self, service: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(s, _)| s.eq_ignore_ascii_case(service))
            .map(|(_, op)| op)
            .collect()
    }

    /// How many requests went to one service.
    pub fn count(&self, service: &str) -> usize {
        self.operations(service).len()
    }

    /// Forgets what was counted so far.
    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            self.calls
                .lock()
                .unwrap()
                .push((meta.service().to_owned(), meta.name().to_owned()));
        }
        Ok(())
    }
}
