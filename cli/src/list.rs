//! `quiver list --repo DIR`: what the registry holds for the repo's project.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::anyhow;
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = RepoConfig::load(&args.repo)?;
    let registry = RepoRegistry::open(&config)?;
    let Some(file) = registry.read()? else {
        return Err(anyhow!(
            "no registry at {}: run `quiver apply --repo {}` (or `feast apply`) first",
            registry.describe(),
            args.repo.display()
        ));
    };
    let reg = file.project(&config.project)?;
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
    emit!("\nentities ({})", reg.entities.len());
    for e in &reg.entities {
        emit!(
            "  {:<28} join key {} ({})",
            e.name,
            e.join_key,
            e.value_type.proto_name()
        );
    }
    emit!("\ndata sources ({})", reg.data_sources.len());
    for s in &reg.data_sources {
        emit!("  {:<28} {}", s.name, s.kind_name());
    }
    emit!("\nfeature views ({})", reg.feature_views.len());
    for v in &reg.feature_views {
        let features: Vec<String> = v
            .features
            .iter()
            .map(|f| format!("{}:{}", f.name, f.dtype))
            .collect();
        emit!(
            "  {:<28} entities [{}] ttl {} online {}: {}",
            v.name,
            v.entities.join(", "),
            quiver_core::time::format_duration(v.ttl),
            v.online,
            features.join(", ")
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
        emit!("\non-demand feature views ({})", reg.on_demand_views.len());
        for v in &reg.on_demand_views {
            let sources: Vec<&str> = v.sources.iter().map(|s| s.name()).collect();
            emit!(
                "  {:<28} {} from {}",
                v.name,
                v.transformation.mode(),
                sources.join(", ")
            );
        }
    }
    out
}
