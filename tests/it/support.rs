//! Test harness: the shared emulator, a per-test stack, and in-process requests to the functions.

#![allow(dead_code)]

use std::sync::OnceLock;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use sluice::{Config, aws::AwsClients};
use sluice_local::{
    emulator::Emulator,
    iam,
    provision::Resources,
    server::{HttpFunctions, lambda_request},
};

static EMULATOR: OnceLock<Emulator> = OnceLock::new();

/// The emulator shared by every test of this binary.
pub fn emulator() -> &'static Emulator {
    EMULATOR.get_or_init(|| Emulator::start_on_free_port().expect("the moto emulator starts"))
}

/// A random lowercase name fragment.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(10)
        .map(char::from)
        .collect();
    format!("{prefix}-{}", suffix.to_ascii_lowercase())
}

/// One test's own resources on the shared emulator, and the functions configured for them.
pub struct Stack {
    pub aws: AwsClients,
    pub resources: Resources,
    pub config: Config,
    pub admin_key: String,
    pub stripe_secret: String,
    /// `aws` with each function's IAM recorder (`sluice_local::iam`): what the functions use,
    /// while the tests' own setup and inspection through `aws` are not attributed to any.
    function_aws: FunctionClients,
    /// Where [`Stack::relay_outbox`] stands in the table's stream.
    outbox_checkpoint: std::sync::Mutex<sluice_local::stream_poller::Checkpoint>,
}

struct FunctionClients {
    api: AwsClients,
    ingress: AwsClients,
    egress: AwsClients,
}

impl Stack {
    /// A fresh stack with the local defaults.
    pub async fn new() -> Stack {
        Self::with_settings(&[]).await
    }

    /// A fresh stack with extra settings (e.g. `("IDEMPOTENCY_REQUIRED", "true")`).
    pub async fn with_settings(extra: &[(&str, &str)]) -> Stack {
        let aws = AwsClients::new(&emulator().sdk_config().await);
        Self::with_clients(aws, extra).await
    }

    /// A fresh stack whose functions use the given clients (e.g. with counting interceptors).
    pub async fn with_clients(aws: AwsClients, extra: &[(&str, &str)]) -> Stack {
        let sluice_local::dev::LocalStack {
            resources,
            config,
            admin_key,
            stripe_secret,
        } = sluice_local::dev::LocalStack::provision(&aws, &unique("t"), extra)
            .await
            .expect("provisioning succeeds");
        let function_aws = FunctionClients {
            api: iam::tag(&aws, "api"),
            ingress: iam::tag(&aws, "stripe-ingress"),
            egress: iam::tag(&aws, "webhook-egress"),
        };
        Stack {
            function_aws,
            outbox_checkpoint: Default::default(),
            aws,
            resources,
            config,
            admin_key,
            stripe_secret,
        }
    }

    /// The API function's router.
    pub fn api(&self) -> Router {
        sluice_api::router(
            sluice_api::AppState::new(self.config.clone(), self.function_aws.api.clone()).unwrap(),
        )
    }

    /// The ingress function's router.
    pub fn ingress(&self) -> Router {
        stripe_ingress::router(
            stripe_ingress::IngressState::new(
                self.config.clone(),
                self.function_aws.ingress.clone(),
            )
            .unwrap(),
        )
    }

    /// Both HTTP functions behind the local API Gateway routing.
    pub fn functions(&self) -> HttpFunctions {
        HttpFunctions {
            ingress: self.ingress(),
            api: self.api(),
        }
    }

    /// The egress function's state.
    pub fn egress(&self) -> webhook_egress::EgressState {
        webhook_egress::EgressState::new(self.config.clone(), self.function_aws.egress.clone())
            .unwrap()
    }

    /// Sends a request through the local API Gateway routing to the functions.
    pub async fn send(&self, req: Req) -> Res {
        // Every answer is checked against docs/openapi.json (see tests/it/openapi.rs).
        let (method, path) = (req.method.clone(), req.path.clone());
        let mut builder = http::Request::builder().method(req.method).uri(req.path);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        let res = self
            .functions()
            .invoke(lambda_request(parts, req.body))
            .await;
        let (parts, body) = res.into_parts();
        let res = Res {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        crate::openapi::assert_valid(&method, &path, &res);
        res
    }

    /// Runs the outbox relay (the egress function fed from the table's stream, as Lambda's event
    /// source mapping feeds it) until the stream is drained, continuing from where the previous
    /// call stopped: what reaches the delivery queue after a commit.
    pub async fn relay_outbox(&self) -> sluice_local::stream_poller::Drained {
        let checkpoint = self.outbox_checkpoint.lock().unwrap().clone();
        let (drained, checkpoint) = self.relay_outbox_from(checkpoint).await;
        *self.outbox_checkpoint.lock().unwrap() = checkpoint;
        drained
    }

    /// The relay's checkpoint now (to restart a consumer from it).
    pub fn outbox_checkpoint(&self) -> sluice_local::stream_poller::Checkpoint {
        self.outbox_checkpoint.lock().unwrap().clone()
    }

    /// A relay started from `checkpoint` (as a restarted consumer), drained; its new checkpoint.
    pub async fn relay_outbox_from(
        &self,
        checkpoint: sluice_local::stream_poller::Checkpoint,
    ) -> (
        sluice_local::stream_poller::Drained,
        sluice_local::stream_poller::Checkpoint,
    ) {
        let stream_arn = self.resources.stream_arn.as_deref().expect("a stream");
        let mut poller = sluice_local::stream_poller::StreamPoller::new(
            &emulator().sdk_config().await,
            "webhook-egress",
            stream_arn,
        )
        .unwrap()
        .resume(checkpoint);
        let drained = poller.drain(&self.egress()).await.unwrap();
        (drained, poller.checkpoint().clone())
    }

    /// Every message on the delivery queue right now (received once, left in flight).
    pub async fn queued_messages(&self) -> Vec<sluice::fanout::DeliveryMessage> {
        let mut found = Vec::new();
        loop {
            let out = self
                .aws
                .sqs
                .receive_message()
                .queue_url(&self.resources.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .send()
                .await
                .unwrap();
            if out.messages().is_empty() {
                return found;
            }
            for m in out.messages() {
                found.push(sluice::fanout::DeliveryMessage::from_body(m.body().unwrap()).unwrap());
            }
        }
    }

    /// `POST /admin/tenants` → (tenant id, api key).
    pub async fn create_tenant(&self, name: &str) -> (String, String) {
        let res = self
            .send(
                Req::post("/admin/tenants")
                    .admin(&self.admin_key)
                    .json(&serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        let body = res.json();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["api_key"].as_str().unwrap().to_owned(),
        )
    }
}

/// A request to send.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    pub fn new(method: Method, path: &str) -> Req {
        Req {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
    pub fn get(path: &str) -> Req {
        Self::new(Method::GET, path)
    }
    pub fn post(path: &str) -> Req {
        Self::new(Method::POST, path)
    }
    pub fn patch(path: &str) -> Req {
        Self::new(Method::PATCH, path)
    }
    pub fn put(path: &str) -> Req {
        Self::new(Method::PUT, path)
    }
    pub fn delete(path: &str) -> Req {
        Self::new(Method::DELETE, path)
    }
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn bearer(self, key: &str) -> Req {
        self.header("authorization", &format!("Bearer {key}"))
    }
    pub fn admin(self, key: &str) -> Req {
        self.header("x-admin-key", key)
    }
    pub fn idempotency_key(self, key: &str) -> Req {
        self.header("idempotency-key", key)
    }
    pub fn json(mut self, body: &Value) -> Req {
        self.body = Bytes::from(serde_json::to_vec(body).unwrap());
        self.header("content-type", "application/json")
    }
    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }
}

/// A response received.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Res {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts a problem+json answer with `status`; returns its body.
    pub fn assert_problem(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some(sluice::error::PROBLEM_JSON),
            "{}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["status"], status);
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        body
    }
}

/// The item at (`pk`, `sk`) of the stack's table, read consistently (what a test checks was stored).
pub async fn get_item(stack: &Stack, pk: &str, sk: &str) -> Option<sluice::table::Item> {
    stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(sluice::table::key(pk, sk)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

/// A `reqwest` client for talking to the local runner and receivers over real sockets.
pub fn http_client() -> reqwest::Client {
    sluice::tls::install_crypto_provider();
    reqwest::Client::new()
}

fn operation_of(cfg: &aws_smithy_types::config_bag::ConfigBag) -> Option<(String, String)> {
    cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        .map(|m| (m.service().to_ascii_lowercase(), m.name().to_owned()))
}

/// Makes chosen AWS SDK calls fail: before they are sent, as if the service were unreachable,
/// or after the service applied them, as if their response were lost (a timeout, a reset).
#[derive(Clone, Debug, Default)]
pub struct FaultInjector(std::sync::Arc<std::sync::Mutex<Vec<FaultRule>>>);

/// Where a call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Before it is sent: the service never sees it.
    Unreachable,
    /// After the service answered: it applied the call, the SDK sees an error.
    ResponseLost,
}

/// (service, operation or any, calls left to fail, how).
type FaultRule = (String, Option<String>, usize, Fault);

impl FaultInjector {
    /// The next `times` calls of `service` (lowercase match) and, if given, `operation` fail.
    pub fn fail_next(&self, service: &str, operation: Option<&str>, times: usize) {
        self.push(service, operation, times, Fault::Unreachable);
    }
    /// The next `times` calls of `service` and, if given, `operation` reach the service (which
    /// applies them), then fail as if their response were lost.
    pub fn lose_next_responses(&self, service: &str, operation: Option<&str>, times: usize) {
        self.push(service, operation, times, Fault::ResponseLost);
    }
    fn push(&self, service: &str, operation: Option<&str>, times: usize, fault: Fault) {
        self.0.lock().unwrap().push((
            service.to_ascii_lowercase(),
            operation.map(String::from),
            times,
            fault,
        ));
    }
    /// Takes one failure of kind `fault` for the operation in `cfg`, if a rule has one left.
    fn take(&self, cfg: &aws_smithy_types::config_bag::ConfigBag, fault: Fault) -> Option<String> {
        let (service, op) = operation_of(cfg)?;
        let mut rules = self.0.lock().unwrap();
        let rule = rules.iter_mut().find(|rule| {
            rule.2 > 0
                && rule.3 == fault
                && rule.0 == service
                && rule.1.as_ref().is_none_or(|o| *o == op)
        })?;
        rule.2 -= 1;
        Some(format!("{service} {op}"))
    }
    /// Every call goes through again.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for FaultInjector {
    fn name(&self) -> &'static str {
        "FaultInjector"
    }
    // Once per execution, after the operation's metadata is in the config bag.
    fn read_before_serialization(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        match self.take(cfg, Fault::Unreachable) {
            Some(call) => Err(format!("injected fault: {call} unreachable").into()),
            None => Ok(()),
        }
    }
    // Once the response has arrived: the service has applied the call.
    fn read_after_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        match self.take(cfg, Fault::ResponseLost) {
            Some(call) => Err(format!("injected fault: {call} response lost").into()),
            None => Ok(()),
        }
    }
}

/// Clients for the shared emulator with a call counter and a fault injector on every client.
pub async fn instrumented_clients(
    counter: &sluice_local::counting::CallCounter,
    faults: &FaultInjector,
) -> AwsClients {
    AwsClients::new(&emulator().sdk_config().await)
        .with_interceptor(counter.clone())
        .with_interceptor(faults.clone())
}
