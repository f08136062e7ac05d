//! `GET /docs`: the API reference as one server-side HTML page, rendered from the OpenAPI
//! document ([`crate::openapi::document`]) so the page and `/openapi.json` never disagree.
//!
//! The page loads only `/docs/style.css` (embedded here): no script, no inline style, no font or
//! anything else from another origin, so it works offline and under `default-src 'self'`.
//! Every text taken from the document goes through [`esc`] (hand-written: five characters; a
//! template crate would cost more build time than it saves here). Rendering is pure and runs once
//! per cold start.

use std::fmt::Write;

use serde_json::Value;

/// The page's style sheet, served at `/docs/style.css`.
pub const STYLE_CSS: &str = include_str!("style.css");

/// Operations in this order within a path.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Escapes text for HTML content and double- or single-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text where `` `code` `` spans become `<code>` (the document's descriptions use them).
pub fn prose(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// A fragment id from any text: lowercase letters, digits and `-`.
pub fn anchor(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

fn op_anchor(method: &str, path: &str) -> String {
    anchor(&format!("op {method} {path}"))
}

/// The name of a `#/components/…/{name}` reference.
fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.rsplit('/').next()
}

/// Follows a local `$ref` (`#/a/b/c`) once; other values are returned as they are.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or(value),
        None => value,
    }
}

/// A readable type: `string | null`, `array of Delivery` (linked), `one of "a", "b"`, ….
fn type_of(schema: &Value) -> String {
    if let Some(name) = ref_name(schema) {
        return format!("<a href=\"#schema-{}\">{}</a>", anchor(name), esc(name));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(parts) = schema.get(key).and_then(Value::as_array) {
            return parts.iter().map(type_of).collect::<Vec<_>>().join(" | ");
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        return parts
            .iter()
            .map(type_of)
            .collect::<Vec<_>>()
            .join(" &amp; ");
    }
    let mut base = match schema.get("type") {
        Some(Value::String(t)) => single_type(t, schema),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(|t| single_type(t, schema))
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any JSON".to_owned(),
    };
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && values.len() <= 8
    {
        let listed: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect();
        base = format!("{base}, one of {}", listed.join(", "));
    }
    base
}

fn single_type(t: &str, schema: &Value) -> String {
    match t {
        "array" => format!(
            "array of {}",
            schema.get("items").map_or("any JSON".to_owned(), type_of)
        ),
        "object" => match schema.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("map of {}", type_of(v)),
            _ => "object".to_owned(),
        },
        other => match schema.get("format").and_then(Value::as_str) {
            Some(f) => format!("{} ({})", esc(other), esc(f)),
            None => esc(other),
        },
    }
}

/// Constraints worth a reader's attention (range, length, pattern).
fn constraints(schema: &Value) -> String {
    let mut parts = Vec::new();
    for (key, label) in [
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
    ] {
        if let Some(v) = schema.get(key) {
            parts.push(format!("{label} {v}"));
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        parts.push(format!("pattern <code>{}</code>", esc(p)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" <span class=\"ctype\">({})</span>", parts.join(", "))
    }
}

/// The properties of an object schema (following `$ref`s and merging `allOf` parts), with
/// whether each is required.
fn properties<'a>(doc: &'a Value, schema: &'a Value, out: &mut Vec<(&'a str, &'a Value, bool)>) {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            properties(doc, part, out);
        }
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            out.push((name, prop, required.contains(&name.as_str())));
        }
    }
}

/// A schema as a property table (or, for a non-object, its type), with its example if any.
fn schema_block(doc: &Value, schema: &Value, html: &mut String) {
    let mut props = Vec::new();
    properties(doc, schema, &mut props);
    if let Some(name) = ref_name(schema) {
        let _ = writeln!(html, "<p>Schema: {}</p>", type_of(&json_ref(name)));
    }
    if props.is_empty() {
        let resolved = resolve(doc, schema);
        let _ = writeln!(html, "<p>{}</p>", type_of(resolved));
    } else {
        html.push_str(
            "<table><thead><tr><th>Property</th><th>Type</th><th>Description</th></tr></thead><tbody>\n",
        );
        for (name, prop, required) in props {
            let description = prop
                .get("description")
                .and_then(Value::as_str)
                .map(prose)
                .unwrap_or_default();
            let _ = writeln!(
                html,
                "<tr><td class=\"name\"><code>{}</code>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(name),
                if required {
                    "<span class=\"required\">required</span>"
                } else {
                    ""
                },
                type_of(prop),
                constraints(prop),
                description
            );
        }
        html.push_str("</tbody></table>\n");
    }
    example_block(resolve(doc, schema), html);
}

fn json_ref(name: &str) -> Value {
    serde_json::json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn example_block(holder: &Value, html: &mut String) {
    let example = holder
        .get("example")
        .or_else(|| holder.get("examples").and_then(|e| e.get(0)));
    if let Some(example) = example {
        let text = serde_json::to_string_pretty(example).unwrap_or_default();
        let _ = writeln!(
            html,
            "<h4>Example</h4><pre><code>{}</code></pre>",
            esc(&text)
        );
    }
}

fn security_line(doc: &Value, op: &Value, html: &mut String) {
    let requirements = op
        .get("security")
        .or_else(|| doc.get("security"))
        .and_then(Value::as_array);
    let names: Vec<String> = requirements
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|req| req.keys())
        .map(|name| format!("<a href=\"#security-{}\">{}</a>", anchor(name), esc(name)))
        .collect();
    let text = if names.is_empty() {
        "none (public)".to_owned()
    } else {
        names.join(" or ")
    };
    let _ = writeln!(html, "<p class=\"security\">Authentication: {text}</p>");
}

fn operation(doc: &Value, path: &str, method: &str, op: &Value, html: &mut String) {
    let _ = writeln!(
        html,
        "<section class=\"op\" id=\"{}\"><h3><span class=\"method {m}\">{m}</span> <code class=\"path\">{}</code> <span class=\"summary\">{}</span></h3>",
        op_anchor(method, path),
        esc(path),
        op.get("summary")
            .and_then(Value::as_str)
            .map(prose)
            .unwrap_or_default(),
        m = esc(method),
    );
    if let Some(d) = op.get("description").and_then(Value::as_str) {
        let _ = writeln!(html, "<p>{}</p>", prose(d));
    }
    // A webhook is a request Sluice sends: it carries no credential of the reader's, it is signed.
    let is_webhook = op
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t == "webhooks"));
    if is_webhook {
        html.push_str(
            "<p class=\"security\">Sent by Sluice, signed: verify <code>webhook-signature</code> \
             with the endpoint's signing secret (Standard Webhooks).</p>\n",
        );
    } else {
        security_line(doc, op, html);
    }

    let params: Vec<&Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| resolve(doc, p))
        .collect();
    if !params.is_empty() {
        html.push_str("<h4>Parameters</h4><table><thead><tr><th>Name</th><th>In</th><th>Type</th><th>Description</th></tr></thead><tbody>\n");
        for p in params {
            let schema = p.get("schema").unwrap_or(&Value::Null);
            let mut description = p
                .get("description")
                .and_then(Value::as_str)
                .map(prose)
                .unwrap_or_default();
            if let Some(example) = p.get("example") {
                let _ = write!(
                    description,
                    " Example: <code>{}</code>",
                    esc(&example.to_string())
                );
            }
            let _ = writeln!(
                html,
                "<tr><td class=\"name\"><code>{}</code>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(p.get("name").and_then(Value::as_str).unwrap_or("")),
                if p.get("required") == Some(&Value::Bool(true)) {
                    "<span class=\"required\">required</span>"
                } else {
                    ""
                },
                esc(p.get("in").and_then(Value::as_str).unwrap_or("")),
                type_of(schema),
                constraints(schema),
                description,
            );
        }
        html.push_str("</tbody></table>\n");
    }

    if let Some(body) = op.get("requestBody").map(|b| resolve(doc, b)) {
        let required = body.get("required") == Some(&Value::Bool(true));
        let _ = writeln!(
            html,
            "<h4>Request body{}</h4>",
            if required { "" } else { " (optional)" }
        );
        if let Some(d) = body.get("description").and_then(Value::as_str) {
            let _ = writeln!(html, "<p>{}</p>", prose(d));
        }
        for (ctype, media) in body
            .get("content")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(html, "<p class=\"ctype\">{}</p>", esc(ctype));
            if let Some(schema) = media.get("schema") {
                schema_block(doc, schema, html);
            }
            example_block(media, html);
        }
    }

    html.push_str("<h4>Responses</h4>\n");
    for (status, response) in op
        .get("responses")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let response = resolve(doc, response);
        let class = format!("s{}", status.chars().next().unwrap_or('x'));
        let _ = writeln!(
            html,
            "<div class=\"response\"><p><span class=\"status {}\">{}</span> {}</p>",
            esc(&class),
            esc(status),
            response
                .get("description")
                .and_then(Value::as_str)
                .map(prose)
                .unwrap_or_default()
        );
        let headers: Vec<String> = response
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, _)| format!("<code>{}</code>", esc(name)))
            .collect();
        if !headers.is_empty() {
            let _ = writeln!(
                html,
                "<p class=\"ctype\">Headers: {}</p>",
                headers.join(", ")
            );
        }
        for (ctype, media) in response
            .get("content")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(html, "<p class=\"ctype\">{}</p>", esc(ctype));
            match media.get("schema") {
                // A problem answer links to the one Problem table instead of repeating it.
                Some(schema) if ref_name(schema) == Some("Problem") => {
                    let _ = writeln!(
                        html,
                        "<p>{} (see <a href=\"#problem-types\">problem types</a>)</p>",
                        type_of(schema)
                    );
                }
                Some(schema) => schema_block(doc, schema, html),
                None => {}
            }
        }
        html.push_str("</div>\n");
    }
    html.push_str("</section>\n");
}

/// (path, method, operation).
type Op<'a> = (&'a str, &'a str, &'a Value);

/// Every (tag, operations) in the document's tag order, then untagged ones.
fn grouped(doc: &Value) -> Vec<(String, Vec<Op<'_>>)> {
    let mut groups: Vec<(String, Vec<Op<'_>>)> = doc
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name")?.as_str())
        .map(|name| (name.to_owned(), Vec::new()))
        .collect();
    // Webhooks (named by event type) are listed like operations, under their `webhooks` tag.
    let items = |key: &str| {
        doc.get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
    };
    for (path, item) in items("paths").chain(items("webhooks")) {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let tag = op
                .get("tags")
                .and_then(|t| t.get(0))
                .and_then(Value::as_str)
                .unwrap_or("other");
            match groups.iter_mut().find(|(name, _)| name == tag) {
                Some((_, ops)) => ops.push((path.as_str(), method, op)),
                None => groups.push((tag.to_owned(), vec![(path.as_str(), method, op)])),
            }
        }
    }
    groups.retain(|(_, ops)| !ops.is_empty());
    groups
}

/// The whole page.
pub fn render(doc: &Value) -> String {
    let title = doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("API");
    let version = doc
        .pointer("/info/version")
        .and_then(Value::as_str)
        .unwrap_or("");
    let groups = grouped(doc);
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object);
    let problems = doc.get("x-problem-types").and_then(Value::as_array);

    let mut html = String::with_capacity(64 * 1024);
    let _ = writeln!(
        html,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{t} API reference</title>\n<link rel=\"stylesheet\" href=\"/docs/style.css\">\n</head>\n<body>",
        t = esc(title)
    );

    // Navigation.
    html.push_str("<nav aria-label=\"Contents\"><ul>\n<li><a href=\"#top\">Overview</a></li>\n<li><a href=\"#security\">Authentication</a></li>\n</ul>\n");
    for (tag, ops) in &groups {
        let _ = writeln!(
            html,
            "<p class=\"group\"><a href=\"#tag-{}\">{}</a></p><ul>",
            anchor(tag),
            esc(tag)
        );
        for (path, method, _) in ops {
            let _ = writeln!(
                html,
                "<li><a href=\"#{}\"><span class=\"method {m}\">{m}</span> {}</a></li>",
                op_anchor(method, path),
                esc(path),
                m = esc(method)
            );
        }
        html.push_str("</ul>\n");
    }
    html.push_str("<p class=\"group\"><a href=\"#problem-types\">Problem types</a></p>\n<p class=\"group\"><a href=\"#schemas\">Schemas</a></p>\n<p><a href=\"/openapi.json\">openapi.json</a></p>\n</nav>\n");

    // Overview.
    let _ = writeln!(
        html,
        "<main>\n<header id=\"top\"><h1>{} API reference</h1><p class=\"version\">Version {} · OpenAPI {} · <a href=\"/openapi.json\">/openapi.json</a></p></header>",
        esc(title),
        esc(version),
        esc(doc.get("openapi").and_then(Value::as_str).unwrap_or(""))
    );
    if let Some(d) = doc.pointer("/info/description").and_then(Value::as_str) {
        for paragraph in d.split("\n\n") {
            let _ = writeln!(html, "<p>{}</p>", prose(paragraph));
        }
    }
    let servers: Vec<String> = doc
        .get("servers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "<li><code>{}</code> {}</li>",
                esc(s.get("url").and_then(Value::as_str).unwrap_or("")),
                s.get("description")
                    .and_then(Value::as_str)
                    .map(prose)
                    .unwrap_or_default()
            )
        })
        .collect();
    if !servers.is_empty() {
        let _ = writeln!(html, "<h4>Servers</h4><ul>{}</ul>", servers.join(""));
    }

    // Security schemes.
    html.push_str("<h2 id=\"security\">Authentication</h2>\n<table><thead><tr><th>Scheme</th><th>How</th><th>Description</th></tr></thead><tbody>\n");
    for (name, scheme) in doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let how = match scheme.get("type").and_then(Value::as_str) {
            Some("http") => format!(
                "<code>Authorization: {} …</code>",
                esc(&capitalize(
                    scheme.get("scheme").and_then(Value::as_str).unwrap_or("")
                ))
            ),
            Some("apiKey") => format!(
                "<code>{}</code> {}",
                esc(scheme.get("name").and_then(Value::as_str).unwrap_or("")),
                esc(scheme.get("in").and_then(Value::as_str).unwrap_or(""))
            ),
            other => esc(other.unwrap_or("")),
        };
        let _ = writeln!(
            html,
            "<tr id=\"security-{}\"><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            anchor(name),
            esc(name),
            how,
            scheme
                .get("description")
                .and_then(Value::as_str)
                .map(prose)
                .unwrap_or_default()
        );
    }
    html.push_str("</tbody></table>\n");

    // Operations by tag.
    for (tag, ops) in &groups {
        let _ = writeln!(html, "<h2 id=\"tag-{}\">{}</h2>", anchor(tag), esc(tag));
        let description = doc
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(tag))
            .and_then(|t| t.get("description")?.as_str());
        if let Some(d) = description {
            let _ = writeln!(html, "<p>{}</p>", prose(d));
        }
        for (path, method, op) in ops {
            operation(doc, path, method, op, &mut html);
        }
    }

    // Problem types: the fragment of each `type` URI (`/docs#problem-{slug}`).
    html.push_str("<h2 id=\"problem-types\">Problem types</h2>\n<p>Every error answer is an RFC 9457 <code>application/problem+json</code> body (<a href=\"#schema-problem\">Problem</a>); its <code>type</code> is one of these.</p>\n<table><thead><tr><th>Type</th><th>Status</th><th>Title</th><th>When</th></tr></thead><tbody>\n");
    for p in problems.into_iter().flatten() {
        let slug = p.get("slug").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(
            html,
            "<tr id=\"problem-{}\"><td><code>{}</code></td><td class=\"status\">{}</td><td>{}</td><td>{}</td></tr>",
            anchor(slug),
            esc(p.get("type").and_then(Value::as_str).unwrap_or("")),
            p.get("status").map(Value::to_string).unwrap_or_default(),
            esc(p.get("title").and_then(Value::as_str).unwrap_or("")),
            p.get("description")
                .and_then(Value::as_str)
                .map(prose)
                .unwrap_or_default()
        );
    }
    html.push_str("</tbody></table>\n");

    // Schemas.
    html.push_str("<h2 id=\"schemas\">Schemas</h2>\n");
    for (name, schema) in schemas.into_iter().flatten() {
        let _ = writeln!(
            html,
            "<section class=\"op\" id=\"schema-{}\"><h3><code>{}</code></h3>",
            anchor(name),
            esc(name)
        );
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            let _ = writeln!(html, "<p>{}</p>", prose(d));
        }
        schema_block(doc, schema, &mut html);
        html.push_str("</section>\n");
    }
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_from_the_document_is_escaped() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            prose("use `<b>` not <i>"),
            "use <code>&lt;b&gt;</code> not &lt;i&gt;"
        );
        let doc = json!({
            "info": { "title": "<script>alert(1)</script>", "version": "1" },
            "paths": {}
        });
        let page = render(&doc);
        assert!(!page.contains("<script"), "{page}");
    }

    #[test]
    fn anchors_are_plain() {
        assert_eq!(
            anchor("op post /v1/events/{id}/replay"),
            "op-post-v1-events-id-replay"
        );
        assert_eq!(anchor("Idempotency-Key"), "idempotency-key");
    }

    #[test]
    fn refs_are_followed_into_property_tables() {
        let doc = json!({
            "components": { "schemas": {
                "Out": { "type": "object", "required": ["id"], "properties": {
                    "id": { "type": "string", "description": "`msg_…`" },
                    "more": { "type": ["integer", "null"] },
                    "items": { "type": "array", "items": { "$ref": "#/components/schemas/Item" } }
                } },
                "Item": { "type": "object", "properties": { "x": { "type": "boolean" } } }
            } }
        });
        let mut html = String::new();
        schema_block(
            &doc,
            &json!({ "$ref": "#/components/schemas/Out" }),
            &mut html,
        );
        assert!(html.contains("<code>id</code><span class=\"required\">required</span>"));
        assert!(html.contains("integer | null"));
        assert!(html.contains("array of <a href=\"#schema-item\">Item</a>"));
        assert!(html.contains("<code>msg_…</code>"));
    }

    #[test]
    fn the_real_document_renders_every_route_problem_and_scheme() {
        let doc = crate::openapi::document();
        let page = render(&doc);
        for needle in [
            "id=\"op-get-v1-account\"",
            "id=\"op-post-v1-events-id-replay\"",
            "id=\"op-get-health\"",
            "id=\"problem-invalid-signature\"",
            "id=\"problem-idempotency-key-reused\"",
            "id=\"security-bearer\"",
            "id=\"security-admin-key\"",
            "id=\"schema-account\"",
            "<code>Idempotency-Key</code>",
            "href=\"/docs/style.css\"",
        ] {
            assert!(page.contains(needle), "missing {needle}");
        }
        // Nothing from another origin, no inline style or script.
        assert!(!page.contains("href=\"http") && !page.contains("src="));
        assert!(!page.contains("<script") && !page.contains("style="));
    }
}
