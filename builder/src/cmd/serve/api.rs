//! The routes. Under `/api/` (JSON in and out; every route but login needs
//! the token or a page session, see [`super::auth`]):
//!
//! | route | what |
//! |---|---|
//! | `POST /api/login` `{"token"}` | a page session: cookie + `{"csrf"}` |
//! | `POST /api/logout` | ends it |
//! | `GET /api/session` | who is asking, whether the server can change and reveal |
//! | `GET /api/secrets` | every secret's metadata (never values) |
//! | `POST /api/secrets` `{"name","description","scope","value"\|"value_base64"\|"generate"}` | create (201; 400 bad name, 409 exists) |
//! | `GET /api/secrets/NAME` | one secret's metadata with its versions (404) |
//! | `PUT /api/secrets/NAME` `{"description"?, value?}` | a new version, or the description alone |
//! | `POST /api/secrets/NAME/rotate` `{value?}` | a new version (regenerated when it was generated) |
//! | `POST /api/secrets/NAME/value` `{"scope"?,"version"?}` | reveal (audited first; 403 without identity) |
//! | `DELETE /api/secrets/NAME[?scope=S]` | remove (404) |
//! | `GET /api/secrets/NAME/history` | versions and the audit lines of the name |
//! | `GET /api/audit?name=&op=&by=&since=&until=&limit=` | the audit log, filtered, newest first |
//! | `GET /api/recipes`, `/api/recipes/ID/status`, `/api/recipes/ID/matrix` | setup views |
//!
//! The page is `/`, `/app.js`, `/app.css`.

use super::auth::{self, Principal};
use super::body::{Json, OptionalJson, SecretText};
use super::error::ApiError;
use super::{assets, guard, status, App};
use crate::store::audit::Entry;
use crate::store::commands::{self, Written};
use crate::store::input::{self, GivenValue, ValueInput};
use crate::store::metadata::SecretMeta;
use crate::store::{validate_name, Scope};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zeroize::Zeroizing;

type ApiResult = Result<Response, ApiError>;

/// Longest description accepted.
pub const MAX_DESCRIPTION: usize = 1000;

pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/api/session", get(session))
        .route("/api/logout", post(logout))
        .route("/api/secrets", get(list).post(create))
        .route(
            "/api/secrets/{name}",
            get(get_one).put(update).delete(delete),
        )
        .route("/api/secrets/{name}/history", get(history))
        .route("/api/secrets/{name}/value", post(reveal))
        .route("/api/secrets/{name}/rotate", post(rotate))
        .route("/api/audit", get(audit))
        .route("/api/recipes", get(recipes))
        .route("/api/recipes/{id}/status", get(recipe_status))
        .route("/api/recipes/{id}/matrix", get(recipe_matrix))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::require));
    Router::new()
        .route("/api/login", post(login))
        .merge(api)
        .route_layer(middleware::from_fn(queries_only_where_read))
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), guard::guard))
        .with_state(app)
}

/// A query string only where a route reads one (`DELETE
/// /api/secrets/NAME?scope=`, `GET /api/audit?…`); elsewhere 400, never
/// ignored: `PUT /api/secrets/NAME?scope=device:x` would otherwise change
/// the global value (the scope of a change goes in its body).
async fn queries_only_where_read(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let reads_query = (req.method() == axum::http::Method::DELETE
        && req.uri().path().starts_with("/api/secrets/"))
        || (req.method() == axum::http::Method::GET && req.uri().path() == "/api/audit");
    if req.uri().query().is_some_and(|q| !q.is_empty()) && !reads_query {
        return ApiError::bad_request(
            "this route takes no query string (a change's scope goes in its JSON body; only DELETE takes ?scope= and /api/audit its filters)",
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(100).collect();
    ApiError::not_found(format!("no such page or API route: {path}"))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method (see the API table in the README)",
    )
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

/// The secret name of a path, checked (400 with an example).
fn name_of(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = p.map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))?;
    validate_name(&name)?;
    Ok(name)
}

fn scope_of(s: Option<&str>) -> Result<Scope, ApiError> {
    Ok(Scope::parse(s.unwrap_or("global"))?)
}

fn check_description(d: Option<&str>) -> Result<(), ApiError> {
    if let Some(d) = d {
        if d.chars().count() > MAX_DESCRIPTION {
            return Err(ApiError::bad_request(format!(
                "the description is longer than {MAX_DESCRIPTION} characters"
            )));
        }
        if d.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "the description may not hold control characters (newlines, tabs)",
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    length: Option<usize>,
    charset: Option<String>,
}

/// At most one of `value`, `value_base64`, `generate`.
fn value_input(
    value: Option<SecretText>,
    value_base64: Option<SecretText>,
    generate: Option<Generate>,
) -> Result<Option<ValueInput>, ApiError> {
    let given = [value.is_some(), value_base64.is_some(), generate.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        return Err(ApiError::bad_request(
            "give one of value, value_base64 and generate",
        ));
    }
    if value.as_ref().is_some_and(|v| v.0.is_empty())
        || value_base64.as_ref().is_some_and(|v| v.0.trim().is_empty())
    {
        return Err(ApiError::bad_request(
            "the value is empty: give one, or generate {\"length\": 32}",
        ));
    }
    if let Some(v) = value {
        return Ok(Some(ValueInput::Given(GivenValue(Zeroizing::new(
            v.0.as_bytes().to_vec(),
        )))));
    }
    if let Some(v) = value_base64 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.0.trim().as_bytes())
            .map_err(|_| ApiError::bad_request("value_base64 is not base64 (RFC 4648, padded)"))?;
        return Ok(Some(ValueInput::Given(GivenValue(Zeroizing::new(bytes)))));
    }
    if let Some(g) = generate {
        let g = input::generator(
            g.charset.as_deref().unwrap_or("alnum"),
            g.length.unwrap_or(32),
        )
        .map_err(|e| ApiError::bad_request(e.to_string().replace("--", "")))?;
        return Ok(Some(ValueInput::Generate(g)));
    }
    Ok(None)
}

// ---- session ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: SecretText,
}

async fn login(State(app): State<Arc<App>>, req: axum::extract::Request) -> ApiResult {
    let peer = auth::peer_ip(&req);
    let l: Login = super::body::json_body(req, super::body::LOGIN_MAX_BODY).await?;
    let (cookie, csrf) = app.auth.login(&l.token.0, peer)?;
    let mut r = json(StatusCode::OK, &serde_json::json!({ "csrf": csrf }));
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

async fn logout(State(app): State<Arc<App>>, Extension(p): Extension<Principal>) -> ApiResult {
    let cookie = app.auth.logout(&p);
    let mut r = json(StatusCode::OK, &serde_json::json!({ "logged_out": true }));
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

async fn session(State(app): State<Arc<App>>, Extension(p): Extension<Principal>) -> ApiResult {
    let (by, csrf) = match &p {
        Principal::Bearer => ("bearer", None),
        Principal::Session { csrf, .. } => ("session", Some(csrf.clone())),
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "authenticated_by": by,
            "csrf": csrf,
            "store": app.store.dir().display().to_string(),
            "can_change": app.store.has_identity(),
            "recipes": app.recipes,
        }),
    ))
}

// ---- secrets ----

#[derive(Serialize)]
struct VersionView {
    version: u32,
    created_at: String,
    created_by: String,
    operation: String,
}

#[derive(Serialize)]
struct ScopeView {
    scope: String,
    current: u32,
    generated: bool,
    created_at: String,
    created_by: String,
    updated_at: String,
    updated_by: String,
    versions: Vec<VersionView>,
}

#[derive(Serialize)]
struct SecretView {
    name: String,
    description: String,
    verified: bool,
    scopes: Vec<ScopeView>,
}

fn secret_view(m: &SecretMeta, verified: bool) -> SecretView {
    SecretView {
        name: m.name.clone(),
        description: m.description.clone(),
        verified,
        scopes: m
            .scopes
            .iter()
            .map(|(scope, s)| ScopeView {
                scope: scope.clone(),
                current: s.current,
                generated: s.generator.is_some(),
                created_at: s.created_at.clone(),
                created_by: s.created_by.clone(),
                updated_at: s.updated_at.clone(),
                updated_by: s.updated_by.clone(),
                versions: s
                    .versions
                    .iter()
                    .map(|v| VersionView {
                        version: v.version,
                        created_at: v.created_at.clone(),
                        created_by: v.created_by.clone(),
                        operation: v.operation.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no secret {name} in the store: create it with POST /api/secrets"
    ))
}

async fn list(State(app): State<Arc<App>>) -> ApiResult {
    app.store
        .read(|v| {
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "verified": v.verified,
                    "store_id": v.id,
                    "secrets": commands::list(&v.metas),
                }),
            ))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    description: Option<String>,
    scope: Option<String>,
    value: Option<SecretText>,
    value_base64: Option<SecretText>,
    generate: Option<Generate>,
}

fn written(status: StatusCode, w: &Written) -> Response {
    let mut r = json(status, w);
    if let Ok(v) = HeaderValue::from_str(&format!("/api/secrets/{}", w.name)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn create(State(app): State<Arc<App>>, Json(c): Json<Create>) -> ApiResult {
    validate_name(&c.name)?;
    let scope = scope_of(c.scope.as_deref())?;
    check_description(c.description.as_deref())?;
    let input = value_input(c.value, c.value_base64, c.generate)?.ok_or_else(|| {
        ApiError::bad_request(
            "no value: give value (text), value_base64 (bytes) or generate {\"length\": 32, \"charset\": \"alnum\"}",
        )
    })?;
    let (name, description) = (c.name, c.description);
    app.store
        .write(move |s, _| {
            let w = commands::set(s, &name, &scope, description.as_deref(), false, &input)?;
            Ok(written(StatusCode::CREATED, &w))
        })
        .await
}

async fn get_one(State(app): State<Arc<App>>, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = name_of(p)?;
    app.store
        .read(move |v| {
            let m = v.metas.get(&name).ok_or_else(|| missing(&name))?;
            Ok(json(StatusCode::OK, &secret_view(m, v.verified)))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    description: Option<String>,
    scope: Option<String>,
    value: Option<SecretText>,
    value_base64: Option<SecretText>,
    generate: Option<Generate>,
}

async fn update(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    Json(u): Json<Update>,
) -> ApiResult {
    let name = name_of(p)?;
    let scope = scope_of(u.scope.as_deref())?;
    check_description(u.description.as_deref())?;
    let input = value_input(u.value, u.value_base64, u.generate)?;
    let description = u.description;
    if input.is_none() && description.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give a new value (value, value_base64 or generate) for a new version, or a description",
        ));
    }
    app.store
        .write(move |s, _| match input {
            Some(input) => {
                let w = commands::set(s, &name, &scope, description.as_deref(), true, &input)?;
                Ok(written(StatusCode::OK, &w))
            }
            None => {
                let d = description.unwrap_or_default();
                let changed = commands::describe(s, &name, &d)?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({"name": name, "description": d, "changed": changed}),
                ))
            }
        })
        .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    scope: Option<String>,
    value: Option<SecretText>,
    value_base64: Option<SecretText>,
    generate: Option<Generate>,
}

async fn rotate(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    OptionalJson(r): OptionalJson<Rotate>,
) -> ApiResult {
    let name = name_of(p)?;
    let scope = scope_of(r.scope.as_deref())?;
    let input = value_input(r.value, r.value_base64, r.generate)?;
    app.store
        .write(move |s, _| {
            let w = commands::regenerate(s, &name, &scope, input.as_ref())?;
            Ok(written(StatusCode::OK, &w))
        })
        .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reveal {
    scope: Option<String>,
    version: Option<u32>,
}

async fn reveal(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    OptionalJson(r): OptionalJson<Reveal>,
) -> ApiResult {
    let name = name_of(p)?;
    let scope = scope_of(r.scope.as_deref())?;
    app.store
        .write(move |s, id| {
            // The audit line is durable before the value leaves.
            let (value, version) = commands::get(s, id, &name, &scope, r.version)?;
            let b64;
            let (encoding, text) = match std::str::from_utf8(&value) {
                Ok(t) => ("utf-8", t),
                Err(_) => {
                    b64 = Zeroizing::new(
                        base64::engine::general_purpose::STANDARD.encode(&value[..]),
                    );
                    ("base64", b64.as_str())
                }
            };
            let body = serde_json::to_vec(&Revealed {
                name: &name,
                scope: scope.to_string(),
                version,
                encoding,
                value: (encoding == "utf-8").then_some(text),
                value_base64: (encoding == "base64").then_some(text),
            })
            .map_err(|_| ApiError::internal("could not encode the value"))?;
            let mut r = Response::new(axum::body::Body::from(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        })
        .await
}

/// What a reveal returns (borrowing the value: no copy but the response's).
#[derive(Serialize)]
struct Revealed<'a> {
    name: &'a str,
    scope: String,
    version: u32,
    encoding: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeQuery {
    scope: Option<String>,
}

async fn delete(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> ApiResult {
    let name = name_of(p)?;
    let q: ScopeQuery = query(&uri)?;
    let scope = q.scope.as_deref().map(Scope::parse).transpose()?;
    app.store
        .write(move |s, _| {
            let removed = commands::rm(s, &name, scope.as_ref())?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({"name": name, "removed": removed}),
            ))
        })
        .await
}

fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "the query string does not fit this route: {}",
                super::body::unquote(e.body_text().split(": ").last().unwrap_or(""))
            ))
        })
}

#[derive(Serialize)]
struct EntryView {
    at: String,
    by: String,
    op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

fn entry_view(e: &Entry) -> EntryView {
    EntryView {
        at: e.at.clone(),
        by: e.by.clone(),
        op: e.op.clone(),
        name: e.name.clone(),
        scope: e.scope.clone(),
        version: e.version,
        detail: e.detail.clone(),
    }
}

async fn history(State(app): State<Arc<App>>, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = name_of(p)?;
    app.store
        .read(move |v| {
            let m = v.metas.get(&name).ok_or_else(|| missing(&name))?;
            let log: Vec<EntryView> = v
                .log
                .iter()
                .rev()
                .filter(|e| e.name.as_deref() == Some(name.as_str()))
                .take(1000)
                .map(entry_view)
                .collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({"secret": secret_view(m, v.verified), "log": log}),
            ))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    name: Option<String>,
    op: Option<String>,
    by: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

async fn audit(State(app): State<Arc<App>>, uri: Uri) -> ApiResult {
    let q: AuditQuery = query(&uri)?;
    if let Some(n) = &q.name {
        validate_name(n)?;
    }
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    app.store
        .read(move |v| {
            let matching: Vec<&Entry> = v
                .log
                .iter()
                .rev()
                .filter(|e| q.name.as_ref().is_none_or(|n| e.name.as_ref() == Some(n)))
                .filter(|e| q.op.as_ref().is_none_or(|o| e.op == *o))
                .filter(|e| q.by.as_ref().is_none_or(|b| e.by.contains(b.as_str())))
                .filter(|e| q.since.as_ref().is_none_or(|s| e.at >= *s))
                .filter(|e| q.until.as_ref().is_none_or(|u| e.at <= *u))
                .collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "verified": v.verified,
                    "matching": matching.len(),
                    "entries": matching.iter().take(limit).map(|e| entry_view(e)).collect::<Vec<_>>(),
                }),
            ))
        })
        .await
}

// ---- recipes ----

async fn recipes(State(app): State<Arc<App>>) -> ApiResult {
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"recipes": app.recipes}),
    ))
}

fn recipe(
    app: &App,
    p: Result<Path<String>, PathRejection>,
) -> Result<status::RecipeEntry, ApiError> {
    let Path(id) = p.map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))?;
    app.recipes
        .iter()
        .find(|r| r.id == id)
        .cloned()
        .ok_or_else(|| {
            let id: String = id.chars().take(64).collect();
            ApiError::not_found(format!(
                "no recipe {id:?} on this server (GET /api/recipes lists them)"
            ))
        })
}

/// The store's metadata now, then the recipe's sources asked outside the
/// store's lock (a command source may take its time).
async fn with_metas<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&std::collections::BTreeMap<String, SecretMeta>, bool) -> Result<T, ApiError>
        + Send
        + 'static,
) -> Result<T, ApiError> {
    let (metas, verified) = app
        .store
        .read(|v| Ok((v.metas.clone(), v.verified)))
        .await?;
    tokio::task::spawn_blocking(move || f(&metas, verified))
        .await
        .map_err(|_| ApiError::internal("the recipe check failed unexpectedly"))?
}

async fn recipe_status(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let entry = recipe(&app, p)?;
    let deep = app.deep;
    with_metas(&app, move |metas, verified| {
        Ok(json(
            StatusCode::OK,
            &status::status(&entry, metas, verified, deep)?,
        ))
    })
    .await
}

async fn recipe_matrix(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let entry = recipe(&app, p)?;
    let deep = app.deep;
    with_metas(&app, move |metas, verified| {
        let (_, rows) = status::matrix(&entry, metas, deep)?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"recipe": entry, "verified": verified, "devices": rows}),
        ))
    })
    .await
}
