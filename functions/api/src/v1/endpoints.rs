//! Webhook endpoints: `/v1/endpoints[/{id}[/secret|/rotate-secret|/test|/recover]]`.
//!
//! The item (`TENANT#{tnt}` / `ENDPOINT#{ep}`), its attributes and typed id are
//! [`sluice::endpoints`]'; its sealed `secrets` are [`sluice::sealing`]'s. Responses never include
//! a secret except `/secret` and the answers that issue one (create, rotate), whose stored
//! idempotent copies are sealed.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use serde::{Deserialize, Serialize};
use sluice::{
    ApiError, ApiResult,
    auth::TenantId,
    clock,
    endpoints::{self, Endpoint, EndpointId, attr},
    idempotency::{CommitError, StoredResponse, commit_with_response},
    sealing::{self, SealContext, SealedEndpointSecret},
    ssrf::{self, UrlPolicy},
    table::{self, Condition, Item, ItemExt, UpdateBuilder, n, s},
};

use utoipa::ToSchema;

use super::{Lock, invalid, lock_ref};
use crate::{
    AppState,
    json_body::{JsonBody, OptionalJsonBody},
};

/// A rotated-out secret keeps signing beside the new one this long.
pub const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;
/// Secrets that may sign at once: the current one and two rotated out. Each active secret is
/// one KMS `Decrypt` per cold egress cache and one signature in every delivery's header, so
/// repeated rotations must not pile them up; a third rotation within 24 h waits (`409`) until
/// the oldest expires.
pub const MAX_ACTIVE_SECRETS: usize = 3;
const MAX_EVENT_TYPES: usize = 100;
const MAX_EVENT_TYPE_LEN: usize = 100;
const MAX_DESCRIPTION: usize = 500;

/// What `disabled_reason` says when the tenant disabled the endpoint.
const DISABLED_BY_TENANT: &str = "disabled by the tenant";

/// A webhook endpoint as the tenant sees it (never its secrets).
#[derive(Serialize, ToSchema)]
#[schema(as = Endpoint)]
pub struct EndpointOut {
    /// `ep_…`
    pub id: String,
    #[schema(example = "https://example.com/webhooks")]
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives; empty: every type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it is disabled (by the tenant, a `410 Gone`, or failing too long); `null` when enabled.
    pub disabled_reason: Option<String>,
    /// Epoch seconds of the first failure of the current streak; `null` when delivering fine.
    pub failing_since: Option<i64>,
    /// Epoch seconds.
    pub created_at: i64,
    /// Epoch seconds.
    pub updated_at: i64,
}

impl From<Endpoint> for EndpointOut {
    /// The tenant-visible view (the entity holds no secrets).
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id.into_string(),
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// The view of an item read back from the table; one without a valid id is corrupt (500).
fn view(item: &Item) -> ApiResult<EndpointOut> {
    Endpoint::from_item(item)
        .map(EndpointOut::from)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("malformed endpoint item")))
}

/// The answer of `POST /v1/endpoints`: the endpoint and its signing secret.
#[derive(Serialize, ToSchema)]
#[schema(as = EndpointCreated)]
pub struct EndpointCreatedOut {
    #[serde(flatten)]
    pub endpoint: EndpointOut,
    /// `whsec_…`: verifies the `webhook-signature` of its deliveries.
    pub secret: String,
}

/// The answer of `GET /v1/endpoints`.
#[derive(Serialize, ToSchema)]
pub struct EndpointListOut {
    pub data: Vec<EndpointOut>,
}

/// The answer of `GET /v1/endpoints/{id}/secret`.
#[derive(Serialize, ToSchema)]
pub struct EndpointSecretOut {
    /// `whsec_…`: the current (newest) signing secret.
    pub secret: String,
}

/// The answer of `POST /v1/endpoints/{id}/rotate-secret`.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecretOut {
    /// `ep_…`
    pub id: String,
    /// `whsec_…`: the new secret, signing first from now on.
    pub secret: String,
    /// Epoch seconds until which the previous secrets keep signing beside it.
    pub previous_secrets_expire_at: i64,
}

async fn validate_url(state: &AppState, raw: &str) -> ApiResult<String> {
    let policy = UrlPolicy::from_config(&state.config);
    ssrf::validate_endpoint_url(raw, &policy)
        .await
        .map(|url| url.to_string())
        .map_err(|e| invalid(e.to_string()))
}

fn validate_event_types(types: Vec<String>) -> ApiResult<Vec<String>> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(invalid(format!(
            "`event_types` may list at most {MAX_EVENT_TYPES} types"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        let t = t.trim().to_owned();
        if t.is_empty() || t.len() > MAX_EVENT_TYPE_LEN || t.chars().any(char::is_control) {
            return Err(invalid(format!(
                "each of `event_types` must be 1–{MAX_EVENT_TYPE_LEN} printable characters"
            )));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn validate_description(d: Option<String>) -> ApiResult<Option<String>> {
    let d = d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    if d.as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(invalid(format!(
            "`description` must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(d)
}

fn secrets_list(secrets: &[SealedEndpointSecret]) -> AttributeValue {
    AttributeValue::L(
        secrets
            .iter()
            .map(SealedEndpointSecret::to_attribute)
            .collect(),
    )
}

/// The id of a path; not an `ep_…` id: 404 without a request.
fn valid_id(id: &str) -> ApiResult<EndpointId> {
    EndpointId::parse(id).ok_or_else(|| ApiError::not_found("endpoint"))
}

async fn get_endpoint(state: &AppState, tenant_id: &str, id: &str) -> ApiResult<Item> {
    let id = valid_id(id)?;
    let out = state
        .aws
        .dynamodb
        .get_item()
        .table_name(state.table())
        .set_key(Some(endpoints::key(tenant_id, id.as_str())))
        .consistent_read(true)
        .send()
        .await?;
    out.item.ok_or_else(|| ApiError::not_found("endpoint"))
}

/// The body of `POST /v1/endpoints`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// `https` (or `http` with `EGRESS_ALLOW_HTTP`); private, loopback and metadata addresses
    /// are refused unless in `EGRESS_ALLOW_CIDRS`.
    #[schema(example = "https://example.com/webhooks")]
    url: String,
    /// Event types to receive (at most 100, each 1–100 printable characters); empty or absent:
    /// every type.
    #[serde(default)]
    event_types: Vec<String>,
    /// At most 500 characters.
    description: Option<String>,
}

/// `POST /v1/endpoints`: `201` with the id and the signing secret. The endpoint and the stored
/// answer commit in one transaction.
#[utoipa::path(
    post,
    path = "/v1/endpoints",
    tag = "endpoints",
    summary = "Register a webhook endpoint",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Created, with its signing secret", body = EndpointCreatedOut,
            headers(("Location" = String, description = "`/v1/endpoints/{id}`"))),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 422, description = "`url`, `event_types` or `description` is unacceptable; `detail` names it"),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    JsonBody(req): JsonBody<CreateEndpoint>,
) -> ApiResult<Response> {
    let url = validate_url(&state, &req.url).await?;
    let event_types = validate_event_types(req.event_types)?;
    let description = validate_description(req.description)?;

    let id = EndpointId::new();
    let now = clock::now_epoch();
    let secret = sealing::new_endpoint_secret();
    let sealed = SealedEndpointSecret {
        ciphertext: state
            .sealer()
            .seal_secret(SealContext::endpoint_secret(&tenant_id), &secret)
            .await?,
        created_at: now,
        expires_at: None,
    };
    let endpoint = Endpoint {
        id: id.clone(),
        url,
        description,
        event_types,
        enabled: true,
        disabled_reason: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    let mut item = endpoint.to_item(&tenant_id);
    item.insert(attr::SECRETS.into(), secrets_list(&[sealed]));
    item.insert(attr::SECRETS_VERSION.into(), n(1));
    let body = EndpointCreatedOut {
        endpoint: endpoint.into(),
        secret: secret.expose().to_owned(),
    };
    let response = StoredResponse::json(StatusCode::CREATED, &body)
        .with_location(format!("/v1/endpoints/{id}"))
        .sensitive();
    let items = vec![table::put(
        state.table(),
        item,
        Some(Condition::new("attribute_not_exists(pk)")),
    )];
    Ok(commit_with_response(&state.aws.dynamodb, items, lock_ref(&lock), response).await?)
}

/// `GET /v1/endpoints`: every endpoint of the tenant.
#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "endpoints",
    summary = "The tenant's webhook endpoints",
    responses((status = 200, description = "Every endpoint", body = EndpointListOut)),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
) -> ApiResult<Json<EndpointListOut>> {
    let items = table::query_prefix(
        &state.aws.dynamodb,
        state.table(),
        &table::tenant_pk(&tenant_id),
        &table::endpoint_sk(""),
    )
    .await?;
    Ok(Json(EndpointListOut {
        data: items.iter().map(view).collect::<ApiResult<_>>()?,
    }))
}

/// `GET /v1/endpoints/{id}`.
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    summary = "One webhook endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointOut),
        (status = 404, description = "No such endpoint for this tenant"),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    Ok(Json(view(&get_endpoint(&state, &tenant_id, &id).await?)?))
}

/// `GET /v1/endpoints/{id}/secret`: the current (newest) signing secret.
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}/secret",
    tag = "endpoints",
    summary = "The endpoint's current signing secret",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The newest secret", body = EndpointSecretOut),
        (status = 404, description = "No such endpoint for this tenant"),
    ),
    security(("bearer" = [])),
)]
pub async fn secret(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointSecretOut>> {
    let item = get_endpoint(&state, &tenant_id, &id).await?;
    let current = SealedEndpointSecret::list_from_item(&item)
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("endpoint {id} has no secret")))?;
    let secret = state
        .sealer()
        .open_secret(
            SealContext::endpoint_secret(&tenant_id),
            &current.ciphertext,
        )
        .await?;
    Ok(Json(EndpointSecretOut {
        secret: secret.expose().to_owned(),
    }))
}

/// The body of `PATCH /v1/endpoints/{id}`: only the fields present change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    /// As in `POST /v1/endpoints`.
    url: Option<String>,
    /// Replaces the list; empty: every type.
    event_types: Option<Vec<String>>,
    /// `true` re-enables it and clears its failure streak; `false` disables it.
    enabled: Option<bool>,
    /// An empty string removes it.
    description: Option<String>,
}

/// `PATCH /v1/endpoints/{id}`: re-enabling clears the failure streak.
#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    summary = "Change, disable or re-enable an endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    request_body(content = Option<UpdateEndpoint>, description = "Optional; an empty body changes nothing but `updated_at`"),
    responses(
        (status = 200, description = "The endpoint as changed", body = EndpointOut),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 404, description = "No such endpoint for this tenant"),
        (status = 422, description = "A field is unacceptable; `detail` names it"),
    ),
    security(("bearer" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<UpdateEndpoint>,
) -> ApiResult<Json<EndpointOut>> {
    let id = valid_id(&id)?;
    // Every attribute goes through a name placeholder (`url` is a DynamoDB reserved word).
    let mut u = UpdateBuilder::default();
    u.set(attr::UPDATED_AT, n(clock::now_epoch()))
        .condition("attribute_exists(pk)");
    if let Some(raw) = &req.url {
        u.set(attr::URL, s(validate_url(&state, raw).await?));
    }
    if let Some(types) = req.event_types {
        u.set(
            attr::EVENT_TYPES,
            endpoints::event_types_value(&validate_event_types(types)?),
        );
    }
    if let Some(d) = req.description {
        u.set_or_remove(attr::DESCRIPTION, validate_description(Some(d))?.map(s));
    }
    match req.enabled {
        Some(true) => {
            // A fresh start: the streak that disabled it no longer counts.
            u.set(attr::ENABLED, table::b(true))
                .remove(attr::FAILING_SINCE)
                .remove(attr::DISABLED_REASON);
        }
        Some(false) => {
            u.set(attr::ENABLED, table::b(false))
                .set(attr::DISABLED_REASON, s(DISABLED_BY_TENANT));
        }
        None => {}
    }
    let request = state
        .aws
        .dynamodb
        .update_item()
        .table_name(state.table())
        .set_key(Some(endpoints::key(&tenant_id, id.as_str())));
    let result = u
        .apply(request)
        .return_values(ReturnValue::AllNew)
        .send()
        .await;
    match result {
        Ok(out) => Ok(Json(view(&out.attributes.unwrap_or_default())?)),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Err(ApiError::not_found("endpoint"))
        }
        Err(err) => Err(err.into()),
    }
}

/// `DELETE /v1/endpoints/{id}`: `204`; the deletion and the stored answer commit together.
#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    summary = "Delete an endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint for this tenant"),
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
    lock: Lock,
) -> ApiResult<Response> {
    let id = valid_id(&id)?;
    let response = StoredResponse::empty(StatusCode::NO_CONTENT);
    let items = vec![table::delete(
        state.table(),
        endpoints::key(&tenant_id, id.as_str()),
        Some(Condition::new("attribute_exists(pk)")),
    )];
    match commit_with_response(&state.aws.dynamodb, items, lock_ref(&lock), response).await {
        Ok(res) => Ok(res),
        Err(CommitError::Cancelled(_)) => Err(ApiError::not_found("endpoint")),
        Err(err) => Err(err.into()),
    }
}

/// The secrets kept beside a new one when rotating at `now`: the active ones, each expiring
/// within the overlap at the latest (expired ones are dropped). `Err(t)` when the new one would
/// make more than [`MAX_ACTIVE_SECRETS`] active: `t` is when the oldest rotated-out one expires.
fn rotation_keeps(
    existing: Vec<SealedEndpointSecret>,
    now: i64,
) -> Result<Vec<SealedEndpointSecret>, i64> {
    let overlap_until = now + ROTATION_OVERLAP_SECS;
    let active: Vec<SealedEndpointSecret> = existing
        .into_iter()
        .filter(|old| old.is_active(now))
        .map(|mut old| {
            old.expires_at = Some(old.expires_at.unwrap_or(overlap_until).min(overlap_until));
            old
        })
        .collect();
    if active.len() >= MAX_ACTIVE_SECRETS {
        let oldest = active
            .iter()
            .filter_map(|s| s.expires_at)
            .min()
            .unwrap_or(overlap_until);
        return Err(oldest);
    }
    Ok(active)
}

/// `POST /v1/endpoints/{id}/rotate-secret`: a new secret signs first; the previous one keeps
/// signing beside it for 24 h. Secrets that already expired are dropped; at most
/// [`MAX_ACTIVE_SECRETS`] sign at once (`409` with `Retry-After` beyond).
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/rotate-secret",
    tag = "endpoints",
    summary = "Issue a new signing secret; the previous one keeps signing for 24 h",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The new secret", body = RotatedSecretOut),
        (status = 404, description = "No such endpoint for this tenant"),
        (status = 409, description = "Already 3 active secrets (`Retry-After`: when the oldest expires), or the endpoint changed concurrently"),
    ),
    security(("bearer" = [])),
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
    lock: Lock,
) -> ApiResult<Response> {
    let item = get_endpoint(&state, &tenant_id, &id).await?;
    let now = clock::now_epoch();
    let overlap_until = now + ROTATION_OVERLAP_SECS;
    // Decided before sealing: a refused rotation costs no KMS request.
    let kept = rotation_keeps(SealedEndpointSecret::list_from_item(&item), now).map_err(
        |oldest_expires_at| {
            ApiError::conflict(format!(
                "the endpoint already has {MAX_ACTIVE_SECRETS} active signing secrets (the limit); \
                 the oldest rotated-out one expires at {oldest_expires_at} (epoch seconds), \
                 rotate again after that"
            ))
            .with_retry_after(u32::try_from((oldest_expires_at - now).max(1)).unwrap_or(u32::MAX))
        },
    )?;
    let secret = sealing::new_endpoint_secret();
    let mut secrets = vec![SealedEndpointSecret {
        ciphertext: state
            .sealer()
            .seal_secret(SealContext::endpoint_secret(&tenant_id), &secret)
            .await?,
        created_at: now,
        expires_at: None,
    }];
    secrets.extend(kept);
    let mut update = UpdateBuilder::default();
    update.set(attr::SECRETS, secrets_list(&secrets));
    // Conditioned on the version read: a concurrent rotation makes this one fail (409) rather
    // than drop the secret the other one just issued.
    let seen = item.get_i64(attr::SECRETS_VERSION);
    update.set(attr::SECRETS_VERSION, n(seen.map_or(1, |v| v + 1)));
    update.set(attr::UPDATED_AT, n(now));
    let version = update.expr.name(attr::SECRETS_VERSION);
    let condition = match seen {
        Some(v) => format!("{version} = {}", update.expr.value(n(v))),
        None => format!("attribute_exists(pk) AND attribute_not_exists({version})"),
    };
    update.condition(condition);
    let body = RotatedSecretOut {
        id: id.clone(),
        secret: secret.expose().to_owned(),
        previous_secrets_expire_at: overlap_until,
    };
    let response = StoredResponse::json(StatusCode::OK, &body).sensitive();
    let items = vec![update.transact_item(state.table(), endpoints::key(&tenant_id, &id))];
    match commit_with_response(&state.aws.dynamodb, items, lock_ref(&lock), response).await {
        Ok(res) => Ok(res),
        Err(CommitError::Cancelled(_)) => Err(ApiError::conflict(
            "the endpoint changed (deleted or rotated concurrently); retry",
        )),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(created_at: i64, expires_at: Option<i64>) -> SealedEndpointSecret {
        SealedEndpointSecret {
            ciphertext: vec![created_at as u8],
            created_at,
            expires_at,
        }
    }

    #[test]
    fn a_rotation_keeps_the_active_secrets_within_the_overlap() {
        let now = 1_000_000;
        let kept = rotation_keeps(
            vec![
                secret(900, None),
                secret(800, Some(now + 10)),
                secret(700, Some(now - 1)),
            ],
            now,
        )
        .unwrap();
        assert_eq!(
            kept,
            vec![
                secret(900, Some(now + ROTATION_OVERLAP_SECS)),
                secret(800, Some(now + 10))
            ]
        );
    }

    #[test]
    fn a_rotation_beyond_the_active_limit_names_when_the_oldest_expires() {
        let now = 1_000_000;
        // GIVEN the current secret and two rotated out, still signing
        let existing = vec![
            secret(990, None),
            secret(980, Some(now + 5_000)),
            secret(970, Some(now + 100)),
        ];
        // THEN a fourth is refused until the oldest expires
        assert_eq!(rotation_keeps(existing.clone(), now), Err(now + 100));
        // … and accepted once it has
        assert_eq!(rotation_keeps(existing, now + 100).unwrap().len(), 2);
    }
}

/// Sends a `sluice.test` event to one endpoint of the tenant (the handler's and the portal's
/// code): one transaction — the event, its one delivery, a check that the endpoint is the
/// tenant's, and the idempotency completion — which the outbox relays. No read, no SQS call.
pub async fn send_test(
    state: &AppState,
    tenant_id: &str,
    endpoint_id: &str,
    lock: Option<&sluice::idempotency::IdempotencyLock>,
) -> ApiResult<Response> {
    if EndpointId::parse(endpoint_id).is_none() {
        return Err(ApiError::not_found("endpoint"));
    }
    let test = sluice::event_types::SluiceEvent::EndpointTest(
        sluice::event_types::EndpointTest::new(endpoint_id),
    );
    let publication = sluice::fanout::plan_publish_to(
        state.table(),
        tenant_id,
        test.event_type(),
        test.data(),
        endpoint_id,
    );
    let accepted = super::events::EventAccepted {
        id: publication.event.id.to_string(),
        endpoints: publication.endpoint_ids.clone(),
    };
    let response = StoredResponse::json(StatusCode::ACCEPTED, &accepted);
    commit_with_response(
        &state.aws.dynamodb,
        publication.into_items(),
        lock,
        response,
    )
    .await
    .map_err(|err| match err {
        CommitError::Cancelled(reasons)
            if reasons
                .get(sluice::fanout::ENDPOINT_CHECK_INDEX)
                .and_then(|r| r.code())
                == Some("ConditionalCheckFailed") =>
        {
            ApiError::not_found("endpoint")
        }
        // Otherwise only the new event id's condition: taken by a concurrent twin.
        CommitError::Cancelled(_) => ApiError::conflict("the event exists already"),
        other => other.into(),
    })
}

/// `POST /v1/endpoints/{id}/test`: `202 {id, endpoints}` — a `sluice.test` event to this
/// endpoint only, whatever its `event_types` (a disabled endpoint records it `endpoint_disabled`).
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/test",
    tag = "endpoints",
    summary = "Send a test event (`sluice.test`) to this endpoint only",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 202, description = "Stored and queued for this endpoint", body = super::events::EventAccepted),
        (status = 404, description = "No such endpoint for this tenant"),
    ),
    security(("bearer" = [])),
)]
pub async fn test(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
    lock: Lock,
) -> ApiResult<Response> {
    send_test(&state, &tenant_id, &id, lock_ref(&lock)).await
}

/// The body of `POST /v1/endpoints/{id}/recover`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// Replay deliveries of events created at or after this time (epoch seconds).
    #[schema(example = 1_767_225_600)]
    since: i64,
    /// `next_cursor` of the previous call, to go on where it stopped.
    cursor: Option<String>,
}

/// The answer of `POST /v1/endpoints/{id}/recover`.
#[derive(Serialize, ToSchema)]
pub struct RecoverOut {
    /// Deliveries queued again by this call.
    pub queued: usize,
    /// `false` when events remain to look at: call again with `next_cursor` (and the same
    /// `since`).
    pub done: bool,
    pub next_cursor: Option<String>,
}

/// Replays one page of the endpoint's failed deliveries since `since` (the handler's and the
/// portal's code). Reads: the endpoint (to answer `404` for another tenant's) together with one
/// page of events; then at most one transaction.
pub async fn recover_page(
    state: &AppState,
    tenant_id: &str,
    endpoint_id: &str,
    since: i64,
    cursor: Option<&str>,
) -> ApiResult<RecoverOut> {
    if !(0..=9_999_999_999).contains(&since) {
        return Err(invalid("`since` must be epoch seconds"));
    }
    // The endpoint's existence and the page are read together: one round trip.
    let (endpoint, recovered) = tokio::join!(get_endpoint(state, tenant_id, endpoint_id), async {
        if EndpointId::parse(endpoint_id).is_none() {
            return Ok(Ok(None));
        }
        let db = &state.aws.dynamodb;
        // Only read here; the replay below waits for the endpoint check.
        let filter = sluice::event_list::EventFilter {
            since: Some(since),
            endpoint_id: Some(endpoint_id.to_owned()),
            ..Default::default()
        };
        sluice::event_list::list(
            db,
            state.table(),
            tenant_id,
            &filter,
            sluice::event_list::RECOVER_PAGE,
            cursor,
        )
        .await
        .map(|page| page.map(Some))
    });
    endpoint?;
    let page = recovered?
        .map_err(|_| ApiError::bad_request("`cursor` is not one this recover handed out"))?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    let steps = sluice::event_list::recover_steps(endpoint_id, &page.events);
    if !steps.is_empty() {
        sluice::replay::replay_deliveries(&state.aws.dynamodb, state.table(), tenant_id, &steps)
            .await?;
    }
    Ok(RecoverOut {
        queued: steps.len(),
        done: page.next_cursor.is_none(),
        next_cursor: page.next_cursor,
    })
}

/// `POST /v1/endpoints/{id}/recover {since, cursor?}`: replays every delivery to this endpoint
/// that failed for good (`failed`, or `endpoint_disabled` while it was disabled) for events since
/// `since`, through the outbox. At most 99 events are looked at per call (one transaction); the
/// answer says how many deliveries were queued and where to go on.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/recover",
    tag = "endpoints",
    summary = "Replay every failed delivery of this endpoint since a time",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    request_body = Recover,
    responses(
        (status = 202, description = "This page's failed deliveries are queued again", body = RecoverOut),
        (status = 400, description = "The body is not JSON of this shape, or `cursor` is invalid"),
        (status = 404, description = "No such endpoint for this tenant"),
        (status = 409, description = "A delivery was replayed concurrently; retry (`Retry-After`)"),
        (status = 422, description = "`since` is not epoch seconds"),
    ),
    security(("bearer" = [])),
)]
pub async fn recover(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Recover>,
) -> ApiResult<(StatusCode, Json<RecoverOut>)> {
    let out = recover_page(&state, &tenant_id, &id, req.since, req.cursor.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}
