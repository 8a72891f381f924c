//! `build-image store …`: arguments and printing. The work is in
//! [`super::commands`] and [`super::archive`].

use super::crypto::{Identity, Recipients};
use super::input::{self, ValueInput};
use super::layout::{write_atomic, Store};
use super::names::Scope;
use super::{archive, commands, StoreError};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(after_help = "EXAMPLES:\n  \
    build-image store init --recipient age1… --recipient \"$(cat ~/.ssh/id_ed25519.pub)\"\n  \
    build-image store set WIFI_PSK --description \"WPA2 passphrase of the site Wi-Fi\"   (value typed, not shown)\n  \
    build-image store set API_TOKEN --generate --length 40 --charset base64url\n  \
    build-image store set WIFI_PSK --scope tag:lobby --from-file lobby-psk.txt\n  \
    build-image store list\n  \
    SEALED_IMAGE_STORE_IDENTITY=\"$CI_STORE_KEY\" build-image build recipe.toml --out out/\n\n\
    The store is --store DIR, else the [store] path of --recipe FILE (default secrets-store/\n\
    beside it), else ./secrets-store. Values never come from the command line: standard\n\
    input (not echoed on a terminal), --from-file or --generate. Identity to decrypt:\n\
    --identity FILE, else $SEALED_IMAGE_STORE_IDENTITY (the key itself), else\n\
    $SEALED_IMAGE_STORE_IDENTITY_FILE; age keys and OpenSSH ed25519 private keys work.\n\n\
    EXIT CODES: 8 the name already exists   9 no such secret, scope or version\n  \
    10 no identity, or it cannot decrypt")]
pub struct StoreArgs {
    /// The store directory
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Use the store of this recipe ([store] path, default secrets-store/ beside it)
    #[arg(long, global = true, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Identity file (AGE-SECRET-KEY-1… lines or an OpenSSH ed25519 private key)
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Print JSON on stdout (metadata only, never values)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing on success
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// Where a new value comes from (never the command line).
#[derive(Args)]
pub struct ValueArgs {
    /// Read the value from FILE (bytes as they are)
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    pub from_file: Option<PathBuf>,
    /// Generate a random value
    #[arg(long)]
    pub generate: bool,
    /// With --generate: number of characters
    #[arg(long, value_name = "N", default_value_t = 32, requires = "generate")]
    pub length: usize,
    /// With --generate: alnum, hex, base64url, digits or ascii (printable with symbols)
    #[arg(
        long,
        value_name = "SET",
        default_value = "alnum",
        requires = "generate"
    )]
    pub charset: String,
}

impl ValueArgs {
    fn input(&self) -> Result<Option<ValueInput>, StoreError> {
        Ok(if self.generate {
            Some(ValueInput::Generate(input::generator(
                &self.charset,
                self.length,
            )?))
        } else {
            self.from_file.clone().map(ValueInput::File)
        })
    }
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Create a store with its recipients
    #[command(
        after_help = "EXAMPLES:\n  build-image store init --recipient age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq\n  \
        build-image store init --store secrets-store --recipient \"$(cat ~/.ssh/id_ed25519.pub)\" --recipients-file team.txt"
    )]
    Init {
        /// An age1… recipient or an `ssh-ed25519 AAAA… comment` line (repeatable)
        #[arg(long = "recipient", value_name = "KEY")]
        recipients: Vec<String>,
        /// A file of recipients, one a line
        #[arg(long, value_name = "FILE")]
        recipients_file: Option<PathBuf>,
    },
    /// Store a new secret (refused when it exists, unless --update)
    #[command(
        after_help = "EXAMPLES:\n  build-image store set WIFI_PSK --description \"Wi-Fi passphrase\"\n  \
        printf %s \"$TOKEN\" | build-image store set API_TOKEN\n  \
        build-image store set DB_PASSWORD --generate --length 24\n  \
        build-image store set WIFI_PSK --update --from-file new-psk.txt"
    )]
    Set {
        /// SCREAMING_SNAKE_CASE name, e.g. WIFI_PSK
        name: String,
        /// What it is (shown by list, check; never the value)
        #[arg(long)]
        description: Option<String>,
        /// Add a new version to an existing secret (may also change the description)
        #[arg(long)]
        update: bool,
        /// global, tag:NAME or device:NAME
        #[arg(long, default_value = "global", value_parser = parse_scope)]
        scope: Scope,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Print a secret's value on stdout (or into --output FILE, mode 0600)
    #[command(
        after_help = "EXAMPLES:\n  build-image store get WIFI_PSK --identity ~/.config/age/key.txt\n  \
        build-image store get WIFI_PSK --version 1 --output old-psk.txt"
    )]
    Get {
        name: String,
        /// A version number (default: the current one)
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        #[arg(long, default_value = "global", value_parser = parse_scope)]
        scope: Scope,
        /// Write the value into FILE (mode 0600) instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List secrets with descriptions, scopes and versions (never values)
    #[command(
        after_help = "EXAMPLES:\n  build-image store list\n  build-image store list --json | jq '.[].name'"
    )]
    List,
    /// Remove a secret (or one scope of it)
    #[command(
        after_help = "EXAMPLES:\n  build-image store rm OLD_TOKEN\n  build-image store rm WIFI_PSK --scope tag:lobby"
    )]
    Rm {
        name: String,
        #[arg(long, value_parser = parse_scope)]
        scope: Option<Scope>,
    },
    /// Give a secret a new value (regenerated when it was generated)
    #[command(
        after_help = "EXAMPLES:\n  build-image store rotate API_TOKEN          (generated: same length and charset)\n  \
        build-image store rotate WIFI_PSK --from-file new.txt"
    )]
    Rotate {
        name: String,
        #[arg(long, default_value = "global", value_parser = parse_scope)]
        scope: Scope,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Every version of a secret: when, who, how (never values)
    #[command(after_help = "EXAMPLES:\n  build-image store history WIFI_PSK")]
    History { name: String },
    /// Show the audit log and check files, metadata and recipients
    #[command(
        after_help = "EXAMPLES:\n  build-image store audit\n  build-image store audit --json"
    )]
    Audit,
    /// Re-encrypt every version to the current recipients.txt
    #[command(
        after_help = "EXAMPLES:\n  echo \"age1… # carol\" >> secrets-store/recipients.txt && build-image store rekey"
    )]
    Rekey,
    /// Write an age-encrypted archive of every secret and version (backup, migration)
    #[command(after_help = "EXAMPLES:\n  build-image store export backup.age\n  \
        build-image store export move.age --recipient age1…   (to the new store's key)")]
    Export {
        file: PathBuf,
        /// Encrypt the archive to this key instead of the store's recipients (repeatable)
        #[arg(long = "recipient", value_name = "KEY")]
        recipients: Vec<String>,
    },
    /// Add the secrets of an exported archive (names already present are refused)
    #[command(after_help = "EXAMPLES:\n  build-image store import backup.age --store new-store")]
    Import { file: PathBuf },
}

fn store_dir(args: &StoreArgs) -> Result<PathBuf, StoreError> {
    if let Some(s) = &args.store {
        return Ok(s.clone());
    }
    if let Some(r) = &args.recipe {
        let recipe = crate::recipe::Recipe::load(r)
            .map_err(|e| StoreError::Value(format!("--recipe: {e}")))?;
        return Ok(super::recipe::store_dir(&recipe));
    }
    Ok(PathBuf::from("secrets-store"))
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Run one store command.
pub fn run(args: StoreArgs) -> Result<(), StoreError> {
    let dir = store_dir(&args)?;
    let say = |msg: String| {
        if !args.quiet && !args.json {
            eprintln!("{msg}");
        }
    };
    let identity = || Identity::load(args.identity.as_deref());
    match &args.command {
        StoreCommand::Init {
            recipients,
            recipients_file,
        } => {
            let mut all = recipients.clone();
            if let Some(f) = recipients_file {
                all.push(
                    std::fs::read_to_string(f)
                        .map_err(super::io(format!("reading {}", f.display())))?,
                );
            }
            let n = commands::init(&dir, &all)?;
            if args.json {
                print_json(&serde_json::json!({"store": dir, "recipients": n}));
            }
            say(format!(
                "created the store {} with {n} recipient(s); add it to git (the .gitignore keeps its lock out)",
                dir.display()
            ));
        }
        StoreCommand::Set {
            name,
            description,
            update,
            scope,
            value,
        } => {
            let input = value.input()?.unwrap_or(ValueInput::Stdin);
            let store = Store::open(&dir)?;
            let w = commands::set(&store, name, scope, description.as_deref(), *update, &input)?;
            if args.json {
                print_json(&w);
            }
            say(format!(
                "{} {} ({}) version {}",
                if *update { "updated" } else { "stored" },
                w.name,
                w.scope,
                w.version
            ));
        }
        StoreCommand::Get {
            name,
            version,
            scope,
            output,
        } => {
            super::validate_name(name)?;
            if args.json && output.is_none() {
                return Err(StoreError::Value(
                    "--json prints metadata only: with get it needs --output FILE for the value"
                        .into(),
                ));
            }
            let store = Store::open(&dir)?;
            let id = identity()?;
            let (value, v) = commands::get(&store, &id, name, scope, *version)?;
            match output {
                Some(f) => {
                    write_atomic(f, &value, 0o600)?;
                    if args.json {
                        print_json(&serde_json::json!({
                            "name": name, "scope": scope.to_string(), "version": v, "output": f
                        }));
                    }
                    say(format!(
                        "wrote {name} ({scope}) version {v} to {}",
                        f.display()
                    ));
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&value)
                        .and_then(|_| out.flush())
                        .map_err(super::io("writing standard output"))?;
                }
            }
        }
        StoreCommand::List => {
            let store = Store::open(&dir)?;
            let rows = commands::list(&store)?;
            if args.json {
                print_json(&rows);
            } else {
                println!(
                    "{:<28} {:<18} {:<8} {:<21} DESCRIPTION",
                    "NAME", "SCOPE", "VERSION", "UPDATED"
                );
                for r in &rows {
                    for (i, s) in r.scopes.iter().enumerate() {
                        println!(
                            "{:<28} {:<18} {:<8} {:<21} {}",
                            if i == 0 { r.name.as_str() } else { "" },
                            s.scope,
                            format!("v{}", s.current),
                            s.updated_at,
                            if i == 0 { r.description.as_str() } else { "" }
                        );
                    }
                }
            }
        }
        StoreCommand::Rm { name, scope } => {
            let store = Store::open(&dir)?;
            let removed = commands::rm(&store, name, scope.as_ref())?;
            if args.json {
                print_json(&serde_json::json!({"name": name, "scopes": removed}));
            }
            say(format!("removed {name} ({})", removed.join(", ")));
        }
        StoreCommand::Rotate { name, scope, value } => {
            let input = value.input()?;
            let store = Store::open(&dir)?;
            let w = commands::rotate(&store, name, scope, input.as_ref())?;
            if args.json {
                print_json(&w);
            }
            say(format!(
                "rotated {} ({}) to version {}",
                w.name, w.scope, w.version
            ));
        }
        StoreCommand::History { name } => {
            let store = Store::open(&dir)?;
            let meta = commands::history(&store, name)?;
            if args.json {
                print_json(&meta);
            } else {
                println!("{}: {}", meta.name, meta.description);
                for (scope, s) in &meta.scopes {
                    println!("  {scope} (current v{})", s.current);
                    for v in &s.versions {
                        println!(
                            "    v{:<4} {:<7} {} by {}",
                            v.version, v.operation, v.created_at, v.created_by
                        );
                    }
                }
            }
        }
        StoreCommand::Audit => {
            let store = Store::open(&dir)?;
            let (log, findings) = commands::audit(&store)?;
            if args.json {
                print_json(&serde_json::json!({"log": log, "findings": findings}));
            } else {
                for e in &log {
                    let what = match (&e.name, &e.scope, e.version) {
                        (Some(n), Some(s), Some(v)) => format!("{n} ({s}) v{v}"),
                        (Some(n), Some(s), None) => format!("{n} ({s})"),
                        _ => String::new(),
                    };
                    println!(
                        "{}  {:<7} {:<40} {}{}",
                        e.at,
                        e.op,
                        what,
                        e.by,
                        e.detail
                            .as_deref()
                            .map(|d| format!("  {d}"))
                            .unwrap_or_default()
                    );
                }
                if findings.is_empty() {
                    eprintln!("audit: every version file is present and encrypted to the current recipients");
                }
                for f in &findings {
                    eprintln!(
                        "✗ {} ({}){}: {}",
                        f.name,
                        f.scope,
                        f.version.map(|v| format!(" v{v}")).unwrap_or_default(),
                        f.problem
                    );
                }
            }
            if !findings.is_empty() {
                return Err(StoreError::Corrupt {
                    path: dir.clone(),
                    reason: format!("{} problem(s) found", findings.len()),
                });
            }
        }
        StoreCommand::Rekey => {
            let store = Store::open(&dir)?;
            let id = identity()?;
            let n = commands::rekey(&store, &id)?;
            if args.json {
                print_json(&serde_json::json!({"files": n}));
            }
            say(format!(
                "re-encrypted {n} version file(s) to the current recipients"
            ));
        }
        StoreCommand::Export { file, recipients } => {
            let to = if recipients.is_empty() {
                None
            } else {
                Some(Recipients::parse(
                    &recipients.join("\n"),
                    Path::new("--recipient"),
                )?)
            };
            let store = Store::open(&dir)?;
            let id = identity()?;
            let r = archive::export(&store, &id, file, to)?;
            if args.json {
                print_json(&r);
            }
            say(format!(
                "exported {} secret(s), {} version(s) to {} (age-encrypted, mode 0600)",
                r.names,
                r.versions,
                file.display()
            ));
        }
        StoreCommand::Import { file } => {
            let store = Store::open(&dir)?;
            let id = identity()?;
            let r = archive::import(&store, &id, file)?;
            if args.json {
                print_json(&r);
            }
            say(format!(
                "imported {} secret(s), {} version(s) into {}",
                r.names,
                r.versions,
                dir.display()
            ));
        }
    }
    Ok(())
}
