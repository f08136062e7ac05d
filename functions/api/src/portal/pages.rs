//! The portal's pages and forms. Each reads and writes through [`PortalApi`] (the `/v1`
//! handlers, as the session's tenant): see the module docs of [`super`].
//!
//! A successful form that shows something once (a new endpoint's or a rotated secret) answers
//! the page directly; others redirect (`303`) to the page, with a fixed notice named in the
//! query (`?done=…`: never text from the request). A refusal renders the page again with the
//! problem's `title`/`detail` and the problem's status.

use std::fmt::Write;

use axum::{
    Extension,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use serde_json::{Value, json};
use sluice::event_types;

use super::{
    PortalApi, SameOrigin, Session, Shown, access,
    html::{self, esc, idempotency_field, money, notice, ok_page, problem_box, time},
};
use crate::AppState;

/// Ledger entries per page.
const LEDGER_PAGE: u32 = 20;

/// A form body (`application/x-www-form-urlencoded`), with repeated names kept (checkboxes).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every non-blank value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    }

    fn key(&self) -> Option<&str> {
        self.get("idempotency_key")
    }
}

/// The event types an endpoint form selected: the catalog's checkboxes plus the free-form
/// `other_types` (comma-separated: the tenant's own types sent with `POST /v1/events`). Pure.
pub fn selected_types(form: &Form) -> Vec<String> {
    let mut types = form.all("event_types");
    if let Some(other) = form.get("other_types") {
        types.extend(
            other
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    types
}

/// A path segment taken from the portal's URL, safe to put into an API path (ids and provider
/// names): anything else cannot name a resource, so it is not found. Pure.
pub fn segment(raw: &str) -> Option<&str> {
    (!raw.is_empty()
        && raw.len() <= 128
        && raw != "."
        && raw != ".."
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
    .then_some(raw)
}

pub(super) fn not_found(what: &str) -> Response {
    Shown {
        status: StatusCode::NOT_FOUND,
        title: "Not found".into(),
        detail: format!("no such {what}"),
    }
    .into_response()
}

pub(super) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// The fixed notices of `?done=…`.
pub(super) fn done_notice(done: Option<&String>) -> String {
    let text = match done.map(String::as_str) {
        Some("updated") => "Saved.",
        Some("enabled") => "The endpoint is enabled.",
        Some("disabled") => {
            "The endpoint is disabled: nothing is delivered to it until you enable it."
        }
        Some("deleted") => "The endpoint is deleted.",
        Some("key-saved") => "The key is stored (sealed); only its hint is shown.",
        Some("key-deleted") => "The key is deleted.",
        Some("tested") => "A test event is on its way; it appears under Events.",
        Some("replayed") => "Queued again: a new attempt follows shortly.",
        Some("recovered") => "Every failed delivery since that time is queued again.",
        _ => return String::new(),
    };
    notice(text)
}

pub(super) type Q = Query<std::collections::HashMap<String, String>>;

// ---------------------------------------------------------------------------------------------
// Access

/// `GET /portal/login?token=…`: exchanges a link's token for a session cookie, then moves on to
/// `/portal` so the token leaves the address bar.
///
/// The move is a same-origin `<meta http-equiv=refresh>` page rather than a `303`: a link opened
/// from another site (the SaaS's app, an e-mail) makes a cross-site navigation, and browsers
/// withhold `SameSite=Strict` cookies along a redirect chain that started cross-site; a fresh
/// navigation from this page is same-site, so the new cookie is sent.
pub async fn login(State(state): State<AppState>, parts: Parts, Query(q): Q) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or_default();
    let tenant = match access::consume_token(&state, token).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => {
            return html::signed_out(
                "This portal link is not valid: it was already used, has expired or was never \
                 issued. Ask your provider for a new link.",
            );
        }
        Err(err) => return html::failure(err),
    };
    let (value, _) = match access::start_session(&state, &tenant).await {
        Ok(started) => started,
        Err(err) => return html::failure(err),
    };
    let cookie = super::set_cookie(
        &value,
        state.config.portal.session_ttl.as_secs(),
        !super::local_http(&parts),
    );
    let body = "<p>You are signed in. <a href=\"/portal\">Continue to the portal</a>.</p>";
    // Only the <meta> differs from a normal page: insert it into the head.
    let page = html::page("Signing in", None, body).replacen(
        "<meta charset=\"utf-8\">",
        "<meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url=/portal\">",
        1,
    );
    let mut res = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /portal/logout`: deletes the session and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    _origin: SameOrigin,
    session: Session,
    parts: Parts,
) -> Response {
    if let Err(err) = access::end_session(&state, &session.cookie).await {
        return html::failure(err);
    }
    let mut res = html::signed_out("You are signed out. Open a new portal link to come back.");
    *res.status_mut() = StatusCode::OK;
    if let Ok(v) = HeaderValue::from_str(&super::set_cookie("", 0, !super::local_http(&parts))) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

// ---------------------------------------------------------------------------------------------
// Overview

pub(super) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(super) fn i64_at(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// The budget used this month as an SVG bar with marks at 80 % and 100 %. Pure.
pub fn budget_bar(used: i64, limit: i64) -> String {
    const W: f64 = 300.0;
    // The bar spans 0–120 % of the limit, so usage beyond it stays visible.
    let x = |fraction: f64| (fraction.clamp(0.0, 1.2) / 1.2 * W).round();
    let fraction = if limit > 0 {
        used as f64 / limit as f64
    } else {
        0.0
    };
    let class = if fraction >= 1.0 {
        "exceeded"
    } else if fraction >= 0.8 {
        "warning"
    } else {
        "ok"
    };
    format!(
        "<svg class=\"budget\" viewBox=\"0 0 {W} 34\" role=\"img\" aria-label=\"{pct:.0} % of the monthly budget used\">\
         <rect class=\"track\" x=\"0\" y=\"4\" width=\"{W}\" height=\"14\" rx=\"3\"/>\
         <rect class=\"fill {class}\" x=\"0\" y=\"4\" width=\"{fill}\" height=\"14\" rx=\"3\"/>\
         <line class=\"mark\" x1=\"{m80}\" x2=\"{m80}\" y1=\"0\" y2=\"22\"/>\
         <line class=\"mark\" x1=\"{m100}\" x2=\"{m100}\" y1=\"0\" y2=\"22\"/>\
         <text x=\"{m80}\" y=\"33\" text-anchor=\"middle\">80 %</text>\
         <text x=\"{m100}\" y=\"33\" text-anchor=\"middle\">100 %</text></svg>",
        pct = fraction * 100.0,
        fill = x(fraction),
        m80 = x(0.8),
        m100 = x(1.0),
    )
}

/// `GET /portal`: balance, budget, subscription.
pub async fn overview(Extension(api): Extension<PortalApi>, session: Session) -> Response {
    let account = match api
        .call(&session.tenant_id, Method::GET, "/account", None, None)
        .await
    {
        Ok(a) => a,
        Err(shown) => return shown.into_response(),
    };
    let currency = str_at(&account, "/credits/currency");
    let mut body = String::new();
    let _ = write!(
        body,
        "<p class=\"lead\">{} <span class=\"muted\">({})</span></p><div class=\"cards\">",
        esc(str_at(&account, "/tenant/name")),
        esc(str_at(&account, "/tenant/id"))
    );
    let balance = i64_at(&account, "/credits/balance_minor").unwrap_or(0);
    let _ = write!(
        body,
        "<section class=\"card\" aria-labelledby=\"balance-h\"><h2 id=\"balance-h\">Credit balance</h2>\
         <p class=\"big\" id=\"balance\">{}</p>{}</section>",
        money(balance, currency),
        if balance <= 0 {
            "<p class=\"muted\">No credits yet: buy credits through your provider's billing page; \
             they appear here once the payment succeeds.</p>"
        } else {
            ""
        }
    );
    let used = i64_at(&account, "/budget/used_this_month_minor").unwrap_or(0);
    body.push_str(
        "<section class=\"card\" aria-labelledby=\"budget-h\"><h2 id=\"budget-h\">Budget this month</h2>",
    );
    match i64_at(&account, "/budget/monthly_limit_minor") {
        Some(limit) => {
            let _ = write!(
                body,
                "<p class=\"big\">{} <span class=\"muted\">of {}</span></p>{}<p>Status: <strong class=\"status-{status}\">{status}</strong> \
                 <span class=\"muted\">(a notification at 80 % and at 100 %)</span></p>",
                money(used, currency),
                money(limit, currency),
                budget_bar(used, limit),
                status = esc(str_at(&account, "/budget/status")),
            );
        }
        None => {
            let _ = write!(
                body,
                "<p class=\"big\">{}</p><p class=\"muted\">No monthly budget is set, so no budget \
                 alerts are sent. Your provider sets it.</p>",
                money(used, currency)
            );
        }
    }
    body.push_str("</section>");
    body.push_str(
        "<section class=\"card\" aria-labelledby=\"sub-h\"><h2 id=\"sub-h\">Subscription</h2>",
    );
    match account.get("subscription").filter(|s| !s.is_null()) {
        Some(sub) => {
            let _ = write!(body, "<p class=\"big\">{}</p>", esc(str_at(sub, "/status")));
            if let Some(end) = i64_at(sub, "/current_period_end") {
                let cancels = sub
                    .get("cancel_at_period_end")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let _ = write!(
                    body,
                    "<p>{} {}</p>",
                    if cancels { "Ends on" } else { "Renews on" },
                    time(end)
                );
            }
        }
        None => body.push_str(
            "<p class=\"big\">None</p><p class=\"muted\">No subscription yet: subscribe through \
             your provider's billing page.</p>",
        ),
    }
    body.push_str("</section></div>");
    body.push_str(&usage_chart_section(&api, &session.tenant_id).await);
    ok_page("Overview", "/portal", &body)
}

/// One day of the usage summary: (`YYYY-MM-DD`, usage, credits) in minor units.
pub type Day = (String, i64, i64);

/// A bar chart of daily usage and credits (server-side SVG, no script), with the figures in a
/// table beneath for screen readers and exact values. Pure.
pub fn usage_chart(days: &[Day], currency: &str) -> String {
    const W: i64 = 600;
    const H: i64 = 150;
    const TOP: i64 = 10;
    const BOTTOM: i64 = 20;
    let max = days
        .iter()
        .map(|(_, u, c)| (*u).max(*c))
        .max()
        .unwrap_or(0)
        .max(1);
    let n = days.len().max(1) as i64;
    let slot = W / n;
    let bar = (slot / 2 - 1).max(1);
    let plot = H - TOP - BOTTOM;
    let height = |v: i64| (v.max(0) as f64 / max as f64 * plot as f64).round() as i64;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"chart-h\">\
         <line class=\"axis\" x1=\"0\" x2=\"{W}\" y1=\"{base}\" y2=\"{base}\"/>",
        base = H - BOTTOM
    );
    for (i, (date, usage, credits)) in days.iter().enumerate() {
        let x = i as i64 * slot;
        let (hu, hc) = (height(*usage), height(*credits));
        let _ = write!(
            svg,
            "<g><title>{date}: usage {u}, credits {c}</title>\
             <rect class=\"usage\" x=\"{x}\" y=\"{yu}\" width=\"{bar}\" height=\"{hu}\"/>\
             <rect class=\"credits\" x=\"{xc}\" y=\"{yc}\" width=\"{bar}\" height=\"{hc}\"/></g>",
            date = esc(date),
            u = money(*usage, currency),
            c = money(*credits, currency),
            yu = H - BOTTOM - hu,
            xc = x + bar + 1,
            yc = H - BOTTOM - hc,
        );
    }
    if let (Some((first, ..)), Some((last, ..))) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{H}\">{}</text><text x=\"{W}\" y=\"{H}\" text-anchor=\"end\">{}</text>",
            esc(first),
            esc(last)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{TOP}\">max {}</text></svg>",
        money(max, currency)
    );
    let mut table = String::from(
        "<details><summary>Daily figures</summary><div class=\"scroll\"><table><thead><tr>\
         <th scope=\"col\">Day (UTC)</th><th scope=\"col\" class=\"num\">Usage</th>\
         <th scope=\"col\" class=\"num\">Credits</th></tr></thead><tbody>",
    );
    for (date, usage, credits) in days.iter().rev() {
        let _ = write!(
            table,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(date),
            money(*usage, currency),
            money(*credits, currency)
        );
    }
    table.push_str("</tbody></table></div></details>");
    format!(
        "{svg}<p class=\"legend\"><span class=\"usage\">Usage</span><span class=\"credits\">Credits</span></p>{table}"
    )
}

/// The 30-day chart's section, from `GET /v1/usage/summary` (nothing when the summary cannot be
/// read: the rest of the overview stands on its own).
async fn usage_chart_section(api: &PortalApi, tenant_id: &str) -> String {
    let Ok(summary) = api
        .call(tenant_id, Method::GET, "/usage/summary", None, None)
        .await
    else {
        return String::new();
    };
    let days: Vec<Day> = summary
        .get("days")
        .and_then(Value::as_array)
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    (
                        str_at(d, "/date").to_owned(),
                        i64_at(d, "/usage_minor").unwrap_or(0),
                        i64_at(d, "/credits_minor").unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if days.is_empty() {
        return String::new();
    }
    format!(
        "<section class=\"card wide\" aria-labelledby=\"chart-h\"><h2 id=\"chart-h\">Usage and credits, last {} days</h2>{}</section>",
        days.len(),
        usage_chart(&days, str_at(&summary, "/currency"))
    )
}

// ---------------------------------------------------------------------------------------------
// Ledger

/// `GET /portal/ledger?cursor=`: newest first, [`LEDGER_PAGE`] per page.
pub async fn ledger(
    Extension(api): Extension<PortalApi>,
    session: Session,
    Query(q): Q,
) -> Response {
    let mut path = format!("/ledger?limit={LEDGER_PAGE}");
    if let Some(cursor) = q.get("cursor").filter(|c| !c.is_empty()) {
        let _ = write!(
            path,
            "&cursor={}",
            url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
        );
    }
    let (page, account) = tokio::join!(
        api.call(&session.tenant_id, Method::GET, &path, None, None),
        api.call(&session.tenant_id, Method::GET, "/account", None, None),
    );
    let page = match page {
        Ok(p) => p,
        Err(shown) => return shown.into_response(),
    };
    let tenant_currency = account
        .as_ref()
        .map(|a| str_at(a, "/credits/currency").to_owned())
        .unwrap_or_default();
    let entries = page
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut body = String::new();
    if entries.is_empty() && !q.contains_key("cursor") {
        body.push_str(
            "<p class=\"empty\">The ledger is empty. Credits appear here after a payment through \
             your provider's billing page, usage debits as your provider records usage.</p>",
        );
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><caption>Ledger entries, newest first</caption><thead><tr>\
             <th scope=\"col\">When</th><th scope=\"col\">Type</th><th scope=\"col\">Description</th>\
             <th scope=\"col\" class=\"num\">Amount</th></tr></thead><tbody>",
        );
        for e in &entries {
            let currency = e
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or(&tenant_currency);
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                time(i64_at(e, "/created_at").unwrap_or(0)),
                esc(str_at(e, "/type")),
                esc(e
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or(str_at(e, "/source"))),
                money(i64_at(e, "/amount_minor").unwrap_or(0), currency)
            );
        }
        body.push_str("</tbody></table></div><nav class=\"pager\" aria-label=\"Ledger pages\">");
        if q.contains_key("cursor") {
            body.push_str("<a href=\"/portal/ledger\">Newest entries</a>");
        }
        if let Some(next) = page.get("next_cursor").and_then(Value::as_str) {
            let _ = write!(
                body,
                "<a href=\"/portal/ledger?cursor={}\" rel=\"next\">Older entries</a>",
                esc(&url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>())
            );
        }
        body.push_str("</nav>");
    }
    ok_page("Ledger", "/portal/ledger", &body)
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// The event-type pickers of an endpoint form: the catalog's types as checkboxes, the tenant's
/// own types in a text field.
fn event_type_fields(selected: &[String]) -> String {
    let catalog = event_types::catalog();
    let mut html = String::from(
        "<fieldset><legend>Event types <span class=\"muted\">(none ticked: every type)</span></legend>",
    );
    for (i, t) in catalog.iter().enumerate() {
        let checked = if selected.iter().any(|s| s == t.name) {
            " checked"
        } else {
            ""
        };
        let _ = write!(
            html,
            "<div class=\"check\"><input type=\"checkbox\" id=\"et-{i}\" name=\"event_types\" value=\"{name}\"{checked}>\
             <label for=\"et-{i}\"><code>{name}</code> <span class=\"muted\">{desc}</span></label></div>",
            name = esc(t.name),
            desc = esc(t.description),
        );
    }
    let others: Vec<&str> = selected
        .iter()
        .map(String::as_str)
        .filter(|s| !catalog.iter().any(|t| t.name == *s))
        .collect();
    let _ = write!(
        html,
        "<label for=\"other-types\">Your own event types (comma-separated)</label>\
         <input id=\"other-types\" name=\"other_types\" value=\"{}\" placeholder=\"order.created, order.paid\"></fieldset>",
        esc(&others.join(", "))
    );
    html
}

fn endpoint_fields(url: &str, description: &str, selected: &[String]) -> String {
    format!(
        "<label for=\"ep-url\">URL</label>\
         <input id=\"ep-url\" name=\"url\" type=\"url\" required value=\"{}\" placeholder=\"https://example.com/webhooks\">\
         <label for=\"ep-description\">Description <span class=\"muted\">(optional)</span></label>\
         <input id=\"ep-description\" name=\"description\" value=\"{}\" maxlength=\"500\">{}",
        esc(url),
        esc(description),
        event_type_fields(selected)
    )
}

fn endpoint_body(form: &Form) -> Value {
    json!({
        "url": form.get("url").unwrap_or_default(),
        "description": form.get("description").unwrap_or_default(),
        "event_types": selected_types(form),
    })
}

async fn endpoints_page(
    api: &PortalApi,
    tenant_id: &str,
    top: &str,
    form: Option<&Form>,
) -> Response {
    let list = match api
        .call(tenant_id, Method::GET, "/endpoints", None, None)
        .await
    {
        Ok(l) => l,
        Err(shown) => return shown.into_response(),
    };
    let endpoints = list
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut body = String::from(top);
    if endpoints.is_empty() {
        body.push_str(
            "<p class=\"empty\">No endpoints yet. Add the URL that should receive your webhooks \
             below; you get its signing secret at once.</p>",
        );
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><caption>Your webhook endpoints</caption><thead><tr>\
             <th scope=\"col\">URL</th><th scope=\"col\">Event types</th><th scope=\"col\">State</th></tr></thead><tbody>",
        );
        for e in &endpoints {
            let types: Vec<String> = e
                .get("event_types")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(esc).collect())
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td><a href=\"/portal/endpoints/{id}\">{url}</a><br><span class=\"muted\">{desc}</span></td>\
                 <td>{types}</td><td>{state}</td></tr>",
                id = esc(str_at(e, "/id")),
                url = esc(str_at(e, "/url")),
                desc = esc(str_at(e, "/description")),
                types = if types.is_empty() {
                    "every type".to_owned()
                } else {
                    types.join(", ")
                },
                state = endpoint_state(e),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    let (url, description, selected) = match form {
        Some(f) => (
            f.get("url").unwrap_or_default(),
            f.get("description").unwrap_or_default(),
            selected_types(f),
        ),
        None => ("", "", Vec::new()),
    };
    let _ = write!(
        body,
        "<section aria-labelledby=\"add-h\"><h2 id=\"add-h\">Add an endpoint</h2>\
         <form method=\"post\" action=\"/portal/endpoints\" class=\"stack\">{}{}\
         <button type=\"submit\">Add endpoint</button></form></section>",
        idempotency_field(),
        endpoint_fields(url, description, &selected)
    );
    ok_page("Endpoints", "/portal/endpoints", &body)
}

pub(super) fn endpoint_state(e: &Value) -> String {
    if e.get("enabled").and_then(Value::as_bool).unwrap_or(false) {
        match i64_at(e, "/failing_since") {
            Some(since) => format!(
                "<span class=\"status-warning\">failing since</span> {}",
                time(since)
            ),
            None => "<span class=\"status-ok\">enabled</span>".to_owned(),
        }
    } else {
        format!(
            "<span class=\"status-exceeded\">disabled</span> <span class=\"muted\">{}</span>",
            esc(str_at(e, "/disabled_reason"))
        )
    }
}

/// `GET /portal/endpoints`.
pub async fn endpoints(
    Extension(api): Extension<PortalApi>,
    session: Session,
    Query(q): Q,
) -> Response {
    endpoints_page(&api, &session.tenant_id, &done_notice(q.get("done")), None).await
}

/// `POST /portal/endpoints`: `POST /v1/endpoints`; shows the new secret once.
pub async fn create_endpoint(
    Extension(api): Extension<PortalApi>,
    _origin: SameOrigin,
    session: Session,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    match api
        .call(
            &session.tenant_id,
            Method::POST,
            "/endpoints",
            form.key(),
            Some(&endpoint_body(&form)),
        )
        .await
    {
        Ok(created) => {
            let secret = str_at(&created, "/secret").to_owned();
            endpoint_page(
                &api,
                &session.tenant_id,
                str_at(&created, "/id"),
                &secret_box(
                    "Endpoint added. Its signing secret (copy it now; you can reveal it again on this page):",
                    &secret,
                ),
            )
            .await
        }
        Err(shown) => {
            let mut res = endpoints_page(
                &api,
                &session.tenant_id,
                &problem_box(&shown.title, &shown.detail),
                Some(&form),
            )
            .await;
            *res.status_mut() = shown.status;
            res
        }
    }
}

fn secret_box(text: &str, secret: &str) -> String {
    format!(
        "<div class=\"notice\" role=\"status\"><p>{}</p><p><code class=\"secret\" id=\"secret\">{}</code></p></div>",
        esc(text),
        esc(secret)
    )
}

async fn endpoint_page(api: &PortalApi, tenant_id: &str, id: &str, top: &str) -> Response {
    let Some(id) = segment(id) else {
        return not_found("endpoint");
    };
    let e = match api
        .call(
            tenant_id,
            Method::GET,
            &format!("/endpoints/{id}"),
            None,
            None,
        )
        .await
    {
        Ok(e) => e,
        Err(shown) => return shown.into_response(),
    };
    let selected: Vec<String> = e
        .get("event_types")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let enabled = e.get("enabled").and_then(Value::as_bool).unwrap_or(false);
    let id = esc(id);
    let mut body = String::from(top);
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>URL</dt><dd id=\"endpoint-url\">{url}</dd><dt>Id</dt><dd><code>{id}</code></dd>\
         <dt>State</dt><dd id=\"endpoint-state\">{state}</dd><dt>Created</dt><dd>{created}</dd></dl>\
         <section aria-labelledby=\"actions-h\"><h2 id=\"actions-h\">Actions</h2><div class=\"actions\">\
         <form method=\"post\" action=\"/portal/endpoints/{id}/{toggle}\">{k1}<button type=\"submit\">{toggle_label}</button></form>\
         <form method=\"post\" action=\"/portal/endpoints/{id}/test\">{k2}<button type=\"submit\" id=\"send-test\">Send a test event</button></form>\
         <form method=\"post\" action=\"/portal/endpoints/{id}/reveal\">{k3}<button type=\"submit\" id=\"reveal\">Reveal the signing secret</button></form>\
         <form method=\"post\" action=\"/portal/endpoints/{id}/rotate\">{k4}<button type=\"submit\" id=\"rotate\">Rotate the secret</button></form>\
         <form method=\"post\" action=\"/portal/endpoints/{id}/delete\">{k5}<button type=\"submit\" class=\"danger\" id=\"delete\">Delete</button></form>\
         </div><p class=\"muted\">Rotating keeps the previous secret signing beside the new one for 24 hours. \
         <a href=\"/portal/events?endpoint={id}\">This endpoint's events</a></p></section>\
         <section aria-labelledby=\"edit-h\"><h2 id=\"edit-h\">Edit</h2>\
         <form method=\"post\" action=\"/portal/endpoints/{id}\" class=\"stack\">{k6}{fields}<button type=\"submit\">Save</button></form></section>",
        url = esc(str_at(&e, "/url")),
        state = endpoint_state(&e),
        created = time(i64_at(&e, "/created_at").unwrap_or(0)),
        toggle = if enabled { "disable" } else { "enable" },
        toggle_label = if enabled { "Disable" } else { "Enable" },
        k1 = idempotency_field(),
        k2 = idempotency_field(),
        k3 = idempotency_field(),
        k4 = idempotency_field(),
        k5 = idempotency_field(),
        k6 = idempotency_field(),
        fields = endpoint_fields(str_at(&e, "/url"), str_at(&e, "/description"), &selected),
    );
    ok_page("Endpoint", "/portal/endpoints", &body)
}

/// `GET /portal/endpoints/{id}`.
pub async fn endpoint(
    Extension(api): Extension<PortalApi>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    endpoint_page(&api, &session.tenant_id, &id, &done_notice(q.get("done"))).await
}

/// `POST /portal/endpoints/{id}`: `PATCH /v1/endpoints/{id}` (url, description, types).
pub async fn update_endpoint(
    Extension(api): Extension<PortalApi>,
    _origin: SameOrigin,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(id) = segment(&id) else {
        return not_found("endpoint");
    };
    let form = Form::parse(&body);
    let path = format!("/endpoints/{id}");
    match api
        .call(
            &session.tenant_id,
            Method::PATCH,
            &path,
            form.key(),
            Some(&endpoint_body(&form)),
        )
        .await
    {
        Ok(_) => see_other(&format!("/portal/endpoints/{id}?done=updated")),
        Err(shown) => refused_on_endpoint(&api, &session.tenant_id, id, shown).await,
    }
}

async fn refused_on_endpoint(api: &PortalApi, tenant_id: &str, id: &str, shown: Shown) -> Response {
    if shown.status == StatusCode::NOT_FOUND {
        return shown.into_response();
    }
    let mut res = endpoint_page(
        api,
        tenant_id,
        id,
        &problem_box(&shown.title, &shown.detail),
    )
    .await;
    *res.status_mut() = shown.status;
    res
}

/// `POST /portal/endpoints/{id}/{enable|disable|rotate|reveal|delete|test}`.
pub async fn endpoint_action(
    Extension(api): Extension<PortalApi>,
    _origin: SameOrigin,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(id) = segment(&id) else {
        return not_found("endpoint");
    };
    let form = Form::parse(&body);
    let tenant = session.tenant_id.as_str();
    let base = format!("/endpoints/{id}");
    let result = match action.as_str() {
        "enable" | "disable" => api
            .call(
                tenant,
                Method::PATCH,
                &base,
                form.key(),
                Some(&json!({ "enabled": action == "enable" })),
            )
            .await
            .map(|_| None),
        "delete" => api
            .call(tenant, Method::DELETE, &base, form.key(), None)
            .await
            .map(|_| Some(see_other("/portal/endpoints?done=deleted"))),
        "rotate" => match api
            .call(
                tenant,
                Method::POST,
                &format!("{base}/rotate-secret"),
                form.key(),
                None,
            )
            .await
        {
            Ok(rotated) => {
                let top = secret_box(
                    "Secret rotated. The new secret (the previous one keeps signing for 24 hours):",
                    str_at(&rotated, "/secret"),
                );
                return endpoint_page(&api, tenant, id, &top).await;
            }
            Err(shown) => Err(shown),
        },
        "reveal" => match api
            .call(tenant, Method::GET, &format!("{base}/secret"), None, None)
            .await
        {
            Ok(secret) => {
                let top = secret_box("The current signing secret:", str_at(&secret, "/secret"));
                return endpoint_page(&api, tenant, id, &top).await;
            }
            Err(shown) => Err(shown),
        },
        "test" => api
            .call(
                tenant,
                Method::POST,
                &format!("{base}/test"),
                form.key(),
                None,
            )
            .await
            .map(|_| Some(see_other(&format!("/portal/endpoints/{id}?done=tested")))),
        _ => return not_found("action"),
    };
    match result {
        Ok(Some(res)) => res,
        Ok(None) => see_other(&format!("/portal/endpoints/{id}?done={action}d")),
        Err(shown) => refused_on_endpoint(&api, tenant, id, shown).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Provider keys

async fn keys_page(api: &PortalApi, tenant_id: &str, top: &str, status: StatusCode) -> Response {
    let list = match api
        .call(tenant_id, Method::GET, "/secrets", None, None)
        .await
    {
        Ok(l) => l,
        Err(shown) => return shown.into_response(),
    };
    let keys = list
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut body = String::from(top);
    body.push_str(
        "<p class=\"muted\">Keys of the providers your service calls for you, stored sealed with \
         KMS. Only a hint of each is ever shown.</p>",
    );
    if keys.is_empty() {
        body.push_str(
            "<p class=\"empty\">No provider keys yet. Add one below (for example your OpenAI key) \
             so your provider can call that service on your behalf.</p>",
        );
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><caption>Provider keys</caption><thead><tr><th scope=\"col\">Provider</th>\
             <th scope=\"col\">Hint</th><th scope=\"col\">Updated</th><th scope=\"col\">Replace</th><th scope=\"col\">Delete</th></tr></thead><tbody>",
        );
        for (i, k) in keys.iter().enumerate() {
            let provider = esc(str_at(k, "/provider"));
            let _ = write!(
                body,
                "<tr><td>{provider}</td><td><code>{hint}</code></td><td>{updated}</td>\
                 <td><form method=\"post\" action=\"/portal/keys/{provider}/replace\" class=\"inline\">{k1}\
                 <label for=\"replace-{i}\" class=\"sr-only\">New key for {provider}</label>\
                 <input id=\"replace-{i}\" name=\"value\" type=\"password\" autocomplete=\"off\" required>\
                 <button type=\"submit\">Replace</button></form></td>\
                 <td><form method=\"post\" action=\"/portal/keys/{provider}/delete\">{k2}\
                 <button type=\"submit\" class=\"danger\">Delete<span class=\"sr-only\"> the {provider} key</span></button></form></td></tr>",
                hint = esc(str_at(k, "/hint")),
                updated = time(i64_at(k, "/updated_at").unwrap_or(0)),
                k1 = idempotency_field(),
                k2 = idempotency_field(),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    let _ = write!(
        body,
        "<section aria-labelledby=\"add-key-h\"><h2 id=\"add-key-h\">Add a key</h2>\
         <form method=\"post\" action=\"/portal/keys\" class=\"stack\">{}\
         <label for=\"key-provider\">Provider <span class=\"muted\">(lowercase, e.g. openai)</span></label>\
         <input id=\"key-provider\" name=\"provider\" required maxlength=\"64\" pattern=\"[a-z0-9][a-z0-9._-]*\">\
         <label for=\"key-value\">Key</label>\
         <input id=\"key-value\" name=\"value\" type=\"password\" autocomplete=\"off\" required>\
         <button type=\"submit\">Add key</button></form></section>",
        idempotency_field()
    );
    let mut res = ok_page("Provider keys", "/portal/keys", &body);
    *res.status_mut() = status;
    res
}

/// `GET /portal/keys`.
pub async fn keys(Extension(api): Extension<PortalApi>, session: Session, Query(q): Q) -> Response {
    keys_page(
        &api,
        &session.tenant_id,
        &done_notice(q.get("done")),
        StatusCode::OK,
    )
    .await
}

async fn after_key_write(
    api: &PortalApi,
    tenant_id: &str,
    result: Result<Value, Shown>,
    done: &str,
) -> Response {
    match result {
        Ok(_) => see_other(&format!("/portal/keys?done={done}")),
        Err(shown) => {
            keys_page(
                api,
                tenant_id,
                &problem_box(&shown.title, &shown.detail),
                shown.status,
            )
            .await
        }
    }
}

/// `POST /portal/keys`: `POST /v1/secrets`.
pub async fn add_key(
    Extension(api): Extension<PortalApi>,
    _origin: SameOrigin,
    session: Session,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let req = json!({
        "provider": form.get("provider").unwrap_or_default(),
        "value": form.get("value").unwrap_or_default(),
    });
    let result = api
        .call(
            &session.tenant_id,
            Method::POST,
            "/secrets",
            form.key(),
            Some(&req),
        )
        .await;
    after_key_write(&api, &session.tenant_id, result, "key-saved").await
}

/// `POST /portal/keys/{provider}/{replace|delete}`: `PUT` or `DELETE /v1/secrets/{provider}`.
pub async fn key_action(
    Extension(api): Extension<PortalApi>,
    _origin: SameOrigin,
    session: Session,
    Path((provider, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(provider) = segment(&provider) else {
        return not_found("provider key");
    };
    let form = Form::parse(&body);
    let path = format!("/secrets/{provider}");
    let tenant = session.tenant_id.as_str();
    match action.as_str() {
        "replace" => {
            let req = json!({ "value": form.get("value").unwrap_or_default() });
            let result = api
                .call(tenant, Method::PUT, &path, form.key(), Some(&req))
                .await;
            after_key_write(&api, tenant, result, "key-saved").await
        }
        "delete" => {
            let result = api
                .call(tenant, Method::DELETE, &path, form.key(), None)
                .await;
            after_key_write(&api, tenant, result, "key-deleted").await
        }
        _ => not_found("action"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_repeated_checkboxes_and_split_own_types() {
        let form = Form::parse(
            b"url=https%3A%2F%2Fx.example&event_types=credits.added&event_types=budget.alert&other_types=a.b%2C+c.d%2C&idempotency_key=k1",
        );
        assert_eq!(form.get("url"), Some("https://x.example"));
        assert_eq!(form.key(), Some("k1"));
        assert_eq!(
            selected_types(&form),
            ["credits.added", "budget.alert", "a.b", "c.d"]
        );
        assert_eq!(form.get("missing"), None);
    }

    #[test]
    fn only_plain_segments_reach_an_api_path() {
        assert_eq!(segment("ep_123-abc"), Some("ep_123-abc"));
        assert_eq!(segment("openai.v2"), Some("openai.v2"));
        for bad in ["", ".", "..", "a/b", "a?b", "a%2Fb", "a b"] {
            assert_eq!(segment(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_chart_draws_both_series_to_scale_with_the_figures_beneath() {
        let days: Vec<Day> = vec![
            ("2026-12-01".into(), 500, 0),
            ("2026-12-02".into(), 250, 1000),
        ];
        let html = usage_chart(&days, "usd");
        assert_eq!(html.matches("<rect class=\"usage\"").count(), 2);
        assert_eq!(html.matches("<rect class=\"credits\"").count(), 2);
        // The tallest bar (1000) spans the plot (120 px); 500 is half of it.
        assert!(html.contains("height=\"120\""), "{html}");
        assert!(html.contains("height=\"60\""), "{html}");
        assert!(html.contains("2026-12-02: usage 2.50 USD, credits 10.00 USD"));
        assert!(html.contains("<td class=\"num\">10.00 USD</td>"));
        assert!(usage_chart(&[], "usd").contains("<svg"));
    }

    #[test]
    fn the_budget_bar_marks_80_and_100_percent() {
        let svg = budget_bar(90, 100);
        assert!(svg.contains("class=\"fill warning\""), "{svg}");
        assert!(svg.contains(">80 %<") && svg.contains(">100 %<"));
        assert!(budget_bar(120, 100).contains("exceeded"));
        assert!(budget_bar(10, 100).contains("fill ok"));
    }
}
