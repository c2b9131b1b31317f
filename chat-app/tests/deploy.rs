//! The deployment files (Dockerfile, docker-compose.yml, deploy/nginx, deploy/kubernetes) agree
//! with the code, checked without a container runtime: every YAML document parses and has the
//! fields its kind requires, probe paths are routes of the app, ports are the port the app
//! listens on, every environment variable given to chat-app is one that `config.rs` reads, and
//! the image builds the binary the README runs. `deploy/smoke.sh` runs the stack for real.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every non-empty document of a YAML file, as JSON values (YAML aliases resolved).
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
        })
        .filter(|value: &Value| !value.is_null())
        .collect()
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, is {value}"))
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Environment variable names the service reads: the names `config.rs` passes to its lookups
/// (string literals) or documents in its table (such as `RUST_LOG`, which the log filter reads).
fn config_env_vars() -> BTreeSet<String> {
    let source = read("chat-app/src/config.rs");
    let mut names = BTreeSet::new();
    for quote in ['"', '`'] {
        for (i, piece) in source.split(quote).enumerate() {
            let is_name = !piece.is_empty()
                && piece.starts_with(|c: char| c.is_ascii_uppercase())
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if i % 2 == 1 && is_name {
                names.insert(piece.to_string());
            }
        }
    }
    assert!(names.contains("DATABASE_URL") && names.contains("JWT_SECRET"));
    names
}

fn assert_known_env(names: impl IntoIterator<Item = String>, file: &str) {
    let known = config_env_vars();
    for name in names {
        assert!(
            known.contains(&name),
            "{file} sets {name}, which chat-app/src/config.rs does not read"
        );
    }
}

/// The app's routes, as written in `chat-app/src/lib.rs` (`.route("/path"` and `nest_service`).
fn app_routes() -> BTreeSet<String> {
    let source = read("chat-app/src/lib.rs");
    let mut routes = BTreeSet::new();
    for marker in [".route(\"", ".nest_service(\""] {
        for piece in source.split(marker).skip(1) {
            routes.insert(piece.split('"').next().unwrap().to_string());
        }
    }
    assert!(routes.contains("/health/live"), "routes found: {routes:?}");
    routes
}

/// The hub's mount point (`/hubs/chat`).
fn hub_path() -> String {
    let source = read("chat-app/src/lib.rs");
    let piece = source
        .split(".nest_service(\"")
        .nth(1)
        .expect("the hub is mounted with nest_service");
    piece.split('"').next().unwrap().to_string()
}

/// The port chat-app listens on when LISTEN_ADDR is not set (from its default in config.rs).
fn default_port() -> u16 {
    let source = read("chat-app/src/config.rs");
    let default = source
        .split('"')
        .skip(1)
        .step_by(2)
        .find(|literal| literal.parse::<std::net::SocketAddr>().is_ok())
        .expect("config.rs has a default listen address");
    default.parse::<std::net::SocketAddr>().unwrap().port()
}

fn port_of_listen_addr(addr: &str) -> u16 {
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|_| panic!("LISTEN_ADDR {addr} is not an address"))
        .port()
}

/// How long the hub waits for connections to end after SIGTERM: the default in signalr-core,
/// unless chat-app sets its own (then this test must learn to read it).
fn hub_shutdown_secs() -> u64 {
    let chat = read("chat-app/src/hub.rs") + &read("chat-app/src/lib.rs");
    assert!(
        !chat.contains(".shutdown_timeout("),
        "chat-app sets its own shutdown timeout: read it here"
    );
    let options = read("signalr-core/src/options.rs");
    let piece = options
        .split("shutdown_timeout: Duration::from_secs(")
        .nth(1)
        .expect("signalr-core's default shutdown timeout");
    piece.split(')').next().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    instructions
}

/// Instructions of the last stage (the image that runs).
fn runtime_stage() -> Vec<(String, String)> {
    let all = dockerfile();
    let last_from = all.iter().rposition(|(op, _)| op == "FROM").unwrap();
    all[last_from..].to_vec()
}

/// `ENV` pairs of the runtime stage.
fn dockerfile_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (_, rest) in runtime_stage().iter().filter(|(op, _)| op == "ENV") {
        for pair in rest.split_whitespace() {
            let (key, value) = pair.split_once('=').expect("ENV KEY=value");
            env.insert(key.to_string(), value.to_string());
        }
    }
    env
}

#[test]
fn the_dockerfile_builds_the_binary_the_readme_runs() {
    let readme = read("README.md");
    assert!(readme.contains("cargo run --release -p chat-app"));
    let manifest: toml::Table = read("chat-app/Cargo.toml").parse().unwrap();
    assert_eq!(manifest["package"]["name"].as_str(), Some("chat-app"));
    assert!(
        repo().join("chat-app/src/main.rs").exists(),
        "the binary is the package's main.rs"
    );

    let all = dockerfile();
    assert!(
        all.iter().filter(|(op, _)| op == "FROM").count() >= 2,
        "multi-stage"
    );
    let build = all
        .iter()
        .find(|(op, rest)| op == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest.clone())
        .expect("a RUN cargo build");
    let words: Vec<&str> = build.split_whitespace().collect();
    for flag in [
        &["--release"][..],
        &["--locked"],
        &["-p", "chat-app"],
        &["--bin", "chat-app"],
    ] {
        assert!(
            words.windows(flag.len()).any(|w| w == flag),
            "the build runs with {flag:?}: {build}"
        );
    }
    assert!(build.contains("target/release/chat-app"));

    let runtime = runtime_stage();
    let copy = runtime
        .iter()
        .find(|(op, rest)| op == "COPY" && rest.starts_with("--from="))
        .map(|(_, rest)| rest.clone())
        .expect("the runtime stage copies the binary from the build stage");
    let installed = copy.split_whitespace().last().unwrap().to_string();
    let entrypoint = runtime
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, rest)| rest.clone())
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint)
        .expect("exec form, so chat-app is PID 1 and gets SIGTERM");
    assert_eq!(entrypoint, vec![installed]);
    if let Some((_, signal)) = runtime.iter().find(|(op, _)| op == "STOPSIGNAL") {
        assert_eq!(signal, "SIGTERM", "chat-app drains on SIGTERM");
    }
}

#[test]
fn the_image_runs_as_a_user_with_a_health_check_on_the_listen_port() {
    let runtime = runtime_stage();
    let user = runtime
        .iter()
        .rfind(|(op, _)| op == "USER")
        .map(|(_, rest)| rest.clone())
        .expect("a USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "non-root user, got {user}");

    let env = dockerfile_env();
    assert_known_env(env.keys().cloned(), "Dockerfile");
    assert_eq!(env["APP_ENV"], "production");
    let port = port_of_listen_addr(&env["LISTEN_ADDR"]);
    assert_eq!(port, default_port(), "the image uses the documented port");
    let exposed: Vec<u16> = runtime
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .map(|(_, rest)| rest.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert_eq!(exposed, vec![port]);

    let check = runtime
        .iter()
        .find(|(op, _)| op == "HEALTHCHECK")
        .map(|(_, rest)| rest.clone())
        .expect("a HEALTHCHECK");
    assert!(app_routes().contains("/health/live"));
    assert!(check.contains("/health/live"), "{check}");
    assert!(
        check.contains("${LISTEN_ADDR##*:}"),
        "the check follows LISTEN_ADDR"
    );
}

#[test]
fn the_build_context_keeps_the_sources_and_drops_secrets_and_build_output() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for required in [".git", "**/target", "**/node_modules", ".env"] {
        assert!(
            ignored.iter().any(|l| l == required),
            ".dockerignore lacks {required}"
        );
    }
    let workspace: toml::Table = read("Cargo.toml").parse().unwrap();
    let members = workspace["workspace"]["members"].as_array().unwrap();
    for needed in members
        .iter()
        .map(|m| m.as_str().unwrap())
        .chain(["Cargo.toml", "Cargo.lock"])
    {
        assert!(
            !ignored
                .iter()
                .any(|l| l == needed || l.trim_end_matches('/') == needed),
            ".dockerignore drops {needed}, which the build needs"
        );
    }
    let gitignore = read(".gitignore");
    assert!(
        gitignore.lines().any(|l| l.trim() == ".env"),
        "the real .env is git-ignored"
    );
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml and nginx

fn compose() -> Value {
    let mut documents = yaml_documents("docker-compose.yml");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

/// The compose services that run chat-app (built from this repository's Dockerfile).
fn compose_chat_services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, service)| service["build"]["context"] == ".")
        .map(|(name, service)| (name.clone(), service.clone()))
        .collect()
}

/// `${NAME...}` interpolations in a compose value.
fn interpolated(text: &str) -> Vec<(String, String)> {
    text.split("${")
        .skip(1)
        .map(|piece| {
            let body = piece.split('}').next().unwrap();
            let name_end = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            (body[..name_end].to_string(), body[name_end..].to_string())
        })
        .collect()
}

#[test]
fn compose_runs_two_replicas_on_postgres_and_redis_with_secrets_from_the_env_file() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let chat = compose_chat_services(&compose);
    assert!(chat.len() >= 2, "at least two replicas: {:?}", chat.keys());
    for required in ["postgres", "redis", "lb"] {
        assert!(services.contains_key(required), "a {required} service");
    }
    let port = default_port();
    for (name, service) in &chat {
        let env = service["environment"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: environment as a mapping"));
        assert_known_env(env.keys().cloned(), &format!("docker-compose.yml ({name})"));
        let value = |key: &str| str_of(&env[key], key).to_string();
        assert_eq!(value("APP_ENV"), "production");
        assert_eq!(port_of_listen_addr(&value("LISTEN_ADDR")), port);
        assert!(value("DATABASE_URL").starts_with("postgres://"));
        assert!(value("DATABASE_URL").contains("@postgres:5432/"));
        assert_eq!(value("REDIS_URL"), "redis://redis:6379");
        // Secrets are never literals here: compose takes them from .env and refuses to start
        // without them.
        for secret in ["JWT_SECRET", "DATABASE_URL"] {
            assert!(
                interpolated(&value(secret))
                    .iter()
                    .any(|(_, modifier)| modifier.starts_with(":?")),
                "{name}: {secret} must come from .env, required"
            );
        }
        for dependency in ["postgres", "redis"] {
            assert_eq!(
                service["depends_on"][dependency]["condition"], "service_healthy",
                "{name} waits for {dependency}"
            );
        }
        assert!(
            service.get("healthcheck").is_none(),
            "{name} uses the image's HEALTHCHECK"
        );
        assert!(
            service.get("ports").is_none(),
            "{name} is reached through lb"
        );
    }
    for name in chat.keys() {
        assert_eq!(
            services["lb"]["depends_on"][name]["condition"], "service_healthy",
            "lb starts once {name} is live"
        );
    }
    assert!(services["postgres"]["healthcheck"]["test"]
        .to_string()
        .contains("pg_isready"));
    assert!(services["redis"]["healthcheck"]["test"]
        .to_string()
        .contains("ping"));
}

#[test]
fn the_env_example_lists_exactly_what_compose_interpolates_and_holds_no_secret() {
    let text = read("docker-compose.yml");
    let used: BTreeMap<String, String> = interpolated(&text).into_iter().collect();
    let example: BTreeMap<String, String> = read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    for key in example.keys() {
        assert!(
            used.contains_key(key),
            ".env.example sets {key}, unused by compose"
        );
    }
    for (name, modifier) in &used {
        if modifier.starts_with(":?") {
            assert!(
                example.contains_key(name),
                "compose requires {name}: .env.example must list it"
            );
        }
    }
    for secret in [
        "JWT_SECRET",
        "POSTGRES_PASSWORD",
        "OPENAI_API_KEY",
        "METRICS_TOKEN",
    ] {
        assert_eq!(example[secret], "", "no secret is committed: {secret}");
    }
}

#[test]
fn nginx_hashes_hub_requests_on_the_connection_id_and_knows_every_replica() {
    let compose = compose();
    let lb = &compose["services"]["lb"];
    let mount = lb["volumes"][0].as_str().unwrap();
    let (source, target) = mount.split_once(':').unwrap();
    assert_eq!(target, "/etc/nginx/nginx.conf:ro");
    let conf = read(source.trim_start_matches("./"));
    // Brace-balanced and every statement ends: a cheap parse that catches broken edits.
    assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    // `upstream NAME { ... }` blocks (a line starting with the directive; not `$hub_upstream`).
    let upstreams: Vec<&str> = conf
        .split("\n")
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("upstream "))
        .map(|(i, _)| {
            let start: usize = conf.split("\n").take(i).map(|l| l.len() + 1).sum();
            conf[start..].split('}').next().unwrap()
        })
        .collect();
    assert!(upstreams.len() >= 2);
    let port = default_port();
    for upstream in &upstreams {
        for replica in compose_chat_services(&compose).keys() {
            assert!(
                upstream.contains(&format!("server {replica}:{port}")),
                "upstream {upstream} lacks {replica}:{port}"
            );
        }
    }
    assert!(
        upstreams
            .iter()
            .any(|u| u.contains("hash $arg_id consistent;")),
        "SSE and long polling are routed by the id query parameter"
    );
    let hub = hub_path();
    let location = conf
        .split("location ")
        .skip(1)
        .find(|l| hub.starts_with(l.split_whitespace().next().unwrap()) && l.starts_with("/hubs"))
        .expect("a location for the hub");
    for directive in [
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_buffering off;",
        "proxy_read_timeout",
    ] {
        assert!(
            location.contains(directive),
            "the hub location lacks {directive}"
        );
    }
    assert!(conf.contains("~*^websocket$ chat_websockets;"));
    // Access logs name a format that leaves out the query string (access tokens travel there).
    let access_log = conf
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("access_log "))
        .expect("an access_log");
    let format = access_log.trim_end_matches(';').split_whitespace().nth(2);
    let format = format.expect("access_log names its format (the default logs the query)");
    let definition = conf
        .split(&format!("log_format {format} "))
        .nth(1)
        .expect("the access log's format is defined")
        .split(';')
        .next()
        .unwrap();
    for leaky in [
        "$request ",
        "$request\"",
        "$request_uri",
        "$args",
        "$query_string",
        "$arg_",
    ] {
        assert!(!definition.contains(leaky), "the access log shows {leaky}");
    }
    assert!(definition.contains("$uri"));
    // Each replica's /metrics is scraped directly, never through the balancer.
    let metrics = conf
        .split("location = /metrics {")
        .nth(1)
        .expect("a location for /metrics");
    assert!(metrics.trim_start().starts_with("return 404;"));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

const KUBERNETES: &str = "deploy/kubernetes";

/// Every document of every manifest, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join(KUBERNETES))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|file| {
            yaml_documents(&format!("{KUBERNETES}/{file}"))
                .into_iter()
                .map(move |d| (file.clone(), d))
        })
        .collect()
}

fn of_kind<'a>(all: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

fn named<'a>(all: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    of_kind(all, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// Fields a container may have (the API's names: a typo such as `readinesProbe` is an error,
/// which `kubectl apply` would only warn about).
const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "workingDir",
    "ports",
    "env",
    "envFrom",
    "resources",
    "volumeMounts",
    "startupProbe",
    "livenessProbe",
    "readinessProbe",
    "lifecycle",
    "securityContext",
];
const POD_FIELDS: &[&str] = &[
    "containers",
    "initContainers",
    "volumes",
    "securityContext",
    "terminationGracePeriodSeconds",
    "serviceAccountName",
    "affinity",
    "topologySpreadConstraints",
    "nodeSelector",
    "tolerations",
];
const PROBE_FIELDS: &[&str] = &[
    "httpGet",
    "exec",
    "tcpSocket",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
];

fn only_fields(value: &Value, allowed: &[&str], what: &str) {
    for key in keys(value) {
        assert!(
            allowed.contains(&key.as_str()),
            "{what}: unknown field {key}"
        );
    }
}

/// Checks a workload's pod template and returns its containers.
fn check_pod_template(workload: &Value, what: &str) -> Vec<Value> {
    let selector = &workload["spec"]["selector"]["matchLabels"];
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    assert!(!keys(selector).is_empty(), "{what}: a selector");
    for (key, value) in selector.as_object().unwrap() {
        assert_eq!(
            &labels[key], value,
            "{what}: the template carries the selector's labels"
        );
    }
    let pod = &workload["spec"]["template"]["spec"];
    only_fields(pod, POD_FIELDS, what);
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    assert!(!containers.is_empty(), "{what}: containers");
    for container in &containers {
        only_fields(container, CONTAINER_FIELDS, what);
        assert!(container["name"].is_string(), "{what}: a container name");
        assert!(container["image"].is_string(), "{what}: a container image");
        let requests = &container["resources"]["requests"];
        assert!(
            requests["cpu"].is_string() && requests["memory"].is_string(),
            "{what}: resource requests"
        );
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            if !container[probe].is_null() {
                only_fields(&container[probe], PROBE_FIELDS, &format!("{what} {probe}"));
            }
        }
        for env in container["env"].as_array().into_iter().flatten() {
            assert!(env["name"].is_string(), "{what}: env names");
            assert!(
                env["value"].is_string() ^ env["valueFrom"].is_object(),
                "{what}: {} has one value (a string) or valueFrom",
                env["name"]
            );
        }
    }
    containers
}

#[test]
fn every_manifest_parses_and_has_the_fields_of_its_kind() {
    let all = manifests();
    let api_versions = BTreeMap::from([
        ("Deployment", "apps/v1"),
        ("StatefulSet", "apps/v1"),
        ("Service", "v1"),
        ("Secret", "v1"),
        ("Ingress", "networking.k8s.io/v1"),
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
        ("PodDisruptionBudget", "policy/v1"),
    ]);
    for (file, document) in &all {
        let kind = str_of(&document["kind"], "kind");
        assert_eq!(
            Some(&str_of(&document["apiVersion"], "apiVersion")),
            api_versions.get(kind),
            "{file}: {kind}'s apiVersion"
        );
        assert!(
            document["metadata"]["name"].is_string(),
            "{file}: metadata.name"
        );
    }
    for kind in api_versions.keys() {
        assert!(!of_kind(&all, kind).is_empty(), "no {kind} manifest");
    }

    let mut pod_labels = Vec::new();
    for kind in ["Deployment", "StatefulSet"] {
        for workload in of_kind(&all, kind) {
            let what = format!("{kind} {}", workload["metadata"]["name"]);
            check_pod_template(workload, &what);
            pod_labels.push((
                workload,
                workload["spec"]["template"]["metadata"]["labels"].clone(),
            ));
            if kind == "StatefulSet" {
                let service = str_of(&workload["spec"]["serviceName"], "serviceName");
                named(&all, "Service", service);
            }
        }
    }
    // A Service selects a workload, and its target ports are that workload's container ports.
    for service in of_kind(&all, "Service") {
        let selector = service["spec"]["selector"].as_object().expect("a selector");
        let (workload, _) = pod_labels
            .iter()
            .find(|(_, labels)| selector.iter().all(|(k, v)| &labels[k] == v))
            .unwrap_or_else(|| {
                panic!(
                    "Service {} selects no workload",
                    service["metadata"]["name"]
                )
            });
        let container_ports: Vec<Value> = workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .collect();
        for port in service["spec"]["ports"].as_array().unwrap() {
            assert!(port["port"].is_u64());
            let target = &port["targetPort"];
            assert!(
                container_ports
                    .iter()
                    .any(|p| &p["name"] == target || &p["containerPort"] == target),
                "Service {}: targetPort {target} is no container port",
                service["metadata"]["name"]
            );
        }
    }
    // Ingress backends are Services and their named ports.
    for ingress in of_kind(&all, "Ingress") {
        assert!(ingress["spec"]["ingressClassName"].is_string());
        for rule in ingress["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                assert!(str_of(&path["path"], "path").starts_with('/'));
                assert!(["Prefix", "Exact", "ImplementationSpecific"]
                    .contains(&str_of(&path["pathType"], "pathType")));
                let backend = &path["backend"]["service"];
                let service = named(&all, "Service", str_of(&backend["name"], "backend"));
                assert!(
                    service["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == backend["port"]["name"]
                            || p["port"] == backend["port"]["number"]),
                    "Ingress backend port {} is not on the Service",
                    backend["port"]
                );
            }
        }
    }
}

#[test]
fn the_deployment_probes_routes_of_the_app_on_its_port_and_drains_within_the_grace_period() {
    let all = manifests();
    let deployment = named(&all, "Deployment", "chat-app");
    let containers = check_pod_template(deployment, "Deployment chat-app");
    let container = &containers[0];
    let env: BTreeMap<String, Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (str_of(&e["name"], "env name").to_string(), e.clone()))
        .collect();
    assert_known_env(env.keys().cloned(), "deploy/kubernetes/chat-app.yaml");
    assert!(
        container["envFrom"].is_null(),
        "explicit names, checked here"
    );
    assert_eq!(env["APP_ENV"]["value"], "production");
    let port = port_of_listen_addr(str_of(&env["LISTEN_ADDR"]["value"], "LISTEN_ADDR"));
    assert_eq!(port, default_port());
    for secret in ["JWT_SECRET", "DATABASE_URL", "REDIS_URL"] {
        assert_eq!(
            env[secret]["valueFrom"]["secretKeyRef"]["name"], "chat-app",
            "{secret} comes from the Secret"
        );
    }

    let ports = container["ports"].as_array().unwrap();
    let routes = app_routes();
    for (probe, path) in [
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
        ("startupProbe", "/health/live"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(routes.contains(path), "{path} is a route of the app");
        let named_port = ports
            .iter()
            .find(|p| p["name"] == get["port"] || p["containerPort"] == get["port"])
            .unwrap_or_else(|| panic!("{probe}'s port is a container port"));
        assert_eq!(
            named_port["containerPort"], port,
            "{probe} on the listen port"
        );
    }

    // SIGTERM comes after preStop; the hub then drains for up to its shutdown timeout.
    let pre_stop = &container["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop_secs: u64 = str_of(&pre_stop[1], "sleep seconds").parse().unwrap();
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace >= pre_stop_secs + hub_shutdown_secs() + 5,
        "grace {grace} s must cover preStop {pre_stop_secs} s + the hub's {} s drain + margin",
        hub_shutdown_secs()
    );
    let security = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    let image_user = runtime_stage()
        .iter()
        .rfind(|(op, _)| op == "USER")
        .map(|(_, rest)| rest.split(':').next().unwrap().to_string())
        .unwrap();
    assert_eq!(security["runAsUser"].to_string(), image_user);
}

#[test]
fn the_ingress_hashes_hub_requests_on_the_id_and_keeps_websockets_open() {
    let all = manifests();
    let hub = hub_path();
    let ingresses = of_kind(&all, "Ingress");
    let serving = |path: &str| {
        ingresses
            .iter()
            .copied()
            .filter(|i| {
                i["spec"]["rules"][0]["http"]["paths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| path.starts_with(str_of(&p["path"], "path")))
            })
            // The longest prefix wins in ingress-nginx.
            .max_by_key(|i| {
                i["spec"]["rules"][0]["http"]["paths"][0]["path"]
                    .as_str()
                    .unwrap()
                    .len()
            })
            .unwrap_or_else(|| panic!("no Ingress serves {path}"))
    };
    let hubs = &serving(&format!("{hub}/negotiate"))["metadata"]["annotations"];
    let annotation = |name: &str| hubs[format!("nginx.ingress.kubernetes.io/{name}")].clone();
    assert_eq!(annotation("upstream-hash-by"), "$arg_id");
    for timeout in ["proxy-read-timeout", "proxy-send-timeout"] {
        let secs: u64 = str_of(&annotation(timeout), timeout).parse().unwrap();
        assert!(secs >= 300, "{timeout} {secs} s cuts idle WebSockets");
    }
    assert_eq!(annotation("proxy-buffering"), "off");
    let api = &serving("/api/v1/rooms")["metadata"]["annotations"];
    assert!(
        api["nginx.ingress.kubernetes.io/upstream-hash-by"].is_null(),
        "the REST API is balanced freely"
    );
}

#[test]
fn the_autoscaler_and_disruption_budget_target_the_deployment() {
    let all = manifests();
    let deployment = named(&all, "Deployment", "chat-app");
    let hpa = of_kind(&all, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "chat-app");
    let min = hpa["spec"]["minReplicas"].as_u64().unwrap();
    let max = hpa["spec"]["maxReplicas"].as_u64().unwrap();
    assert!(2 <= min && min <= max);
    let pdb = of_kind(&all, "PodDisruptionBudget")[0];
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // A drain must stay possible: the budget leaves at least one pod to evict.
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < min);
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= min);
}

#[test]
fn the_secret_template_has_every_key_the_pods_read_and_no_secret_value() {
    let all = manifests();
    let secret = named(&all, "Secret", "chat-app");
    let data = secret["stringData"].as_object().unwrap();
    let mut referenced = BTreeSet::new();
    for kind in ["Deployment", "StatefulSet"] {
        for workload in of_kind(&all, kind) {
            for container in workload["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                for env in container["env"].as_array().into_iter().flatten() {
                    let reference = &env["valueFrom"]["secretKeyRef"];
                    if reference.is_object() {
                        assert_eq!(reference["name"], "chat-app");
                        referenced.insert(str_of(&reference["key"], "key").to_string());
                    }
                }
            }
        }
    }
    let template: BTreeSet<String> = data.keys().cloned().collect();
    assert_eq!(
        referenced, template,
        "the template holds exactly the keys the pods read"
    );
    for key in [
        "JWT_SECRET",
        "DATABASE_URL",
        "POSTGRES_PASSWORD",
        "METRICS_TOKEN",
    ] {
        assert_eq!(data[key], "", "{key} must not be committed");
    }
    // Applying the kustomization must never overwrite the real Secret with the template.
    let kustomization = &yaml_documents(&format!("{KUBERNETES}/kustomization.yaml"))[0];
    let resources: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = all
        .iter()
        .map(|(file, _)| file.clone())
        .filter(|f| f != "secret.template.yaml")
        .collect();
    assert_eq!(
        resources, files,
        "kustomization.yaml lists every manifest but the Secret template"
    );
    let deployment = named(&all, "Deployment", "chat-app");
    let image = &deployment["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(&kustomization["images"][0]["name"], image);
}

#[test]
fn the_readme_walks_from_one_instance_to_a_cluster() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Deploying")
        .nth(1)
        .expect("a Deploying section");
    let section = section.split("\n## ").next().unwrap();
    for step in [
        "docker build -t chat-app .",
        "docker compose up",
        "kubectl apply -k deploy/kubernetes",
        "REDIS_CLUSTER=true",
        "deploy/smoke.sh",
    ] {
        assert!(section.contains(step), "the Deploying section shows {step}");
    }
    assert!(repo().join("deploy/smoke.sh").exists());
}

// ---------------------------------------------------------------------------------------------
// Grafana

const DASHBOARD: &str = "deploy/grafana/signalr-chat.json";

/// The metric families a PromQL expression selects: the names written just before `{`.
fn selected_families(expr: &str) -> Vec<String> {
    let mut families = Vec::new();
    let bytes = expr.as_bytes();
    for (at, _) in expr.match_indices('{') {
        let start = bytes[..at]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(0, |i| i + 1);
        if start < at {
            families.push(expr[start..at].to_owned());
        }
    }
    families
}

#[test]
fn the_dashboard_is_a_grafana_model_on_a_prometheus_variable_showing_documented_metrics() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    for field in ["title", "uid"] {
        assert!(dashboard[field].is_string(), "the dashboard has a {field}");
    }
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable, so the dashboard imports onto any Prometheus");
    assert_eq!(datasource["query"], "prometheus");
    let reference = format!(
        "${{{}}}",
        str_of(&datasource["name"], "the variable's name")
    );
    let readme = read("README.md");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let mut families = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = str_of(&panel["title"], "a panel's title");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap());
        assert!(
            w >= 1 && x + w <= 24 && h >= 1,
            "{title} fits the 24-column grid"
        );
        for column in x..x + w {
            for row in y..y + h {
                assert!(
                    cells.insert((column, row)),
                    "{title} overlaps another panel"
                );
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], reference.as_str(), "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has queries");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(refs.insert(str_of(&target["refId"], "refId").to_owned()));
            assert_eq!(target["datasource"]["uid"], reference.as_str(), "{title}");
            let expr = str_of(&target["expr"], "a query");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{expr}"
            );
            let selected = selected_families(expr);
            assert!(!selected.is_empty(), "{title} selects no metric: {expr}");
            families.extend(selected);
        }
    }
    // Every family shown is in the README's list of metrics, by its Prometheus name (a
    // histogram's, without `_bucket`, `_count` or `_sum`).
    for family in &families {
        let name = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| family.strip_suffix(suffix))
            .unwrap_or(family);
        assert!(
            readme.contains(&format!("`{name}`")),
            "the dashboard shows {name}, which the README's list of metrics lacks"
        );
    }
    assert!(families.contains("signalr_server_active_connections"));
}
