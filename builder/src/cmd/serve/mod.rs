//! `build-image serve`: a web page and a REST API over the store, an admin
//! console for a trusted machine.
//!
//! [`config`] is what the command line decides (where to listen, TLS, the
//! token, the store, the recipes) and its checks; [`tls`] loads the
//! certificate for rustls; [`token`] is the access token; [`auth`] the
//! Bearer check, the page's sessions, CSRF tokens and the backoff of
//! failed logins; [`guard`] the checks every request passes (Host, no
//! CORS, cross-site writes) and the security headers of every response;
//! [`conn`] bounds connections (how many, how long);
//! [`body`] reads JSON bodies with bounds; [`error`] is the JSON error of
//! every refusal; [`access`] runs store operations (the same lock and
//! verification as the CLI: every request opens and verifies the store);
//! [`api`] the routes under `/api/`; [`status`] the recipes' setup views;
//! [`assets`] the embedded page.

pub mod access;
pub mod api;
pub mod assets;
pub mod auth;
pub mod body;
pub mod config;
pub mod conn;
pub mod error;
pub mod guard;
pub mod status;
pub mod tls;
pub mod token;

pub use config::Config;
pub use error::ServeError;

use std::sync::Arc;
use std::time::Duration;

/// Everything a request handler reaches.
pub struct App {
    pub store: access::StoreAccess,
    pub auth: auth::Auth,
    pub guard: guard::Guard,
    pub recipes: Vec<status::RecipeEntry>,
    /// `--deep`: the setup view runs the recipes' command sources.
    pub deep: bool,
    pub max_body: usize,
}

/// Check the store (verified with the identity when there is one), bind,
/// print the one start line, and serve until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), ServeError> {
    config.check()?;
    crate::child_env::hide(token::TOKEN_ENV);
    crate::store::audit::act_via("build-image serve");
    let (token, shown) = token::AccessToken::from_config(&config.token)?;
    let identity = crate::store::crypto::Identity::load_optional(config.identity.as_deref())?;
    let store = access::StoreAccess::new(config.store.clone(), identity.map(Arc::new));
    let opening = store.check_at_start()?;
    let recipes = status::entries(&config.recipes, &config.store)?;
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    let listener = std::net::TcpListener::bind(config.listen).map_err(|e| ServeError::Listen {
        addr: config.listen.to_string(),
        cause: e,
    })?;
    let addr = listener.local_addr().map_err(|e| ServeError::Listen {
        addr: config.listen.to_string(),
        cause: e,
    })?;
    let secure = tls.is_some() || config.insecure_behind_proxy;
    let app = Arc::new(App {
        store,
        auth: auth::Auth::new(token, secure),
        guard: guard::Guard::new(addr, &config.allow_hosts),
        recipes,
        deep: config.deep,
        max_body: config.max_body,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Listen {
            addr: addr.to_string(),
            cause: e,
        })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = match addr.ip() {
        ip if ip.is_unspecified() => format!("{scheme}://{}:{}/", "localhost", addr.port()),
        _ => format!("{scheme}://{addr}/"),
    };
    let token_text = match &shown {
        Some(t) => t.as_str().to_string(),
        None => format!("the one in {}", config.token.describe()),
    };
    // The one line that holds the token (when it was generated here).
    eprintln!(
        "build-image serve: {url} (listening on {addr}) over {opening}; {} recipe(s); access token: {token_text}",
        app.recipes.len()
    );
    drop(shown);
    runtime.block_on(serve(app, listener, tls))
}

async fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let router = api::router(app);
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let listen_err = |e: std::io::Error| ServeError::Listen {
        addr: addr.clone(),
        cause: e,
    };
    // Bounded connections, each bounded in time (see `conn`).
    let limited = conn::Limited::new(axum_server::accept::DefaultAcceptor);
    let mut server = axum_server::from_tcp(listener)
        .map_err(listen_err)?
        .http1_only();
    server
        .http_builder()
        .http1()
        .header_read_timeout(conn::HEADER_TIMEOUT);
    let server = server
        .handle(handle)
        .first_request_timeout(conn::HEADER_TIMEOUT);
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // The same server, over TLS or plain (behind a proxy, or loopback).
    let result = match tls {
        Some(config) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(limited);
            server.acceptor(acceptor).serve(app).await
        }
        None => server.acceptor(limited).serve(app).await,
    };
    result.map_err(listen_err)?;
    eprintln!("build-image serve: stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
