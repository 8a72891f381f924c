//! `build-image store …`: arguments and printing. The work is in
//! [`build_image::store::commands`], [`build_image::store::archive`] and [`build_image::store::migrate`].

use build_image::store::crypto::{Identity, Recipients};
use build_image::store::input::{self, ValueInput};
use build_image::store::layout::Store;
use build_image::store::names::Scope;
use build_image::store::session::{self, RecipientsCheck, Session};
use build_image::store::{archive, commands, migrate, Problem, StoreError};
use clap::{Args, Subcommand};
use sealed_bundle::report::printable;
use std::io::{IsTerminal, Write};
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
    $SEALED_IMAGE_STORE_IDENTITY_FILE; age keys and OpenSSH ed25519 private keys work.\n\
    Every command verifies the store with the store key first, so every command that\n\
    uses or changes values needs a member's identity; list, history and audit without\n\
    one show the files unverified and say so.\n\n\
    EXIT CODES: 8 the name already exists   9 no such secret, scope or version\n  \
    10 no identity, or it cannot decrypt   11 the store is not what its key\n  \
    authenticates (edited without a member's identity, a link or special file in it,\n  \
    recipients nobody accepted, format 1: run `store migrate`), or an archive is not\n  \
    from a store key you trust")]
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
    /// Show the audit log and check every file against the store key
    #[command(
        after_help = "EXAMPLES:\n  build-image store audit\n  build-image store audit --verify --json\n\n\
        With an identity, the log is shown after the whole store is verified: the index and\n\
        every meta.toml against the store key, every version file against its meta.toml and\n\
        its age header (one X25519 stanza per recipient), the log's chain and head. Without\n\
        one, the log is shown unverified. --verify requires the identity and exits 11 on\n\
        any problem, listing each."
    )]
    Audit {
        /// Verify (an identity is required); print the problems, not the log
        #[arg(long)]
        verify: bool,
    },
    /// Accept recipients.txt as it is: a new store key, every version encrypted again
    #[command(
        after_help = "EXAMPLES:\n  build-image store rekey\n  build-image store rekey --yes   (in a script: accept without asking)\n\n\
        Shows the difference between the recipients the store's members accepted and\n\
        recipients.txt, and asks before anything changes. The store key is replaced (a\n\
        removed member knows the old one) and every file is authenticated again. Without a\n\
        difference it rotates the store key. A rekey interrupted by a crash is finished by\n\
        the next store command, with an identity of the old or of the new recipients."
    )]
    Rekey {
        /// Accept the difference without asking
        #[arg(long)]
        yes: bool,
    },
    /// Add or remove a member (recipients.txt, a new store key, every version encrypted again)
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Write every secret and version into one age-encrypted archive (0600)
    #[command(after_help = "EXAMPLES:\n  build-image store export backup.age\n  \
        build-image store export move.age --recipient age1…   (to the new store's key)\n\n\
        The archive is authenticated under this store's key and says where it comes from;\n\
        the command prints its SHA-256, which `import --fingerprint` takes.")]
    Export {
        file: PathBuf,
        /// Encrypt the archive to this key instead of the store's recipients (repeatable)
        #[arg(long = "recipient", value_name = "KEY")]
        recipients: Vec<String>,
    },
    /// Add the secrets of an exported archive (names already present are refused)
    #[command(
        after_help = "EXAMPLES:\n  build-image store import backup.age                  (a backup of this store)\n  \
        build-image store import move.age --store new-store --from old-store\n  \
        build-image store import move.age --store new-store --fingerprint 3f0c…\n\n\
        Only an archive authenticated by a store key you trust is imported: this store's,\n\
        that of the store given with --from (your identity must open it), or one whose\n\
        SHA-256 (printed by `store export`) you pass with --fingerprint. Where it comes\n\
        from is shown before anything is written, and asked about unless --yes."
    )]
    Import {
        file: PathBuf,
        /// The store the archive was exported from
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// The archive's SHA-256, as `store export` printed it
        #[arg(long, value_name = "SHA256")]
        fingerprint: Option<String>,
        /// Import without asking
        #[arg(long)]
        yes: bool,
    },
    /// Upgrade a store written by an earlier build-image (format 1) to an authenticated one
    #[command(
        after_help = "EXAMPLES:\n  build-image store migrate --store secrets-store\n\n\
        Needs a member's identity: every version is decrypted and encrypted again to the\n\
        recipients recipients.txt lists (shown, and asked about unless --yes) under a new\n\
        store key; meta.toml files record their files' SHA-256 and the audit log is chained\n\
        and authenticated. Commit the result."
    )]
    Migrate {
        /// Accept the recipients without asking
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum RecipientsCommand {
    /// Add recipients (a member accepts them: every version is encrypted to them)
    #[command(after_help = "EXAMPLES:\n  build-image store recipients add age1…\n  \
        build-image store recipients add \"$(cat bob.pub)\"     (an ssh-ed25519 line, comment kept)")]
    Add {
        /// age1… or an `ssh-ed25519 AAAA… comment` line (repeatable)
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Remove recipients: a new store key and every version encrypted without them
    #[command(after_help = "EXAMPLES:\n  build-image store recipients rm age1…\n\n\
        The removed member could read every value until now (and may keep old checkouts):\n\
        rotate the values they could read, e.g. `build-image store rotate NAME` for each.")]
    Rm {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// The accepted recipients, and what recipients.txt would change
    #[command(after_help = "EXAMPLES:\n  build-image store recipients list")]
    List,
}

fn store_dir(args: &StoreArgs) -> Result<PathBuf, StoreError> {
    if let Some(s) = &args.store {
        return Ok(s.clone());
    }
    if let Some(r) = &args.recipe {
        let recipe = build_image::recipe::Recipe::load(r)
            .map_err(|e| StoreError::Value(format!("--recipe: {e}")))?;
        return Ok(build_image::secrets::sources::store::store_dir(&recipe));
    }
    Ok(PathBuf::from("secrets-store"))
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Ask before a change only a member may accept: yes with `--yes`, else a
/// `y` typed on a terminal; in a script without `--yes`, no.
fn confirm(question: &str, yes: bool) -> Result<(), StoreError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(StoreError::NotConfirmed(format!(
            "{question}: not confirmed (standard input is not a terminal): pass --yes to accept; nothing was changed"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(build_image::store::io("reading the answer"))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(StoreError::NotConfirmed(
            "not confirmed: nothing was changed".into(),
        ))
    }
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("✗ {}", printable(&p.to_string()));
    }
}

const UNVERIFIED: &str = "unverified: no identity, so the store was not checked against its key (anyone who can write the repository could have changed what is shown); pass --identity or set SEALED_IMAGE_STORE_IDENTITY to verify";

/// Run one store command.
pub fn run(args: StoreArgs) -> Result<(), StoreError> {
    let dir = store_dir(&args)?;
    let say = |msg: String| {
        if !args.quiet && !args.json {
            eprintln!("{}", printable(&msg));
        }
    };
    let identity = |why: &str| Identity::load(args.identity.as_deref(), why);
    match &args.command {
        StoreCommand::Init {
            recipients,
            recipients_file,
        } => {
            let mut all = recipients.clone();
            if let Some(f) = recipients_file {
                // Bounded, and a FIFO or device refused at once.
                let bytes = build_image::io::limit::read_file(
                    f,
                    build_image::store::layout::MAX_RECIPIENTS,
                )
                .map_err(|e| {
                    StoreError::Value(format!("--recipients-file {}: {e}", f.display()))
                })?;
                all.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            let made = commands::init(&dir, &all)?;
            if args.json {
                print_json(
                    &serde_json::json!({"store": dir, "recipients": made.recipients, "id": made.id, "pin": made.pin}),
                );
            }
            say(format!(
                "created the store {} (id {}) with {} recipient(s); add it to git (the .gitignore keeps its lock out). Pin it in CI as SEALED_IMAGE_STORE_ID={} so that a replaced store is refused",
                dir.display(),
                made.id,
                made.recipients,
                made.pin
            ));
        }
        StoreCommand::Set {
            name,
            description,
            update,
            scope,
            value,
        } => {
            build_image::store::validate_name(name)?;
            let input = value.input()?.unwrap_or(ValueInput::Stdin);
            let mut store = Store::open(&dir)?;
            let id = identity("changing the store needs a member's identity: the store key authenticates every change")?;
            let s = Session::open(&mut store, &id, RecipientsCheck::MustMatch)?;
            let w = commands::set(&s, name, scope, description.as_deref(), *update, &input)?;
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
            build_image::store::validate_name(name)?;
            if args.json && output.is_none() {
                return Err(StoreError::Value(
                    "--json prints metadata only: with get it needs --output FILE for the value"
                        .into(),
                ));
            }
            if let Some(f) = output {
                build_image::store::layout::refuse_output_inside(&dir, f)?;
            }
            let mut store = Store::open(&dir)?;
            let id = identity("")?;
            let mut s = Session::open(&mut store, &id, RecipientsCheck::MustMatch)?;
            let (value, v) = commands::get(&mut s, &id, name, scope, *version)?;
            match output {
                Some(f) => {
                    build_image::io::write_output(f, &value, 0o600).map_err(
                        build_image::store::io(format!(
                            "writing {} (the read is in the audit log)",
                            f.display()
                        )),
                    )?;
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
                        .map_err(build_image::store::io("writing standard output"))?;
                }
            }
        }
        StoreCommand::List => {
            let metas = read_metas(&dir, args.identity.as_deref())?;
            let rows = commands::list(&metas);
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
                            "{}",
                            printable(&format!(
                                "{:<28} {:<18} {:<8} {:<21} {}",
                                if i == 0 { r.name.as_str() } else { "" },
                                s.scope,
                                format!("v{}", s.current),
                                s.updated_at,
                                if i == 0 { r.description.as_str() } else { "" }
                            ))
                        );
                    }
                }
            }
        }
        StoreCommand::Rm { name, scope } => {
            build_image::store::validate_name(name)?;
            let mut store = Store::open(&dir)?;
            let id = identity("changing the store needs a member's identity: the store key authenticates every change")?;
            let s = Session::open(&mut store, &id, RecipientsCheck::MustMatch)?;
            let removed = commands::rm(&s, name, scope.as_ref())?;
            if args.json {
                print_json(&serde_json::json!({"name": name, "scopes": removed}));
            }
            say(format!("removed {name} ({})", removed.join(", ")));
        }
        StoreCommand::Rotate { name, scope, value } => {
            build_image::store::validate_name(name)?;
            let input = value.input()?;
            let mut store = Store::open(&dir)?;
            let id = identity("changing the store needs a member's identity: the store key authenticates every change")?;
            let s = Session::open(&mut store, &id, RecipientsCheck::MustMatch)?;
            let w = commands::rotate(&s, name, scope, input.as_ref())?;
            if args.json {
                print_json(&w);
            }
            say(format!(
                "rotated {} ({}) to version {}",
                w.name, w.scope, w.version
            ));
        }
        StoreCommand::History { name } => {
            build_image::store::validate_name(name)?;
            let metas = read_metas(&dir, args.identity.as_deref())?;
            let meta = commands::history(&dir, &metas, name)?;
            if args.json {
                print_json(&meta);
            } else {
                println!(
                    "{}",
                    printable(&format!("{}: {}", meta.name, meta.description))
                );
                for (scope, s) in &meta.scopes {
                    println!("  {scope} (current v{})", s.current);
                    for v in &s.versions {
                        println!(
                            "{}",
                            printable(&format!(
                                "    v{:<4} {:<7} {} by {}",
                                v.version, v.operation, v.created_at, v.created_by
                            ))
                        );
                    }
                }
            }
        }
        StoreCommand::Audit { verify } => {
            let mut store = Store::open(&dir)?;
            let id = if *verify {
                Some(identity(
                    "`audit --verify` checks the store with the store key",
                )?)
            } else {
                Identity::load_optional(args.identity.as_deref())?
            };
            let mut recipients = 0;
            let mut pin = String::new();
            let (log, problems, verified) = match &id {
                Some(id) => match Session::open(&mut store, id, RecipientsCheck::MustMatch) {
                    Ok(s) => {
                        let p = commands::check_stanzas(&s)?;
                        recipients = s.recipients.keys.len();
                        pin = s.key.pin();
                        (s.log, p, true)
                    }
                    Err(StoreError::Integrity { problems, .. }) => (Vec::new(), problems, true),
                    Err(e) => return Err(e),
                },
                None => (session::peek(&store)?.log, Vec::new(), false),
            };
            if args.json {
                print_json(&serde_json::json!({
                    "verified": verified,
                    "log": if *verify { Vec::new() } else { log.clone() },
                    "findings": problems,
                    "pin": pin,
                }));
            } else {
                if !*verify {
                    for e in &log {
                        let what = match (&e.name, &e.scope, e.version) {
                            (Some(n), Some(s), Some(v)) => format!("{n} ({s}) v{v}"),
                            (Some(n), Some(s), None) => format!("{n} ({s})"),
                            _ => String::new(),
                        };
                        println!(
                            "{}",
                            printable(&format!(
                                "{}  {:<7} {:<40} {}{}",
                                e.at,
                                e.op,
                                what,
                                e.by,
                                e.detail
                                    .as_deref()
                                    .map(|d| format!("  {d}"))
                                    .unwrap_or_default()
                            ))
                        );
                    }
                }
                if !verified {
                    eprintln!("build-image: {UNVERIFIED}");
                } else if problems.is_empty() && !args.quiet {
                    eprintln!("audit: verified: the index, every meta.toml and version file, the recipients and the audit log ({} lines) are what the store key authenticates, and every version is encrypted to the {recipients} recipient(s); pin it in CI as SEALED_IMAGE_STORE_ID={pin}", log.len());
                }
                print_problems(&problems);
            }
            if !problems.is_empty() {
                return Err(StoreError::Integrity {
                    store: dir.clone(),
                    problems,
                });
            }
        }
        StoreCommand::Rekey { yes } => {
            let mut store = Store::open(&dir)?;
            let id = identity("rekey re-encrypts every version")?;
            // A rekey a crash interrupted is finished first, by an identity
            // of the old recipients or of the new ones.
            let mut recovered = None;
            if store.pending() {
                if let build_image::store::journal::Recovered::Finished(op) =
                    build_image::store::journal::recover(&mut store, &id)?
                {
                    recovered = Some(op);
                }
            }
            let finished_rekey = matches!(recovered.as_deref(), Some("rekey" | "recipients"));
            let s = match Session::open(&mut store, &id, RecipientsCheck::MayDiffer) {
                Err(StoreError::NotARecipient { .. }) if finished_rekey => {
                    say("finished the interrupted rekey: the store is encrypted to its new recipients (this identity is not one of them)".into());
                    return Ok(());
                }
                r => r?,
            };
            if finished_rekey && s.recipients_diff.is_empty() {
                say("finished the interrupted rekey".into());
                return Ok(());
            }
            let diff = &s.recipients_diff;
            let detail = if diff.is_empty() {
                "recipients unchanged; new store key".to_string()
            } else {
                eprintln!(
                    "recipients.txt differs from the recipients the store's members accepted:"
                );
                for (k, line) in &diff.added {
                    eprintln!("  + {k}   ({line})");
                }
                for k in &diff.removed {
                    eprintln!("  - {k}");
                }
                confirm(
                    &format!(
                        "accept this and encrypt every value to the {} recipient(s) of recipients.txt?",
                        s.file.keys().len()
                    ),
                    *yes,
                )?;
                format!(
                    "recipients {}{}",
                    diff.added
                        .iter()
                        .map(|(k, _)| format!("+{} ", commands::short_key(k)))
                        .collect::<String>(),
                    diff.removed
                        .iter()
                        .map(|k| format!("-{} ", commands::short_key(k)))
                        .collect::<String>()
                )
                .trim_end()
                .to_string()
            };
            let to = Recipients::from_keys(
                &s.file.keys(),
                &dir.join(build_image::store::layout::RECIPIENTS),
            )?;
            let r = commands::rekey(&s, &id, "rekey", to, None, detail)?;
            if args.json {
                print_json(&r);
            }
            say(format!(
                "re-encrypted {} version file(s) to the accepted recipients under a new store key (generation {}); pin it in CI as SEALED_IMAGE_STORE_ID={} to refuse stores from before this change",
                r.files, r.generation, r.pin
            ));
            if !diff.removed.is_empty() {
                say("the removed recipients could read every value until now: rotate them (`build-image store rotate NAME`)".into());
            }
        }
        StoreCommand::Recipients(cmd) => {
            let mut store = Store::open(&dir)?;
            let id = identity("a change of recipients needs a member's identity")?;
            // Listing shows what recipients.txt would change; a change
            // needs the two to agree first (review a difference with rekey).
            let check = match cmd {
                RecipientsCommand::List => RecipientsCheck::MayDiffer,
                _ => RecipientsCheck::MustMatch,
            };
            let s = Session::open(&mut store, &id, check)?;
            match cmd {
                RecipientsCommand::List => {
                    let diff = &s.recipients_diff;
                    if args.json {
                        print_json(&serde_json::json!({
                            "accepted": s.recipients.strings(),
                            "added_in_recipients_txt": diff.added.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                            "removed_in_recipients_txt": diff.removed,
                        }));
                    } else {
                        for k in s.recipients.strings() {
                            match s.file.line_of(&k) {
                                Some(l) => println!("{k}   (line {}: {})", l.number, l.text),
                                None => println!(
                                    "{k}   (not in recipients.txt: a removal nobody accepted)"
                                ),
                            }
                        }
                        for (k, line) in &diff.added {
                            println!("{k}   ({line}: not accepted; `build-image store rekey` reviews it)");
                        }
                    }
                }
                RecipientsCommand::Add { keys } => {
                    let (to, text) = commands::recipients_added(&s, keys)?;
                    let added: Vec<String> = to
                        .strings()
                        .into_iter()
                        .filter(|k| !s.index.recipients.contains(k))
                        .collect();
                    let r = change_recipients(&s, &id, to, text, '+', &added)?;
                    if args.json {
                        print_rekeyed("added", &added, &r);
                    }
                    say(format!(
                        "added {} recipient(s); re-encrypted {} version file(s) under a new store key (generation {}; CI's pin stays valid, or pin SEALED_IMAGE_STORE_ID={} to refuse stores from before this change)",
                        added.len(),
                        r.files,
                        r.generation,
                        r.pin
                    ));
                }
                RecipientsCommand::Rm { keys } => {
                    let (to, text, gone) = commands::recipients_removed(&s, keys)?;
                    let r = change_recipients(&s, &id, to, text, '-', &gone)?;
                    if args.json {
                        print_rekeyed("removed", &gone, &r);
                    }
                    say(format!(
                        "removed {} recipient(s); re-encrypted {} version file(s) under a new store key (generation {}). They could read every value until now (and old checkouts keep the old files): rotate what they could read (`build-image store rotate NAME`), and pin the new key in CI: SEALED_IMAGE_STORE_ID={} (it refuses their old checkouts, even rekeyed)",
                        gone.len(),
                        r.files,
                        r.generation,
                        r.pin
                    ));
                }
            }
        }
        StoreCommand::Export { file, recipients } => {
            build_image::store::layout::refuse_output_inside(&dir, file)?;
            let to = if recipients.is_empty() {
                None
            } else {
                build_image::store::commands::check_cli_recipients("--recipient", recipients)?;
                Some(Recipients::parse(
                    &recipients.join("\n"),
                    Path::new("--recipient"),
                )?)
            };
            let mut store = Store::open(&dir)?;
            let id = identity("")?;
            let mut s = Session::open(&mut store, &id, RecipientsCheck::MustMatch)?;
            let r = archive::export(&mut s, &id, file, to)?;
            if args.json {
                print_json(&r);
            }
            say(format!(
                "exported {} secret(s), {} version(s) to {} (age-encrypted, mode 0600), from store {}; its SHA-256 (for `store import --fingerprint`): {}",
                r.names,
                r.versions,
                file.display(),
                r.store,
                r.fingerprint
            ));
        }
        StoreCommand::Import {
            file,
            from,
            fingerprint,
            yes,
        } => {
            let mut store = Store::open(&dir)?;
            let id = identity("")?;
            let s = Session::open(&mut store, &id, RecipientsCheck::MustMatch)?;
            let trust = archive::Trust {
                fingerprint: fingerprint.clone(),
                from: from.clone(),
            };
            let opened = archive::open(&s, &id, file, &trust)?;
            eprintln!(
                "{}",
                printable(&format!("{}: {}", file.display(), opened.origin()))
            );
            confirm(
                &format!("import these into the store {}?", dir.display()),
                *yes,
            )?;
            let r = archive::import(&s, file, opened)?;
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
        StoreCommand::Migrate { yes } => {
            let mut store = Store::open(&dir)?;
            let id = identity("migrate decrypts every version")?;
            if store.pending() {
                if let build_image::store::journal::Recovered::Finished(op) =
                    build_image::store::journal::recover(&mut store, &id)?
                {
                    if op == "migrate" {
                        say("finished the interrupted migration".into());
                        return Ok(());
                    }
                }
            }
            let old = migrate::read(&store)?;
            eprintln!("the store's members will be (from recipients.txt):");
            for l in &old.recipients.lines {
                eprintln!("  {}   (line {}: {})", l.key, l.number, l.text);
            }
            eprintln!(
                "and its {} secret(s) ({}) are authenticated as they are now: format 1 authenticated nothing, so check in git that only members changed them",
                old.names().len(),
                old.names().join(", ")
            );
            confirm(
                "accept these recipients and authenticate the store as it is now?",
                *yes,
            )?;
            let m = migrate::migrate(&store, &id, old)?;
            if args.json {
                print_json(&m);
            }
            say(format!(
                "migrated {} to format 2: store id {}, {} secret(s), {} version(s) encrypted again to {} recipient(s){}. Commit the result; pin it in CI as SEALED_IMAGE_STORE_ID={}",
                dir.display(),
                m.id,
                m.names,
                m.versions,
                m.recipients.len(),
                if m.removed.is_empty() {
                    String::new()
                } else {
                    format!("; removed leftovers {}", m.removed.join(", "))
                },
                m.pin
            ));
        }
    }
    Ok(())
}

/// `store recipients add|rm`: the new recipients.txt, with `sign` and the
/// keys in the audit line.
/// `--json` of `recipients add|rm`: the keys (under `what`), the files
/// encrypted again, the new key's generation and pin.
fn print_rekeyed(what: &str, keys: &[String], r: &commands::Rekeyed) {
    let mut v = serde_json::Map::new();
    v.insert(what.into(), serde_json::json!(keys));
    v.insert("files".into(), serde_json::json!(r.files));
    v.insert("generation".into(), serde_json::json!(r.generation));
    v.insert("pin".into(), serde_json::json!(r.pin));
    print_json(&v);
}

fn change_recipients(
    s: &Session,
    id: &Identity,
    to: Recipients,
    text: Vec<u8>,
    sign: char,
    keys: &[String],
) -> Result<commands::Rekeyed, StoreError> {
    let detail = format!(
        "recipients {}",
        keys.iter()
            .map(|k| format!("{sign}{}", commands::short_key(k)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    commands::rekey(s, id, "recipients", to, Some(text), detail)
}

/// Every secret's metadata: verified with an identity, else read as it is
/// (and said so on stderr).
fn read_metas(
    dir: &Path,
    identity: Option<&Path>,
) -> Result<std::collections::BTreeMap<String, build_image::store::metadata::SecretMeta>, StoreError>
{
    let mut store = Store::open(dir)?;
    Ok(match Identity::load_optional(identity)? {
        Some(id) => Session::open(&mut store, &id, RecipientsCheck::MustMatch)?.metas,
        None => {
            eprintln!("build-image: {UNVERIFIED}");
            session::peek(&store)?.metas
        }
    })
}
