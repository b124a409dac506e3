//! The manifests in k8s/: `kubectl kustomize` renders them, every object parses into its
//! k8s-openapi type and serializes back to exactly what was written (so a misspelt or
//! misplaced field fails here, not at `kubectl apply`), the custom resources (KServe,
//! cert-manager) have the fields they need, and the pieces refer to each other correctly.
//!
//! Needs `kubectl` on PATH (Debian: `apt-get install kubernetes-client`; .ci/run installs it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn k8s_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize DIR`, as documents.
fn render(dir: &str) -> Vec<Value> {
    let path = k8s_dir().join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubectl ({e}): the manifest tests need kubectl on PATH \
                 (Debian: apt-get install kubernetes-client; .ci/run installs it)"
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<Option<Value>>(&text)
        .unwrap()
        .into_iter()
        .flatten()
        .filter(|v| !v.is_null())
        .collect()
}

/// The first place where what was written (`a`) and what the type reads back (`b`) differ, as
/// a path. k8s-openapi writes `apiVersion` and `kind` on embedded objects (a StatefulSet's
/// volumeClaimTemplates) where a manifest leaves them out; that is the one addition allowed.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let p = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(u, v, &p) {
                            return Some(d);
                        }
                    }
                    (None, Some(_)) if key == "apiVersion" || key == "kind" => {}
                    (u, v) => return Some(format!("{p}: {u:?} vs {v:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

/// Parses `doc` as `T` and checks that nothing was lost on the way: every field written is one
/// the API knows, in the right place, with the right type.
fn typed<T: DeserializeOwned + serde::Serialize + k8s_openapi::Resource>(doc: &Value) -> T {
    let name = format!("{} {}", T::KIND, doc["metadata"]["name"]);
    assert_eq!(doc["apiVersion"], T::API_VERSION, "{name}");
    let object: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(d) = first_difference(doc, &back, "") {
        panic!("{name}: not what k8s-openapi reads back (a misspelt or misplaced field?): {d}");
    }
    object
}

/// Every object of a render, checked, by kind.
#[derive(Default)]
struct Rendered {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    stateful_sets: Vec<StatefulSet>,
    cron_jobs: Vec<CronJob>,
    pdbs: Vec<PodDisruptionBudget>,
    webhooks: Vec<MutatingWebhookConfiguration>,
    network_policies: Vec<NetworkPolicy>,
    rbac: usize,
    /// Custom resources, as written: (kind, document).
    custom: Vec<(String, Value)>,
}

fn check_all(docs: &[Value]) -> Rendered {
    let mut r = Rendered::default();
    for doc in docs {
        let api = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        match (api, kind) {
            ("v1", "Namespace") => r.namespaces.push(typed(doc)),
            ("v1", "ServiceAccount") => r.service_accounts.push(typed(doc)),
            ("v1", "ConfigMap") => r.config_maps.push(typed(doc)),
            ("v1", "Secret") => r.secrets.push(typed(doc)),
            ("v1", "Service") => r.services.push(typed(doc)),
            ("apps/v1", "Deployment") => r.deployments.push(typed(doc)),
            ("apps/v1", "StatefulSet") => r.stateful_sets.push(typed(doc)),
            ("batch/v1", "CronJob") => r.cron_jobs.push(typed(doc)),
            ("policy/v1", "PodDisruptionBudget") => r.pdbs.push(typed(doc)),
            ("networking.k8s.io/v1", "NetworkPolicy") => r.network_policies.push(typed(doc)),
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                r.webhooks.push(typed(doc));
            }
            ("rbac.authorization.k8s.io/v1", "Role") => {
                typed::<Role>(doc);
                r.rbac += 1;
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                typed::<ClusterRole>(doc);
                r.rbac += 1;
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                typed::<RoleBinding>(doc);
                r.rbac += 1;
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                typed::<ClusterRoleBinding>(doc);
                r.rbac += 1;
            }
            ("cert-manager.io/v1", "Issuer" | "Certificate")
            | ("serving.kserve.io/v1beta1", "InferenceService")
            | ("sparkoperator.k8s.io/v1alpha1", "SparkConnect") => {
                r.custom.push((kind.to_owned(), doc.clone()));
            }
            _ => panic!("{api} {kind}: a kind this test does not know; add it"),
        }
    }
    r
}

fn pod_specs(r: &Rendered) -> Vec<(String, &PodSpec)> {
    let mut specs = Vec::new();
    for d in &r.deployments {
        specs.push((
            format!("Deployment {}", d.metadata.name.as_deref().unwrap()),
            d.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
        ));
    }
    for s in &r.stateful_sets {
        specs.push((
            format!("StatefulSet {}", s.metadata.name.as_deref().unwrap()),
            s.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
        ));
    }
    for c in &r.cron_jobs {
        let job = c.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap();
        specs.push((
            format!("CronJob {}", c.metadata.name.as_deref().unwrap()),
            job.template.spec.as_ref().unwrap(),
        ));
    }
    specs
}

fn first_container<'a>(r: &'a Rendered, deployment_name: &str) -> &'a Container {
    &deployment(r, deployment_name)
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

/// `file` is the `token` key of the Secret `secret`, mounted read-only into `c`.
fn assert_secret_file(pod: &PodSpec, c: &Container, file: &str, secret: &str, what: &str) {
    let (dir, key) = file.rsplit_once('/').unwrap();
    assert_eq!(key, "token", "{what}: {file}");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir}"));
    assert_eq!(mount.read_only, Some(true), "{what}: {dir}");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("{what}: no volume {}", mount.name));
    let from = volume
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.as_deref());
    assert_eq!(from, Some(secret), "{what}: {dir}");
}

fn deployment<'a>(r: &'a Rendered, name: &str) -> &'a Deployment {
    r.deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn service<'a>(r: &'a Rendered, name: &str) -> &'a Service {
    r.services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Service {name}"))
}

/// The base: what every installation has.
fn check_base(r: &Rendered) {
    assert_eq!(r.namespaces.len(), 1);
    let ns = r.namespaces[0].metadata.name.as_deref().unwrap();
    assert_eq!(ns, "quiver");

    // Least privilege: no component calls the API, so no Role and no token anywhere.
    assert_eq!(r.rbac, 0, "no component needs API access");
    for sa in &r.service_accounts {
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
    for (what, spec) in pod_specs(r) {
        let sa = spec
            .service_account_name
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: no serviceAccountName"));
        assert!(
            r.service_accounts
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some(sa)),
            "{what}: ServiceAccount {sa} is not in the manifests"
        );
        assert_eq!(spec.automount_service_account_token, Some(false), "{what}");
        // The namespace enforces the restricted Pod Security Standard.
        let psc = spec
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no securityContext"));
        assert_eq!(psc.run_as_non_root, Some(true), "{what}");
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{what}"
        );
        for c in &spec.containers {
            let sc = c
                .security_context
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: {} has no securityContext", c.name));
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..]),
                "{what}"
            );
            assert!(
                c.resources
                    .as_ref()
                    .is_some_and(|r| r.limits.as_ref().is_some_and(|l| l.contains_key("memory"))),
                "{what}: a memory limit"
            );
        }
        // Every ConfigMap or Secret a pod mounts or reads is in the manifests, or optional,
        // or made by cert-manager / webhook-certs.sh (the injector's TLS Secret), or is a
        // token Secret the operator creates (k8s/README.md, "Tokens").
        for v in spec.volumes.iter().flatten() {
            if let Some(cm) = &v.config_map {
                assert!(
                    r.config_maps
                        .iter()
                        .any(|m| m.metadata.name.as_deref() == Some(cm.name.as_str())),
                    "{what}: ConfigMap {}",
                    cm.name
                );
            }
            if let Some(s) = &v.secret {
                assert!(
                    matches!(
                        s.secret_name.as_deref(),
                        Some(
                            "quiver-injector-tls"
                                | "quiver-registry-token"
                                | "quiver-push-token"
                                | "quiver-offline-token"
                        )
                    ),
                    "{what}: Secret {:?}",
                    s.secret_name
                );
            }
        }
        for c in &spec.containers {
            for from in c.env_from.iter().flatten() {
                let s = from.secret_ref.as_ref().unwrap();
                assert!(
                    s.optional == Some(true)
                        || r.secrets
                            .iter()
                            .any(|x| x.metadata.name.as_deref() == Some(s.name.as_str())),
                    "{what}: Secret {}",
                    s.name
                );
            }
        }
    }
    // Each Service selects the pods of its workload and targets a port they declare.
    for svc in &r.services {
        let name = svc.metadata.name.as_deref().unwrap();
        let spec = svc.spec.as_ref().unwrap();
        let selector = spec.selector.as_ref().unwrap();
        let pods: Vec<&PodSpec> = r
            .deployments
            .iter()
            .map(|d| &d.spec.as_ref().unwrap().template)
            .chain(
                r.stateful_sets
                    .iter()
                    .map(|s| &s.spec.as_ref().unwrap().template),
            )
            .filter(|t| {
                let labels = t.metadata.as_ref().unwrap().labels.as_ref().unwrap();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|t| t.spec.as_ref().unwrap())
            .collect();
        assert_eq!(pods.len(), 1, "Service {name} selects one workload");
        for port in spec.ports.iter().flatten() {
            let target = match port.target_port.as_ref().unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
                other => {
                    panic!("Service {name}: target port {other:?}: use the container port's name")
                }
            };
            assert!(
                pods[0]
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .any(|p| p.name.as_deref() == Some(target.as_str())),
                "Service {name}: no container port named {target}"
            );
        }
    }
    for (what, spec) in pod_specs(r) {
        for c in &spec.containers {
            if c.image.as_deref().unwrap().starts_with("quiver:") {
                assert_eq!(
                    c.image.as_deref(),
                    Some(quiver_k8s::inject::FULL_IMAGE),
                    "{what}: the full image the Dockerfile builds"
                );
            }
        }
    }

    // The injector: two replicas behind a Service, a disruption budget, its certificate from
    // the Secret the Certificate (or webhook-certs.sh) writes.
    let injector = deployment(r, "quiver-injector");
    let spec = injector.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let args = c.args.as_ref().unwrap();
    assert_eq!(&args[..2], ["inject", "serve"]);
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    let tls = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.secret.is_some())
        .unwrap();
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == tls.name)
        .unwrap();
    assert_eq!(
        arg("--tls-cert"),
        Some(format!("{}/tls.crt", mount.mount_path))
    );
    assert_eq!(
        arg("--tls-key"),
        Some(format!("{}/tls.key", mount.mount_path))
    );
    let port: i32 = arg("--port").unwrap().parse().unwrap();
    assert!(
        c.ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.container_port == port && p.name.as_deref() == Some("https"))
    );
    let env: BTreeMap<&str, &str> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
        .collect();
    assert_eq!(
        env["QUIVER_INJECT_IMAGE"],
        quiver_k8s::inject::DEFAULT_IMAGE,
        "sidecars run the lean sidecar image"
    );
    assert_eq!(
        c.image
            .as_deref()
            .unwrap()
            .replace("quiver:", "quiver-sidecar:"),
        env["QUIVER_INJECT_IMAGE"],
        "the sidecar image's version is the injector's own"
    );
    assert!(
        env["QUIVER_INJECT_EXCLUDE_NAMESPACES"]
            .split(',')
            .any(|n| n == "quiver")
    );
    assert!(
        r.pdbs
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("quiver-injector"))
    );

    // The webhook: what the issue asks for, pointing at the injector's Service.
    assert_eq!(r.webhooks.len(), 1);
    let hooks = r.webhooks[0].webhooks.as_ref().unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert!(matches!(
        hook.failure_policy.as_deref(),
        Some("Fail" | "Ignore")
    ));
    assert!(hook.timeout_seconds.is_some_and(|t| (1..=30).contains(&t)));
    let svc_ref = hook.client_config.service.as_ref().unwrap();
    assert_eq!(svc_ref.path.as_deref(), Some("/mutate"));
    let svc = service(r, &svc_ref.name);
    assert_eq!(
        svc.metadata.namespace.as_deref(),
        Some(svc_ref.namespace.as_str())
    );
    assert!(
        svc.spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| Some(p.port) == svc_ref.port)
    );
    let rules = hook.rules.as_ref().unwrap();
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_owned()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..])
    );
    let ns_labels = hook
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(
        ns_labels.get("quiver.dev/injection").map(String::as_str),
        Some("enabled")
    );
    let obj = &hook
        .object_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (obj.key.as_str(), obj.operator.as_str()),
        (quiver_k8s::inject::KSERVE_ISVC_LABEL, "Exists")
    );
    let condition = &hook.match_conditions.as_ref().unwrap()[0].expression;
    assert!(condition.contains(quiver_k8s::inject::annotations::INJECT));

    // The central components' feature_store.yaml is one quiver reads.
    let repo = r
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("quiver-repo"))
        .unwrap();
    let text = &repo.data.as_ref().unwrap()["feature_store.yaml"];
    quiver_registry::config::RepoConfig::parse(text, Path::new("/etc/quiver/repo"), "quiver-repo")
        .unwrap_or_else(|e| panic!("ConfigMap quiver-repo: {e}"));

    // The materialization job: the command the brief names, with the end time from `date`.
    let cron = &r.cron_jobs[0];
    let job = cron.spec.as_ref().unwrap();
    assert_eq!(job.concurrency_policy.as_deref(), Some("Forbid"));
    let c = &job
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let script = c.args.as_ref().unwrap().join(" ");
    assert!(script.contains("quiver materialize-incremental --repo /etc/quiver/repo \"$(date -u +%Y-%m-%dT%H:%M:%S)\""), "{script}");

    // The registry service reads its store from the Secret, never from the manifest's args.
    let c = first_container(r, "quiver-registry");
    assert_eq!(
        c.args.as_ref().unwrap()[..4],
        ["registry", "serve", "--store", "$(QUIVER_REGISTRY_STORE)"]
    );
    let c = first_container(r, "quiver-offline");
    assert_eq!(
        c.args.as_ref().unwrap()[..6],
        ["offline", "serve", "--host", "0.0.0.0", "--port", "8815"]
    );
    // The repo's registry is remote: the offline server reads it from the registry service,
    // without the service's write token.
    let offline_env = |key: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == key)
            .and_then(|e| e.value.clone())
    };
    assert!(
        offline_env("QUIVER_REGISTRY_URL")
            .is_some_and(|u| u.starts_with("http://quiver-registry.")),
        "quiver-offline: no QUIVER_REGISTRY_URL"
    );
    assert!(offline_env("QUIVER_REGISTRY_TOKEN_FILE").is_none());

    // Every server that takes writes (or, the offline one, serves any source's data) on
    // 0.0.0.0 has its token from a file of a Secret the operator creates (none is committed),
    // and every client of the registry service's writes has that service's token.
    for (name, flag, secret) in [
        ("quiver-registry", "--token-file", "quiver-registry-token"),
        ("quiver-offline", "--token-file", "quiver-offline-token"),
        ("quiver-ingest", "--push-token-file", "quiver-push-token"),
    ] {
        let d = deployment(r, name);
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let args = pod.containers[0].args.as_ref().unwrap();
        let host = args
            .iter()
            .position(|a| a == "--host")
            .map(|i| &args[i + 1]);
        assert_eq!(host.map(String::as_str), Some("0.0.0.0"), "{name}");
        let file = args
            .iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
            .unwrap_or_else(|| panic!("{name}: no {flag}"));
        assert_secret_file(pod, &pod.containers[0], &file, secret, name);
        assert!(
            !r.secrets
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some(secret)),
            "{secret}: the operator creates it; no token is committed"
        );
    }
    let ingest = deployment(r, "quiver-ingest");
    let pod = ingest
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let args = pod.containers[0].args.as_ref().unwrap();
    assert_eq!(args[..3], ["serve", "--role", "ingest"]);
    let registry_clients: Vec<(&str, &PodSpec)> = vec![
        ("quiver-ingest", pod),
        (
            "quiver-materialize",
            r.cron_jobs[0]
                .spec
                .as_ref()
                .unwrap()
                .job_template
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap(),
        ),
    ];
    for (name, pod) in registry_clients {
        let c = &pod.containers[0];
        let env = |key: &str| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == key)
                .and_then(|e| e.value.clone())
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        assert!(env("QUIVER_REGISTRY_URL").starts_with("http://quiver-registry."));
        let file = env("QUIVER_REGISTRY_TOKEN_FILE");
        assert_secret_file(pod, c, &file, "quiver-registry-token", name);
    }

    // The Redis to try it with sends keyspace notifications, which the sidecars use.
    let redis = &r.stateful_sets[0];
    let args = redis
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .as_ref()
        .unwrap();
    assert!(args.windows(2).any(|w| w[0] == "--notify-keyspace-events"
        && w[1].contains('K')
        && w[1].contains('h')
        && w[1].contains('g')));
}

#[test]
fn base_renders_and_every_object_parses() {
    let r = check_all(&render("base"));
    check_base(&r);
    assert!(r.custom.is_empty());
    // Without cert-manager nothing fills the caBundle: webhook-certs.sh does.
    assert!(r.webhooks[0].metadata.annotations.is_none());
}

#[test]
fn default_install_adds_cert_manager() {
    let r = check_all(&render("."));
    check_base(&r);
    let issuer = r
        .custom
        .iter()
        .find(|(k, _)| k == "Issuer")
        .map(|(_, d)| d)
        .expect("an Issuer");
    let cert = r
        .custom
        .iter()
        .find(|(k, _)| k == "Certificate")
        .map(|(_, d)| d)
        .expect("a Certificate");
    for doc in [issuer, cert] {
        assert_eq!(doc["apiVersion"], "cert-manager.io/v1");
        assert_eq!(doc["metadata"]["namespace"], "quiver");
    }
    assert!(issuer["spec"]["selfSigned"].is_object());
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        issuer["metadata"]["name"]
    );
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "Issuer");
    // The Secret the injector mounts, for the name the API server calls.
    assert_eq!(cert["spec"]["secretName"], "quiver-injector-tls");
    let dns: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(dns.contains(&"quiver-injector.quiver.svc"), "{dns:?}");
    assert!(
        cert["spec"]["usages"]
            .as_array()
            .unwrap()
            .contains(&Value::from("server auth"))
    );
    // cert-manager's CA injector fills caBundle from that Certificate.
    let annotations = r.webhooks[0].metadata.annotations.as_ref().unwrap();
    assert_eq!(
        annotations["cert-manager.io/inject-ca-from"],
        format!(
            "{}/{}",
            cert["metadata"]["namespace"].as_str().unwrap(),
            cert["metadata"]["name"].as_str().unwrap()
        )
    );
}

#[test]
fn kserve_example_renders_and_asks_for_a_sidecar() {
    let r = check_all(&render("examples"));
    let ns = &r.namespaces[0];
    assert_eq!(
        ns.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("quiver.dev/injection")
            .map(String::as_str),
        Some("enabled"),
        "the webhook's namespaceSelector"
    );
    let (_, isvc) = r
        .custom
        .iter()
        .find(|(k, v)| k == "InferenceService" && v["metadata"]["name"] == "driver-ranking")
        .expect("an InferenceService");
    assert_eq!(isvc["apiVersion"], "serving.kserve.io/v1beta1");
    assert_eq!(
        isvc["metadata"]["namespace"],
        ns.metadata.name.as_deref().unwrap()
    );
    assert!(isvc["spec"]["predictor"]["model"]["modelFormat"]["name"].is_string());
    assert!(isvc["spec"]["predictor"]["model"]["storageUri"].is_string());
    let transformer = &isvc["spec"]["transformer"]["containers"][0];
    let url = transformer["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "FEATURE_SERVER_URL")
        .unwrap();
    assert_eq!(url["value"], "http://localhost:6566/get-online-features");

    // The annotations, as KServe copies them to the transformer's pods, pass the injector's
    // checks and give the transformer a sidecar.
    let annotations = isvc["metadata"]["annotations"].clone();
    let request = serde_json::json!({
        "uid": "example", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE", "namespace": "models",
        "object": {
            "metadata": {
                "annotations": annotations,
                "labels": {"component": "transformer", "serving.kserve.io/inferenceservice": "driver-ranking"},
            },
            "spec": {"containers": [transformer.clone()]},
        },
    });
    let (resp, outcome) = quiver_k8s::admit(
        &serde_json::from_value(request).unwrap(),
        &quiver_k8s::InjectorConfig::default(),
    );
    assert_eq!(
        outcome,
        quiver_k8s::Outcome::Injected { native: true },
        "{:?}",
        resp.status
    );
    let ops = resp.patch_ops().unwrap();
    let sidecar = &ops.last().unwrap().value[0];
    assert_eq!(
        sidecar["ports"][0]["containerPort"], 6566,
        "the port the transformer calls"
    );

    // The NetworkPolicy leaves only the model's port open; the sidecar's is not.
    let np = &r.network_policies[0];
    let ports: Vec<_> = np
        .spec
        .as_ref()
        .unwrap()
        .ingress
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|i| i.ports.iter().flatten())
        .collect();
    assert!(!ports.is_empty());
    assert!(
        ports.iter().all(|p| p.port
            != Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(6566)))
    );

    // The sidecar's feature_store.yaml (made into the ConfigMap by hand, with registry.db) is
    // one quiver reads, with the registry beside it in the mount.
    let text = std::fs::read_to_string(k8s_dir().join("examples/feature_store.yaml")).unwrap();
    let config = quiver_registry::config::RepoConfig::parse(
        &text,
        Path::new("/etc/quiver/repo"),
        "feature_store.yaml",
    )
    .unwrap();
    assert_eq!(
        config.local_registry_path().unwrap(),
        Path::new("/etc/quiver/repo/registry.db")
    );
}

/// k8s/examples/kserve-enrich.yaml: the enriched InferenceService and its enrich ConfigMap
/// render, the ConfigMap holds an enrich config for the quickstart's feature service, and the
/// annotations, on the predictor pod KServe makes from it (RawDeployment: the sklearn runtime's
/// container), give a sidecar on the serving port in front of the moved model.
#[test]
fn kserve_enrich_example_renders_and_rewires_the_predictor() {
    let r = check_all(&render("examples"));
    let (_, isvc) = r
        .custom
        .iter()
        .find(|(k, v)| k == "InferenceService" && v["metadata"]["name"] == "driver-ranker")
        .expect("the enriched InferenceService");
    let annotations = isvc["metadata"]["annotations"].clone();
    let source = annotations["quiver.dev/enrich"].as_str().unwrap();
    let (cm_name, key) = source.split_once('/').unwrap();
    let cm = r
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(cm_name))
        .expect("the enrich ConfigMap");
    assert_eq!(
        cm.metadata.namespace,
        isvc["metadata"]["namespace"].as_str().map(str::to_owned)
    );
    let config: Value = serde_saphyr::from_str(&cm.data.as_ref().unwrap()[key]).unwrap();
    let model = &config["models"]["driver-ranker"];
    assert_eq!(model["feature_service"], "driver_ranking");
    assert_eq!(
        model["entities"],
        serde_json::json!(["driver_id", "customer_id"])
    );
    // The feature service and both join keys are the quickstart's.
    let features =
        std::fs::read_to_string(k8s_dir().join("../examples/quickstart/features.yaml")).unwrap();
    for needed in [
        "- name: driver_ranking",
        "join_keys: [driver_id]",
        "join_keys: [customer_id]",
    ] {
        assert!(features.contains(needed), "{needed}");
    }

    let request = serde_json::json!({
        "uid": "enrich-example", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE", "namespace": "models",
        "object": {
            "metadata": {
                "annotations": annotations,
                "labels": {"component": "predictor", "serving.kserve.io/inferenceservice": "driver-ranker"},
            },
            "spec": {"containers": [{
                "name": "kserve-container",
                "image": "kserve/sklearnserver:v0.15.2",
                "args": ["--model_name=driver-ranker", "--model_dir=/mnt/models", "--http_port=8080"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 10},
            }]},
        },
    });
    let (resp, outcome) = quiver_k8s::admit(
        &serde_json::from_value(request).unwrap(),
        &quiver_k8s::InjectorConfig::default(),
    );
    assert_eq!(
        outcome,
        quiver_k8s::Outcome::Injected { native: true },
        "{:?}",
        resp.status
    );
    let ops = resp.patch_ops().unwrap();
    let op = |path: &str| &ops.iter().find(|o| o.path == path).unwrap().value;
    assert_eq!(
        op("/spec/containers/0/args")[2],
        "--http_port=8090",
        "the model moves"
    );
    assert_eq!(
        op("/spec/containers/0/readinessProbe")["tcpSocket"]["port"],
        8090
    );
    let sidecar = &op("/spec/initContainers")[0];
    assert_eq!(
        sidecar["ports"][0]["containerPort"], 8080,
        "where KServe sends traffic"
    );
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("--enrich"), "/etc/quiver/enrich/enrich.yaml");
    assert_eq!(after("--upstream"), "http://127.0.0.1:8090");
    let volumes = op("/spec/volumes");
    let enrich = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "quiver-enrich")
        .unwrap();
    assert_eq!(enrich["configMap"]["name"], cm_name);
    assert_eq!(enrich["configMap"]["items"][0]["key"], key);
}

/// The images the manifests run: the pods set runAsNonRoot, which the kubelet can only check
/// against a numeric, non-zero USER. The sidecar image runs `quiver-sidecar` (the injector's
/// args start with `serve`), the full image `quiver`; `docker build .` gives the full one.
#[test]
fn dockerfile_builds_two_non_root_images() {
    let text = std::fs::read_to_string(k8s_dir().join("../Dockerfile")).unwrap();
    let stage = |name: &str| -> String {
        text.split("\nFROM ")
            .find(|s| {
                s.lines()
                    .next()
                    .unwrap()
                    .trim_end()
                    .ends_with(&format!(" AS {name}"))
            })
            .unwrap_or_else(|| panic!("no stage {name}"))
            .to_owned()
    };
    for (name, entrypoint) in [("sidecar", "quiver-sidecar"), ("full", "quiver")] {
        let stage = stage(name);
        let user = stage
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{name}: a USER in the runtime stage"));
        let uid: u32 = user
            .split(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: USER {user} is not numeric"));
        assert_ne!(uid, 0, "{name}");
        assert!(
            stage
                .lines()
                .any(|l| l.trim() == format!("ENTRYPOINT [\"{entrypoint}\"]")),
            "{name}: ENTRYPOINT {entrypoint}"
        );
    }
    assert!(text.contains("cargo build --release --locked -p quiver-cmd --bin quiver-sidecar"));
    assert!(text.contains("cargo build --release --locked -p quiver --bin quiver"));
    // `docker build .` builds the last stage: the full image, what every manifest but the
    // sidecar runs.
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    assert!(last_stage.lines().next().unwrap().ends_with(" AS full"));
    // The materialization CronJob runs /bin/sh and date: the full image must have them.
    assert!(
        last_stage.starts_with("debian:"),
        "a runtime with a shell: {}",
        last_stage.lines().next().unwrap()
    );
}

/// The repo config of k8s/spark: Spark Connect as the offline engine, at `spark.remote`.
fn spark_remote(r: &Rendered) -> String {
    let cm = r
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("quiver-repo-spark"))
        .expect("the ConfigMap quiver-repo-spark");
    let yaml = &cm.data.as_ref().unwrap()["feature_store.yaml"];
    let config: Value = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(config["offline_store"]["type"], "spark", "{yaml}");
    assert_eq!(config["online_store"]["type"], "redis", "{yaml}");
    config["offline_store"]["spark_conf"]["spark.remote"]
        .as_str()
        .unwrap_or_else(|| panic!("no spark.remote in {yaml}"))
        .to_owned()
}

/// The sharded materialization of k8s/spark: an indexed Job per run whose pod i runs shard i of
/// as many shards as the Job has completions, all runs of one Job agreeing on END and run id.
fn check_sharded_materialize(r: &Rendered) {
    let cron = r
        .cron_jobs
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("quiver-materialize-sharded"))
        .expect("the CronJob quiver-materialize-sharded");
    let spec = cron.spec.as_ref().unwrap();
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let job = spec.job_template.spec.as_ref().unwrap();
    assert_eq!(job.completion_mode.as_deref(), Some("Indexed"));
    let completions = job.completions.unwrap();
    assert_eq!(job.parallelism, Some(completions));
    assert!(
        job.backoff_limit_per_index.unwrap_or(0) >= 1,
        "a failed shard is retried"
    );
    let pod = job.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    let env = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    assert_eq!(
        env("QUIVER_SHARDS").value.as_deref(),
        Some(completions.to_string().as_str()),
        "QUIVER_SHARDS must equal the Job's completions"
    );
    let job_name = env("JOB_NAME").value_from.as_ref().unwrap();
    assert_eq!(
        job_name.field_ref.as_ref().unwrap().field_path,
        "metadata.labels['batch.kubernetes.io/job-name']"
    );
    let script = &c.args.as_ref().unwrap()[0];
    assert!(script.contains("materialize-incremental"), "{script}");
    assert!(
        script.contains(r#"--shard "$JOB_COMPLETION_INDEX/$QUIVER_SHARDS""#),
        "{script}"
    );
    assert!(script.contains(r#"--run-id "$JOB_NAME""#), "{script}");
    let repo = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "repo")
        .unwrap();
    assert_eq!(
        repo.config_map.as_ref().unwrap().name,
        "quiver-repo-spark",
        "the shards read the Spark repo config"
    );

    // The script itself, run by sh: END is the CronJob's scheduled time, read from the Job's
    // name; `quiver` here is a script printing its arguments.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("quiver");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let run = |job: &str, end: Option<&str>| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.path().display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env("JOB_NAME", job)
            .env("JOB_COMPLETION_INDEX", "2")
            .env("QUIVER_SHARDS", completions.to_string())
            .env_remove("QUIVER_END");
        if let Some(end) = end {
            cmd.env("QUIVER_END", end);
        }
        cmd.output().unwrap()
    };
    // 29_430_720 minutes after the epoch: 2025-12-16T00:00:00Z.
    let out = run("quiver-materialize-sharded-29430720", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = String::from_utf8(out.stdout).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "materialize-incremental",
            "--repo",
            "/etc/quiver/repo",
            "--shard",
            &format!("2/{completions}"),
            "--run-id",
            "quiver-materialize-sharded-29430720",
            "2025-12-16T00:00:00"
        ]
    );
    let out = run("by-hand", None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set QUIVER_END"));
    let out = run("by-hand", Some("2026-01-01T00:00:00"));
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .ends_with("2026-01-01T00:00:00\n")
    );
}

#[test]
fn spark_connect_server_deployment_and_sharded_materialization_render() {
    let r = check_all(&render("spark/connect-server"));
    check_sharded_materialize(&r);
    let remote = spark_remote(&r);
    let svc = service(&r, "spark-connect-server");
    let port = svc
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == 15002)
        .expect("port 15002");
    assert_eq!(
        remote,
        format!(
            "sc://{}.{}.svc.cluster.local:{}",
            svc.metadata.name.as_deref().unwrap(),
            svc.metadata.namespace.as_deref().unwrap(),
            port.port
        )
    );
    let d = deployment(&r, "spark-connect");
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let labels = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    for (k, v) in svc.spec.as_ref().unwrap().selector.as_ref().unwrap() {
        assert_eq!(labels.get(k), Some(v), "the Service selects the Spark pod");
    }
    let c = &pod.containers[0];
    assert_eq!(
        c.command.as_deref(),
        Some(&["/opt/spark/sbin/start-connect-server.sh".to_owned()][..])
    );
    let args = c.args.as_ref().unwrap();
    assert!(args.contains(&"spark.connect.grpc.binding.port=15002".to_owned()));
    assert!(
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == "SPARK_NO_DAEMONIZE" && e.value.as_deref() == Some("true")),
        "the server must stay in the foreground"
    );
    let named = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("grpc"))
        .unwrap();
    assert_eq!(named.container_port, 15002);
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    assert_eq!(r.network_policies.len(), 1);
}

#[test]
fn spark_operator_spark_connect_and_sharded_materialization_render() {
    let r = check_all(&render("spark/operator"));
    check_sharded_materialize(&r);
    let (_, sc) = r
        .custom
        .iter()
        .find(|(k, _)| k == "SparkConnect")
        .expect("a SparkConnect");
    assert_eq!(sc["apiVersion"], "sparkoperator.k8s.io/v1alpha1");
    let spec = &sc["spec"];
    // The CRD's required fields (spark-operator api/v1alpha1: sparkVersion, server, executor).
    assert!(spec["sparkVersion"].is_string());
    assert!(spec["server"].is_object() && spec["executor"].is_object());
    assert!(spec["executor"]["instances"].as_u64().unwrap() >= 1);
    // The operator names the server's Service `<name>-server`, port 15002.
    assert_eq!(
        spark_remote(&r),
        format!(
            "sc://{}-server.{}.svc.cluster.local:15002",
            sc["metadata"]["name"].as_str().unwrap(),
            sc["metadata"]["namespace"].as_str().unwrap()
        )
    );
    // The driver's service account exists and may create its executors.
    let account = spec["server"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    assert!(
        r.service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(account)),
        "no ServiceAccount {account}"
    );
    assert_eq!(r.rbac, 2, "a Role and its RoleBinding");
    for template in [&spec["server"]["template"], &spec["executor"]["template"]] {
        let pod: PodSpec = serde_json::from_value(template["spec"].clone())
            .unwrap_or_else(|e| panic!("a pod template the API reads: {e}"));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }
}
