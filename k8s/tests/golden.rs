//! Golden tests of the mutation: AdmissionReview requests for KServe pods as the API server
//! sends them (RawDeployment and Serverless predictors with KServe's storage-initializer and
//! Knative's queue-proxy, a transformer) → the decision and the JSON Patch, compared with
//! `tests/fixtures/admission/<case>.expected.json`. The patch is then applied (json-patch) and
//! the result read as a k8s-openapi `Pod` and checked; admitting the patched pod again changes
//! nothing.
//!
//! `QUIVER_UPDATE_GOLDEN=1 cargo nextest run -p quiver-k8s` rewrites the expected files (read
//! the diff before committing it).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use quiver_k8s::admission::{AdmissionResponse, AdmissionReview};
use quiver_k8s::inject::{InjectorConfig, Outcome, SkipReason};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

fn read_review(case: &str) -> AdmissionReview {
    let path = fixtures().join(format!("{case}.request.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The response as the golden file shows it: the patch decoded, so a diff is readable.
fn golden_view(resp: &AdmissionResponse, outcome: Outcome) -> Value {
    let mut view = json!({
        "outcome": outcome.as_str(),
        "allowed": resp.allowed,
        "patch": serde_json::to_value(resp.patch_ops().unwrap()).unwrap(),
    });
    if let Some(status) = &resp.status {
        view["status"] = serde_json::to_value(status).unwrap();
    }
    if !resp.warnings.is_empty() {
        view["warnings"] = json!(resp.warnings);
    }
    if resp.patch.is_some() {
        assert_eq!(resp.patch_type.as_deref(), Some("JSONPatch"));
    } else {
        assert!(resp.patch_type.is_none());
    }
    view
}

/// Runs one case: the response against its golden file, then the patched pod.
fn run(case: &str, config: &InjectorConfig) -> (AdmissionResponse, Outcome, Value, Option<Pod>) {
    let review = read_review(case);
    let request = review.request.expect("a request");
    let (resp, outcome) = quiver_k8s::admit(&request, config);
    assert_eq!(
        resp.uid, request.uid,
        "{case}: the response carries the request's uid"
    );

    let actual = golden_view(&resp, outcome);
    let golden = fixtures().join(format!("{case}.expected.json"));
    if std::env::var_os("QUIVER_UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &golden,
            serde_json::to_string_pretty(&actual).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (QUIVER_UPDATE_GOLDEN=1 writes it)",
                golden.display()
            )
        }))
        .unwrap();
    assert_eq!(
        actual,
        expected,
        "{case}: the response differs from {}:\n{}",
        golden.display(),
        serde_json::to_string_pretty(&actual).unwrap()
    );

    let mut object = request.object.clone().expect("an object");
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(resp.patch_ops().unwrap()).unwrap()).unwrap();
    json_patch::patch(&mut object, &patch)
        .unwrap_or_else(|e| panic!("{case}: patch does not apply: {e}"));
    let pod = if resp.allowed {
        let pod: Pod = serde_json::from_value(object.clone())
            .unwrap_or_else(|e| panic!("{case}: the patched pod is not a Pod: {e}"));
        Some(pod)
    } else {
        None
    };
    (resp, outcome, object, pod)
}

fn sidecar(pod: &Pod, native: bool) -> &Container {
    let spec = pod.spec.as_ref().unwrap();
    let list: Vec<&Container> = if native {
        spec.init_containers.iter().flatten().collect()
    } else {
        spec.containers.iter().collect()
    };
    let found: Vec<&&Container> = list.iter().filter(|c| c.name == "quiver-sidecar").collect();
    assert_eq!(found.len(), 1, "exactly one quiver-sidecar");
    assert_eq!(list.last().unwrap().name, "quiver-sidecar", "appended last");
    let other = if native {
        spec.containers.iter().collect::<Vec<_>>()
    } else {
        spec.init_containers.iter().flatten().collect()
    };
    assert!(other.iter().all(|c| c.name != "quiver-sidecar"));
    found[0]
}

fn arg_after<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let args = c.args.as_ref().unwrap();
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

/// What every injected pod must have, whatever the annotations.
fn check_injected(case: &str, object: &Value, pod: &Pod, native: bool, port: i32, repo_cm: &str) {
    let c = sidecar(pod, native);
    assert_eq!(
        c.restart_policy.as_deref(),
        native.then_some("Always"),
        "{case}"
    );
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["quiver.dev/status"], "injected", "{case}");
    // The model's containers are untouched and come first.
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].name, "kserve-container", "{case}");
    if let Some(init) = &spec.init_containers
        && init.len() > 1
    {
        assert_eq!(init[0].name, "storage-initializer", "{case}");
    }
    assert_eq!(
        arg_after(c, "--host"),
        Some("0.0.0.0"),
        "{case}: probes reach the pod IP"
    );
    assert_eq!(
        arg_after(c, "--port"),
        Some(port.to_string().as_str()),
        "{case}"
    );
    assert_eq!(arg_after(c, "--repo"), Some("/etc/quiver/repo"), "{case}");
    assert_eq!(c.args.as_ref().unwrap()[0], "serve");
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port),
            "{case}"
        );
        get.path.clone().unwrap()
    };
    assert_eq!(probe_path(&c.readiness_probe), "/ready");
    assert_eq!(probe_path(&c.liveness_probe), "/health");
    assert_eq!(probe_path(&c.startup_probe), "/health");
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, port);
    let volumes = spec.volumes.as_ref().unwrap();
    let repo = volumes.iter().find(|v| v.name == "quiver-repo").unwrap();
    assert_eq!(repo.config_map.as_ref().unwrap().name, repo_cm, "{case}");
    let state = volumes.iter().find(|v| v.name == "quiver-state").unwrap();
    assert!(state.empty_dir.is_some());
    let mounts = c.volume_mounts.as_ref().unwrap();
    assert!(mounts.iter().any(|m| m.name == "quiver-repo"
        && m.mount_path == "/etc/quiver/repo"
        && m.read_only == Some(true)));
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "quiver-state" && m.mount_path == "/var/lib/quiver")
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));

    // Reinvocation (after another webhook changed the pod) and a second pass leave it alone.
    let again = json!({
        "uid": "again", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE", "namespace": "models", "object": object,
    });
    let (resp, outcome) = quiver_k8s::admit(
        &serde_json::from_value(again).unwrap(),
        &InjectorConfig::default(),
    );
    assert_eq!(
        outcome,
        Outcome::Skipped(SkipReason::AlreadyInjected),
        "{case}"
    );
    assert!(resp.allowed && resp.patch.is_none(), "{case}");
}

fn regular() -> InjectorConfig {
    InjectorConfig {
        native_sidecar: false,
        ..InjectorConfig::default()
    }
}

#[test]
fn predictor_native_sidecar() {
    let (_, outcome, object, pod) = run("predictor-native", &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Injected { native: true });
    let pod = pod.unwrap();
    check_injected(
        "predictor-native",
        &object,
        &pod,
        true,
        6566,
        "fraud-features",
    );
    let spec = pod.spec.as_ref().unwrap();
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["storage-initializer", "quiver-sidecar"]);
    let c = sidecar(&pod, true);
    assert_eq!(c.image.as_deref(), Some(quiver_k8s::inject::DEFAULT_IMAGE));
    assert_eq!(arg_after(c, "--cache-bytes"), Some("256MiB"));
    assert!(c.env.is_none() && c.env_from.is_none());
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "384Mi");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "384Mi");
    assert!(!res.limits.as_ref().unwrap().contains_key("cpu"));
    // Existing volumes kept, ours appended.
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "kserve-provision-location",
            "kube-api-access-7x2kq",
            "quiver-repo",
            "quiver-state"
        ]
    );
}

#[test]
fn transformation_service_runs_beside_the_sidecar() {
    let case = "predictor-transformations";
    let (_, outcome, object, pod) = run(case, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Injected { native: true });
    let pod = pod.unwrap();
    check_injected(case, &object, &pod, true, 6566, "fraud-features");
    let spec = pod.spec.as_ref().unwrap();
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    // Started before the sidecar, which finds it on localhost.
    assert_eq!(
        init,
        [
            "storage-initializer",
            "quiver-transformations",
            "quiver-sidecar"
        ]
    );
    let t = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(
        t.image.as_deref(),
        Some(quiver_k8s::inject::DEFAULT_TRANSFORMATION_IMAGE)
    );
    let command = t.command.as_ref().unwrap();
    assert_eq!(
        command,
        &[
            "feast",
            "--chdir",
            "/etc/quiver/repo",
            "serve_transformations",
            "--port",
            "6569"
        ]
    );
    assert_eq!(t.restart_policy.as_deref(), Some("Always"));
    // The same Secret (FEATURE_STORE_YAML_BASE64) as the sidecar.
    let secret = |c: &Container| {
        c.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name
            .clone()
    };
    let c = sidecar(&pod, true);
    assert_eq!(secret(t), "fraud-online-store");
    assert_eq!(secret(c), "fraud-online-store");
    assert_eq!(
        arg_after(c, "--transformation-service"),
        Some("127.0.0.1:6569")
    );
}

#[test]
fn predictor_regular_container() {
    let (_, outcome, object, pod) = run("predictor-regular", &regular());
    assert_eq!(outcome, Outcome::Injected { native: false });
    let pod = pod.unwrap();
    check_injected(
        "predictor-regular",
        &object,
        &pod,
        false,
        6566,
        "fraud-features",
    );
    let spec = pod.spec.as_ref().unwrap();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["kserve-container", "quiver-sidecar"]);
    assert_eq!(spec.init_containers.as_ref().unwrap().len(), 1);
}

#[test]
fn annotation_chooses_native_over_config() {
    let (_, outcome, object, pod) = run("predictor-annotation-native", &regular());
    assert_eq!(outcome, Outcome::Injected { native: true });
    check_injected(
        "predictor-annotation-native",
        &object,
        &pod.unwrap(),
        true,
        6566,
        "fraud-features",
    );
}

#[test]
fn serverless_predictor_with_every_annotation() {
    let case = "predictor-serverless-all-annotations";
    let (_, outcome, object, pod) = run(case, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Injected { native: true });
    let pod = pod.unwrap();
    check_injected(case, &object, &pod, true, 6570, "fraud-features");
    let spec = pod.spec.as_ref().unwrap();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["kserve-container", "queue-proxy"],
        "Knative's containers untouched"
    );
    let c = sidecar(&pod, true);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/quiver:0.1.0")
    );
    assert_eq!(arg_after(c, "--cache-bytes"), Some("1GiB"));
    assert_eq!(arg_after(c, "--replicate"), Some("merchant_stats"));
    let env: Vec<(&str, &str)> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
        .collect();
    assert_eq!(
        env,
        [
            (
                "QUIVER_REGISTRY_URL",
                "http://quiver-registry.quiver.svc:6570"
            ),
            // The last good snapshot goes to the emptyDir.
            ("QUIVER_STATE_DIR", "/var/lib/quiver"),
            ("QUIVER_PROJECT", "fraud"),
            ("QUIVER_FEATURE_SERVICES", "fraud_scoring,fraud_explain"),
        ]
    );
    // The online store's credentials come from the Secret at run time, never through the
    // pod spec or its annotations.
    let from = c.env_from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0].secret_ref.as_ref().unwrap().name,
        "fraud-online-store"
    );
    assert!(
        c.env
            .iter()
            .flatten()
            .all(|e| e.value_from.is_none() && !e.name.contains("PASSWORD"))
    );
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "250m");
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "1536Mi");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "1536Mi");
}

#[test]
fn transformer_without_init_containers_or_volumes() {
    let case = "transformer-native";
    let review = read_review(case);
    let object = review.request.unwrap().object.unwrap();
    assert!(
        object["spec"].get("initContainers").is_none() && object["spec"].get("volumes").is_none()
    );
    let (resp, outcome, object, pod) = run(case, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Injected { native: true });
    // Absent arrays are added whole: appending to them (`/-`) would fail on the API server.
    let paths: Vec<String> = resp
        .patch_ops()
        .unwrap()
        .into_iter()
        .map(|op| op.path)
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations/quiver.dev~1status",
            "/spec/volumes",
            "/spec/initContainers"
        ]
    );
    let pod = pod.unwrap();
    check_injected(case, &object, &pod, true, 6566, "fraud-features");
    assert_eq!(
        pod.spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn untouched_pods() {
    let cases = [
        (
            "transformer-not-chosen",
            InjectorConfig::default(),
            SkipReason::ComponentNotChosen,
        ),
        (
            "predictor-no-annotation",
            InjectorConfig::default(),
            SkipReason::NotRequested,
        ),
        (
            "predictor-inject-false",
            InjectorConfig::default(),
            SkipReason::NotRequested,
        ),
        (
            "predictor-already-injected",
            InjectorConfig::default(),
            SkipReason::AlreadyInjected,
        ),
        (
            "predictor-excluded-namespace",
            InjectorConfig {
                excluded_namespaces: vec!["models-staging".to_owned()],
                ..InjectorConfig::default()
            },
            SkipReason::ExcludedNamespace,
        ),
    ];
    for (case, config, reason) in cases {
        let (resp, outcome, object, _) = run(case, &config);
        assert_eq!(outcome, Outcome::Skipped(reason), "{case}");
        assert!(
            resp.allowed && resp.patch.is_none() && resp.warnings.is_empty(),
            "{case}"
        );
        assert_eq!(
            &object,
            read_review(case).request.unwrap().object.as_ref().unwrap()
        );
    }
}

fn denial(case: &str, config: &InjectorConfig) -> String {
    let (resp, outcome, _, _) = run(case, config);
    assert_eq!(outcome, Outcome::Invalid { admitted: false }, "{case}");
    assert!(!resp.allowed && resp.patch.is_none(), "{case}");
    let status = resp.status.unwrap();
    assert_eq!(status.code, Some(422));
    status.message.unwrap()
}

#[test]
fn bad_annotations_are_denied_naming_each() {
    let message = denial("predictor-bad-annotations", &InjectorConfig::default());
    for part in [
        "4 problems",
        "quiver.dev/cache-byte: unknown annotation: did you mean quiver.dev/cache-bytes?",
        "quiver.dev/registry-url: \"quiver-registry:6570\" is not a URL",
        "quiver.dev/memory: \"lots\" is not a memory quantity",
        "quiver.dev/port: \"http\" is not a port: expected a number from 1 to 65535",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert!(
        denial("predictor-inject-not-boolean", &InjectorConfig::default())
            .contains("quiver.dev/inject: \"yes\" is not a boolean")
    );
    assert!(
        denial("predictor-port-taken", &InjectorConfig::default())
            .contains("port 8012 is already used by container \"queue-proxy\"")
    );
    assert!(
        denial("predictor-cache-over-memory", &InjectorConfig::default())
            .contains("quiver.dev/memory: memory 1Gi with cache 1GiB: too little memory")
    );
    assert!(
        denial("predictor-no-repo", &InjectorConfig::default())
            .contains("quiver.dev/repo-configmap: required")
    );
}

#[test]
fn bad_annotations_fail_open() {
    let config = InjectorConfig {
        fail_open: true,
        ..InjectorConfig::default()
    };
    let (resp, outcome, _, pod) = run("predictor-bad-annotations-fail-open", &config);
    assert_eq!(outcome, Outcome::Invalid { admitted: true });
    assert!(resp.allowed);
    assert_eq!(resp.warnings.len(), 1);
    assert!(resp.warnings[0].starts_with("quiver sidecar not injected: 4 problems: "));
    let pod = pod.unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert!(
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .all(|c| c.name != "quiver-sidecar")
    );
    let annotations = pod.metadata.annotations.unwrap();
    assert_eq!(annotations["quiver.dev/status"], "invalid");
    assert!(annotations["quiver.dev/error"].contains("quiver.dev/port"));
}

#[test]
fn default_repo_configmap_from_config() {
    let config = InjectorConfig {
        repo_configmap: Some("shared-features".to_owned()),
        ..InjectorConfig::default()
    };
    let (_, outcome, object, pod) = run("predictor-default-repo", &config);
    assert_eq!(outcome, Outcome::Injected { native: true });
    check_injected(
        "predictor-default-repo",
        &object,
        &pod.unwrap(),
        true,
        6566,
        "shared-features",
    );
}

#[test]
fn other_requests_pass_through() {
    let review = read_review("predictor-native");
    let mut request = review.request.unwrap();
    request.operation = "UPDATE".to_owned();
    let (resp, outcome) = quiver_k8s::admit(&request, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Skipped(SkipReason::NotAPodCreate));
    assert!(resp.allowed && resp.patch.is_none());

    let mut request = read_review("predictor-native").request.unwrap();
    request.kind.kind = "Service".to_owned();
    let (_, outcome) = quiver_k8s::admit(&request, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Skipped(SkipReason::NotAPodCreate));

    // An object that is not a pod at all is a denial that says so, not a panic.
    let mut request = read_review("predictor-native").request.unwrap();
    request.object = Some(
        json!({"metadata": {"annotations": {"quiver.dev/inject": "true"}}, "spec": {"containers": "nope"}}),
    );
    let (resp, outcome) = quiver_k8s::admit(&request, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Invalid { admitted: false });
    assert!(
        resp.status
            .unwrap()
            .message
            .unwrap()
            .contains("could not be read")
    );
    // Fail-open admits it with a warning, and patches nothing into a pod it could not read.
    let fail_open = InjectorConfig {
        fail_open: true,
        ..InjectorConfig::default()
    };
    let (resp, outcome) = quiver_k8s::admit(&request, &fail_open);
    assert_eq!(outcome, Outcome::Invalid { admitted: true });
    assert!(resp.allowed && resp.patch.is_none());
    assert!(resp.warnings[0].contains("could not be read"));
}

#[test]
fn config_is_validated() {
    assert_eq!(InjectorConfig::default().validate(), Ok(()));
    let bad = InjectorConfig {
        image: "quiver latest".to_owned(),
        cpu: "fast".to_owned(),
        memory: "300Mi".to_owned(),
        cache_bytes: "256MiB".to_owned(),
        repo_configmap: Some("Features".to_owned()),
        ..InjectorConfig::default()
    };
    let e = bad.validate().unwrap_err();
    for part in [
        "--image",
        "--cpu: \"fast\"",
        "--repo-configmap: \"Features\"",
    ] {
        assert!(e.contains(part), "{part:?} not in {e:?}");
    }
    let tight = InjectorConfig {
        memory: "300Mi".to_owned(),
        ..InjectorConfig::default()
    };
    assert!(
        tight
            .validate()
            .unwrap_err()
            .contains("--memory 300Mi: too little memory")
    );
}

/// The predictor-native pod with `extra` annotations added: the denial's message.
fn denied_with(extra: &[(&str, &str)]) -> String {
    let review = read_review("predictor-native");
    let mut request = review.request.unwrap();
    let object = request.object.as_mut().unwrap();
    for (k, v) in extra {
        object["metadata"]["annotations"][*k] = json!(v);
    }
    let (resp, outcome) = quiver_k8s::admit(&request, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Invalid { admitted: false }, "{extra:?}");
    assert!(!resp.allowed && resp.patch.is_none());
    resp.status.unwrap().message.unwrap()
}

#[test]
fn annotation_values_cannot_become_flags_bad_images_or_absurd_quantities() {
    // A value starting with '-' would be read by the sidecar as a flag (a crash loop).
    let m = denied_with(&[("quiver.dev/replicate", "--help")]);
    assert!(
        m.contains("quiver.dev/replicate: \"--help\": a value may not start with '-'"),
        "{m}"
    );
    let m = denied_with(&[("quiver.dev/replicate", "stats,-x")]);
    assert!(m.contains("quiver.dev/replicate"), "{m}");
    let m = denied_with(&[("quiver.dev/cache-bytes", "-1")]);
    assert!(m.contains("quiver.dev/cache-bytes"), "{m}");
    // Image references are parsed.
    for bad in [
        "Quiver:latest",
        "quiver:",
        "quiver::1",
        "registry.example.com/quiver:-bad",
        "quiver@sha256:abc",
        "-quiver",
        "registry..example.com/quiver",
        "quiver//sidecar",
        "quiver:1 --help",
    ] {
        let m = denied_with(&[("quiver.dev/image", bad)]);
        assert!(
            m.contains("quiver.dev/image") && m.contains("image reference") || m.contains("'-'"),
            "{bad}: {m}"
        );
    }
    // Quantities are bounded.
    let m = denied_with(&[("quiver.dev/cpu", "1e9")]);
    assert!(
        m.contains("quiver.dev/cpu") && m.contains("at most 64 cores"),
        "{m}"
    );
    let m = denied_with(&[("quiver.dev/cpu", "0.0000001")]);
    assert!(m.contains("quiver.dev/cpu"), "{m}");
    let m = denied_with(&[("quiver.dev/memory", "1Ei")]);
    assert!(
        m.contains("quiver.dev/memory") && m.contains("at most 256Gi"),
        "{m}"
    );
    let m = denied_with(&[
        ("quiver.dev/memory", "1Ei"),
        ("quiver.dev/cache-bytes", "1PiB"),
    ]);
    assert!(
        m.contains("quiver.dev/cache-bytes") && m.contains("at most 256Gi"),
        "{m}"
    );
}

#[test]
fn real_image_references_are_admitted() {
    for good in [
        "quiver",
        "quiver:0.1.0",
        "ghcr.io/quiver-dev/quiver-sidecar:0.1.0",
        "localhost:5000/quiver:dev",
        "registry.example.com:443/team/quiver_sidecar:v1.2-rc.1",
        "quiver@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "example.com/a/b/c:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let review = read_review("predictor-native");
        let mut request = review.request.unwrap();
        request.object.as_mut().unwrap()["metadata"]["annotations"]["quiver.dev/image"] =
            json!(good);
        let (resp, outcome) = quiver_k8s::admit(&request, &InjectorConfig::default());
        assert!(
            matches!(outcome, Outcome::Injected { .. }),
            "{good}: {:?}",
            resp.status
        );
    }
}

// ---- Enrichment (`quiver.dev/enrich`): the sidecar in front of the model server ----

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn probe_port(p: &Option<k8s_openapi::api::core::v1::Probe>) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let p = p.as_ref()?;
    let port = p
        .http_get
        .as_ref()
        .map(|h| h.port.clone())
        .or_else(|| p.tcp_socket.as_ref().map(|t| t.port.clone()))?;
    match port {
        IntOrString::Int(n) => Some(n),
        IntOrString::String(s) => panic!("named probe port {s}"),
    }
}

fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// What every enriched pod must have: the sidecar on the serving port with `--enrich` and
/// `--upstream`, the model moved to the upstream port (container port and probes), the enrich
/// ConfigMap mounted, and no two containers declaring the same port. Everything else in the
/// model's container is as it arrived.
fn check_enriched(
    case: &str,
    native: bool,
    upstream: i32,
    configmap: &str,
    key: &str,
) -> (Pod, Value) {
    let (_, outcome, object, pod) = run(case, &InjectorConfig::default());
    assert_eq!(outcome, Outcome::Injected { native }, "{case}");
    let pod = pod.unwrap();
    check_injected(case, &object, &pod, native, 8080, "driver-features");
    let c = sidecar(&pod, native);
    assert_eq!(
        arg_after(c, "--enrich"),
        Some("/etc/quiver/enrich/enrich.yaml"),
        "{case}"
    );
    let upstream_url = format!("http://127.0.0.1:{upstream}");
    assert_eq!(arg_after(c, "--upstream"), Some(upstream_url.as_str()));
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "quiver-enrich"
                && m.mount_path == "/etc/quiver/enrich"
                && m.read_only == Some(true))
    );
    let spec = pod.spec.as_ref().unwrap();
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "quiver-enrich")
        .unwrap();
    let cm = volume.config_map.as_ref().unwrap();
    assert_eq!(cm.name, configmap, "{case}");
    let items = cm.items.as_ref().unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        (key, "enrich.yaml")
    );

    let model = container(&pod, "kserve-container");
    assert_eq!(model.ports.as_ref().unwrap()[0].container_port, upstream);
    for p in [
        &model.readiness_probe,
        &model.liveness_probe,
        &model.startup_probe,
    ] {
        if let Some(port) = probe_port(p) {
            assert_eq!(port, upstream, "{case}: the model's probes follow it");
        }
    }
    // One owner per port in the pod.
    let mut ports: Vec<i32> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
        .collect();
    let n = ports.len();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), n, "{case}: a port declared twice");

    // Only the port-bearing fields of the model's container changed.
    let before = read_review(case).request.unwrap().object.unwrap();
    let index = before["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["name"] == "kserve-container")
        .unwrap();
    let (b, a) = (
        before["spec"]["containers"][index].as_object().unwrap(),
        object["spec"]["containers"][index].as_object().unwrap(),
    );
    for (k, v) in a {
        if b.get(k) != Some(v) {
            assert!(
                [
                    "args",
                    "command",
                    "env",
                    "ports",
                    "readinessProbe",
                    "livenessProbe",
                    "startupProbe"
                ]
                .contains(&k.as_str()),
                "{case}: {k} changed"
            );
        }
    }
    assert!(b.keys().all(|k| a.contains_key(k)), "{case}: a field lost");
    (pod, object)
}

#[test]
fn enrich_serverless_sklearn_predictor() {
    let case = "predictor-enrich-serverless-sklearn";
    let (pod, _) = check_enriched(case, true, 8090, "driver-ranker-enrich", "enrich.yaml");
    let model = container(&pod, "kserve-container");
    assert_eq!(
        model.args.as_ref().unwrap(),
        &[
            "--model_name=driver-ranker",
            "--model_dir=/mnt/models",
            "--http_port=8090",
            "--grpc_port=8091"
        ]
    );
    // The sidecar takes KServe's gRPC port (8081, the Python server's default) too.
    let c = sidecar(&pod, true);
    assert_eq!(arg_after(c, "--grpc-port"), Some("8081"));
    assert_eq!(
        arg_after(c, "--upstream-grpc"),
        Some("http://127.0.0.1:8091")
    );
    // Knative's PORT follows; its port's name stays, so Knative still knows the user port.
    assert_eq!(env_of(model, "PORT"), Some("8090"));
    assert_eq!(
        model.ports.as_ref().unwrap()[0].name.as_deref(),
        Some("user-port")
    );
    assert_eq!(probe_port(&model.liveness_probe), Some(8090));
    // queue-proxy's drain hook on its own port is not the model's.
    let pre_stop = model.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(
        pre_stop.http_get.as_ref().unwrap().port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8022)
    );
    // queue-proxy still sends traffic to 8080, now the sidecar, and checks the model's
    // readiness on its new port.
    let proxy = container(&pod, "queue-proxy");
    assert_eq!(env_of(proxy, "USER_PORT"), Some("8080"));
    let probe: Value =
        serde_json::from_str(env_of(proxy, "SERVING_READINESS_PROBE").unwrap()).unwrap();
    assert_eq!(probe["tcpSocket"]["port"], 8090);
    assert_eq!(probe["tcpSocket"]["host"], "127.0.0.1");
}

#[test]
fn enrich_raw_deployment_sklearn_predictor() {
    let case = "predictor-enrich-raw-sklearn";
    let (pod, _) = check_enriched(case, true, 8090, "driver-ranker-enrich", "enrich.yaml");
    let model = container(&pod, "kserve-container");
    assert_eq!(arg_after_eq(model, "--http_port"), Some("8090"));
    // KServe's default readiness probe (TCP on the serving port) now checks the model directly.
    assert_eq!(probe_port(&model.readiness_probe), Some(8090));
    assert!(model.env.is_none(), "nothing added");
}

#[test]
fn enrich_triton_predictor_on_a_chosen_port() {
    let case = "predictor-enrich-triton";
    let (pod, _) = check_enriched(case, true, 8000, "driver-ranker-enrich", "enrich.yaml");
    let model = container(&pod, "kserve-container");
    assert_eq!(
        model.args.as_ref().unwrap(),
        &[
            "tritonserver",
            "--model-store=/mnt/models",
            "--grpc-port=8001",
            "--http-port=8000",
            "--allow-grpc=true",
            "--allow-http=true"
        ]
    );
    assert_eq!(
        model.ports.as_ref().unwrap()[0].name.as_deref(),
        Some("h2c")
    );
    // Triton's gRPC (9000 here) is the sidecar's now; Triton's moves beside its HTTP port.
    let c = sidecar(&pod, true);
    assert_eq!(arg_after(c, "--grpc-port"), Some("9000"));
    assert_eq!(
        arg_after(c, "--upstream-grpc"),
        Some("http://127.0.0.1:8001")
    );
    let get = model
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(get.path.as_deref(), Some("/v2/health/ready"));
}

#[test]
fn enrich_custom_kserve_model_image() {
    let case = "predictor-enrich-custom-model";
    let (pod, _) = check_enriched(case, false, 8090, "driver-features", "enrich.yaml");
    let model = container(&pod, "kserve-container");
    // No port flag in the pod: KServe's Python server's own is appended (a custom kserve.Model
    // parses it through kserve.model_server.parser).
    assert_eq!(
        model.args.as_ref().unwrap(),
        &["--http_port=8090", "--grpc_port=8091"]
    );
    assert_eq!(env_of(model, "PORT"), Some("8090"));
    let names: Vec<&str> = pod
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["kserve-container", "queue-proxy", "quiver-sidecar"]);
}

fn arg_after_eq<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    c.args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn bad_enrich_annotations_are_denied_naming_each_and_fail_open_moves_nothing() {
    let message = denial("predictor-enrich-bad", &InjectorConfig::default());
    for part in [
        "3 problems",
        "quiver.dev/enrich: \"Driver_Enrich\" is not an object name",
        "quiver.dev/enrich-upstream-port: the model server already listens on 8081 (--grpc_port",
        "quiver.dev/port: not used with quiver.dev/enrich",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    let fail_open = InjectorConfig {
        fail_open: true,
        ..InjectorConfig::default()
    };
    let request = read_review("predictor-enrich-bad").request.unwrap();
    let (resp, outcome) = quiver_k8s::admit(&request, &fail_open);
    assert_eq!(outcome, Outcome::Invalid { admitted: true });
    let paths: Vec<String> = resp
        .patch_ops()
        .unwrap()
        .into_iter()
        .map(|op| op.path)
        .collect();
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/metadata/annotations/")),
        "the model stays where it was: {paths:?}"
    );

    // Other mistakes, one at a time.
    let m = denied_with(&[
        ("quiver.dev/enrich", "cm/enrich.yaml"),
        ("quiver.dev/enrich-upstream-port", "8080"),
    ]);
    assert!(
        m.contains("quiver.dev/enrich-upstream-port: 8080 is the model's serving port"),
        "{m}"
    );
    let m = denied_with(&[
        ("quiver.dev/enrich", "cm/enrich.yaml"),
        ("quiver.dev/enrich-upstream-port", "http"),
    ]);
    assert!(m.contains("\"http\" is not a port"), "{m}");
    // Feast's API takes 127.0.0.1:6566 in enrichment mode: the model may not move there.
    let m = denied_with(&[
        ("quiver.dev/enrich", "cm/enrich.yaml"),
        ("quiver.dev/enrich-upstream-port", "6566"),
    ]);
    assert!(
        m.contains("serves Feast's API on 127.0.0.1:6566 in enrichment mode"),
        "{m}"
    );
    let m = denied_with(&[("quiver.dev/enrich", "cm/../etc")]);
    assert!(m.contains("is not a ConfigMap key"), "{m}");
    let m = denied_with(&[("quiver.dev/enrich-upstream-port", "8090")]);
    assert!(m.contains("only used with quiver.dev/enrich"), "{m}");

    // No model server to stand in front of, or a collocated transformer taking the traffic.
    for (rename, expected) in [
        ("my-model", "no container named \"kserve-container\""),
        ("transformer-container", "collocated transformer-container"),
    ] {
        let mut request = read_review("predictor-native").request.unwrap();
        let object = request.object.as_mut().unwrap();
        object["metadata"]["annotations"]["quiver.dev/enrich"] = json!("cm");
        let mut extra = object["spec"]["containers"][0].clone();
        extra["name"] = json!(rename);
        extra["ports"] = json!([]);
        if rename == "my-model" {
            object["spec"]["containers"][0] = extra;
        } else {
            object["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(extra);
        }
        let (resp, _) = quiver_k8s::admit(&request, &InjectorConfig::default());
        let m = resp.status.unwrap().message.unwrap();
        assert!(m.contains(expected), "{m}");
    }
}
