//! `quiver inject serve`: the sidecar injector, a mutating admission webhook over TLS. Validates
//! its configuration and loads the certificate before binding, then serves until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use quiver_k8s::InjectorConfig;
use quiver_k8s::inject::DEFAULT_IMAGE;
use quiver_k8s::server::Limits;
use quiver_k8s::tls::CertReloader;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: InjectCommand,
}

#[derive(Debug, clap::Subcommand)]
enum InjectCommand {
    /// Serve the webhook: POST /mutate (AdmissionReview v1), GET /health.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// PEM certificate chain (reloaded when the file changes).
    #[arg(long, env = "QUIVER_INJECT_TLS_CERT")]
    tls_cert: PathBuf,
    /// PEM private key (reloaded when the file changes).
    #[arg(long, env = "QUIVER_INJECT_TLS_KEY")]
    tls_key: PathBuf,
    /// Address to bind: the API server reaches the webhook through its Service.
    #[arg(long, default_value = "0.0.0.0", env = "QUIVER_INJECT_HOST")]
    host: String,
    #[arg(long, default_value_t = 8443, env = "QUIVER_INJECT_PORT")]
    port: u16,
    /// Sidecar image when a pod does not name one (quiver.dev/image).
    #[arg(long, default_value = DEFAULT_IMAGE, env = "QUIVER_INJECT_IMAGE")]
    image: String,
    /// Inject a native sidecar (an init container with restartPolicy Always; Kubernetes 1.29+)
    /// unless a pod says otherwise (quiver.dev/native-sidecar); false: a regular container.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "QUIVER_INJECT_NATIVE_SIDECAR")]
    native_sidecar: bool,
    /// Namespaces whose pods are never changed (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kube-system,kube-public,kube-node-lease",
        env = "QUIVER_INJECT_EXCLUDE_NAMESPACES"
    )]
    exclude_namespaces: Vec<String>,
    /// Admit pods with bad quiver.dev annotations, without a sidecar and with a warning and a
    /// quiver.dev/error annotation, instead of denying them.
    #[arg(long, env = "QUIVER_INJECT_FAIL_OPEN")]
    fail_open: bool,
    /// ConfigMap with the feature repo when a pod names none (quiver.dev/repo-configmap).
    #[arg(long, env = "QUIVER_INJECT_REPO_CONFIGMAP")]
    repo_configmap: Option<String>,
    /// Sidecar CPU request when a pod names none (quiver.dev/cpu).
    #[arg(long, default_value = "100m", env = "QUIVER_INJECT_CPU")]
    cpu: String,
    /// Sidecar memory request and limit when a pod names none (quiver.dev/memory).
    #[arg(long, default_value = "384Mi", env = "QUIVER_INJECT_MEMORY")]
    memory: String,
    /// Sidecar cache budget when a pod names none (quiver.dev/cache-bytes).
    #[arg(long, default_value = "256MiB", env = "QUIVER_INJECT_CACHE_BYTES")]
    cache_bytes: String,
    /// Image of Feast's transformation service, for pods that ask for one
    /// (quiver.dev/transformation-service: "true"; quiver.dev/transformation-image overrides).
    #[arg(long, default_value = quiver_k8s::inject::DEFAULT_TRANSFORMATION_IMAGE, env = "QUIVER_INJECT_TRANSFORMATION_IMAGE")]
    transformation_image: String,
    #[command(flatten)]
    server: quiver_cmd::common::ServerArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        InjectCommand::Serve(args) => quiver_cmd::common::runtime(None)?.block_on(serve(args)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = InjectorConfig {
        image: args.image,
        native_sidecar: args.native_sidecar,
        excluded_namespaces: args
            .exclude_namespaces
            .into_iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        fail_open: args.fail_open,
        repo_configmap: args.repo_configmap,
        cpu: args.cpu,
        memory: args.memory,
        cache_bytes: args.cache_bytes,
        transformation_image: args.transformation_image,
    };
    config.validate().map_err(|e| anyhow!(e))?;
    let certs = CertReloader::load(&args.tls_cert, &args.tls_key).map_err(|e| anyhow!(e))?;
    let addr = quiver_cmd::common::listen_addr(&args.host, args.port)?;
    let defaults = Limits::default();
    let limits = Limits {
        http: args.server.limits(defaults.http.clone()),
        ..defaults
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    tracing::info!(%addr, image = %config.image, native_sidecar = config.native_sidecar, fail_open = config.fail_open, "sidecar injector serving");
    println!(
        "quiver injector serving on https://{}",
        listener.local_addr()?
    );
    quiver_k8s::server::serve(
        listener,
        Arc::new(certs),
        Arc::new(config),
        limits,
        quiver_cmd::common::shutdown_signal(),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use crate::{Cli, Command};

    /// The container the injector writes runs `quiver serve` with flags this binary has.
    #[test]
    fn injected_sidecar_args_parse_as_quiver_serve() {
        let request = json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": "models",
            "object": {
                "metadata": {"annotations": {
                    "quiver.dev/inject": "true",
                    "quiver.dev/repo-configmap": "features",
                    "quiver.dev/port": "6570",
                    "quiver.dev/cache-bytes": "1GiB",
                    "quiver.dev/memory": "2Gi",
                    "quiver.dev/replicate": "driver_hourly_stats,ride_scoring",
                }},
                "spec": {"containers": [{"name": "kserve-container", "image": "model"}]},
            },
        });
        let (resp, _) = quiver_k8s::admit(
            &serde_json::from_value(request).unwrap(),
            &quiver_k8s::InjectorConfig::default(),
        );
        let ops = resp.patch_ops().unwrap();
        let container = &ops.last().unwrap().value[0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let cli = Cli::try_parse_from(std::iter::once("quiver").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Serve(serve) = cli.command else {
            panic!("{args:?} is not quiver serve")
        };
        let parsed = format!("{serve:?}");
        for field in [
            "host: \"0.0.0.0\"",
            "port: 6570",
            "cache_bytes: 1073741824",
            "repo: \"/etc/quiver/repo\"",
            "replicate: [\"driver_hourly_stats\", \"ride_scoring\"]",
        ] {
            assert!(parsed.contains(field), "{field} not in {parsed}");
        }
    }

    /// With `quiver.dev/enrich`, the sidecar the injector writes runs `quiver serve` with this
    /// binary's `--enrich`, `--upstream`, `--grpc-port` and `--upstream-grpc` flags, on the
    /// model's serving port and its gRPC port.
    #[test]
    fn injected_enrichment_args_parse_as_quiver_serve() {
        let request = json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": "models",
            "object": {
                "metadata": {"annotations": {
                    "quiver.dev/inject": "true",
                    "quiver.dev/repo-configmap": "features",
                    "quiver.dev/enrich": "ranker-enrich",
                }},
                "spec": {"containers": [{
                    "name": "kserve-container", "image": "kserve/sklearnserver",
                    "args": ["--model_name=driver-ranker", "--http_port=8080"],
                    "ports": [{"containerPort": 8080, "name": "user-port", "protocol": "TCP"}],
                }]},
            },
        });
        let (resp, _) = quiver_k8s::admit(
            &serde_json::from_value(request).unwrap(),
            &quiver_k8s::InjectorConfig::default(),
        );
        let ops = resp.patch_ops().unwrap();
        // The sidecar is in whichever op adds containers (a list, or one appended container).
        let container = ops
            .iter()
            .flat_map(|op| match op.value.as_array() {
                Some(list) => list.iter().collect::<Vec<_>>(),
                None => vec![&op.value],
            })
            .find(|c| c["name"] == quiver_k8s::inject::CONTAINER_NAME)
            .unwrap_or_else(|| panic!("no sidecar container in {ops:?}"));
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let cli = Cli::try_parse_from(std::iter::once("quiver").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Serve(serve) = cli.command else {
            panic!("{args:?} is not quiver serve")
        };
        let parsed = format!("{serve:?}");
        for field in [
            "port: 8080",
            "enrich: Some(\"/etc/quiver/enrich/enrich.yaml\")",
            "upstream: Some(\"http://127.0.0.1:8090\")",
            "grpc_port: Some(8081)",
            "upstream_grpc: Some(\"http://127.0.0.1:8091\")",
        ] {
            assert!(parsed.contains(field), "{field} not in {parsed}");
        }
    }

    /// The injector Deployment in k8s/base runs this binary's `inject serve` with flags and
    /// QUIVER_* variables it has, and values it accepts.
    #[test]
    fn injector_manifest_runs_this_command() {
        use clap::CommandFactory;

        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/base/injector.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let deployment = text
            .split("\n---\n")
            .map(|doc| serde_saphyr::from_str::<serde_json::Value>(doc).unwrap())
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mut argv: Vec<String> = vec!["quiver".to_owned()];
        argv.extend(
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned()),
        );
        // The environment, as the flags clap would read it from (no process-wide set_var).
        let command = Cli::command();
        let serve = command
            .find_subcommand("inject")
            .and_then(|c| c.find_subcommand("serve"))
            .unwrap();
        for var in container["env"].as_array().unwrap() {
            let (name, value) = (
                var["name"].as_str().unwrap(),
                var["value"].as_str().unwrap(),
            );
            if name == "QUIVER_LOG_FORMAT" {
                argv.extend(["--log-format".to_owned(), value.to_owned()]);
                continue;
            }
            let arg = serve
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name))
                .unwrap_or_else(|| panic!("{name} is not a variable quiver inject serve reads"));
            let flag = format!("--{}", arg.get_long().unwrap());
            if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                if value == "true" {
                    argv.push(flag);
                }
            } else {
                argv.extend([flag, value.to_owned()]);
            }
        }
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(matches!(cli.command, Command::Inject(_)), "{argv:?}");
    }

    #[test]
    fn serve_flags_and_environment() {
        let cli = Cli::try_parse_from([
            "quiver",
            "inject",
            "serve",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--native-sidecar",
            "false",
            "--exclude-namespaces",
            "a,b",
        ])
        .unwrap();
        let Command::Inject(args) = cli.command else {
            panic!("not inject")
        };
        let parsed = format!("{args:?}");
        for field in [
            "native_sidecar: false",
            "exclude_namespaces: [\"a\", \"b\"]",
            "port: 8443",
            "host: \"0.0.0.0\"",
        ] {
            assert!(parsed.contains(field), "{field} not in {parsed}");
        }
        assert!(Cli::try_parse_from(["quiver", "inject", "serve"]).is_err());
    }
}
