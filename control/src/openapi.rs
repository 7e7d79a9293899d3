//! The OpenAPI document, generated (utoipa) from the handlers' `#[utoipa::path]` attributes and
//! the `ToSchema` of their bodies and answers, so it cannot drift from the code. [`document`] is
//! what `GET /openapi.json` serves; `control/openapi.json` is the same text committed for
//! readers, and a test keeps the two equal. The vocabularies (environments, statuses, scopes,
//! outcomes) come from the enums that parse them.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Serialize;
use shared::key::Environment;
use shared::scope::{Permission, Scope, ScopeSet};
use shared::usage::Outcome;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

use crate::auth::grant::{Access, AdminScope};
use crate::error::KeyIdPath;
use crate::store::keys::KeyStatus;
use crate::store::usage::Granularity;
use crate::{account, audit, auth, keys, leaks, metrics, routes, tokens, usage, verify};

/// The document as served, generated on first use: the pretty JSON text, with a final newline.
/// (It cannot fail, every map key being a string; a failure would be a 500, not a panic.)
pub static OPENAPI: LazyLock<Result<String, String>> = LazyLock::new(|| {
    let mut text = serde_json::to_string_pretty(&document()?).map_err(|e| e.to_string())?;
    text.push('\n');
    Ok(text)
});

/// The OpenAPI 3.1 description of this service.
pub fn document() -> Result<serde_json::Value, String> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
    // What utoipa cannot say, said here (on schemas the derive made: see the test below).
    // JSON Schema's if/then/else has no utoipa attribute: `scopes` is required with `custom` and
    // must be absent (or null) otherwise (`keys::request::CreateKey::validate`).
    let create = &mut doc["components"]["schemas"]["CreateKey"];
    create["if"] = serde_json::json!({
        "properties": { "permission": { "const": "custom" } },
        "required": ["permission"],
    });
    create["then"] = serde_json::json!({
        "required": ["scopes"],
        "properties": { "scopes": { "type": "array", "minItems": 1 } },
    });
    create["else"] = serde_json::json!({ "properties": { "scopes": { "type": "null" } } });
    // The text rule's refused characters, from its one table.
    for &(schema, property, required) in GUARDED_TEXT {
        doc["components"]["schemas"][schema]["properties"][property]["pattern"] =
            text_pattern(required).into();
    }
    // Who may call each operation, from the table the router enforces (`routes::operations`).
    for op in routes::operations() {
        let method = op.method.as_str().to_ascii_lowercase();
        let operation = &mut doc["paths"][op.path][method.as_str()];
        if operation["security"] == serde_json::json!([]) {
            continue;
        }
        match op.access {
            Access::Scope(scope) => {
                operation["security"] = serde_json::json!([
                    { "managementToken": [scope.name()] },
                    { "session": [] },
                ]);
                let refusal = format!(
                    "A management token without the scope `{}` (`insufficient_scope`).",
                    scope.name()
                );
                let answer = &mut operation["responses"]["403"];
                match answer["description"].as_str() {
                    Some(other) => answer["description"] = format!("{other} {refusal}").into(),
                    None => *answer = serde_json::to_value(problem(&refusal)).unwrap_or_default(),
                }
            }
            Access::Session => {
                operation["security"] = serde_json::json!([{ "session": [] }]);
            }
            Access::Any => {}
        }
    }
    // utoipa's `min_properties` writes `maxProperties` (5.5.0): a PATCH must change something.
    doc["components"]["schemas"]["UpdateKey"]["minProperties"] = 1.into();
    // Every outcome, and nothing else (utoipa sets `additionalProperties` only from
    // `deny_unknown_fields`, a deserializing attribute, and this is an answer).
    doc["components"]["schemas"]["OutcomeCounts"]["additionalProperties"] = false.into();
    // The audit trail's `before` takes any number (one past every sequence number is no bound,
    // `audit::AuditQuery`): no `int64` format that would call a larger one invalid.
    for path in ["/v1/audit-events", "/v1/audit-events/export"] {
        if let Some(params) = doc["paths"][path]["get"]["parameters"].as_array_mut() {
            for param in params.iter_mut().filter(|p| p["name"] == "before") {
                if let Some(schema) = param["schema"].as_object_mut() {
                    schema.remove("format");
                }
            }
        }
    }
    Ok(doc)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lynxo Keys control plane",
        version = "1.0.0",
        description = "Admin API for Lynxo API keys. Errors are RFC 9457 problem+json with a stable `code`. Times are Unix seconds.",
    ),
    servers((url = "http://localhost:8080")),
    paths(
        keys::create_key,
        keys::list_keys,
        verify::verify_key,
        leaks::revoke_held_key,
        keys::get_key,
        keys::update_key,
        keys::revoke_key,
        keys::bulk_revoke_keys,
        keys::rotate_key,
        usage::query::get_key_usage,
        usage::query::list_key_activity,
        leaks::list_key_leaks,
        usage::query::get_account_usage,
        account::get_account,
        leaks::set_leak_response,
        leaks::list_leaks,
        audit::list_audit_events,
        audit::export_audit_events,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        auth::session::create_session,
        auth::session::delete_session,
        auth::sessions::list_sessions,
        auth::sessions::end_other_sessions,
        auth::sessions::end_session,
        auth::password::change_password,
        leaks::report_github_leaks,
        leaks::report_gitlab_leaks,
        routes::healthz,
        routes::readyz,
        routes::openapi,
        metrics::get_metrics,
    ),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// The two ways to call the API, and the operators' scrape token.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A management token, `lnxm_...`. API keys (`lnx_...`) are refused.",
            ))
            .build();
        bearer.bearer_format = None;
        components.add_security_scheme("managementToken", SecurityScheme::Http(bearer));
        let mut scrape = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The metrics token (`LYNXO_METRICS_TOKEN`), for `GET /metrics` only.",
            ))
            .build();
        scrape.bearer_format = None;
        components.add_security_scheme("metrics_token", SecurityScheme::Http(scrape));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                auth::SESSION_COOKIE,
                "Dashboard session; state-changing requests must come from the dashboard origin.",
            ))),
        );
    }
}

/// RFC 9457 problem details with a stable `code`: the body of every error answer. Fields beyond
/// these name the failure's specifics.
// The body `crate::error::AppError` writes; this type only describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// This occurrence, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
    /// The stable, machine-readable code.
    pub code: String,
}

/// An error answer: a problem document (RFC 9457) described by `description`.
fn problem(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", content)
            .build(),
    )
}

/// Sets of error answers that many operations share, each written once: a handler's
/// `responses(...)` names the sets it can answer with beside its own answers.
macro_rules! refusals {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal),+ $(,)? })*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$(($status.to_owned(), problem($description))),+])
            }
        }
    )*};
}

refusals! {
    /// No credentials, or credentials that are not valid (`auth::Caller`).
    Unauthenticated { "401" => "Missing or invalid credentials (RFC 6750)." }
    /// A JSON body that cannot be read or is invalid (`error::Json`, `body`).
    JsonBodyRefused {
        "400" => "Body is not valid JSON.",
        "413" => "Body too large.",
        "415" => "Body is not application/json.",
        "422" => "A field is invalid.",
    }
    /// A state-changing request with a session cookie from another site (`auth::Caller`).
    CrossSite { "403" => "Cross-site request with a session cookie." }
    /// A key id that names no key of the caller's account (`error::KeyIdPath`).
    KeyNotFound { "404" => "No such key in this account." }
    /// A query string that cannot be read (`error::Query`).
    BadQuery { "400" => "Bad query string." }
    /// A usage range the usage queries refuse (`usage::query::resolve`).
    UsageRangeRefused { "422" => "`from` after `to`, or more than 1500 buckets (`max_buckets`)." }
}

/// The `{id}` of the key routes, as `error::KeyIdPath` reads it.
impl IntoParams for KeyIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-f]{32}$"));
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(
                    "Key id, 32 lowercase hex digits. Another account's key is 404.",
                ))
                .schema(Some(schema))
                .build(),
        ]
    }
}

fn string_enum<'a>(names: impl IntoIterator<Item = &'a str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
}

/// `development`, `staging` or `production`.
pub fn environment() -> Schema {
    string_enum(Environment::ALL.map(Environment::name)).into()
}

/// A key's permission level.
pub fn permission() -> Schema {
    string_enum(
        [
            Permission::ReadOnly,
            Permission::ReadWrite,
            Permission::FullAccess,
            Permission::Custom(ScopeSet::EMPTY),
        ]
        .map(Permission::name),
    )
    .into()
}

/// A key's status.
pub fn key_status() -> Schema {
    string_enum(KeyStatus::ALL.map(KeyStatus::name)).into()
}

/// A usage bucket's size.
pub fn granularity() -> Schema {
    string_enum(Granularity::ALL.map(Granularity::name)).into()
}

/// A request's outcome.
pub fn outcome() -> Schema {
    string_enum(Outcome::ALL.map(Outcome::name)).into()
}

/// An outcome, or `denied`: every answer of the edge itself.
pub fn outcome_filter() -> Schema {
    string_enum(
        Outcome::ALL
            .map(Outcome::name)
            .into_iter()
            .chain(["denied"]),
    )
    .into()
}

/// Scope names from the catalog.
pub fn scopes() -> Schema {
    ArrayBuilder::new()
        .items(RefOr::T(string_enum(Scope::ALL.map(Scope::name)).into()))
        .into()
}

/// Admin scope names (`auth::grant::AdminScope`), at least one: `CreateToken.scopes`.
pub fn admin_scopes() -> Schema {
    ArrayBuilder::new()
        .min_items(Some(1))
        .items(RefOr::T(
            string_enum(AdminScope::ALL.map(AdminScope::name)).into(),
        ))
        .into()
}

/// A permission level, or null: `CreateToken.key_grant`.
pub fn permission_or_null() -> Schema {
    let names = [
        Permission::ReadOnly,
        Permission::ReadWrite,
        Permission::FullAccess,
        Permission::Custom(ScopeSet::EMPTY),
    ]
    .map(|p| serde_json::Value::from(p.name()));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(names.into_iter().chain([serde_json::Value::Null])))
        .into()
}

/// Scope names from the catalog, or null: `CreateKey.scopes`.
pub fn scopes_or_null() -> Schema {
    ArrayBuilder::new()
        .description(Some("Only with `custom`: at least one scope name."))
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(RefOr::T(string_enum(Scope::ALL.map(Scope::name)).into()))
        .into()
}

/// An environment, or null.
pub fn environment_or_null() -> Schema {
    let names = Environment::ALL.map(|e| serde_json::Value::from(e.name()));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(names.into_iter().chain([serde_json::Value::Null])))
        .into()
}

/// A key id: 32 lowercase hex digits.
pub fn key_id() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(KEY_ID_PATTERN))
        .into()
}

/// The ids of a bulk revoke: 1 to `MAX_BULK_REVOKE` distinct key ids.
pub fn bulk_key_ids() -> Schema {
    ArrayBuilder::new()
        .items(utoipa::openapi::RefOr::T(key_id()))
        .min_items(Some(1))
        .max_items(Some(crate::keys::MAX_BULK_REVOKE))
        .unique_items(true)
        .into()
}

/// The pattern of a key id.
pub const KEY_ID_PATTERN: &str = "^[0-9a-f]{32}$";

/// The fields the text rule guards (`crate::text`), by schema and property, and whether they
/// must hold more than spaces.
const GUARDED_TEXT: &[(&str, &str, bool)] = &[
    ("CreateKey", "name", true),
    ("CreateKey", "description", false),
    ("UpdateKey", "name", true),
    ("UpdateKey", "description", false),
    ("RevokeKey", "reason", true),
    ("BulkRevokeKeys", "reason", true),
    ("CreateToken", "name", true),
];

/// The pattern of a guarded text field: none of the refused characters (those the pattern
/// dialects can spell, `text::bmp_class`), and, if `required`, one that is not a space.
fn text_pattern(required: bool) -> String {
    let refused = crate::text::bmp_class();
    if required {
        format!("^[^{refused}]*[^\\s{refused}][^{refused}]*$")
    } else {
        format!("^[^{refused}]*$")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indexing a `serde_json::Value` creates what is missing: a renamed schema would leave the
    /// additions in [`document`] on an empty object of the old name.
    #[test]
    fn what_document_adds_lands_on_generated_schemas() {
        let doc = document().unwrap();
        for name in ["CreateKey", "UpdateKey", "OutcomeCounts"] {
            let schema = &doc["components"]["schemas"][name];
            assert!(schema["properties"].is_object(), "{name} is not generated");
        }
        for &(schema, property, _) in GUARDED_TEXT {
            let field = &doc["components"]["schemas"][schema]["properties"][property];
            assert!(
                field["maxLength"].is_u64(),
                "{schema}.{property} is not generated"
            );
        }
        let audit = &doc["paths"]["/v1/audit-events"]["get"]["parameters"];
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "before")
        );
    }
}
