//! The enrichment rewiring: with `quiver.dev/enrich`, the sidecar takes the model's serving port
//! (where KServe, queue-proxy or the raw Service sends traffic) and the model server moves to
//! another port on localhost, the way KServe wires a collocated transformer in front of its
//! predictor. Pure: the pod as it arrived (raw JSON, so fields this crate's k8s-openapi does not
//! know survive) → the port numbers and the patch operations that move the model.
//!
//! ```text
//!   before: traffic ─▶ :8080 kserve-container
//!   after:  traffic ─▶ :8080 quiver-sidecar ─(--upstream http://127.0.0.1:8090)─▶ :8090 kserve-container
//! ```
//!
//! What moves in `kserve-container`, by what its runtime reads:
//! - `--http_port` (KServe's Python model server: sklearn, xgboost, lightgbm, huggingface, any
//!   custom `kserve.Model`), `--http-port` (Triton), `--rest_api_port` (TensorFlow Serving), in
//!   `args` or `command`, as `--flag=N` or `--flag N`; else the `MLSERVER_HTTP_PORT` env
//!   (MLServer); else `--http_port=N` is appended (a custom `kserve.Model` parses it through
//!   `kserve.model_server.parser`);
//! - the `PORT` env (Knative's, for servers that read it);
//! - its first containerPort (the one KServe and Knative route to; the port's name is kept, so
//!   probes by name follow it) and every probe that names the serving port by number.
//!
//! gRPC (Open Inference Protocol, `inference.GRPCInferenceService`): when the runtime serves it
//! in the pod, the sidecar takes the model's gRPC port too (`--grpc-port`) and the model's gRPC
//! moves to the upstream port + 1 (`--upstream-grpc`, 8091 by default):
//! - KServe's Python server: `--grpc_port` (8081 when not given), unless `--enable_grpc false`;
//!   the flag is set, or appended;
//! - Triton (`--http-port`): `--grpc-port` (8001 when not given), unless `--allow-grpc false`;
//! - MLServer (`MLSERVER_HTTP_PORT`): the `MLSERVER_GRPC_PORT` env (8081 when not set), set or
//!   added.
//!
//! TensorFlow Serving's gRPC (`--port`) is its own API, not the Open Inference Protocol, so the
//! sidecar does not claim it; nor a gRPC port given as `$(VAR)` (its number is the kubelet's to
//! know). Without gRPC the sidecar gets no `--grpc-port` and the pod's gRPC port stays the model's.
//!
//! Serverless: queue-proxy keeps `USER_PORT` (now the sidecar's port); its readiness check
//! (`SERVING_READINESS_PROBE`, where Knative moved the model's readiness probe) is pointed at
//! the model's new port, so the pod is ready when the model is. The sidecar's own probes cover
//! the sidecar.

use serde_json::Value;

use crate::admission::PatchOp;

/// KServe's name for the model server's container.
pub const MODEL_CONTAINER: &str = "kserve-container";
/// KServe's name for a transformer collocated in the predictor's pod (it then takes the traffic).
pub const COLLOCATED_TRANSFORMER: &str = "transformer-container";
/// Knative's proxy in front of the user container, in serverless pods.
pub const QUEUE_PROXY: &str = "queue-proxy";
/// Where the model server moves when the pod names no port: free in KServe's runtimes (8081 is
/// the KServe Python server's gRPC port, 8082 MLServer's metrics, 9000 Triton's and
/// TensorFlow Serving's gRPC, 9081 KServe's agent).
pub const DEFAULT_UPSTREAM_PORT: u16 = 8090;
/// KServe's serving port when the container declares none.
const DEFAULT_SERVING_PORT: u16 = 8080;
/// The KServe Python server's (and MLServer's) gRPC port when none is given.
const KSERVE_PYTHON_GRPC_PORT: u16 = 8081;
/// Triton's gRPC port when `--grpc-port` is not given.
const TRITON_GRPC_PORT: u16 = 8001;

/// The HTTP-port flags of KServe's standard runtimes.
const HTTP_PORT_FLAGS: [&str; 3] = ["--http_port", "--http-port", "--rest_api_port"];
/// Other ports those runtimes listen on, which the model may not move onto.
const OTHER_PORT_FLAGS: [&str; 4] = ["--grpc_port", "--grpc-port", "--metrics-port", "--port"];
const OTHER_PORT_ENVS: [&str; 2] = ["MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT"];

/// The rewiring, decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewiring {
    /// Where traffic arrives: the sidecar's port from now on.
    pub serving_port: u16,
    /// Where the model server listens from now on: the sidecar's `--upstream`.
    pub upstream_port: u16,
    /// The model's gRPC, when its runtime serves the Open Inference Protocol over gRPC.
    pub grpc: Option<GrpcRewiring>,
    /// The operations that move the model (and queue-proxy's readiness check), against the pod
    /// as it arrived.
    pub ops: Vec<PatchOp>,
}

/// The gRPC ports: the sidecar takes the model's, the model moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcRewiring {
    /// The model's gRPC port as the pod arrived: the sidecar's `--grpc-port` from now on.
    pub port: u16,
    /// Where the model's gRPC listens from now on: the sidecar's `--upstream-grpc`.
    pub upstream_port: u16,
}

/// How the model's runtime is told its gRPC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcSetting {
    Flag(&'static str),
    Env(&'static str),
}

/// Whether a boolean flag's value says no (`false`, `0`, `no`, `off`).
fn is_false(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "0" | "no" | "off"
    )
}

/// Decides the rewiring. `upstream` is the `quiver.dev/enrich-upstream-port` value if given
/// (already trimmed); `reserved` are ports the injector itself adds to the pod (the
/// transformation service). Problems name the annotation they are about.
pub fn rewire(
    object: &Value,
    upstream: Option<&str>,
    reserved: &[u16],
    annotation: &str,
    port_annotation: &str,
) -> Result<Rewiring, Vec<String>> {
    let mut problems = Vec::new();
    let empty = Vec::new();
    let containers = object
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if containers
        .iter()
        .any(|c| name_of(c) == COLLOCATED_TRANSFORMER)
    {
        problems.push(format!(
            "{annotation}: the pod has a collocated {COLLOCATED_TRANSFORMER}, which KServe sends the traffic to: \
             enrichment takes that place; remove the transformer or the annotation"
        ));
    }
    let Some(index) = containers
        .iter()
        .position(|c| name_of(c) == MODEL_CONTAINER)
    else {
        problems.push(format!(
            "{annotation}: the pod has no container named {MODEL_CONTAINER:?} (KServe's model server), \
             which enrichment puts the sidecar in front of"
        ));
        return Err(problems);
    };
    let model = &containers[index];

    // The serving port: the first containerPort (what KServe and Knative route to), else the
    // port the server is told to listen on, else KServe's default.
    let declared = model
        .pointer("/ports/0/containerPort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok());
    let args = string_list(model.get("args"));
    let command = string_list(model.get("command"));
    let flag = HTTP_PORT_FLAGS.iter().find_map(|f| {
        flag_value(&args, f)
            .or_else(|| flag_value(&command, f))
            .map(|v| (*f, v))
    });
    let flag_port = flag.as_ref().and_then(|(_, v)| v.parse::<u16>().ok());
    // `$(VAR)` is expanded by the kubelet: its value is not known here.
    if let (Some((name, value)), Some(declared)) = (&flag, declared)
        && flag_port != Some(declared)
        && !value.contains("$(")
    {
        problems.push(format!(
            "{annotation}: container {MODEL_CONTAINER} declares containerPort {declared} but is told {name} {value}: \
             make them agree so the sidecar knows which port to take"
        ));
    }
    let serving_port = declared.or(flag_port).unwrap_or(DEFAULT_SERVING_PORT);

    let upstream_port = match upstream {
        None => DEFAULT_UPSTREAM_PORT,
        Some(v) => match v.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                problems.push(format!(
                    "{port_annotation}: {v:?} is not a port: expected a number from 1 to 65535"
                ));
                return Err(problems);
            }
        },
    };
    if upstream_port == serving_port {
        problems.push(format!(
            "{port_annotation}: {upstream_port} is the model's serving port, which the sidecar takes: choose another"
        ));
    }
    if reserved.contains(&upstream_port) {
        problems.push(format!(
            "{port_annotation}: {upstream_port} is used by the injected transformation service: choose another"
        ));
    }
    let spec_lists = ["/spec/containers", "/spec/initContainers"];
    for list in spec_lists {
        for c in object
            .pointer(list)
            .and_then(Value::as_array)
            .unwrap_or(&empty)
        {
            let mut ports = declared_ports(c);
            if std::ptr::eq(c, model) && !ports.is_empty() {
                // The serving port moves away (and is checked above).
                ports.remove(0);
            }
            let uses = ports.contains(&upstream_port);
            if uses {
                problems.push(format!(
                    "{port_annotation}: port {upstream_port} is already used by container {:?} in this pod: choose another",
                    name_of(c)
                ));
            }
        }
    }
    let envs = model.get("env").and_then(Value::as_array).unwrap_or(&empty);
    let env_value = |name: &str| {
        envs.iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
    };
    let mut other_ports: Vec<(String, u16)> = OTHER_PORT_FLAGS
        .iter()
        .filter_map(|f| {
            flag_value(&args, f)
                .or_else(|| flag_value(&command, f))
                .and_then(|v| v.parse().ok())
                .map(|p| ((*f).to_owned(), p))
        })
        .chain(OTHER_PORT_ENVS.iter().filter_map(|e| {
            env_value(e)
                .and_then(|v| v.parse().ok())
                .map(|p| ((*e).to_owned(), p))
        }))
        .collect();
    let mlserver = env_value("MLSERVER_HTTP_PORT").is_some();
    let kserve_python = match &flag {
        Some((f, _)) => *f == "--http_port",
        None => !mlserver,
    };
    if kserve_python && !other_ports.iter().any(|(f, _)| f == "--grpc_port") {
        other_ports.push((
            "--grpc_port (KServe's Python server listens there by default)".to_owned(),
            KSERVE_PYTHON_GRPC_PORT,
        ));
    }
    if let Some((what, _)) = other_ports.iter().find(|(_, p)| *p == upstream_port) {
        problems.push(format!(
            "{port_annotation}: the model server already listens on {upstream_port} ({what}): choose another"
        ));
    }

    // The model's gRPC (Open Inference Protocol) port, when its runtime serves one.
    let flag_of = |f: &str| flag_value(&args, f).or_else(|| flag_value(&command, f));
    let grpc_setting = match flag.as_ref().map(|(f, _)| *f) {
        Some("--http_port") | None if !mlserver => flag_of("--enable_grpc")
            .is_none_or(|v| !is_false(&v))
            .then_some((GrpcSetting::Flag("--grpc_port"), KSERVE_PYTHON_GRPC_PORT)),
        Some("--http-port") => flag_of("--allow-grpc")
            .is_none_or(|v| !is_false(&v))
            .then_some((GrpcSetting::Flag("--grpc-port"), TRITON_GRPC_PORT)),
        None => Some((
            GrpcSetting::Env("MLSERVER_GRPC_PORT"),
            KSERVE_PYTHON_GRPC_PORT,
        )),
        _ => None,
    };
    let grpc = grpc_setting.and_then(|(setting, default)| {
        let given = match setting {
            GrpcSetting::Flag(f) => flag_of(f),
            GrpcSetting::Env(e) => env_value(e).map(str::to_owned),
        };
        let port = match given {
            Some(v) => v.parse::<u16>().ok()?,
            None => default,
        };
        Some((setting, port))
    });
    let grpc = match grpc {
        Some((setting, port)) => {
            let moved_to = upstream_port.checked_add(1).unwrap_or(1);
            let mut taken: Vec<(String, u16)> = vec![
                ("the sidecar's HTTP port".to_owned(), serving_port),
                (
                    "the sidecar's gRPC port (the model's until now)".to_owned(),
                    port,
                ),
                ("the model server's new HTTP port".to_owned(), upstream_port),
            ];
            taken.extend(
                reserved
                    .iter()
                    .map(|p| ("the injected transformation service".to_owned(), *p)),
            );
            taken.extend(other_ports.iter().filter(|(_, p)| *p != port).cloned());
            for list in spec_lists {
                for c in object
                    .pointer(list)
                    .and_then(Value::as_array)
                    .unwrap_or(&empty)
                {
                    let mine = std::ptr::eq(c, model);
                    taken.extend(
                        declared_ports(c)
                            .into_iter()
                            .filter(|p| !(mine && (*p == serving_port || *p == port)))
                            .map(|p| (format!("container {:?}", name_of(c)), p)),
                    );
                }
            }
            if let Some((what, _)) = taken.iter().find(|(_, p)| *p == moved_to) {
                problems.push(format!(
                    "{port_annotation}: the model's gRPC port {port} moves to {moved_to} (the upstream port + 1), which {what} uses: choose another upstream port"
                ));
            }
            if port == serving_port {
                problems.push(format!(
                    "{port_annotation}: the model's gRPC port {port} is also its HTTP port: give the runtime separate ports"
                ));
            }
            Some((
                setting,
                GrpcRewiring {
                    port,
                    upstream_port: moved_to,
                },
            ))
        }
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }

    // The model's container, rewritten field by field.
    let mut moved = model.clone();
    let port_text = upstream_port.to_string();
    match &flag {
        Some((name, _)) => {
            for field in ["args", "command"] {
                if let Some(list) = moved.get_mut(field).and_then(Value::as_array_mut) {
                    set_flag(list, name, &port_text);
                }
            }
        }
        None if mlserver => {}
        None => {
            let appended = Value::String(format!("--http_port={upstream_port}"));
            match moved.get_mut("args").and_then(Value::as_array_mut) {
                Some(list) => list.push(appended),
                None => {
                    if let Some(obj) = moved.as_object_mut() {
                        obj.insert("args".to_owned(), Value::Array(vec![appended]));
                    }
                }
            }
        }
    }
    if let Some(list) = moved.get_mut("env").and_then(Value::as_array_mut) {
        for e in list.iter_mut() {
            let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
            let rewrite = name == "PORT" || (name == "MLSERVER_HTTP_PORT" && flag.is_none());
            if rewrite && e.get("value").is_some_and(Value::is_string) {
                e["value"] = Value::String(port_text.clone());
            }
        }
    }
    if let Some((setting, g)) = &grpc {
        let text = g.upstream_port.to_string();
        match setting {
            GrpcSetting::Flag(name) => {
                if flag_of(name).is_some() {
                    for field in ["args", "command"] {
                        if let Some(list) = moved.get_mut(field).and_then(Value::as_array_mut) {
                            set_flag(list, name, &text);
                        }
                    }
                } else {
                    let appended = Value::String(format!("{name}={text}"));
                    match moved.get_mut("args").and_then(Value::as_array_mut) {
                        Some(list) => list.push(appended),
                        None => {
                            if let Some(obj) = moved.as_object_mut() {
                                obj.insert("args".to_owned(), Value::Array(vec![appended]));
                            }
                        }
                    }
                }
            }
            GrpcSetting::Env(name) => {
                let entry = serde_json::json!({"name": name, "value": text});
                match moved.get_mut("env").and_then(Value::as_array_mut) {
                    Some(list) => match list
                        .iter_mut()
                        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
                    {
                        Some(e) => *e = entry,
                        None => list.push(entry),
                    },
                    None => {
                        if let Some(obj) = moved.as_object_mut() {
                            obj.insert("env".to_owned(), Value::Array(vec![entry]));
                        }
                    }
                }
            }
        }
        // A containerPort the model declares for its gRPC follows it.
        if let Some(list) = moved.get_mut("ports").and_then(Value::as_array_mut) {
            for p in list.iter_mut().skip(1) {
                if p.get("containerPort").and_then(Value::as_u64) == Some(u64::from(g.port)) {
                    p["containerPort"] = Value::from(g.upstream_port);
                }
            }
        }
    }
    if let Some(first) = moved
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .and_then(|p| p.first_mut())
        .and_then(Value::as_object_mut)
    {
        first.insert("containerPort".to_owned(), Value::from(upstream_port));
    }
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(p) = moved.get_mut(probe) {
            retarget_probe(p, serving_port, upstream_port);
        }
    }
    let mut ops = field_ops(&format!("/spec/containers/{index}"), model, &moved);

    // queue-proxy's readiness check of the user container, now the model on its new port.
    if let Some((q, proxy)) = containers
        .iter()
        .enumerate()
        .find(|(_, c)| name_of(c) == QUEUE_PROXY)
    {
        let mut moved = proxy.clone();
        if let Some(list) = moved.get_mut("env").and_then(Value::as_array_mut) {
            for e in list.iter_mut() {
                if e.get("name").and_then(Value::as_str) != Some("SERVING_READINESS_PROBE") {
                    continue;
                }
                let Some(text) = e.get("value").and_then(Value::as_str) else {
                    continue;
                };
                // Left alone when it is not JSON: Knative would refuse it anyway.
                if let Ok(mut probes) = serde_json::from_str::<Value>(text) {
                    match &mut probes {
                        Value::Array(list) => list
                            .iter_mut()
                            .for_each(|p| retarget_probe(p, serving_port, upstream_port)),
                        p => retarget_probe(p, serving_port, upstream_port),
                    }
                    e["value"] = Value::String(sorted_json(&probes));
                }
            }
        }
        ops.extend(field_ops(&format!("/spec/containers/{q}"), proxy, &moved));
    }
    Ok(Rewiring {
        serving_port,
        upstream_port,
        grpc: grpc.map(|(_, g)| g),
        ops,
    })
}

/// Compact JSON with object keys sorted, the same whether or not serde_json keeps insertion
/// order.
fn sorted_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let fields: Vec<String> = pairs
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), sorted_json(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(list) => {
            let items: Vec<String> = list.iter().map(sorted_json).collect();
            format!("[{}]", items.join(","))
        }
        leaf => leaf.to_string(),
    }
}

fn name_of(container: &Value) -> &str {
    container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The containerPorts a container declares.
fn declared_ports(container: &Value) -> Vec<u16> {
    container
        .get("ports")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `--flag=V` or `--flag V` in a list of arguments (the last one wins, as with
/// argparse).
fn flag_value(list: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    for (i, a) in list.iter().enumerate() {
        if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        } else if a == flag {
            found = list.get(i + 1).cloned();
        }
    }
    found
}

/// Sets every `--flag=V` / `--flag V` in a JSON list of strings to `value`.
fn set_flag(list: &mut [Value], flag: &str, value: &str) {
    let mut next_is_value = false;
    for item in list.iter_mut() {
        let Some(text) = item.as_str() else {
            next_is_value = false;
            continue;
        };
        if next_is_value {
            *item = Value::String(value.to_owned());
            next_is_value = false;
        } else if text.strip_prefix(flag).is_some_and(|r| r.starts_with('=')) {
            *item = Value::String(format!("{flag}={value}"));
        } else if text == flag {
            next_is_value = true;
        }
    }
}

/// A probe (httpGet, tcpSocket or grpc) that names `from` by number is pointed at `to`. Named
/// ports are left: the renamed containerPort keeps its name.
fn retarget_probe(probe: &mut Value, from: u16, to: u16) {
    for handler in ["httpGet", "tcpSocket", "grpc"] {
        let Some(port) = probe.get_mut(handler).and_then(|h| h.get_mut("port")) else {
            continue;
        };
        let number = match &*port {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        if number == Some(u64::from(from)) {
            *port = Value::from(to);
        }
    }
}

/// One operation per top-level field of a container that changed: `replace` where the field
/// was there, `add` where it was not.
fn field_ops(path: &str, before: &Value, after: &Value) -> Vec<PatchOp> {
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return Vec::new();
    };
    // In key order, whatever serde_json's map keeps (its preserve_order feature may be on).
    let mut changed: Vec<(&String, &Value)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .collect();
    changed.sort_by(|a, b| a.0.cmp(b.0));
    changed
        .into_iter()
        .map(|(k, v)| {
            let at = format!("{path}/{}", crate::admission::pointer_segment(k));
            if before.contains_key(k) {
                PatchOp::replace(at, v.clone())
            } else {
                PatchOp::add(at, v.clone())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_in_both_forms() {
        let list: Vec<String> = ["x", "--http_port", "8080", "--grpc_port=9", "--http_port=7"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(flag_value(&list, "--http_port").as_deref(), Some("7"));
        assert_eq!(flag_value(&list, "--grpc_port").as_deref(), Some("9"));
        assert_eq!(flag_value(&list, "--http-port"), None);
        // A prefix of another flag is not that flag.
        let list = vec!["--http_port_x=1".to_owned()];
        assert_eq!(flag_value(&list, "--http_port"), None);
        let mut json = vec![
            json!("--http_port"),
            json!("8080"),
            json!("--http_port=8080"),
        ];
        set_flag(&mut json, "--http_port", "8090");
        assert_eq!(
            json,
            [
                json!("--http_port"),
                json!("8090"),
                json!("--http_port=8090")
            ]
        );
    }

    #[test]
    fn rewires_a_minimal_pod_and_refuses_disagreeing_ports() {
        let pod = |args: Value| {
            json!({"spec": {"containers": [{
                "name": "kserve-container",
                "args": args,
                "ports": [{"containerPort": 8080}],
            }]}})
        };
        let r = rewire(&pod(json!(["--http_port", "8080"])), None, &[], "e", "p").unwrap();
        assert_eq!(
            (r.serving_port, r.upstream_port),
            (8080, DEFAULT_UPSTREAM_PORT)
        );
        let args = r.ops.iter().find(|o| o.path.ends_with("/args")).unwrap();
        // KServe's Python server serves gRPC on 8081 unless told otherwise: it moves too.
        assert_eq!(
            args.value,
            json!(["--http_port", "8090", "--grpc_port=8091"])
        );
        assert_eq!(
            r.grpc,
            Some(GrpcRewiring {
                port: 8081,
                upstream_port: 8091
            })
        );
        // Expanded by the kubelet from the environment: moved, not refused.
        let r = rewire(&pod(json!(["--http_port=$(PORT)"])), None, &[], "e", "p").unwrap();
        assert_eq!(
            r.ops[0].value,
            json!(["--http_port=8090", "--grpc_port=8091"])
        );
        let e = rewire(&pod(json!(["--http_port=9000"])), None, &[], "e", "p").unwrap_err();
        assert!(e[0].contains("declares containerPort 8080 but is told --http_port 9000"));
        let e = rewire(&pod(json!([])), Some("6569"), &[6569], "e", "p").unwrap_err();
        assert!(e[0].contains("transformation service"), "{e:?}");
    }

    #[test]
    fn the_sidecar_takes_grpc_only_where_the_runtime_serves_the_v2_protocol() {
        let pod = |args: Value, env: Value| {
            json!({"spec": {"containers": [{
                "name": "kserve-container",
                "args": args,
                "env": env,
                "ports": [{"containerPort": 8080}, {"containerPort": 9000, "name": "grpc"}],
            }]}})
        };
        let grpc = |args: Value, env: Value| {
            rewire(&pod(args, env), None, &[], "e", "p")
                .unwrap()
                .grpc
                .map(|g| (g.port, g.upstream_port))
        };
        // KServe's Python server: its flag, or off.
        assert_eq!(
            grpc(
                json!(["--http_port=8080", "--grpc_port", "9000"]),
                json!([])
            ),
            Some((9000, 8091))
        );
        assert_eq!(
            grpc(
                json!(["--http_port=8080", "--enable_grpc=false"]),
                json!([])
            ),
            None
        );
        // Triton: 8001 unless told, off with --allow-grpc=false.
        assert_eq!(
            grpc(json!(["--http-port=8080"]), json!([])),
            Some((8001, 8091))
        );
        assert_eq!(
            grpc(json!(["--http-port=8080", "--allow-grpc=false"]), json!([])),
            None
        );
        // MLServer: its env, set or added.
        let r = rewire(
            &pod(
                json!([]),
                json!([{"name": "MLSERVER_HTTP_PORT", "value": "8080"}]),
            ),
            None,
            &[],
            "e",
            "p",
        )
        .unwrap();
        assert_eq!(r.grpc.map(|g| g.port), Some(8081));
        let env = r.ops.iter().find(|o| o.path.ends_with("/env")).unwrap();
        assert_eq!(
            env.value[1],
            json!({"name": "MLSERVER_GRPC_PORT", "value": "8091"})
        );
        // TensorFlow Serving's gRPC is not the V2 protocol; a port known only to the kubelet
        // is not claimed.
        assert_eq!(
            grpc(json!(["--rest_api_port=8080", "--port=9000"]), json!([])),
            None
        );
        assert_eq!(
            grpc(json!(["--http_port=8080", "--grpc_port=$(G)"]), json!([])),
            None
        );
        // The model's declared gRPC containerPort follows it.
        let r = rewire(
            &pod(json!(["--http_port=8080", "--grpc_port=9000"]), json!([])),
            None,
            &[],
            "e",
            "p",
        )
        .unwrap();
        let ports = r.ops.iter().find(|o| o.path.ends_with("/ports")).unwrap();
        assert_eq!(ports.value[1]["containerPort"], 8091);
        // Where it would move is taken: refused, naming what takes it.
        let e = rewire(
            &pod(json!(["--http_port=8080", "--grpc_port=9000"]), json!([])),
            Some("8999"),
            &[],
            "e",
            "p",
        )
        .unwrap_err();
        assert!(e[0].contains("moves to 9000"), "{e:?}");
    }

    #[test]
    fn probes_by_number_move_and_by_name_stay() {
        let mut p = json!({"httpGet": {"port": 8080, "path": "/v2/health/ready"}});
        retarget_probe(&mut p, 8080, 8090);
        assert_eq!(p["httpGet"]["port"], 8090);
        let mut p = json!({"tcpSocket": {"port": "8080"}});
        retarget_probe(&mut p, 8080, 8090);
        assert_eq!(p["tcpSocket"]["port"], 8090);
        let mut p = json!({"tcpSocket": {"port": "user-port"}});
        retarget_probe(&mut p, 8080, 8090);
        assert_eq!(p["tcpSocket"]["port"], "user-port");
        let mut p = json!({"exec": {"command": ["true"]}});
        retarget_probe(&mut p, 8080, 8090);
        assert_eq!(p, json!({"exec": {"command": ["true"]}}));
    }
}
