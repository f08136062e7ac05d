//! The OpenAPI 3.1 description of this API, generated from the handlers' own types (`utoipa`), and
//! the unauthenticated routes that publish it: `GET /openapi.json`, `GET /docs` (the reference
//! rendered as HTML by [`crate::docs`]) and `GET /docs/style.css`.
//!
//! `utoipa` derives the schemas (`ToSchema` on the request and `…Out` answer types) and the
//! operations (`#[utoipa::path]` on the handlers); [`document`] then adds, as a pure function of the
//! generated document, what utoipa cannot express or what is the same on every route: the
//! `Idempotency-Key` parameter and `Idempotent-Replayed` header of every write, the answers of the
//! authentication and idempotency layers (401, 400/409/413/422), the `400` of a path parameter
//! that does not decode, the retryable `500`, and the
//! problem+json body of every error answer. The committed `docs/openapi.json` is [`pretty`] of it;
//! a test fails when they differ.
//!
//! No AWS request: the document is built once per cold start, on first use.
//!
//! Every route of both HTTP functions is annotated: `/health`, `/v1/*`, `/admin/*`, and the
//! ingress function's `POST /webhooks/stripe` (its operation and answer type come from the
//! `stripe-ingress` crate, so the one document covers the one API Gateway). The integration
//! tests validate every answer they receive against it (`tests/it/openapi.rs`).
//!
//! [`webhooks`] adds the event-type catalog ([`sluice::event_types`]) as the document's
//! `webhooks`, with each payload's schema in `components.schemas`.

use std::sync::LazyLock;

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Map, Value, json};
use sluice::error::{PROBLEM_JSON, problem_type_uri};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::AppState;

/// The generated part of the document; [`document`] completes it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        version = env!("CARGO_PKG_VERSION"),
        description = "Billing and webhook plumbing for a SaaS backend: Stripe webhook ingress, an idempotent tenant API (`/v1`), an operator API (`/admin`) and signed webhook egress.\n\nErrors are RFC 9457 `application/problem+json` bodies; their `type` URIs are listed under `x-problem-types` and on `GET /docs`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers(
        (url = "/", description = "The deployment serving this document"),
        (url = "http://127.0.0.1:3000", description = "`make dev`"),
    ),
    paths(
        crate::health::health,
        crate::v1::account::show,
        crate::v1::account::usage,
        crate::portal::access::mint_own,
        crate::v1::account::usage_summary,
        crate::v1::account::ledger,
        crate::v1::endpoints::create,
        crate::v1::endpoints::list,
        crate::v1::endpoints::show,
        crate::v1::endpoints::update,
        crate::v1::endpoints::delete,
        crate::v1::endpoints::secret,
        crate::v1::endpoints::rotate_secret,
        crate::v1::endpoints::test,
        crate::v1::endpoints::recover,
        crate::v1::event_types::list,
        crate::v1::billing::create_checkout,
        crate::v1::billing::create_portal,
        crate::v1::events::create,
        crate::v1::events::list,
        crate::v1::events::show,
        crate::v1::events::replay,
        crate::v1::secrets::create,
        crate::v1::secrets::list,
        crate::v1::secrets::replace,
        crate::v1::secrets::delete,
        crate::admin::create_tenant,
        crate::admin::add_api_key,
        crate::portal::access::mint_for_tenant,
        crate::admin::revoke_api_key,
        crate::admin::secrets::rewrap,
        crate::admin::stats::window,
        crate::admin::stats::cleanup,
        crate::admin::stripe_events::list,
        crate::admin::stripe_events::show,
        crate::admin::stripe_events::retry,
        stripe_ingress::webhook,
        crate::admin::reconcile::run,
    ),
    components(schemas(sluice::error::Problem)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness of the dependencies and of Stripe ingress"),
        (name = "account", description = "The caller's tenant, credits and budget (`Authorization: Bearer sk_…`)"),
        (name = "billing", description = "Payments through Stripe Checkout and the Billing Portal"),
        (name = "events", description = "Outbound events to the tenant's webhook endpoints"),
        (name = "endpoints", description = "The tenant's webhook endpoints and their signing secrets"),
        (name = "secrets", description = "The tenant's provider API keys, sealed with KMS and never returned"),
        (name = "admin", description = "The operator API (`X-Admin-Key`)"),
        (name = "stripe", description = "Stripe webhook ingress (verified by `Stripe-Signature`; a separate function)"),
        (name = "webhooks", description = "What Sluice sends to the tenant's endpoints (`webhooks`; also `GET /v1/event-types` and docs/event-types.md)"),
    ),
)]
pub struct ApiDoc;

/// `bearer` (a tenant API key, for `/v1`) and `admin_key` (for `/admin`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A tenant API key (`sk_…`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Key",
                "The operator key (`SLUICE_ADMIN_KEY`)",
            ))),
        );
    }
}

/// One problem `type` the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemType {
    pub slug: &'static str,
    pub status: u16,
    /// Stable: the `title` of every answer of this type.
    pub title: &'static str,
    pub description: &'static str,
}

/// Every problem type the code answers with (`sluice::error::ApiError` and the callers that name
/// their own slug). A unit test ties each constructor and each `SignatureError` to an entry; the
/// integration tests reject an answered `type` missing here (it is the schema's `enum`).
pub const PROBLEM_TYPES: &[ProblemType] = &[
    ProblemType {
        slug: "bad-request",
        status: 400,
        title: "Bad request",
        description: "The request is malformed: a query parameter, the JSON body or a header. `detail` names the cause.",
    },
    ProblemType {
        slug: "unauthorized",
        status: 401,
        title: "Unauthorized",
        description: "Missing or wrong credentials: `Authorization: Bearer sk_…` under /v1, `X-Admin-Key` under /admin. Every unknown path under /v1 and /admin answers this first.",
    },
    ProblemType {
        slug: "insufficient-credits",
        status: 402,
        title: "Insufficient credits",
        description: "The credit balance is lower than the debit; nothing was debited.",
    },
    ProblemType {
        slug: "not-found",
        status: 404,
        title: "Not found",
        description: "No such route or resource; a resource of another tenant answers the same.",
    },
    ProblemType {
        slug: "method-not-allowed",
        status: 405,
        title: "Method not allowed",
        description: "The path exists, but not with this method.",
    },
    ProblemType {
        slug: "conflict",
        status: 409,
        title: "Conflict",
        description: "The request conflicts with the current state, or a request with the same `Idempotency-Key` is still in progress. With `Retry-After` when a retry will succeed.",
    },
    ProblemType {
        slug: "payload-too-large",
        status: 413,
        title: "Payload too large",
        description: "The body is over the route's limit.",
    },
    ProblemType {
        slug: "validation-error",
        status: 422,
        title: "Validation error",
        description: "The body is well-formed JSON, but a field is unacceptable; `detail` names it.",
    },
    ProblemType {
        slug: "idempotency-key-reused",
        status: 422,
        title: "Idempotency key reused",
        description: "This `Idempotency-Key` was used with a different request (method, path, query or body).",
    },
    ProblemType {
        slug: "unsupported-media-type",
        status: 415,
        title: "Unsupported media type",
        description: "The body's `content-type` is not accepted on this route.",
    },
    ProblemType {
        slug: "unprocessable-content",
        status: 422,
        title: "Unprocessable content",
        description: "The body does not have the shape the route expects; `detail` names the cause.",
    },
    ProblemType {
        slug: "unsealable",
        status: 422,
        title: "Value cannot be sealed",
        description: "The value could not be encrypted for storage (outside the key service's limits); nothing was stored.",
    },
    ProblemType {
        slug: "internal",
        status: 500,
        title: "Internal error",
        description: "A failure of Sluice or of AWS. Nothing was half-applied and the request is safe to retry (after `Retry-After`).",
    },
    ProblemType {
        slug: "missing-signature",
        status: 400,
        title: "Missing Stripe-Signature header",
        description: "`POST /webhooks/stripe` without a `Stripe-Signature` header.",
    },
    ProblemType {
        slug: "malformed-signature",
        status: 400,
        title: "Malformed Stripe-Signature header",
        description: "The `Stripe-Signature` header cannot be parsed.",
    },
    ProblemType {
        slug: "missing-v1-signature",
        status: 400,
        title: "No v1 signature",
        description: "The `Stripe-Signature` header carries no `v1` signature.",
    },
    ProblemType {
        slug: "invalid-signature",
        status: 400,
        title: "Invalid signature",
        description: "No `v1` signature matches any configured signing secret (`STRIPE_WEBHOOK_SECRETS`).",
    },
    ProblemType {
        slug: "signature-timestamp-out-of-tolerance",
        status: 400,
        title: "Signature timestamp outside the tolerance",
        description: "The signature's timestamp is further in the past or future than `STRIPE_TOLERANCE_SECS`.",
    },
    ProblemType {
        slug: "invalid-json",
        status: 400,
        title: "Body is not JSON",
        description: "A correctly signed Stripe webhook whose body is not JSON.",
    },
    ProblemType {
        slug: "not-a-stripe-event",
        status: 400,
        title: "Not a Stripe event",
        description: "A correctly signed JSON body that is not a Stripe event (`object`, `id`, `type`, `created`, `data`).",
    },
    ProblemType {
        slug: "stripe-refused",
        status: 422,
        title: "Refused by Stripe",
        description: "Stripe refused the request (e.g. an unknown price); `detail` carries Stripe's error code and request id. Nothing was created.",
    },
    ProblemType {
        slug: "stripe-payment-refused",
        status: 402,
        title: "Payment refused by Stripe",
        description: "Stripe refused a payment; `detail` carries Stripe's (decline) code and request id.",
    },
    ProblemType {
        slug: "stripe-unavailable",
        status: 502,
        title: "Stripe unavailable",
        description: "Stripe did not complete the request after retries, or refused the deployment's key; `detail` carries Stripe's request id. Safe to retry with the same `Idempotency-Key`.",
    },
    ProblemType {
        slug: "billing-not-configured",
        status: 503,
        title: "Billing not configured",
        description: "The deployment has no Stripe API key, so `/v1/billing/*` is off.",
    },
];

/// Methods whose requests take an `Idempotency-Key` (under /v1 and /admin).
const WRITE_METHODS: [&str; 4] = ["post", "put", "patch", "delete"];

/// The whole document, as served at `/openapi.json` and committed as `docs/openapi.json`.
pub fn document() -> Value {
    let generated = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    webhooks(complete(generated))
}

/// Adds the catalog of event types Sluice publishes ([`sluice::event_types::catalog`]) as the
/// document's `webhooks` (OpenAPI 3.1): one Path Item per type, whose `post` is the delivery an
/// endpoint receives — the envelope `{type, timestamp, data}` with the type's payload schema
/// (added to `components.schemas`) and the Standard Webhooks headers. Pure.
pub fn webhooks(mut doc: Value) -> Value {
    let components = &mut doc["components"];
    for (name, schema) in sluice::event_types::payload_schemas() {
        components["schemas"][name] = schema;
    }
    let header = |name: &str, description: &str, example: &str| {
        json!({
            "name": name,
            "in": "header",
            "required": true,
            "description": description,
            "schema": { "type": "string" },
            "example": example,
        })
    };
    components["parameters"]["webhook-id"] = header(
        "webhook-id",
        "The event's id (`msg_…`): the same on every retry and replay of the event, so a receiver can drop duplicates.",
        "msg_2Ki3Qn7yE5Lf9Tg1aB4cD6eF",
    );
    components["parameters"]["webhook-timestamp"] = header(
        "webhook-timestamp",
        "When this attempt was signed (Unix seconds); reject attempts too far from your clock.",
        "1764676800",
    );
    components["parameters"]["webhook-signature"] = header(
        "webhook-signature",
        "Space-separated `v1,{base64 HMAC-SHA256}` signatures of `{webhook-id}.{webhook-timestamp}.{body}`, one per active secret of the endpoint (two during a rotation); accept the delivery when one matches.",
        "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    );
    let params: Vec<Value> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|p| json!({ "$ref": format!("#/components/parameters/{p}") }))
        .collect();
    let mut hooks = Map::new();
    for e in sluice::event_types::catalog() {
        let envelope = json!({
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": { "type": "string", "const": e.name },
                "timestamp": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When Sluice created the event (RFC 3339, UTC)."
                },
                "data": { "$ref": format!("#/components/schemas/{}", e.payload) },
            },
        });
        let post = json!({
            "operationId": crate::docs::anchor(&format!("webhook {}", e.name)),
            "tags": ["webhooks"],
            "summary": e.name,
            "description": format!("{} Payload version {}.", e.description, e.version),
            "x-event-version": e.version,
            "parameters": params,
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": envelope } },
            },
            "responses": {
                "2XX": { "description": "Delivered: any 2xx acknowledges the event." },
                "410": { "description": "Gone: the endpoint is disabled; nothing more is sent to it until it is enabled again." },
                "default": { "description": "Any other answer, or none within `EGRESS_TIMEOUT_SECS`, is retried with backoff (`Retry-After` on 429 and 503 lengthens the delay)." },
            },
        });
        hooks.insert(e.name.to_owned(), json!({ "post": post }));
    }
    doc["webhooks"] = Value::Object(hooks);
    doc
}

/// Adds to a generated document what every route shares (see the module docs). Pure.
pub fn complete(mut doc: Value) -> Value {
    let problem_ref = json!({ "$ref": "#/components/schemas/Problem" });
    let components = doc["components"].as_object_mut().map(std::mem::take);
    let mut components = components.unwrap_or_default();
    components.insert(
        "parameters".into(),
        json!({
            "Idempotency-Key": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "Makes the request safe to retry: the first answer (2xx–4xx) is stored for `IDEMPOTENCY_TTL_DAYS` and replayed, byte for byte, to a retry with the same key. Scoped per tenant (and `admin`). `X-Idempotency-Key` is accepted too.",
                "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7E]+$" },
                "example": "job-42"
            }
        }),
    );
    components.insert(
        "headers".into(),
        json!({
            "Idempotent-Replayed": {
                "description": "`true` when this answer is the stored answer of an earlier request with the same `Idempotency-Key`.",
                "schema": { "type": "string", "enum": ["true"] }
            },
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": { "type": "integer", "minimum": 0 }
            }
        }),
    );
    if let Some(problem) = components
        .get_mut("schemas")
        .and_then(|s| s.get_mut("Problem"))
    {
        problem["description"] =
            json!("An RFC 9457 problem: every error answer, as `application/problem+json`.");
        problem["properties"]["type"] = json!({
            "type": "string",
            "format": "uri-reference",
            "description": "Identifies the problem type: a reference to its entry on `GET /docs` (see `x-problem-types`).",
            "enum": PROBLEM_TYPES.iter().map(|p| problem_type_uri(p.slug)).collect::<Vec<_>>(),
        });
        problem["properties"]["title"]["description"] = json!("Stable per `type`.");
        problem["properties"]["detail"]["description"] =
            json!("The cause, for a person; never internal text on a 5xx.");
    }
    doc["components"] = Value::Object(components);
    doc["x-problem-types"] = Value::Array(
        PROBLEM_TYPES
            .iter()
            .map(|p| {
                json!({
                    "type": problem_type_uri(p.slug),
                    "slug": p.slug,
                    "status": p.status,
                    "title": p.title,
                    "description": p.description,
                })
            })
            .collect(),
    );

    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        let guarded = path.starts_with("/v1/") || path.starts_with("/admin/");
        for (method, op) in item.iter_mut() {
            // utoipa names operations after the handler (`show` twice); ids must be unique.
            op["operationId"] = json!(crate::docs::anchor(&format!("{method} {path}")));
            let write = guarded && WRITE_METHODS.contains(&method.as_str());
            complete_operation(op, guarded, write, path.contains('{'), &problem_ref);
        }
    }
    doc
}

fn complete_operation(
    op: &mut Value,
    guarded: bool,
    write: bool,
    path_params: bool,
    problem_ref: &Value,
) {
    let responses = op["responses"].as_object_mut().map(std::mem::take);
    let mut responses = responses.unwrap_or_default();
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status)
            .or_insert_with(|| json!({ "description": description }));
    };
    if guarded {
        add("401", "Missing or invalid credentials");
    }
    if path_params {
        // axum's `Path` refuses a segment that does not decode (e.g. `%FF`, not UTF-8).
        add("400", "A path parameter does not decode");
    }
    if write {
        add("400", "The `Idempotency-Key` is invalid");
        add(
            "409",
            "A request with this `Idempotency-Key` is still in progress (`Retry-After`)",
        );
        add(
            "422",
            "This `Idempotency-Key` was used with a different request",
        );
        // The idempotency layer reads a keyed write's body (to fingerprint it) up to its limit,
        // and handlers read theirs up to axum's: any write can be refused as too large.
        add("413", "The body is over the limit");
    }
    add(
        "500",
        "Failure of Sluice or AWS; nothing half-applied, safe to retry (`Retry-After`)",
    );
    for (status, response) in responses.iter_mut() {
        let code: u16 = status.parse().unwrap_or(0);
        if code >= 400 && response.get("content").is_none() {
            response["content"] = json!({ PROBLEM_JSON: { "schema": problem_ref } });
        }
        if code == 409 || code >= 500 {
            response["headers"]["Retry-After"] =
                json!({ "$ref": "#/components/headers/Retry-After" });
        }
        // Answers of 5xx are never stored, so never replayed.
        if write && (200..500).contains(&code) {
            response["headers"]["Idempotent-Replayed"] =
                json!({ "$ref": "#/components/headers/Idempotent-Replayed" });
        }
    }
    op["responses"] = Value::Object(responses);
    if write {
        let params = op["parameters"].as_array_mut().map(std::mem::take);
        let mut params = params.unwrap_or_default();
        params.push(json!({ "$ref": "#/components/parameters/Idempotency-Key" }));
        op["parameters"] = Value::Array(params);
    }
}

/// The document as committed: pretty, keys sorted at every level, one final newline.
pub fn pretty(doc: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut text = serde_json::to_string_pretty(&sorted(doc)).unwrap_or_default();
    text.push('\n');
    text
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| pretty(&document()));
static DOCS_PAGE: LazyLock<String> = LazyLock::new(|| crate::docs::render(&document()));

/// The page's policy: everything from this origin only, no inline style or script, no framing.
pub const DOCS_CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn with_type(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

async fn openapi_json() -> Response {
    with_type(DOCUMENT.as_str(), "application/json")
}

async fn docs_page() -> Response {
    let mut res = with_type(DOCS_PAGE.as_str(), "text/html; charset=utf-8");
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    res
}

async fn docs_style() -> Response {
    with_type(crate::docs::STYLE_CSS, "text/css; charset=utf-8")
}

/// `GET /openapi.json`, `GET /docs`, `GET /docs/style.css`: public, no AWS request.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .route("/docs/style.css", get(docs_style))
}

#[cfg(test)]
mod tests {
    use sluice::{ApiError, stripe::signature::SignatureError};

    use super::*;

    fn documented(err: ApiError) -> bool {
        match err {
            ApiError::Client {
                status,
                slug,
                title,
                ..
            } => PROBLEM_TYPES.contains(&ProblemType {
                slug,
                status: status.as_u16(),
                title,
                description: PROBLEM_TYPES
                    .iter()
                    .find(|p| p.slug == slug)
                    .map_or("", |p| p.description),
            }),
            ApiError::Internal(_) => PROBLEM_TYPES.iter().any(|p| p.slug == "internal"),
        }
    }

    #[test]
    fn every_problem_the_code_builds_is_documented_with_its_status_and_title() {
        let errors = [
            ApiError::bad_request("x"),
            ApiError::unauthorized("x"),
            ApiError::payment_required("x"),
            ApiError::not_found("x"),
            ApiError::method_not_allowed(),
            ApiError::conflict("x"),
            ApiError::payload_too_large("x"),
            ApiError::invalid_field("x"),
            ApiError::unprocessable("idempotency-key-reused", "Idempotency key reused", "x"),
            ApiError::internal(anyhow::anyhow!("x")),
            sluice::stripe::event::decode(b"not json").unwrap_err(),
            sluice::stripe::event::decode(b"{}").unwrap_err(),
        ];
        for err in errors {
            let shown = format!("{err}");
            assert!(documented(err), "undocumented problem: {shown}");
        }
        for sig in [
            SignatureError::MissingHeader,
            SignatureError::Malformed("x"),
            SignatureError::NoV1Signature,
            SignatureError::NoMatch,
            SignatureError::TooOld(1, 1),
            SignatureError::InFuture(1, 1),
        ] {
            let shown = sig.to_string();
            assert!(documented(sig.into()), "undocumented problem: {shown}");
        }
    }

    #[test]
    fn slugs_are_unique_and_usable_as_anchors() {
        for (i, p) in PROBLEM_TYPES.iter().enumerate() {
            assert!(
                p.slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                p.slug
            );
            assert!(PROBLEM_TYPES[i + 1..].iter().all(|q| q.slug != p.slug));
        }
    }

    #[test]
    fn writes_take_an_idempotency_key_and_errors_are_problems() {
        let doc = document();
        let replay = &doc["paths"]["/v1/events/{id}/replay"]["post"];
        assert!(
            replay["parameters"]
                .as_array()
                .unwrap()
                .contains(&json!({ "$ref": "#/components/parameters/Idempotency-Key" }))
        );
        assert!(replay["responses"]["202"]["headers"]["Idempotent-Replayed"].is_object());
        assert!(replay["responses"]["500"]["headers"]["Idempotent-Replayed"].is_null());
        for status in ["400", "401", "404", "409", "413", "422", "500"] {
            assert_eq!(
                replay["responses"][status]["content"][PROBLEM_JSON]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{status}"
            );
        }
        let health = &doc["paths"]["/health"]["get"];
        assert!(health["responses"]["401"].is_null(), "/health is public");
        assert!(health["parameters"].is_null());
        let show = &doc["paths"]["/v1/events/{id}"]["get"];
        assert!(
            show["responses"]["400"].is_object(),
            "a path that does not decode"
        );
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["paths"]["/v1/account"]["get"]["operationId"],
            "get-v1-account"
        );
    }

    #[test]
    fn pretty_sorts_keys_at_every_level() {
        let text = pretty(&json!({ "b": { "d": 1, "c": [ { "f": 1, "e": 2 } ] }, "a": 0 }));
        let order: Vec<usize> = ["\"a\"", "\"b\"", "\"c\"", "\"e\"", "\"f\"", "\"d\""]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(order.is_sorted(), "{text}");
        assert!(text.ends_with("}\n"));
    }
}
