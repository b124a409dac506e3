//! The mutation, as a pure function: an AdmissionRequest for a pod → allowed with a JSON Patch
//! that adds the quiver sidecar, allowed unchanged, or denied with a message naming every bad
//! annotation. No I/O, no clock: the same request and config always give the same answer.
//!
//! ```text
//! request ─▶ not a pod CREATE / excluded namespace / no quiver.dev/inject: "true"
//!            / component not chosen / sidecar already there ──▶ allowed, no patch
//!         ─▶ annotations → SidecarPlan (every problem collected) ──bad──▶ denied (or, fail-open:
//!                                                                       allowed + warning)
//!         ─▶ patch: status annotation, volumes, the container (native: an init container with
//!            restartPolicy Always; else a regular container) ──▶ allowed + JSONPatch
//!            (with quiver.dev/enrich: also the model moved off its serving port, crate::enrich)
//! ```
//!
//! Length: one pure decision read top to bottom (request → plan → patch); about a third of it is
//! the annotation table and the checks that report every bad annotation at once.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, HTTPGetAction, KeyToPath, Pod, Probe, ResourceRequirements,
    SeccompProfile, SecretEnvSource, SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use quiver_core::fault::ErrorKind;
use serde_json::Value;

use crate::admission::{AdmissionRequest, AdmissionResponse, PatchOp, pointer_segment};
use crate::quantity;

/// The pod annotations the injector reads and writes.
pub mod annotations {
    pub const INJECT: &str = "quiver.dev/inject";
    pub const INJECT_COMPONENTS: &str = "quiver.dev/inject-components";
    pub const NATIVE_SIDECAR: &str = "quiver.dev/native-sidecar";
    pub const REPO_CONFIGMAP: &str = "quiver.dev/repo-configmap";
    pub const REGISTRY_URL: &str = "quiver.dev/registry-url";
    pub const PROJECT: &str = "quiver.dev/project";
    pub const FEATURE_SERVICES: &str = "quiver.dev/feature-services";
    pub const ONLINE_STORE_SECRET: &str = "quiver.dev/online-store-secret";
    pub const PORT: &str = "quiver.dev/port";
    pub const CACHE_BYTES: &str = "quiver.dev/cache-bytes";
    pub const REPLICATE: &str = "quiver.dev/replicate";
    pub const CPU: &str = "quiver.dev/cpu";
    pub const MEMORY: &str = "quiver.dev/memory";
    pub const IMAGE: &str = "quiver.dev/image";
    /// `"true"`: run Feast's transformation service (`feast serve_transformations`) beside the
    /// sidecar, for on-demand feature views.
    pub const TRANSFORMATION_SERVICE: &str = "quiver.dev/transformation-service";
    /// The image of that container (a Feast 0.67 image with the repo's Python dependencies).
    pub const TRANSFORMATION_IMAGE: &str = "quiver.dev/transformation-image";
    /// `<configmap>[/<key>]`: put the sidecar in front of the model server (KServe V1/V2
    /// enrichment) with the enrich config in that ConfigMap's key (default `enrich.yaml`). The
    /// sidecar takes the model's serving port; the model moves (crate::enrich).
    pub const ENRICH: &str = "quiver.dev/enrich";
    /// The model server's port after the move (default
    /// [`crate::enrich::DEFAULT_UPSTREAM_PORT`]).
    pub const ENRICH_UPSTREAM_PORT: &str = "quiver.dev/enrich-upstream-port";
    /// Written by the injector: `injected`, or `invalid` (fail-open, with [`ERROR`]).
    pub const STATUS: &str = "quiver.dev/status";
    /// Written by the injector in fail-open mode: why no sidecar was added.
    pub const ERROR: &str = "quiver.dev/error";

    /// Every `quiver.dev/` annotation there is; any other is reported as a typo.
    pub const ALL: [&str; 20] = [
        INJECT,
        INJECT_COMPONENTS,
        NATIVE_SIDECAR,
        REPO_CONFIGMAP,
        REGISTRY_URL,
        PROJECT,
        FEATURE_SERVICES,
        ONLINE_STORE_SECRET,
        PORT,
        CACHE_BYTES,
        REPLICATE,
        CPU,
        MEMORY,
        IMAGE,
        TRANSFORMATION_SERVICE,
        TRANSFORMATION_IMAGE,
        ENRICH,
        ENRICH_UPSTREAM_PORT,
        STATUS,
        ERROR,
    ];
}

/// The label KServe puts on every pod of an InferenceService (its name is the value).
pub const KSERVE_ISVC_LABEL: &str = "serving.kserve.io/inferenceservice";
/// The label KServe puts on a component's pods: `predictor`, `transformer` or `explainer`.
pub const KSERVE_COMPONENT_LABEL: &str = "component";
const KSERVE_COMPONENTS: [&str; 3] = ["predictor", "transformer", "explainer"];

pub const CONTAINER_NAME: &str = "quiver-sidecar";
/// Feast's transformation service, when a pod asks for it.
pub const TRANSFORMATION_CONTAINER: &str = "quiver-transformations";
/// Its gRPC port (on localhost; the sidecar's `--transformation-service`).
pub const TRANSFORMATION_PORT: u16 = 6569;
/// Feast's feature-server image (it has `feast` and grpcio); override with
/// `--transformation-image` or the pod's `quiver.dev/transformation-image` when the
/// transformations import packages it lacks.
pub const DEFAULT_TRANSFORMATION_IMAGE: &str = "quay.io/feastdev/feature-server:0.67.0";
pub const REPO_VOLUME: &str = "quiver-repo";
pub const STATE_VOLUME: &str = "quiver-state";
/// The enrich config's ConfigMap, when a pod asks for enrichment.
pub const ENRICH_VOLUME: &str = "quiver-enrich";
/// Where the sidecar sees it: the key is mounted as [`ENRICH_FILE`].
pub const ENRICH_MOUNT: &str = "/etc/quiver/enrich";
pub const ENRICH_FILE: &str = "enrich.yaml";
/// The ConfigMap key read when `quiver.dev/enrich` names none.
pub const DEFAULT_ENRICH_KEY: &str = "enrich.yaml";
/// Where the sidecar sees the feature repo (the ConfigMap: feature_store.yaml, registry.db).
pub const REPO_MOUNT: &str = "/etc/quiver/repo";
/// The sidecar's writable directory (its root file system is read-only) and working directory.
pub const STATE_MOUNT: &str = "/var/lib/quiver";
pub const DEFAULT_PORT: u16 = 6566;
/// `quiver-sidecar:<version>`, the lean sidecar image (the Dockerfile's `sidecar` target, whose
/// entrypoint `quiver-sidecar serve` takes `quiver serve`'s flags); override with `--image`.
pub const DEFAULT_IMAGE: &str = concat!("quiver-sidecar:", env!("CARGO_PKG_VERSION"));
/// `quiver:<version>`, the full image (the Dockerfile's `full` target) every other role runs.
pub const FULL_IMAGE: &str = concat!("quiver:", env!("CARGO_PKG_VERSION"));
/// Memory the sidecar process needs beyond its cache (runtime, buffers, the registry).
const MEMORY_HEADROOM: f64 = 64.0 * 1024.0 * 1024.0;

/// The injector's own configuration: defaults for what a pod does not annotate.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectorConfig {
    pub image: String,
    /// Inject as a native sidecar (an init container with `restartPolicy: Always`, Kubernetes
    /// 1.29+) unless a pod says otherwise.
    pub native_sidecar: bool,
    /// Namespaces whose pods are never touched, whatever they carry.
    pub excluded_namespaces: Vec<String>,
    /// Admit pods whose annotations are bad (without a sidecar, with a warning and a
    /// `quiver.dev/error` annotation) instead of denying them.
    pub fail_open: bool,
    /// The ConfigMap used when a pod names none.
    pub repo_configmap: Option<String>,
    pub cpu: String,
    pub memory: String,
    pub cache_bytes: String,
    /// The transformation service's image when a pod names none.
    pub transformation_image: String,
}

impl Default for InjectorConfig {
    fn default() -> InjectorConfig {
        InjectorConfig {
            image: DEFAULT_IMAGE.to_owned(),
            native_sidecar: true,
            excluded_namespaces: ["kube-system", "kube-public", "kube-node-lease"]
                .map(str::to_owned)
                .to_vec(),
            fail_open: false,
            repo_configmap: None,
            cpu: "100m".to_owned(),
            memory: "384Mi".to_owned(),
            cache_bytes: "256MiB".to_owned(),
            transformation_image: DEFAULT_TRANSFORMATION_IMAGE.to_owned(),
        }
    }
}

impl InjectorConfig {
    /// Checks the defaults with the same rules as the annotations, so a bad default is found at
    /// start-up rather than in every pod. Errors name the flag.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(e) = check_image(&self.image) {
            problems.push(format!("--image: {e}"));
        }
        if let Err(e) = check_image(&self.transformation_image) {
            problems.push(format!("--transformation-image: {e}"));
        }
        if let Some(cm) = &self.repo_configmap
            && let Err(e) = check_object_name(cm)
        {
            problems.push(format!("--repo-configmap: {e}"));
        }
        for ns in &self.excluded_namespaces {
            if check_object_name(ns).is_err() || ns.contains('.') {
                problems.push(format!(
                    "--exclude-namespaces: {ns:?} is not a namespace name"
                ));
            }
        }
        let cpu = check_cpu(&self.cpu).map_err(|e| problems.push(format!("--cpu: {e}")));
        let memory =
            check_memory(&self.memory).map_err(|e| problems.push(format!("--memory: {e}")));
        let cache = quiver_core::size::parse_bytes(&self.cache_bytes)
            .map_err(|e| problems.push(format!("--cache-bytes: {e}")));
        if let (Ok(()), Ok(memory), Ok(cache)) = (cpu, memory, cache)
            && let Err(e) = check_headroom(memory, cache)
        {
            problems.push(format!("--memory {}: {e}", self.memory));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// What one admission decided, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected {
        native: bool,
    },
    Skipped(SkipReason),
    /// Bad annotations: denied, or admitted without a sidecar in fail-open mode.
    Invalid {
        admitted: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotAPodCreate,
    ExcludedNamespace,
    NotRequested,
    ComponentNotChosen,
    AlreadyInjected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected { native: true } => "injected-native",
            Outcome::Injected { native: false } => "injected-container",
            Outcome::Skipped(SkipReason::NotAPodCreate) => "skipped-not-a-pod-create",
            Outcome::Skipped(SkipReason::ExcludedNamespace) => "skipped-excluded-namespace",
            Outcome::Skipped(SkipReason::NotRequested) => "skipped-not-requested",
            Outcome::Skipped(SkipReason::ComponentNotChosen) => "skipped-component",
            Outcome::Skipped(SkipReason::AlreadyInjected) => "skipped-already-injected",
            Outcome::Invalid { admitted: false } => "denied",
            Outcome::Invalid { admitted: true } => "invalid-admitted",
        }
    }
}

/// Everything the sidecar is built from, after every annotation was checked.
#[derive(Debug, Clone, PartialEq)]
struct SidecarPlan {
    image: String,
    native: bool,
    port: u16,
    repo_configmap: String,
    registry_url: Option<String>,
    project: Option<String>,
    feature_services: Vec<String>,
    online_store_secret: Option<String>,
    cache_bytes: String,
    replicate: Vec<String>,
    cpu: String,
    memory: String,
    /// Feast's transformation service beside the sidecar: its image.
    transformation_image: Option<String>,
    /// In front of the model server (`quiver.dev/enrich`).
    enrich: Option<EnrichPlan>,
}

/// The sidecar in front of the model: the enrich config's source and the rewiring.
#[derive(Debug, Clone, PartialEq)]
struct EnrichPlan {
    configmap: String,
    key: String,
    rewiring: crate::enrich::Rewiring,
}

/// Decides one admission request. Never fails: whatever is wrong with the request becomes a
/// denial (or, fail-open, a warning) whose message says what and where.
pub fn admit(request: &AdmissionRequest, config: &InjectorConfig) -> (AdmissionResponse, Outcome) {
    let uid = request.uid.as_str();
    let skip = |reason| (AdmissionResponse::allow(uid), Outcome::Skipped(reason));
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == "CREATE";
    let Some(object) = request.object.as_ref().filter(|_| is_pod_create) else {
        return skip(SkipReason::NotAPodCreate);
    };
    let pod: Pod = match serde_json::from_value(object.clone()) {
        Ok(pod) => pod,
        Err(e) => {
            return invalid_pod(
                uid,
                config,
                vec![format!("the pod in the request could not be read: {e}")],
                false,
            );
        }
    };
    let namespace = if request.namespace.is_empty() {
        pod.metadata.namespace.as_deref().unwrap_or_default()
    } else {
        request.namespace.as_str()
    };
    if config.excluded_namespaces.iter().any(|n| n == namespace) {
        return skip(SkipReason::ExcludedNamespace);
    }
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    match annotations.get(annotations::INJECT).map(String::as_str) {
        None => return skip(SkipReason::NotRequested),
        Some(v) if v.eq_ignore_ascii_case("false") => return skip(SkipReason::NotRequested),
        Some(v) if v.eq_ignore_ascii_case("true") => {}
        Some(v) => {
            return invalid(
                uid,
                config,
                vec![format!(
                    "{}: {v:?} is not a boolean: expected \"true\" or \"false\"",
                    annotations::INJECT
                )],
            );
        }
    }
    if already_injected(&pod) {
        return skip(SkipReason::AlreadyInjected);
    }
    let chosen = match chosen_components(annotations) {
        Ok(c) => c,
        Err(e) => return invalid(uid, config, vec![e]),
    };
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    // The component filter is for KServe's pods; any other pod that carries the annotation
    // and reaches the webhook (the objectSelector decides that) is injected.
    if labels.contains_key(KSERVE_ISVC_LABEL) {
        let component = labels.get(KSERVE_COMPONENT_LABEL).map(String::as_str);
        if !component.is_some_and(|c| chosen.contains(&c)) {
            return skip(SkipReason::ComponentNotChosen);
        }
    }
    let plan = match plan(object, &pod, annotations, config) {
        Ok(plan) => plan,
        Err(problems) => return invalid(uid, config, problems),
    };
    let ops = patch(object, &plan);
    match AdmissionResponse::allow_with_patch(uid, &ops) {
        Ok(resp) => (
            resp,
            Outcome::Injected {
                native: plan.native,
            },
        ),
        Err(e) => invalid(uid, config, vec![e]),
    }
}

/// A sidecar is there already (this is a reinvocation, or the pod was written with one).
fn already_injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == CONTAINER_NAME || c.name == TRANSFORMATION_CONTAINER)
    })
}

fn chosen_components(annotations: &BTreeMap<String, String>) -> Result<Vec<&str>, String> {
    let Some(text) = annotations.get(annotations::INJECT_COMPONENTS) else {
        return Ok(vec!["predictor"]);
    };
    let list = split_list(text);
    let bad: Vec<&str> = list
        .iter()
        .copied()
        .filter(|c| !KSERVE_COMPONENTS.contains(c))
        .collect();
    if list.is_empty() || !bad.is_empty() {
        return Err(format!(
            "{}: {text:?}: expected a comma-separated list of predictor, transformer, explainer",
            annotations::INJECT_COMPONENTS
        ));
    }
    Ok(list)
}

fn owned_list(text: Option<&str>) -> Vec<String> {
    text.map(split_list)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn split_list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads every annotation; all problems are reported together.
fn plan(
    object: &Value,
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    config: &InjectorConfig,
) -> Result<SidecarPlan, Vec<String>> {
    use crate::inject::annotations as a;
    let mut problems = Vec::new();
    let mut unknown: Vec<&str> = annotations
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("quiver.dev/") && !a::ALL.contains(k))
        .collect();
    unknown.sort_unstable();
    for key in unknown {
        let closest = a::ALL
            .iter()
            .map(|known| (edit_distance(key, known), known))
            .min();
        problems.push(match closest {
            Some((d, known)) if d <= 3 => {
                format!("{key}: unknown annotation: did you mean {known}?")
            }
            _ => format!(
                "{key}: unknown annotation: the quiver.dev annotations are {}",
                a::ALL[..a::ALL.len() - 2].join(", ")
            ),
        });
    }
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let mut check = |key: &str, default: Option<&str>, f: &dyn Fn(&str) -> Result<(), String>| {
        let value = get(key).or(default)?;
        // Values become the sidecar's arguments and environment: one that starts with '-'
        // (or a list item that does) would be read as a flag.
        let flag_like =
            value.starts_with('-') || split_list(value).iter().any(|v| v.starts_with('-'));
        let checked = if flag_like {
            Err(format!("{value:?}: a value may not start with '-'"))
        } else {
            f(value)
        };
        match checked {
            Ok(()) => Some(value.to_owned()),
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                None
            }
        }
    };

    let image = check(a::IMAGE, Some(&config.image), &check_image);
    let repo_configmap = check(
        a::REPO_CONFIGMAP,
        config.repo_configmap.as_deref(),
        &check_object_name,
    );
    let online_store_secret = check(a::ONLINE_STORE_SECRET, None, &check_object_name);
    let registry_url = check(a::REGISTRY_URL, None, &check_url);
    let project = check(a::PROJECT, None, &|p| {
        if quiver_registry::config::is_valid_project_name(p) {
            Ok(())
        } else {
            Err(format!(
                "{p:?} is not a project name: use letters, digits, underscores and hyphens, not starting with _ or -"
            ))
        }
    });
    let feature_services = check(a::FEATURE_SERVICES, None, &check_names);
    let replicate = check(a::REPLICATE, None, &check_names);
    let cpu = check(a::CPU, Some(&config.cpu), &|v| check_cpu(v));
    let memory = check(a::MEMORY, Some(&config.memory), &|v| {
        check_memory(v).map(|_| ())
    });
    let cache_bytes = check(a::CACHE_BYTES, Some(&config.cache_bytes), &|v| {
        let bytes = quiver_core::size::parse_bytes(v)?;
        #[allow(clippy::cast_precision_loss)] // compared against a bound far below 2^52
        if bytes as f64 > MAX_MEMORY {
            return Err(format!(
                "{v:?} is a larger cache than a sidecar is given: at most 256Gi"
            ));
        }
        Ok(())
    });
    let port = check(a::PORT, None, &|v| check_port(v, pod));
    let enrich_source = check(a::ENRICH, None, &check_enrich_source);
    let upstream_port = check(a::ENRICH_UPSTREAM_PORT, None, &|_| Ok(()));
    let boolean = |v: &str| {
        if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
            Ok(())
        } else {
            Err(format!(
                "{v:?} is not a boolean: expected \"true\" or \"false\""
            ))
        }
    };
    let native = check(a::NATIVE_SIDECAR, None, &boolean);
    let transformations = check(a::TRANSFORMATION_SERVICE, None, &|v| {
        boolean(v)?;
        if v.eq_ignore_ascii_case("true") {
            check_port(&TRANSFORMATION_PORT.to_string(), pod)
        } else {
            Ok(())
        }
    })
    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let transformation_image = check(
        a::TRANSFORMATION_IMAGE,
        Some(&config.transformation_image),
        &check_image,
    );
    if let (Some(memory), Some(cache)) = (&memory, &cache_bytes)
        && let (Ok(m), Ok(c)) = (check_memory(memory), quiver_core::size::parse_bytes(cache))
        && let Err(e) = check_headroom(m, c)
    {
        let key = if get(a::MEMORY).is_some() {
            a::MEMORY
        } else {
            a::CACHE_BYTES
        };
        problems.push(format!("{key}: memory {memory} with cache {cache}: {e}"));
    }
    if repo_configmap.is_none() && get(a::REPO_CONFIGMAP).is_none() {
        problems.push(format!(
            "{}: required: name the ConfigMap holding the feature repo (feature_store.yaml, and registry.db for a file registry) in the pod's namespace",
            a::REPO_CONFIGMAP
        ));
    }
    let mut enrich = None;
    if get(a::ENRICH).is_some() {
        if get(a::PORT).is_some() {
            problems.push(format!(
                "{}: not used with {}: the sidecar then listens on the model's serving port",
                a::PORT,
                a::ENRICH
            ));
        }
        let reserved: &[u16] = if transformations {
            &[TRANSFORMATION_PORT]
        } else {
            &[]
        };
        match crate::enrich::rewire(
            object,
            upstream_port.as_deref(),
            reserved,
            a::ENRICH,
            a::ENRICH_UPSTREAM_PORT,
        ) {
            Ok(rewiring) => {
                // Feast's API moves to the sidecar's usual port, on loopback only.
                let grpc = rewiring.grpc.map(|g| [g.port, g.upstream_port]);
                if [rewiring.serving_port, rewiring.upstream_port]
                    .iter()
                    .chain(grpc.iter().flatten())
                    .chain(reserved)
                    .any(|p| *p == DEFAULT_PORT)
                {
                    problems.push(format!(
                        "{}: the sidecar serves Feast's API on 127.0.0.1:{DEFAULT_PORT} in enrichment mode, and the rewiring uses that port: choose another {}",
                        a::ENRICH,
                        a::ENRICH_UPSTREAM_PORT
                    ));
                }
                if let Some(source) = &enrich_source {
                    let (configmap, key) = source
                        .split_once('/')
                        .unwrap_or((source.as_str(), DEFAULT_ENRICH_KEY));
                    enrich = Some(EnrichPlan {
                        configmap: configmap.to_owned(),
                        key: key.to_owned(),
                        rewiring,
                    });
                }
            }
            Err(more) => problems.extend(more),
        }
    } else if get(a::ENRICH_UPSTREAM_PORT).is_some() {
        problems.push(format!(
            "{}: only used with {}",
            a::ENRICH_UPSTREAM_PORT,
            a::ENRICH
        ));
    }
    let volumes: &[&str] = if get(a::ENRICH).is_some() {
        &[REPO_VOLUME, STATE_VOLUME, ENRICH_VOLUME]
    } else {
        &[REPO_VOLUME, STATE_VOLUME]
    };
    for &volume in volumes {
        let taken = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.name == volume));
        if taken {
            problems.push(format!(
                "{}: the pod already has a volume named {volume:?}, which the sidecar needs: rename it",
                a::INJECT
            ));
        }
    }
    match (image, repo_configmap, cpu, memory, cache_bytes) {
        (Some(image), Some(repo_configmap), Some(cpu), Some(memory), Some(cache_bytes))
            if problems.is_empty() =>
        {
            Ok(SidecarPlan {
                image,
                native: native.map_or(config.native_sidecar, |v| v.eq_ignore_ascii_case("true")),
                port: enrich.as_ref().map_or_else(
                    || port.and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PORT),
                    |e| e.rewiring.serving_port,
                ),
                repo_configmap,
                registry_url,
                project,
                feature_services: owned_list(feature_services.as_deref()),
                online_store_secret,
                cache_bytes,
                replicate: owned_list(replicate.as_deref()),
                cpu,
                memory,
                transformation_image: transformation_image.filter(|_| transformations),
                enrich,
            })
        }
        _ => Err(problems),
    }
}

/// Levenshtein distance, for suggesting the annotation a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// An image reference as the container runtime reads it (the distribution grammar):
/// `[host[:port]/]path[:tag][@algorithm:hex]`, the path lowercase components separated by `/`.
fn check_image(v: &str) -> Result<(), String> {
    parse_image(v).map_err(|why| {
        format!(
            "{v:?} is not an image reference ({why}): expected e.g. \
             registry.example.com/quiver:0.1.0 or repo/name@sha256:<64 hex digits>"
        )
    })
}

fn parse_image(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("empty");
    }
    let (rest, digest) = match v.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (v, None),
    };
    if let Some(d) = digest {
        let (algorithm, hex) = d.split_once(':').ok_or("a digest is algorithm:hex")?;
        let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && part.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a digest is algorithm:hex with at least 32 hex digits");
        }
    }
    // A tag is after the last ':' that follows the last '/' (a port's ':' is before it).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = (1..=128).contains(&t.len())
            && t.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok {
            return Err(
                "a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            );
        }
    }
    if name.is_empty() || name.len() > 255 {
        return Err("the name is empty or longer than 255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1
        && (first.contains(['.', ':'])
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase()))
    {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err("the registry host is not host[:port]");
        }
        components.remove(0);
    }
    let path_ok = components.iter().all(|c| {
        // [a-z0-9]+ ( ( '.' | '_' | '__' | '-'+ ) [a-z0-9]+ )*
        let bytes = c.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
                return false;
            }
        }
        true
    });
    if !path_ok {
        return Err(
            "path components are lowercase letters and digits, separated by '.', '_', '__' or '-'",
        );
    }
    Ok(())
}

/// The largest CPU the injector gives the sidecar (cores).
const MAX_CPU: f64 = 64.0;
/// The largest memory (and so cache) the injector gives the sidecar: 256 GiB.
const MAX_MEMORY: f64 = 256.0 * 1024.0 * 1024.0 * 1024.0;

/// A DNS-1123 subdomain, what ConfigMap and Secret names must be.
fn check_object_name(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not an object name: expected lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// `<configmap>[/<key>]`: a ConfigMap name and a ConfigMap key.
fn check_enrich_source(v: &str) -> Result<(), String> {
    let (name, key) = v.split_once('/').unwrap_or((v, DEFAULT_ENRICH_KEY));
    check_object_name(name).map_err(|e| {
        format!(
            "{e}; expected <configmap> or <configmap>/<key>, e.g. driver-ranker-enrich/enrich.yaml"
        )
    })?;
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if key_ok {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a ConfigMap key: expected letters, digits, '-', '_' and '.', e.g. enrich.yaml"
        ))
    }
}

fn check_url(v: &str) -> Result<(), String> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        Some(h) if !h.is_empty() && !v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Ok(())
        }
        _ => Err(format!(
            "{v:?} is not a URL: expected http://host:port or https://host:port, e.g. http://quiver-registry.quiver.svc:6570"
        )),
    }
}

/// Comma-separated Feast object names (feature views or feature services).
fn check_names(v: &str) -> Result<(), String> {
    let names = split_list(v);
    let ok = !names.is_empty()
        && names.iter().all(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?}: expected a comma-separated list of names (letters, digits, '_', '-', '.')"
        ))
    }
}

fn check_cpu(v: &str) -> Result<(), String> {
    match quantity::parse(v) {
        Some(cores) if cores > MAX_CPU => Err(format!(
            "{v:?} is more CPU than a sidecar is given: at most {MAX_CPU} cores"
        )),
        Some(cores) if cores >= 0.001 => Ok(()),
        _ => Err(format!(
            "{v:?} is not a CPU quantity: expected e.g. 100m, 250m, 0.5 or 1"
        )),
    }
}

/// The memory in bytes.
fn check_memory(v: &str) -> Result<f64, String> {
    match quantity::parse(v) {
        Some(bytes) if bytes > MAX_MEMORY => Err(format!(
            "{v:?} is more memory than a sidecar is given: at most 256Gi"
        )),
        Some(bytes) if bytes >= 1.0 => Ok(bytes),
        _ => Err(format!(
            "{v:?} is not a memory quantity: expected e.g. 384Mi, 1Gi or 500M"
        )),
    }
}

fn check_headroom(memory: f64, cache: usize) -> Result<(), String> {
    #[allow(clippy::cast_precision_loss)] // sizes far below 2^52 bytes
    let needed = cache as f64 + MEMORY_HEADROOM;
    if memory < needed {
        Err(format!(
            "too little memory for the cache: the sidecar needs the cache plus 64Mi ({} MiB here)",
            (needed / (1024.0 * 1024.0)).ceil()
        ))
    } else {
        Ok(())
    }
}

fn check_port(v: &str, pod: &Pod) -> Result<(), String> {
    let port: u16 = match v.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "{v:?} is not a port: expected a number from 1 to 65535"
            ));
        }
    };
    let taken = pod.spec.as_ref().and_then(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| {
                c.ports
                    .iter()
                    .flatten()
                    .any(|p| p.container_port == i32::from(port))
            })
    });
    match taken {
        Some(c) => Err(format!(
            "port {port} is already used by container {:?} in this pod: choose another",
            c.name
        )),
        None => Ok(()),
    }
}

/// An answer for bad annotations: denied, or (fail-open) admitted without a sidecar, with a
/// warning for the client and the reason on the pod (`quiver.dev/error`).
fn invalid(
    uid: &str,
    config: &InjectorConfig,
    problems: Vec<String>,
) -> (AdmissionResponse, Outcome) {
    invalid_pod(uid, config, problems, true)
}

/// As [`invalid`]; `annotate` is false when the pod could not be read, so its annotations map
/// may not exist for a patch to add to.
fn invalid_pod(
    uid: &str,
    config: &InjectorConfig,
    problems: Vec<String>,
    annotate: bool,
) -> (AdmissionResponse, Outcome) {
    let summary = match problems.as_slice() {
        [one] => one.clone(),
        many => format!("{} problems: {}", many.len(), many.join("; ")),
    };
    if !config.fail_open {
        return (
            AdmissionResponse::deny(
                uid,
                ErrorKind::Unprocessable.http_status(),
                "Invalid",
                format!("quiver sidecar injection: {summary}"),
            ),
            Outcome::Invalid { admitted: false },
        );
    }
    let ops = [
        PatchOp::add(
            annotation_path(annotations::STATUS),
            Value::String("invalid".to_owned()),
        ),
        PatchOp::add(
            annotation_path(annotations::ERROR),
            Value::String(summary.clone()),
        ),
    ];
    let ops: &[PatchOp] = if annotate { &ops } else { &[] };
    let mut resp = AdmissionResponse::allow_with_patch(uid, ops)
        .unwrap_or_else(|_| AdmissionResponse::allow(uid));
    resp.warnings = vec![format!("quiver sidecar not injected: {summary}")];
    (resp, Outcome::Invalid { admitted: true })
}

fn annotation_path(key: &str) -> String {
    format!("/metadata/annotations/{}", pointer_segment(key))
}

/// The operations, written against the pod as it arrived: an array that is absent (or null)
/// is added whole, an existing one is appended to.
fn patch(object: &Value, plan: &SidecarPlan) -> Vec<PatchOp> {
    let mut ops = vec![PatchOp::add(
        annotation_path(annotations::STATUS),
        Value::String("injected".to_owned()),
    )];
    if let Some(enrich) = &plan.enrich {
        ops.extend(enrich.rewiring.ops.iter().cloned());
    }
    let mut volumes = vec![repo_volume(plan), state_volume()];
    if let Some(enrich) = &plan.enrich {
        volumes.push(enrich_volume(enrich));
    }
    let has = |field: &str| {
        object
            .pointer(&format!("/spec/{field}"))
            .is_some_and(Value::is_array)
    };
    if has("volumes") {
        for v in &volumes {
            ops.push(PatchOp::add("/spec/volumes/-", to_json(v)));
        }
    } else {
        ops.push(PatchOp::add("/spec/volumes", to_json(&volumes)));
    }
    let mut containers = Vec::new();
    if let Some(image) = &plan.transformation_image {
        containers.push(transformation_container(plan, image));
    }
    containers.push(sidecar_container(plan));
    let field = if plan.native {
        "initContainers"
    } else {
        "containers"
    };
    // Appended last: after istio-init and KServe's storage-initializer, so the mesh's rules are
    // in place before the sidecar connects to the online store.
    if has(field) {
        for c in &containers {
            ops.push(PatchOp::add(format!("/spec/{field}/-"), to_json(c)));
        }
    } else {
        ops.push(PatchOp::add(format!("/spec/{field}"), to_json(&containers)));
    }
    ops
}

/// k8s-openapi objects to JSON. Their `Serialize` cannot fail (string keys only), so a failure
/// would be a bug; it degrades to `null` rather than a panic on the request path.
fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn repo_volume(plan: &SidecarPlan) -> Volume {
    Volume {
        name: REPO_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: plan.repo_configmap.clone(),
            optional: Some(false),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The enrich config: the ConfigMap's key, seen by the sidecar as [`ENRICH_FILE`]. A missing
/// ConfigMap or key keeps the pod from starting, with an event naming it.
fn enrich_volume(enrich: &EnrichPlan) -> Volume {
    Volume {
        name: ENRICH_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: enrich.configmap.clone(),
            items: Some(vec![KeyToPath {
                key: enrich.key.clone(),
                path: ENRICH_FILE.to_owned(),
                ..KeyToPath::default()
            }]),
            optional: Some(false),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn state_volume() -> Volume {
    Volume {
        name: STATE_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn http_probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(period.min(2)),
        ..Probe::default()
    }
}

/// The online-store Secret as the environment (FEATURE_STORE_YAML_BASE64 or QUIVER_* keys).
fn secret_env(plan: &SidecarPlan) -> Option<Vec<EnvFromSource>> {
    plan.online_store_secret.as_ref().map(|name| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]
    })
}

/// The feature repo (read-only) and the state folder, as the sidecar and the transformation
/// service both mount them.
fn repo_and_state_mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: REPO_VOLUME.to_owned(),
            mount_path: REPO_MOUNT.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: STATE_VOLUME.to_owned(),
            mount_path: STATE_MOUNT.to_owned(),
            ..VolumeMount::default()
        },
    ]
}

fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// Feast's transformation service: `feast serve_transformations` on the same repo (the
/// registry carries the on-demand views' functions), reached by the sidecar on localhost.
/// Placed before the sidecar, so as a native sidecar it is started first.
fn transformation_container(plan: &SidecarPlan, image: &str) -> Container {
    let port = TRANSFORMATION_PORT.to_string();
    let tcp_probe = |period: i32, failures: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(TRANSFORMATION_PORT)),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(period.min(2)),
        ..Probe::default()
    };
    let quantity = |v: &str| Quantity(v.to_owned());
    Container {
        name: TRANSFORMATION_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(
            [
                "feast",
                "--chdir",
                REPO_MOUNT,
                "serve_transformations",
                "--port",
                &port,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env_from: secret_env(plan),
        // Feast writes caches under HOME; the root file system stays read-only.
        env: Some(vec![EnvVar {
            name: "HOME".to_owned(),
            value: Some(STATE_MOUNT.to_owned()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("feast-transform".to_owned()),
            container_port: i32::from(TRANSFORMATION_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity("100m")),
                ("memory".to_owned(), quantity("512Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), quantity("1Gi"))])),
            ..ResourceRequirements::default()
        }),
        // Python and pandas take seconds to import: up to 2 minutes to listen.
        startup_probe: Some(tcp_probe(2, 60)),
        readiness_probe: Some(tcp_probe(5, 3)),
        restart_policy: plan.native.then(|| "Always".to_owned()),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(repo_and_state_mounts()),
        working_dir: Some(STATE_MOUNT.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

fn sidecar_container(plan: &SidecarPlan) -> Container {
    let port = plan.port.to_string();
    // `--host 0.0.0.0`: kubelet's HTTP probes connect to the pod IP, not to loopback, so a
    // sidecar bound to 127.0.0.1 would never be ready. The model still calls localhost.
    let mut args: Vec<String> = [
        "serve",
        "--log-format",
        "json",
        "--repo",
        REPO_MOUNT,
        "--host",
        "0.0.0.0",
        "--port",
        &port,
        "--cache-bytes",
        &plan.cache_bytes,
    ]
    .map(str::to_owned)
    .to_vec();
    if !plan.replicate.is_empty() {
        args.push("--replicate".to_owned());
        args.push(plan.replicate.join(","));
    }
    if plan.transformation_image.is_some() {
        args.push("--transformation-service".to_owned());
        args.push(format!("127.0.0.1:{TRANSFORMATION_PORT}"));
    }
    let mut mounts = repo_and_state_mounts();
    if let Some(enrich) = &plan.enrich {
        args.push("--enrich".to_owned());
        args.push(format!("{ENRICH_MOUNT}/{ENRICH_FILE}"));
        args.push("--upstream".to_owned());
        args.push(format!(
            "http://127.0.0.1:{}",
            enrich.rewiring.upstream_port
        ));
        // The serving port answers KServe's paths only; code in the pod reads features on
        // the usual port, on loopback.
        args.push("--api-port".to_owned());
        args.push(DEFAULT_PORT.to_string());
        if let Some(grpc) = enrich.rewiring.grpc {
            args.push("--grpc-port".to_owned());
            args.push(grpc.port.to_string());
            args.push("--upstream-grpc".to_owned());
            args.push(format!("http://127.0.0.1:{}", grpc.upstream_port));
        }
        mounts.push(VolumeMount {
            name: ENRICH_VOLUME.to_owned(),
            mount_path: ENRICH_MOUNT.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    // Read by `quiver serve`: with QUIVER_REGISTRY_URL it follows the registry service (the
    // project and feature services below narrow what it syncs) and keeps its last good snapshot
    // in the emptyDir, so a restarted container starts while the service is away; without it,
    // it reads the registry file the ConfigMap names.
    let env: Vec<EnvVar> = [
        ("QUIVER_REGISTRY_URL", plan.registry_url.clone()),
        (
            "QUIVER_STATE_DIR",
            plan.registry_url.as_ref().map(|_| STATE_MOUNT.to_owned()),
        ),
        ("QUIVER_PROJECT", plan.project.clone()),
        (
            "QUIVER_FEATURE_SERVICES",
            (!plan.feature_services.is_empty()).then(|| plan.feature_services.join(",")),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        value.map(|value| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            ..EnvVar::default()
        })
    })
    .collect();
    // The Secret's keys become the environment: FEATURE_STORE_YAML_BASE64 (the whole
    // feature_store.yaml, connection string and password included) or QUIVER_* settings.
    let env_from = secret_env(plan);
    let quantity = |v: &str| Quantity(v.to_owned());
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        env_from,
        ports: Some(
            std::iter::once(ContainerPort {
                name: Some("quiver-http".to_owned()),
                container_port: i32::from(plan.port),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            })
            .chain(
                plan.enrich
                    .as_ref()
                    .and_then(|e| e.rewiring.grpc)
                    .map(|g| ContainerPort {
                        name: Some("quiver-grpc".to_owned()),
                        container_port: i32::from(g.port),
                        protocol: Some("TCP".to_owned()),
                        ..ContainerPort::default()
                    }),
            )
            .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity(&plan.cpu)),
                ("memory".to_owned(), quantity(&plan.memory)),
            ])),
            // No CPU limit: throttling shows up as tail latency on the model's requests.
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                quantity(&plan.memory),
            )])),
            ..ResourceRequirements::default()
        }),
        // Startup on /health: a native sidecar holds back the model's containers until it
        // listens. Readiness on /ready: the pod takes traffic once the online store answers
        // (and, in replicate mode, once the first load is done).
        startup_probe: Some(http_probe("/health", plan.port, 1, 30)),
        readiness_probe: Some(http_probe("/ready", plan.port, 5, 3)),
        liveness_probe: Some(http_probe("/health", plan.port, 10, 3)),
        restart_policy: plan.native.then(|| "Always".to_owned()),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(mounts),
        working_dir: Some(STATE_MOUNT.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}
