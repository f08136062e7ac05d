//! The tenant portal (`/portal…`): server-rendered HTML pages where a tenant sees its balance,
//! budget, ledger, endpoints, events and provider keys, served by the API function.
//!
//! - **Access** ([`access`]): a one-time link minted through the API opens a session cookie
//!   (`HttpOnly; SameSite=Strict; Path=/portal`, `Secure` unless the request is local http).
//!   Every portal request costs one `GetItem` of the session before anything else.
//! - **One code path with the API**: a page reads, and a form writes, by calling the `/v1`
//!   router in-process ([`PortalApi`]) with the session's tenant in place of an API key and the
//!   form's hidden `Idempotency-Key`. Validation, idempotency (a double click or a resubmitted
//!   form replays the first answer) and problem types are therefore exactly the API's, and a
//!   session can only ever address its own tenant's partition. A refusal is shown as the
//!   problem's `title` and `detail`, never as a raw body.
//! - **Browser security**: state-changing requests (every `POST`) must carry an `Origin` equal
//!   to the portal's own origin ([`own_origin`]; `null` with `Sec-Fetch-Site: same-origin`, see
//!   [`origin_allowed`]); every answer carries a CSP
//!   (`default-src 'self'; frame-ancestors {PORTAL_FRAME_ANCESTORS or 'none'}; form-action
//!   'self'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and
//!   `Cache-Control: no-store`. Style and the one small script (local time zones) are embedded
//!   and served from `/portal/assets/`.
//! - **Which origin is "own"** (for minted links and the `Origin` check): `PORTAL_BASE_URL` when
//!   set; otherwise the domain API Gateway reports in the Lambda request context (set by API
//!   Gateway, not by the client, so a forged `Host` header cannot redirect a link); otherwise,
//!   only for a loopback `Host` (`make dev`, tests), `http://{host}`. Any other request has no
//!   own origin: links cannot be minted and `POST`s are refused.

use axum::{
    Extension, Router,
    body::Body,
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::Value;
use sluice::auth::TenantId;
use tower::ServiceExt;

use crate::AppState;

pub mod access;
pub mod events;
pub mod html;
pub mod pages;

/// The session cookie's name.
pub const COOKIE: &str = "sluice_portal";

/// The portal's routes (merged into the API's router). `api` is the `/v1` router without its
/// authentication layer (see the module docs).
pub fn routes(state: AppState, api: Router) -> Router<AppState> {
    Router::new()
        .route("/portal", get(pages::overview))
        .route("/portal/login", get(pages::login))
        .route("/portal/logout", post(pages::logout))
        .route("/portal/ledger", get(pages::ledger))
        .route(
            "/portal/endpoints",
            get(pages::endpoints).post(pages::create_endpoint),
        )
        .route(
            "/portal/endpoints/{id}",
            get(pages::endpoint).post(pages::update_endpoint),
        )
        .route(
            "/portal/endpoints/{id}/{action}",
            post(pages::endpoint_action),
        )
        .route("/portal/events", get(events::list))
        .route("/portal/events/recover", post(events::recover))
        .route("/portal/events/{id}", get(events::show))
        .route("/portal/events/{id}/replay", post(events::replay))
        .route("/portal/keys", get(pages::keys).post(pages::add_key))
        .route("/portal/keys/{provider}/{action}", post(pages::key_action))
        .route("/portal/assets/style.css", get(html::style))
        .route("/portal/assets/tz.js", get(html::script))
        .layer(Extension(PortalApi(api)))
        .layer(middleware::from_fn_with_state(state, security_headers))
}

/// The headers of every portal answer (see the module docs).
async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp(state.config.portal.frame_ancestors.as_deref())).unwrap_or_else(
            |_| {
                HeaderValue::from_static(
                    "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
                )
            },
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The portal's content security policy. Pure.
pub fn csp(frame_ancestors: Option<&str>) -> String {
    format!(
        "default-src 'self'; frame-ancestors {}; form-action 'self'",
        frame_ancestors.unwrap_or("'none'")
    )
}

/// A `Host` (or domain) that is a plain DNS name or IP literal with an optional port: nothing
/// that could carry a path, user info or a second header.
fn plain_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// `localhost`, `127.x.x.x` or `[::1]`, with an optional port.
pub fn is_loopback_authority(host: &str) -> bool {
    if !plain_authority(host) {
        return false;
    }
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        host.split(':').next().unwrap_or_default()
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The portal's own origin (see the module docs). Pure.
pub fn own_origin(
    configured: Option<&str>,
    gateway_domain: Option<&str>,
    host: Option<&str>,
) -> Option<String> {
    if let Some(origin) = configured {
        return Some(origin.to_owned());
    }
    if let Some(domain) = gateway_domain.filter(|d| plain_authority(d)) {
        return Some(format!("https://{domain}"));
    }
    host.filter(|h| is_loopback_authority(h))
        .map(|h| format!("http://{h}"))
}

/// Local plain http (`make dev`, tests): no API Gateway in front and a loopback `Host`. Only then
/// is the cookie sent without `Secure`. Pure.
pub fn is_local_http(gateway_domain: Option<&str>, host: Option<&str>) -> bool {
    gateway_domain.is_none() && host.is_some_and(is_loopback_authority)
}

fn gateway_domain(extensions: &axum::http::Extensions) -> Option<String> {
    match lambda_http::RequestExt::request_context_ref(extensions)? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => ctx.domain_name.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn host_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok())
}

/// The own origin of a request to this function.
pub fn public_origin(state: &AppState, parts: &Parts) -> Option<String> {
    own_origin(
        state.config.portal.base_url.as_deref(),
        gateway_domain(&parts.extensions).as_deref(),
        host_header(&parts.headers),
    )
}

/// Whether a request is local plain http (see [`is_local_http`]).
pub fn local_http(parts: &Parts) -> bool {
    is_local_http(
        gateway_domain(&parts.extensions).as_deref(),
        host_header(&parts.headers),
    )
}

/// The value of the session cookie in a request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value of a session (`max_age` 0 clears it). Pure.
pub fn set_cookie(value: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Max-Age={max_age_secs}; Path=/portal; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A signed-in tenant (the session cookie checked against its item).
pub struct Session {
    pub tenant_id: String,
    /// The cookie's value (to sign out).
    pub cookie: String,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(cookie) = cookie_value(&parts.headers).map(str::to_owned) else {
            return Err(html::signed_out(
                "You are not signed in. Open a new portal link from your provider.",
            ));
        };
        match access::session_tenant(state, &cookie).await {
            Ok(Some(tenant_id)) => Ok(Session { tenant_id, cookie }),
            Ok(None) => Err(html::signed_out(
                "Your session has ended. Open a new portal link from your provider.",
            )),
            Err(err) => Err(html::failure(err)),
        }
    }
}

/// A state-changing request whose `Origin` is the portal's own (refused with `403` otherwise).
pub struct SameOrigin;

impl FromRequestParts<AppState> for SameOrigin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let header_str =
            |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let allowed = origin_allowed(
            header_str(header::ORIGIN),
            header_str(header::HeaderName::from_static("sec-fetch-site")),
            public_origin(state, parts).as_deref(),
        );
        match allowed {
            true => Ok(SameOrigin),
            false => Err(html::page_with_status(
                StatusCode::FORBIDDEN,
                "Refused",
                None,
                &html::problem_box(
                    "Cross-origin request refused",
                    "This form was not sent from the portal's own pages.",
                ),
            )),
        }
    }
}

/// Whether a `POST` comes from the portal's own pages. Pure.
///
/// The `Origin` must be `own`. One exception, forced by `Referrer-Policy: no-referrer`: under
/// that policy browsers send `Origin: null` on a form `POST`, even to the page's own origin. Such
/// a request passes only with `Sec-Fetch-Site: same-origin`, a header page scripts cannot set
/// (a forged cross-site form carries `cross-site`, and its browser also withholds the
/// `SameSite=Strict` cookie). A non-browser client can send anything, but it has no victim's
/// cookie to abuse.
pub fn origin_allowed(
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    own: Option<&str>,
) -> bool {
    match (origin, own) {
        (_, None) | (None, _) => false,
        (Some("null"), Some(_)) => sec_fetch_site == Some("same-origin"),
        (Some(origin), Some(own)) => origin == own,
    }
}

/// The `/v1` router without authentication, called in-process with the session's tenant.
#[derive(Clone)]
pub struct PortalApi(Router);

/// A refusal from the API as the portal shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
}

impl PortalApi {
    /// Calls `{method} /v1{path}` as `tenant_id` (with `idempotency_key` and a JSON body when
    /// given): the JSON answer (`null` when empty), or the problem it answered.
    pub async fn call(
        &self,
        tenant_id: &str,
        method: Method,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, Shown> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key);
        }
        let body = match body {
            Some(value) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(value).unwrap_or_default())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).map_err(|_| Shown {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request".into(),
            detail: "the address is not valid".into(),
        })?;
        req.extensions_mut().insert(TenantId(tenant_id.to_owned()));
        let res = self
            .0
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 4 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(shown(status, &value))
        }
    }
}

/// What the portal shows of an error answer: the problem's `title` and `detail` (a 5xx's are
/// already generic), never the raw body. Pure.
pub fn shown(status: StatusCode, body: &Value) -> Shown {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    Shown {
        status,
        title: text("title").unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("Request failed")
                .to_owned()
        }),
        detail: text("detail").unwrap_or_else(|| "the request could not be completed".into()),
    }
}

impl IntoResponse for Shown {
    fn into_response(self) -> Response {
        html::page_with_status(
            self.status,
            &self.title,
            None,
            &html::problem_box(&self.title, &self.detail),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_origin_never_comes_from_a_forged_host() {
        assert_eq!(
            own_origin(
                Some("https://portal.example.com"),
                Some("x.execute-api"),
                None
            ),
            Some("https://portal.example.com".into())
        );
        assert_eq!(
            own_origin(
                None,
                Some("abc.execute-api.eu-west-1.amazonaws.com"),
                Some("evil.example")
            ),
            Some("https://abc.execute-api.eu-west-1.amazonaws.com".into())
        );
        assert_eq!(
            own_origin(None, None, Some("127.0.0.1:3000")),
            Some("http://127.0.0.1:3000".into())
        );
        assert_eq!(
            own_origin(None, None, Some("localhost:3000")),
            Some("http://localhost:3000".into())
        );
        assert_eq!(
            own_origin(None, None, Some("[::1]:80")),
            Some("http://[::1]:80".into())
        );
        for forged in [
            "evil.example",
            "127.0.0.1.evil.example",
            "127.0.0.1@evil",
            "localhost/x",
            "",
        ] {
            assert_eq!(own_origin(None, None, Some(forged)), None, "{forged}");
        }
        assert_eq!(own_origin(None, None, None), None);
    }

    #[test]
    fn the_gateway_domain_is_read_from_the_lambda_request_context() {
        let mut ctx =
            lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext::default();
        ctx.domain_name = Some("abc.execute-api.eu-west-1.amazonaws.com".into());
        let mut ext = axum::http::Extensions::new();
        ext.insert(lambda_http::request::RequestContext::ApiGatewayV2(ctx));
        assert_eq!(
            gateway_domain(&ext).as_deref(),
            Some("abc.execute-api.eu-west-1.amazonaws.com")
        );
        assert_eq!(gateway_domain(&axum::http::Extensions::new()), None);
    }

    #[test]
    fn only_local_plain_http_gets_a_cookie_without_secure() {
        assert!(is_local_http(None, Some("127.0.0.1:3000")));
        assert!(!is_local_http(
            Some("api.example.com"),
            Some("127.0.0.1:3000")
        ));
        assert!(!is_local_http(None, Some("api.example.com")));
        assert!(!is_local_http(None, None));
        let c = set_cookie("v", 60, true);
        for part in [
            "sluice_portal=v",
            "Max-Age=60",
            "Path=/portal",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!set_cookie("v", 60, false).contains("Secure"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sluice_portal=xyz; b=2"),
        );
        assert_eq!(cookie_value(&h), Some("xyz"));
        assert_eq!(cookie_value(&HeaderMap::new()), None);
    }

    #[test]
    fn a_post_must_come_from_the_portals_own_pages() {
        let own = Some("http://127.0.0.1:3000");
        assert!(origin_allowed(Some("http://127.0.0.1:3000"), None, own));
        assert!(origin_allowed(Some("null"), Some("same-origin"), own));
        assert!(!origin_allowed(Some("null"), Some("cross-site"), own));
        assert!(!origin_allowed(Some("null"), None, own));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            Some("same-origin"),
            own
        ));
        assert!(!origin_allowed(None, Some("same-origin"), own));
        assert!(!origin_allowed(Some("http://127.0.0.1:3000"), None, None));
    }

    #[test]
    fn the_csp_names_the_configured_ancestors() {
        assert_eq!(
            csp(None),
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
        );
        assert!(
            csp(Some("https://app.example.com"))
                .contains("frame-ancestors https://app.example.com;")
        );
    }

    #[test]
    fn a_refusal_shows_title_and_detail_only() {
        let s = shown(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({"type": "/docs#problem-x", "title": "Invalid field", "detail": "`url` is bad", "status": 422}),
        );
        assert_eq!(
            (s.title.as_str(), s.detail.as_str()),
            ("Invalid field", "`url` is bad")
        );
        let s = shown(StatusCode::BAD_GATEWAY, &Value::Null);
        assert_eq!(s.title, "Bad Gateway");
    }
}
