//! `quiver apply --repo DIR`: definitions → validated → diffed → registry file.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use quiver_core::time::Timestamp;
use quiver_registry::config::RepoConfig;
use quiver_registry::{apply, definitions, store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature repo: a folder with feature_store.yaml and features.yaml (or features/*.yaml).
    #[arg(long, default_value = ".", env = "QUIVER_REPO")]
    repo: PathBuf,
    /// Show what would change without writing the registry.
    #[arg(long)]
    dry_run: bool,
}

pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = RepoConfig::load(&args.repo)?;
    let desired = definitions::load(&args.repo, &config.project).map_err(|e| anyhow!("{e}"))?;
    let path = config.local_registry_path().map_err(|e| anyhow!(e))?;
    // Held until the new registry is in place: concurrent applies run one after the other.
    let _lock = if args.dry_run {
        None
    } else {
        Some(store::RegistryLock::acquire(&path).map_err(|e| anyhow!(e))?)
    };
    let mut file = store::read(&path).map_err(|e| anyhow!(e))?;

    let plan = apply::apply(&mut file, &desired, now()).context("registry")?;
    println!(
        "Applying {} entities, {} sources, {} feature views, {} feature services to project {}",
        desired.entities.len(),
        desired.data_sources.len(),
        desired.feature_views.len(),
        desired.feature_services.len(),
        config.project
    );
    for change in &plan.changes {
        println!("{change}");
    }
    for kept in &plan.kept {
        println!("Kept {kept} (not expressible in YAML definitions)");
    }
    if plan.is_empty() {
        println!("No changes: registry {} is up to date", path.display());
        return Ok(());
    }
    if args.dry_run {
        println!("Dry run: registry {} not written", path.display());
        return Ok(());
    }
    let version = uuid::Uuid::new_v4().to_string();
    let bytes = file.encode(&version, now());
    store::write_atomic(&path, &bytes).map_err(|e| anyhow!(e))?;
    println!("Registry written to {} (version {version})", path.display());
    Ok(())
}
