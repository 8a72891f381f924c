//! `build-image serve`: its arguments, turned into the library's
//! [`build_image::cmd::serve::Config`].

use anyhow::Result;
use build_image::cmd::serve::{self, config, status, token, ServeError};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::exit::UsageError;

#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n  \
    build-image serve --recipe recipe.toml --identity server.key\n  \
    build-image serve --recipes image-recipes --store secrets-store --identity ~/.config/age/key.txt\n  \
    build-image serve --recipe recipe.toml --devices devices.toml --token-file ~/.config/sealed/token\n  \
    build-image serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem --allow-host secrets.lan\n\n\
    Opens the store (--store DIR, else the store of the first recipe that reads one, else\n\
    ./secrets-store), verifies it with the identity (--identity FILE, else\n\
    $SEALED_IMAGE_STORE_IDENTITY or $SEALED_IMAGE_STORE_IDENTITY_FILE: a member of the\n\
    store; give the server a key of its own with `build-image store recipients add`) and\n\
    prints one line on stderr: the address and the access token. Without an identity the\n\
    page is read-only and unverified. The API takes `Authorization: Bearer TOKEN`; the page\n\
    logs in with the token. Listens on loopback by default: another address needs\n\
    --tls-cert/--tls-key or --insecure-behind-proxy. Stops on Ctrl-C or SIGTERM.\n\n\
    EXIT CODES: 0 stopped by a signal   1 cannot listen   2 usage (a non-loopback address\n  \
    without TLS, a bad token file or certificate)   3 a recipe given is invalid\n  \
    10 the identity cannot open the store   11 the store is not what its key authenticates")]
pub(crate) struct ServeArgs {
    /// Address and port to listen on (loopback unless TLS or --insecure-behind-proxy)
    #[arg(long, value_name = "ADDR:PORT", default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The store directory (default: the store of the first recipe that reads one)
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The server's identity (a member of the store): verifies the store and
    /// allows changes and reveals
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// A recipe to show a setup view for (repeatable)
    #[arg(long = "recipe", value_name = "FILE")]
    recipes: Vec<PathBuf>,
    /// The devices file of the one --recipe (device × secret view)
    #[arg(long, value_name = "FILE")]
    devices: Option<PathBuf>,
    /// Every recipe.toml in DIR and two levels below, with devices.toml or
    /// devices.csv beside it (repeatable)
    #[arg(long = "recipes", value_name = "DIR")]
    recipe_dirs: Vec<PathBuf>,
    /// Let the setup view run the recipes' `command` sources (as `check
    /// --deep`), at every load and refresh; without it they are shown
    /// unchecked and never run
    #[arg(long)]
    deep: bool,
    /// TLS certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address: a TLS-terminating proxy
    /// is in front (the session cookie is marked Secure)
    #[arg(long)]
    insecure_behind_proxy: bool,
    /// A host name browsers may use to reach the server, besides IP literals
    /// and localhost (NAME or NAME:PORT; repeatable)
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Read the access token from FILE (first line) instead of making one;
    /// else $SEALED_IMAGE_SERVE_TOKEN when set
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

fn usage(e: ServeError) -> anyhow::Error {
    match e {
        ServeError::Usage(m) => anyhow::anyhow!(m).context(UsageError),
        ServeError::Store(s) => anyhow::Error::new(s),
        ServeError::Recipe(r) => anyhow::Error::new(r),
        e => anyhow::Error::new(e),
    }
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    if args.devices.is_some() && args.recipes.len() != 1 {
        return Err(anyhow::anyhow!(
            "--devices belongs to one --recipe (with --recipes DIR, a devices.toml beside each recipe.toml is its devices file)"
        )
        .context(UsageError));
    }
    let mut recipes: Vec<status::RecipeFile> = args
        .recipes
        .iter()
        .map(|p| status::RecipeFile {
            path: p.clone(),
            devices: args.devices.clone(),
            found: false,
        })
        .collect();
    for d in &args.recipe_dirs {
        recipes.extend(status::discover(d).map_err(usage)?);
    }
    let store = status::store_for(args.store, &recipes);
    let config = serve::Config {
        listen: args.listen,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(config::TlsFiles { cert, key }),
            _ => None,
        },
        insecure_behind_proxy: args.insecure_behind_proxy,
        allow_hosts: args.allow_hosts,
        token: token::TokenSource::choose(args.token_file),
        store,
        identity: args.identity,
        recipes,
        deep: args.deep,
        max_body: config::DEFAULT_MAX_BODY,
    };
    serve::run(config).map_err(usage)
}
