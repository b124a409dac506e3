//! `quiver apply --repo DIR`: definitions → validated → diffed → registry file.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use quiver_core::time::Timestamp;
use quiver_registry::config::RepoConfig;
use quiver_registry::{apply, definitions, store};

use quiver_cmd::registry_io::{RepoRegistry, block_on};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature repo: a folder with feature_store.yaml and features.yaml (or features/*.yaml).
    #[arg(long, default_value = ".", env = "QUIVER_REPO")]
    repo: PathBuf,
    /// Show what would change without writing the registry.
    #[arg(long)]
    dry_run: bool,
    /// With --registry-url: the project version the change was reviewed against (e.g. from
    /// --dry-run); the service refuses the apply (409) if the project moved on since. Default:
    /// the version read just before sending.
    #[arg(long, requires = "registry_url")]
    base_version: Option<u64>,
    /// With --registry-url, the definitions go to the registry service, which validates,
    /// diffs and writes them, instead of this command writing the registry file.
    #[command(flatten)]
    service: crate::registry::ServiceArgs,
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

/// Refuses definitions whose sources name a location the operator did not allow
/// (`quiver_registry::trust`): paths resolved against the repo, symlinks followed.
fn check_locations(
    desired: &quiver_core::registry::ProjectRegistry,
    repo: &std::path::Path,
) -> anyhow::Result<()> {
    let problems = quiver_registry::trust::policy().check_registry(desired, Some(repo));
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    Err(anyhow!(
        "definitions name locations outside the repo and the allowed locations:\n{}",
        list.join("\n")
    ))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = RepoConfig::load(&args.repo)?;
    if let Some(url) = args.service.registry_url.clone() {
        return quiver_cmd::common::small_runtime()?.block_on(remote(&args, &config, &url));
    }
    let desired = definitions::load(&args.repo, &config.project).map_err(|e| anyhow!("{e}"))?;
    check_locations(&desired, &args.repo)?;
    let registry = RepoRegistry::open(&config)?;
    let shown = registry.describe();
    let version = uuid::Uuid::new_v4().to_string();
    let (plan, written) = match &registry {
        RepoRegistry::File(path) => {
            // Held until the new registry is in place: concurrent applies run one after the
            // other.
            let _lock = if args.dry_run {
                None
            } else {
                Some(store::RegistryLock::acquire(path).map_err(|e| anyhow!(e))?)
            };
            let mut file = store::read(path).map_err(|e| anyhow!(e))?;
            let plan = apply::apply(&mut file, &desired, now()).context("registry")?;
            let write = !plan.is_empty() && !args.dry_run;
            if write {
                store::write_atomic(path, &file.encode(&version, now())).map_err(|e| anyhow!(e))?;
            }
            (plan, write)
        }
        RepoRegistry::Object(_) if args.dry_run => {
            let mut file = registry.read_or_empty()?;
            (
                apply::apply(&mut file, &desired, now()).context("registry")?,
                false,
            )
        }
        RepoRegistry::Object(object) => {
            // No lock on an object store: a conditional write, re-planned on a lost race, so a
            // concurrent writer's change is never overwritten.
            let mut last_plan = None;
            let written = block_on(object.update_registry(
                |file| {
                    let plan = apply::apply(file, &desired, now())
                        .map_err(|e| format!("registry: {e}"))?;
                    let write = !plan.is_empty();
                    last_plan = Some(plan);
                    Ok(write.then_some(()))
                },
                || version.clone(),
                now,
            ))?
            .map_err(|e| anyhow!(e))?
            .is_some();
            let plan = last_plan.ok_or_else(|| anyhow!("registry {shown}: nothing was planned"))?;
            (plan, written)
        }
    };

    println!(
        "Applying {} entities, {} sources, {} feature views, {} on-demand feature views, {} feature services to project {}",
        desired.entities.len(),
        desired.data_sources.len(),
        desired.feature_views.len(),
        desired.on_demand_views.len(),
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
        println!("No changes: registry {shown} is up to date");
    } else if args.dry_run {
        println!("Dry run: registry {shown} not written");
    } else if written {
        println!("Registry written to {shown} (version {version})");
    }
    Ok(())
}

/// `quiver apply --registry-url URL`: the definition files go to the service, which validates
/// them, diffs them against the project's version the apply is based on, and writes.
async fn remote(args: &Args, config: &RepoConfig, url: &str) -> anyhow::Result<()> {
    use quiver_registry::client::encode_path;
    use std::time::Duration;

    let files = definitions::definition_files(&args.repo);
    if files.is_empty() {
        return Err(anyhow!(
            "{}: no feature definitions found: write features.yaml (or *.yaml files under features/)",
            args.repo.display()
        ));
    }
    let mut sent = Vec::new();
    for path in &files {
        let label = path
            .strip_prefix(&args.repo)
            .unwrap_or(path)
            .display()
            .to_string();
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        sent.push(serde_json::json!({"path": label, "content": content}));
    }
    let mut client = args
        .service
        .client()?
        .ok_or_else(|| anyhow!("no --registry-url"))?;
    let project = &config.project;
    let timeout = Duration::from_secs(60);
    let base = match args.base_version {
        Some(v) => v,
        None => {
            let resp = client
                .request(
                    hyper::Method::GET,
                    &format!("/v1/projects/{}", encode_path(project)),
                    &[],
                    None,
                    timeout,
                )
                .await
                .map_err(|e| anyhow!("registry service {url}: {e}"))?;
            match resp.status {
                200 => serde_json::from_slice::<serde_json::Value>(&resp.body)
                    .ok()
                    .and_then(|v| v["version"].as_u64())
                    .ok_or_else(|| anyhow!("registry service {url}: no version in its answer"))?,
                404 => 0,
                s => return Err(anyhow!("registry service {url}: {s}: {}", resp.message())),
            }
        }
    };
    let body = serde_json::json!({"base_version": base, "files": sent, "dry_run": args.dry_run});
    let resp = client
        .request(
            hyper::Method::POST,
            &format!("/v1/projects/{}/apply", encode_path(project)),
            &[],
            Some((bytes::Bytes::from(body.to_string()), "application/json")),
            timeout,
        )
        .await
        .map_err(|e| anyhow!("registry service {url}: {e}"))?;
    let answer: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    match resp.status {
        200 => {}
        409 => return Err(anyhow!("{} (registry service {url})", resp.message())),
        422 => {
            let mut out = String::from("the registry service refused the definitions:");
            for p in answer["problems"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "\n  {}{}{}: {}",
                    p["file"].as_str().unwrap_or(""),
                    p["line"]
                        .as_u64()
                        .map(|l| format!(":{l}"))
                        .unwrap_or_default(),
                    p["object"]
                        .as_str()
                        .filter(|o| !o.is_empty())
                        .map(|o| format!(": {o}"))
                        .unwrap_or_default(),
                    p["message"].as_str().unwrap_or("")
                ));
            }
            return Err(anyhow!(out));
        }
        s => return Err(anyhow!("registry service {url}: {s}: {}", resp.message())),
    }
    println!(
        "Applying the definitions of project {project} to the registry service at {url} (version {base})"
    );
    let changes = answer["changes"].as_array().cloned().unwrap_or_default();
    for c in &changes {
        println!("{}", c["text"].as_str().unwrap_or(""));
    }
    for kept in answer["kept"].as_array().into_iter().flatten() {
        println!(
            "Kept {} (not expressible in YAML definitions)",
            kept.as_str().unwrap_or("")
        );
    }
    let version = answer["version"].as_u64().unwrap_or(base);
    if changes.is_empty() {
        println!("No changes: project {project} is up to date at version {version}");
    } else if args.dry_run {
        println!(
            "Dry run: nothing written; apply with --base-version {base} to apply exactly this plan"
        );
    } else {
        println!("Project {project} is now at version {version}");
    }
    Ok(())
}
