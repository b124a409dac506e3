//! `quiver list --repo DIR [--registry-url URL]`: what the registry holds for the repo's
//! project, from the registry feature_store.yaml names or from the registry service. Feast's
//! hidden `__dummy` entity is left out, as Feast's SDK and CLI leave it out.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::anyhow;
use quiver_core::model::DUMMY_ENTITY;
use quiver_core::registry::ProjectRegistry;
use quiver_registry::config::RepoConfig;
use quiver_registry::summary;

use quiver_cmd::registry_io::RepoRegistry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature repo whose registry to read.
    #[arg(long, default_value = ".", env = "QUIVER_REPO")]
    repo: PathBuf,
    /// Print JSON (the shape compat/feast_summary.py prints for the real Feast SDK).
    #[arg(long)]
    json: bool,
    /// With --registry-url, the project is read from the registry service.
    #[command(flatten)]
    service: crate::registry::ServiceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = RepoConfig::load(&args.repo)?;
    let reg = match args.service.client()? {
        Some(mut client) => quiver_cmd::common::runtime(Some(1))?
            .block_on(crate::registry::fetch_project(&mut client, &config.project))?,
        None => {
            let registry = RepoRegistry::open(&config)?;
            let Some(file) = registry.read()? else {
                return Err(anyhow!(
                    "no registry at {}: run `quiver apply --repo {}` (or `feast apply`) first",
                    registry.describe(),
                    args.repo.display()
                ));
            };
            file.project(&config.project)?
        }
    };
    let text = if args.json {
        serde_json::to_string_pretty(&summary::summarize(&reg))? + "\n"
    } else {
        render_text(&reg)
    };
    // `quiver list | head` closes the pipe early: that is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn render_text(reg: &ProjectRegistry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! emit {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    emit!("project {}", reg.project);
    let entities: Vec<_> = reg
        .entities
        .iter()
        .filter(|e| e.name != DUMMY_ENTITY)
        .collect();
    emit!("\nentities ({})", entities.len());
    for e in entities {
        // Feast's name for the type: UNKNOWN when the entity declares none.
        emit!(
            "  {:<28} join key {} ({})",
            e.name,
            e.join_key,
            e.value_type.sdk_enum_name()
        );
    }
    emit!("\ndata sources ({})", reg.data_sources.len());
    for s in &reg.data_sources {
        emit!("  {:<28} {}", s.name, s.kind_name());
    }
    let (labels, views): (Vec<_>, Vec<_>) = reg
        .feature_views
        .iter()
        .partition(|v| v.label_options().is_some());
    let features = |v: &quiver_core::model::FeatureView| {
        v.features
            .iter()
            .map(|f| format!("{}:{}", f.name, f.dtype))
            .collect::<Vec<_>>()
            .join(", ")
    };
    emit!("\nfeature views ({})", views.len());
    for v in views {
        emit!(
            "  {:<28} entities [{}] ttl {} online {}: {}",
            v.name,
            v.entities.join(", "),
            quiver_core::time::format_duration(v.ttl),
            v.online,
            features(v)
        );
    }
    if !labels.is_empty() {
        emit!("\nlabel views ({})", labels.len());
    }
    for v in labels {
        let Some(o) = v.label_options() else { continue };
        emit!(
            "  {:<28} entities [{}] conflict policy {} labeler field {} ttl {} online {}: {}",
            v.name,
            v.entities.join(", "),
            o.conflict_policy.name(),
            o.labeler_field,
            quiver_core::time::format_duration(v.ttl),
            v.online,
            features(v)
        );
    }
    emit!("\nfeature services ({})", reg.feature_services.len());
    for s in &reg.feature_services {
        let views: Vec<String> = s
            .projections
            .iter()
            .map(|p| format!("{}[{}]", p.name_to_use(), p.features.len()))
            .collect();
        emit!("  {:<28} {}", s.name, views.join(", "));
    }
    if !reg.on_demand_views.is_empty() {
        emit!(
            "\non-demand feature views ({}, kept but not served by quiver)",
            reg.on_demand_views.len()
        );
        for name in &reg.on_demand_views {
            emit!("  {name}");
        }
    }
    out
}
