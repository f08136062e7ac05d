//! The portal's HTML: the page frame, escaping, money and times, and the embedded assets.
//!
//! Hand-written like [`crate::docs`] (every text from data goes through [`esc`]); a template
//! crate would cost build time and binary size for a dozen small pages. Rendering is pure.

use std::fmt::Write;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sluice::ApiError;

pub use crate::docs::esc;

/// The portal's style sheet, served at `/portal/assets/style.css`.
pub const STYLE_CSS: &str = include_str!("style.css");
/// The one script, served at `/portal/assets/tz.js`: rewrites each `<time datetime>` (rendered in
/// UTC) into the viewer's time zone, and fills the hidden UTC twin of each local time input.
pub const TZ_JS: &str = include_str!("tz.js");

/// `GET /portal/assets/style.css`.
pub async fn style() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

/// `GET /portal/assets/tz.js`.
pub async fn script() -> Response {
    asset(TZ_JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// The portal's sections, as the navigation lists them: (path, label).
pub const NAV: [(&str, &str); 5] = [
    ("/portal", "Overview"),
    ("/portal/ledger", "Ledger"),
    ("/portal/endpoints", "Endpoints"),
    ("/portal/events", "Events"),
    ("/portal/keys", "Provider keys"),
];

/// A whole page: `current` is the path of the navigation entry to mark (`None`: signed out, no
/// navigation).
pub fn page(title: &str, current: Option<&str>, body: &str) -> String {
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Sluice portal</title>\
         <link rel=\"stylesheet\" href=\"/portal/assets/style.css\">\
         <script src=\"/portal/assets/tz.js\" defer></script></head>\n<body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><span class=\"brand\">Sluice portal</span>",
        esc(title)
    );
    if let Some(current) = current {
        html.push_str("<nav aria-label=\"Portal sections\"><ul>");
        for (path, label) in NAV {
            let mark = if path == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(html, "<li><a href=\"{path}\"{mark}>{label}</a></li>");
        }
        html.push_str(
            "</ul></nav><form method=\"post\" action=\"/portal/logout\" class=\"signout\">\
             <button type=\"submit\">Sign out</button></form>",
        );
    }
    let _ = write!(
        html,
        "</header>\n<main id=\"main\"><h1>{}</h1>\n{body}\n</main></body></html>\n",
        esc(title)
    );
    html
}

/// A page answer with `status`.
pub fn page_with_status(
    status: StatusCode,
    title: &str,
    current: Option<&str>,
    body: &str,
) -> Response {
    let mut res = (status, page(title, current, body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// A `200` page.
pub fn ok_page(title: &str, current: &str, body: &str) -> Response {
    page_with_status(StatusCode::OK, title, Some(current), body)
}

/// A problem as the portal shows it: its title and detail.
pub fn problem_box(title: &str, detail: &str) -> String {
    format!(
        "<div class=\"problem\" role=\"alert\"><strong>{}</strong><p>{}</p></div>",
        esc(title),
        esc(detail)
    )
}

/// A success notice.
pub fn notice(text: &str) -> String {
    format!("<div class=\"notice\" role=\"status\">{}</div>", esc(text))
}

/// The `401` page of a request without a live session.
pub fn signed_out(text: &str) -> Response {
    page_with_status(
        StatusCode::UNAUTHORIZED,
        "Signed out",
        None,
        &format!("<p>{}</p>", esc(text)),
    )
}

/// The page of a failure of ours or of AWS: the generic, retryable text of a 5xx problem (the
/// cause is logged by [`ApiError`]'s response).
pub fn failure(err: ApiError) -> Response {
    let status = err.status();
    // Rendering the problem logs an internal cause; the page shows only the generic text.
    drop(err.into_response());
    page_with_status(
        status,
        "Something went wrong",
        None,
        &problem_box(
            "Something went wrong",
            "The request could not be completed; it is safe to try again.",
        ),
    )
}

/// ISO 4217 minor-unit exponents that are not 2 (hand-written: a currency crate would add
/// build time for one small table).
const EXPONENTS: [(&str, u32); 24] = [
    ("bif", 0),
    ("clp", 0),
    ("djf", 0),
    ("gnf", 0),
    ("isk", 0),
    ("jpy", 0),
    ("kmf", 0),
    ("krw", 0),
    ("pyg", 0),
    ("rwf", 0),
    ("ugx", 0),
    ("uyi", 0),
    ("vnd", 0),
    ("vuv", 0),
    ("xaf", 0),
    ("xof", 0),
    ("xpf", 0),
    ("bhd", 3),
    ("iqd", 3),
    ("jod", 3),
    ("kwd", 3),
    ("lyd", 3),
    ("omr", 3),
    ("tnd", 3),
];

/// The number of minor-unit digits of an ISO 4217 currency (2 unless listed).
pub fn exponent(currency: &str) -> u32 {
    let lower = currency.to_ascii_lowercase();
    EXPONENTS
        .iter()
        .find(|(c, _)| *c == lower)
        .map_or(2, |(_, e)| *e)
}

/// An amount in minor units as the tenant reads it: `1,234.50 USD`, `−5 JPY`. Pure.
pub fn money(minor: i64, currency: &str) -> String {
    let e = exponent(currency);
    let negative = minor < 0;
    let abs = minor.unsigned_abs();
    let scale = 10u64.pow(e);
    let (units, fraction) = (abs / scale, abs % scale);
    let digits = units.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let mut out = String::new();
    if negative {
        out.push('−');
    }
    out.push_str(&grouped);
    if e > 0 {
        let _ = write!(out, ".{fraction:0width$}", width = e as usize);
    }
    let _ = write!(out, " {}", currency.to_ascii_uppercase());
    out
}

/// A moment as `<time>`: UTC on the server, the viewer's zone once the script ran.
pub fn time(epoch_secs: i64) -> String {
    let iso = sluice::clock::rfc3339(epoch_secs);
    let shown = iso.replacen('T', " ", 1).replace('Z', " UTC");
    format!("<time datetime=\"{}\">{}</time>", esc(&iso), esc(&shown))
}

/// A fresh `Idempotency-Key` for a form: a double click or a resubmission sends the same one.
pub fn idempotency_field() -> String {
    format!(
        "<input type=\"hidden\" name=\"idempotency_key\" value=\"portal-{}\">",
        super::access::new_secret()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_uses_the_currencys_minor_units() {
        assert_eq!(money(123_450, "usd"), "1,234.50 USD");
        assert_eq!(money(5, "eur"), "0.05 EUR");
        assert_eq!(money(-1500, "jpy"), "−1,500 JPY");
        assert_eq!(money(1_234, "kwd"), "1.234 KWD");
        assert_eq!(money(0, "usd"), "0.00 USD");
        assert_eq!(money(100_000_000, "usd"), "1,000,000.00 USD");
    }

    #[test]
    fn times_are_utc_until_the_script_localises_them() {
        assert_eq!(
            time(0),
            "<time datetime=\"1970-01-01T00:00:00Z\">1970-01-01 00:00:00 UTC</time>"
        );
    }

    #[test]
    fn pages_escape_their_title_and_mark_the_current_section() {
        let html = page("<b>", Some("/portal/ledger"), "");
        assert!(html.contains("&lt;b&gt; · Sluice portal"));
        assert!(html.contains("<a href=\"/portal/ledger\" aria-current=\"page\">"));
        assert!(!page("x", None, "").contains("<nav"));
    }
}
