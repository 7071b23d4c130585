use std::collections::BTreeMap;

use essaim_core::model::{
    EndpointMode, FileKind, FileReference, PortConfig, Protocol, PublishMode, RestartCondition,
    ServiceMode, ServiceSpec, UpdateOrder,
};

use super::*;

/// The seed's example, indented as a compose file is.
const SEED: &str = "version: '3'\nservices:\n  web:\n    image: nginx\n    ports:\n      - \"80:80\"\n    deploy:\n      replicas: 3\n";

fn load_with(
    files: &[(&str, &str)],
    variables: &[(&str, &str)],
    env_files: &[(&str, &str)],
) -> Result<Stack, Refused> {
    let variables: BTreeMap<String, String> = variables
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let env_files: BTreeMap<String, String> = env_files
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, text)| Source {
            name: (*name).to_string(),
            text: (*text).to_string(),
        })
        .collect();
    let lookup = |name: &str| variables.get(name).cloned();
    let read_env_file = |path: &str| {
        env_files
            .get(path)
            .cloned()
            .ok_or_else(|| format!("{path}: no such file"))
    };
    // A secret's or config's file, by its full path, among the same files.
    let read_data = |kind: FileKind, path: &std::path::Path| {
        let path = path.display().to_string();
        let data = env_files
            .get(&path)
            .ok_or_else(|| format!("cannot read {path}: no such file"))?;
        crate::commands::file::check_data(kind, &path, data.as_bytes())?;
        Ok(data.clone().into_bytes())
    };
    load(
        &sources,
        "shop",
        &Inputs {
            lookup: &lookup,
            read_env_file: &read_env_file,
            base_dir: std::path::Path::new("/project"),
            read_data: &read_data,
        },
    )
}

fn one(text: &str) -> Result<Stack, Refused> {
    load_with(&[("docker-compose.yml", text)], &[], &[])
}

fn service<'a>(stack: &'a Stack, name: &str) -> &'a ServiceSpec {
    stack
        .services
        .iter()
        .find(|spec| spec.name == name)
        .unwrap_or_else(|| panic!("no service {name} in {stack:?}"))
}

fn errors(text: &str) -> Vec<String> {
    one(text)
        .expect_err("refused")
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_seed_example_is_three_nginx_replicas_on_the_stack_default_network() {
    let stack = one(SEED).expect("the seed's file loads");
    assert_eq!(stack.services.len(), 1);
    let web = service(&stack, "shop_web");
    assert_eq!(web.task.image, "nginx");
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(web.ports, vec![PortConfig::tcp(80, 80)]);
    assert_eq!(web.labels[NAMESPACE_LABEL], "shop");
    assert_eq!(web.task.networks.len(), 1);
    assert_eq!(web.task.networks[0].target, "shop_default");
    // The others in the stack reach it by its compose name.
    assert_eq!(web.task.networks[0].aliases, vec!["web"]);
    assert_eq!(stack.networks.len(), 1);
    assert_eq!(stack.networks[0].spec.name, "shop_default");
    assert_eq!(stack.networks[0].spec.labels[NAMESPACE_LABEL], "shop");
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
}

#[test]
fn every_mapped_key_lands_in_the_spec() {
    let text = r#"
services:
  api:
    image: registry.local/api:2
    command: serve --port "8080"
    environment:
      MODE: prod
      EMPTY:
    env_file: api.env
    ports:
      - target: 8080
        published: 9080
        protocol: udp
        mode: host
      - 443
    networks:
      back:
        aliases: [backend]
      front:
    healthcheck:
      test: curl -f http://localhost:8080/
      interval: 10s
      timeout: 2s
      retries: 5
      start_period: 1m
    stop_grace_period: 1m30s
    deploy:
      mode: replicated
      replicas: 4
      labels: [tier=api]
      endpoint_mode: dnsrr
      resources:
        limits: {cpus: '0.5', memory: 256M}
        reservations: {cpus: '0.25', memory: 128M}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3, window: 1m}
      update_config: {parallelism: 2, delay: 5s, order: start-first, failure_action: rollback, monitor: 20s, max_failure_ratio: 0.25}
      rollback_config: {parallelism: 0}
      placement:
        constraints: [node.role==worker]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
  agent:
    image: agent
    deploy: {mode: global}
networks:
  back:
  front:
    external: true
"#;
    let stack = load_with(
        &[("docker-compose.yml", text)],
        &[],
        &[("api.env", "FROM_FILE=1\nMODE=dev\n")],
    )
    .expect("loads");
    let api = service(&stack, "shop_api");
    assert_eq!(api.task.image, "registry.local/api:2");
    assert_eq!(api.task.args, vec!["serve", "--port", "8080"]);
    // environment over env_file; a key without a value and no such variable is left out.
    assert_eq!(api.task.env["MODE"], "prod");
    assert_eq!(api.task.env["FROM_FILE"], "1");
    assert!(!api.task.env.contains_key("EMPTY"));
    assert_eq!(
        api.ports,
        vec![
            PortConfig {
                protocol: Protocol::Udp,
                mode: PublishMode::Host,
                ..PortConfig::tcp(9080, 8080)
            },
            PortConfig::tcp(0, 443),
        ]
    );
    let networks: Vec<(&str, Vec<&str>)> = api
        .task
        .networks
        .iter()
        .map(|n| {
            (
                n.target.as_str(),
                n.aliases.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        networks,
        vec![
            ("shop_back", vec!["api", "backend"]),
            ("front", vec!["api"])
        ]
    );
    let health = api.task.healthcheck.as_ref().expect("health check");
    assert_eq!(
        health.test,
        vec!["CMD-SHELL", "curl -f http://localhost:8080/"]
    );
    assert_eq!(
        (
            health.interval_ms,
            health.timeout_ms,
            health.retries,
            health.start_period_ms
        ),
        (10_000, 2_000, 5, 60_000)
    );
    assert_eq!(api.task.stop_grace_period_ms, 90_000);
    assert_eq!(api.mode, ServiceMode::Replicated { replicas: 4 });
    assert_eq!(api.labels["tier"], "api");
    assert_eq!(api.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(api.task.resources.limit_nano_cpus, 500_000_000);
    assert_eq!(api.task.resources.limit_memory_bytes, 256 << 20);
    assert_eq!(api.task.resources.reserve_nano_cpus, 250_000_000);
    assert_eq!(api.task.resources.reserve_memory_bytes, 128 << 20);
    let restart = api.task.restart_policy;
    assert_eq!(restart.condition, RestartCondition::OnFailure);
    assert_eq!(
        (restart.delay_ms, restart.max_attempts, restart.window_ms),
        (2_000, 3, 60_000)
    );
    assert_eq!(api.update_config.parallelism, 2);
    assert_eq!(api.update_config.delay_ms, 5_000);
    assert_eq!(api.update_config.monitor_ms, 20_000);
    assert_eq!(api.update_config.order, UpdateOrder::StartFirst);
    assert_eq!(api.update_config.max_failure_ratio_permille, 250);
    assert_eq!(api.rollback_config.parallelism, 0);
    assert_eq!(api.task.constraints, vec!["node.role==worker"]);
    assert_eq!(api.task.spread, vec!["node.labels.zone"]);
    assert_eq!(api.task.max_replicas_per_node, 2);
    assert_eq!(service(&stack, "shop_agent").mode, ServiceMode::Global);
    // back is the stack's; front is external; agent names none, so default is made too.
    let made: Vec<(&str, bool)> = stack
        .networks
        .iter()
        .map(|n| (n.spec.name.as_str(), n.external))
        .collect();
    assert_eq!(
        made,
        vec![
            ("shop_back", false),
            ("front", true),
            ("shop_default", false)
        ]
    );
}

#[test]
fn variables_come_from_the_environment_with_defaults_and_required_ones() {
    let text = "services:\n  web:\n    image: nginx:${TAG:-1.25}\n    environment:\n      PRICE: $$5\n      WHO: ${WHO}\n";
    let stack = load_with(&[("c.yml", text)], &[("WHO", "me")], &[]).expect("loads");
    let web = service(&stack, "shop_web");
    assert_eq!(web.task.image, "nginx:1.25");
    assert_eq!(web.task.env["PRICE"], "$5");
    assert_eq!(web.task.env["WHO"], "me");

    let unset = load_with(&[("c.yml", text)], &[], &[]).expect("loads, with a warning");
    assert_eq!(unset.warnings.len(), 1);
    assert!(
        unset.warnings[0].to_string().contains("c.yml:6:12")
            && unset.warnings[0].message.contains("WHO"),
        "{}",
        unset.warnings[0]
    );

    let required = "services:\n  web:\n    image: \"nginx:${TAG:?set TAG to the release}\"\n";
    let refused = load_with(&[("c.yml", required)], &[], &[]).expect_err("TAG is required");
    assert_eq!(refused.errors.len(), 1);
    let error = refused.errors[0].to_string();
    assert!(error.starts_with("c.yml:3:19:"), "{error}");
    assert!(error.contains("set TAG to the release"), "{error}");
}

#[test]
fn later_files_merge_over_earlier_ones() {
    let over = "services:\n  web:\n    image: nginx:1.27\n    deploy:\n      replicas: 5\n  cache:\n    image: redis:7\n";
    let stack = load_with(
        &[("docker-compose.yml", SEED), ("prod.yml", over)],
        &[],
        &[],
    )
    .expect("loads");
    let web = service(&stack, "shop_web");
    assert_eq!(web.task.image, "nginx:1.27");
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 5 });
    assert_eq!(web.ports, vec![PortConfig::tcp(80, 80)]);
    assert_eq!(service(&stack, "shop_cache").task.image, "redis:7");
}

#[test]
fn errors_name_the_file_line_column_and_key_path() {
    let text = "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: -1\n      resources:\n        limits:\n          memory: lots\n          pids: 10\n    volumes:\n      - data:/var/lib\n    flavour: spicy\n";
    let found = errors(text);
    assert_eq!(
        found,
        vec![
            "docker-compose.yml:5:17: services.web.deploy.replicas: expected a whole number of 0 or more, found '-1'",
            "docker-compose.yml:8:19: services.web.deploy.resources.limits.memory: invalid memory size \"lots\": expected a number with an optional unit, like 512M or 2G",
            "docker-compose.yml:9:11: services.web.deploy.resources.limits.pids: not supported yet: essaim would run the task without it, so the stack is refused",
            "docker-compose.yml:11:9: services.web.volumes[0]: the volume 'data' is not declared under the file's 'volumes:'",
            "docker-compose.yml:12:5: services.web.flavour: unknown key",
        ]
    );
}

#[test]
fn container_keys_become_the_task_s_container_options() {
    let text = "services:
  web:
    image: app:1
    entrypoint: /bin/app --verbose
    command: [serve]
    labels: [team=shop]
    user: '1000:1000'
    working_dir: /srv
    hostname: web-host
    dns: 10.9.9.9
    dns_search: [example.org]
    dns_opt: ['ndots:2']
    extra_hosts: ['db.local:10.0.0.9', 'cache=10.0.0.8']
    stop_signal: SIGQUIT
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    init: true
    tty: yes
    read_only: true
    deploy:
      labels: [tier=front]
  other:
    image: app:1
    extra_hosts:
      db.local: 10.0.0.9
";
    let stack = one(text).expect("valid");
    let web = service(&stack, "shop_web");
    let options = &web.task.container;
    assert_eq!(options.entrypoint, ["/bin/app", "--verbose"]);
    assert_eq!(web.task.args, ["serve"]);
    assert_eq!(
        options.labels["team"], "shop",
        "labels: are the containers'"
    );
    assert_eq!(options.labels["com.docker.stack.namespace"], "shop");
    assert_eq!(
        web.labels["tier"], "front",
        "deploy.labels: are the service's"
    );
    assert!(!web.labels.contains_key("team"));
    assert_eq!(options.user, "1000:1000");
    assert_eq!(options.workdir, "/srv");
    assert_eq!(options.hostname, "web-host");
    assert_eq!(
        options.dns,
        ["10.9.9.9".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(options.dns_search, ["example.org"]);
    assert_eq!(options.dns_options, ["ndots:2"]);
    let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["db.local:10.0.0.9", "cache:10.0.0.8"]);
    assert_eq!(options.stop_signal, "SIGQUIT");
    assert_eq!(options.cap_add, ["NET_ADMIN"]);
    assert_eq!(options.cap_drop, ["ALL"]);
    assert!(options.init && options.tty && options.read_only);
    let other = &service(&stack, "shop_other").task.container;
    assert_eq!(other.hosts[0].to_string(), "db.local:10.0.0.9");
}

#[test]
fn bad_container_values_are_refused_at_their_place() {
    let text = "services:
  web:
    image: app:1
    dns: [10.0.0.1, nope]
    stop_signal: SIGNOPE
    extra_hosts: [db]
  api:
    image: app:1
    working_dir: srv
";
    assert_eq!(
        errors(text),
        vec![
            "docker-compose.yml:4:21: services.web.dns[1]: 'nope' is not an IP address",
            "docker-compose.yml:5:18: services.web.stop_signal: unknown signal 'SIGNOPE'",
            "docker-compose.yml:6:19: services.web.extra_hosts[0]: \"db\" is not HOST:IP",
            "docker-compose.yml:9:18: services.api.working_dir: \"srv\" is not an absolute path",
        ]
    );
}

#[test]
fn volumes_become_mounts_named_for_the_stack() {
    let text = "services:
  db:
    image: postgres
    volumes:
      - data:/var/lib/db
      - ./site:/www:ro
      - /srv/logs:/logs
      - /scratch
      - type: tmpfs
        target: /cache
        tmpfs:
          size: 64M
      - type: volume
        source: shared
        target: /shared
        read_only: true
    tmpfs: /run
volumes:
  data:
    labels: [backup=daily]
  shared:
    external: true
";
    let stack = one(text).expect("valid");
    let mounts: Vec<String> = service(&stack, "shop_db")
        .task
        .mounts
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        mounts,
        [
            "type=volume,source=shop_data,target=/var/lib/db,volume-label=backup=daily,volume-label=com.docker.stack.namespace=shop",
            "type=bind,source=/project/site,target=/www,readonly",
            "type=bind,source=/srv/logs,target=/logs",
            "type=volume,target=/scratch",
            "type=tmpfs,target=/cache,tmpfs-size=67108864",
            "type=volume,source=shared,target=/shared,readonly",
            "type=tmpfs,target=/run",
        ]
    );
}

#[test]
fn external_volumes_keep_the_name_they_are_given_either_way() {
    let text = "services:
  db:
    image: postgres
    volumes: ['a:/a', 'b:/b']
volumes:
  a:
    name: kept_a
    external: true
  b:
    external:
      name: kept_b
";
    let stack = one(text).expect("valid");
    let sources: Vec<&str> = service(&stack, "shop_db")
        .task
        .mounts
        .iter()
        .map(|m| m.source.as_str())
        .collect();
    assert_eq!(sources, ["kept_a", "kept_b"]);
}

#[test]
fn bad_volumes_are_refused_at_their_place() {
    let text = "services:
  db:
    image: postgres
    volumes:
      - data:/a:z
      - a:b:c:d
      - type: tmpfs
        source: x
        target: /t
      - type: bind
        source: named
        target: /n
      - source: /abs
        target: relative
volumes:
  data:
  named:
    driver: nfs
";
    assert_eq!(
        errors(text),
        vec![
            "docker-compose.yml:5:9: services.db.volumes[0]: not supported yet: the mode 'z' in 'data:/a:z'",
            "docker-compose.yml:6:9: services.db.volumes[1]: 'a:b:c:d' is not SOURCE:TARGET[:MODE]",
            "docker-compose.yml:8:17: services.db.volumes[2].source: a tmpfs has no source",
            "docker-compose.yml:11:17: services.db.volumes[3].source: 'named' is a volume source, and the type says bind",
            "docker-compose.yml:18:13: volumes.named.driver: not supported yet: the driver 'nfs' (nodes make local volumes)",
        ]
    );
    // What the leader would refuse is refused at the service's key.
    assert_eq!(
        errors("services:\n  db:\n    image: x\n    volumes:\n      - source: /abs\n        target: relative\n"),
        vec!["docker-compose.yml:5:9: services.db.volumes: target \"relative\" is not an absolute path"]
    );
}

/// A stack with each way of giving a secret or config, and a service that uses them all.
const FILES: &str = "services:
  api:
    image: api:1
    secrets:
      - db_pw
      - source: tls_key
        target: server.key
        uid: '70'
        gid: '71'
        mode: 0400
      - source: shared
        mode: 288
    configs:
      - app
      - source: motd
        target: /etc/motd
secrets:
  db_pw:
    file: ./secrets/db_pw.txt
    labels: [team=db]
  tls_key:
    name: tls_key_2026
    environment: TLS_KEY
  shared:
    external: true
    name: company_ca
configs:
  app:
    file: /etc/shop/app.conf
    labels:
      tier: back
  motd:
    content: welcome to ${SHOP}
";

fn load_files() -> Result<Stack, Refused> {
    load_with(
        &[("docker-compose.yml", FILES)],
        &[("TLS_KEY", "-----BEGIN KEY-----"), ("SHOP", "shop")],
        &[
            ("/project/secrets/db_pw.txt", "hunter2"),
            ("/etc/shop/app.conf", "port=80\n"),
        ],
    )
}

#[test]
fn secrets_and_configs_are_the_stack_s_own_or_external_ones_as_docker_names_them() {
    let stack = load_files().expect("valid");
    let file = |kind: FileKind, key: &str| {
        stack
            .files
            .iter()
            .find(|file| file.kind == kind && file.key == key)
            .unwrap_or_else(|| panic!("no {kind} {key} in {:?}", stack.files))
    };
    let db_pw = file(FileKind::Secret, "db_pw");
    assert_eq!(db_pw.spec.name, "shop_db_pw");
    assert!(!db_pw.external);
    assert_eq!(db_pw.data, b"hunter2");
    assert_eq!(
        db_pw.spec.labels,
        BTreeMap::from([
            (NAMESPACE_LABEL.to_string(), "shop".to_string()),
            ("team".to_string(), String::new() + "db"),
        ])
    );
    // name: replaces STACK_KEY; the data may come from a variable.
    let tls = file(FileKind::Secret, "tls_key");
    assert_eq!(tls.spec.name, "tls_key_2026");
    assert_eq!(tls.data, b"-----BEGIN KEY-----");
    let shared = file(FileKind::Secret, "shared");
    assert!(shared.external && shared.data.is_empty() && shared.spec.labels.is_empty());
    assert_eq!(shared.spec.name, "company_ca");
    let app = file(FileKind::Config, "app");
    assert_eq!(
        (app.spec.name.as_str(), app.data.as_slice()),
        ("shop_app", &b"port=80\n"[..])
    );
    assert_eq!(app.spec.labels["tier"], "back");
    assert_eq!(file(FileKind::Config, "motd").data, b"welcome to shop");
    // The data never shows in a debug print.
    assert!(!format!("{stack:?}").contains("hunter2"));

    let api = service(&stack, "shop_api");
    let reference = |source: &str, target: &str, uid, gid, mode| FileReference {
        source: source.to_string(),
        target: target.to_string(),
        uid,
        gid,
        mode,
    };
    // The task sees a file by its key, not by the cluster's STACK_KEY.
    assert_eq!(
        api.task.secrets,
        vec![
            reference("shop_db_pw", "db_pw", 0, 0, 0o444),
            reference("tls_key_2026", "server.key", 70, 71, 0o400),
            reference("company_ca", "shared", 0, 0, 0o440),
        ]
    );
    assert_eq!(
        api.task.secrets[0].path_in_task(FileKind::Secret),
        "/run/secrets/db_pw"
    );
    assert_eq!(
        api.task.configs,
        vec![
            reference("shop_app", "/app", 0, 0, 0o444),
            reference("shop_motd", "/etc/motd", 0, 0, 0o444),
        ]
    );
}

#[test]
fn a_later_file_s_secrets_merge_by_source() {
    let over = "services:\n  api:\n    secrets:\n      - source: db_pw\n        target: pw\n      - shared\n";
    let stack = load_with(
        &[("docker-compose.yml", FILES), ("prod.yml", over)],
        &[("TLS_KEY", "k"), ("SHOP", "shop")],
        &[
            ("/project/secrets/db_pw.txt", "hunter2"),
            ("/etc/shop/app.conf", "port=80\n"),
        ],
    )
    .expect("valid");
    let targets: Vec<&str> = service(&stack, "shop_api")
        .task
        .secrets
        .iter()
        .map(|reference| reference.target.as_str())
        .collect();
    assert_eq!(targets, ["pw", "server.key", "shared"]);
}

#[test]
fn bad_secrets_and_configs_are_refused_at_their_place() {
    let text = "services:
  api:
    image: api:1
    secrets:
      - nope
      - source: db_pw
        mode: 0999
        colour: red
      - target: x
    configs: app
secrets:
  db_pw:
    file: missing.txt
    driver: vault
  empty:
    environment: UNSET
  none: {}
  both:
    file: a
    environment: B
  ext:
    external: true
    file: a
  inline:
    content: hi
  bad name:
    external: true
configs:
  app:
    contents: x
";
    assert_eq!(
        errors(text),
        vec![
            "docker-compose.yml:5:9: services.api.secrets[0]: the secret 'nope' is not declared under the file's 'secrets:'",
            "docker-compose.yml:7:15: services.api.secrets[1].mode: '0999' is not a file mode: write it in octal, as 0440",
            "docker-compose.yml:8:9: services.api.secrets[1].colour: unknown key",
            "docker-compose.yml:9:9: services.api.secrets[2]: no source: name the secret, as 'source: KEY'",
            "docker-compose.yml:10:14: services.api.configs: expected a list of configs, found a single value",
            "docker-compose.yml:13:11: secrets.db_pw.file: cannot read /project/missing.txt: no such file",
            "docker-compose.yml:14:5: secrets.db_pw.driver: not supported yet: the data is the one given, as it is",
            "docker-compose.yml:16:18: secrets.empty.environment: the variable UNSET is not set",
            "docker-compose.yml:17:3: secrets.none: no data: give 'file: PATH' or 'environment: VARIABLE', or 'external: true' for an existing secret",
            "docker-compose.yml:20:5: secrets.both.environment: the secret's data is given twice: give one of 'file: PATH' or 'environment: VARIABLE'",
            "docker-compose.yml:23:5: secrets.ext.file: an external secret exists already, with its data: 'file' has no place beside 'external: true'",
            "docker-compose.yml:25:5: secrets.inline.content: a secret's data comes from 'file' or 'environment': 'content' is for configs, as in the Compose Specification",
            "docker-compose.yml:26:3: secrets.bad name: invalid name \"bad name\": use up to 64 letters, digits, '_', '.' and '-', starting and ending with a letter or digit",
            "docker-compose.yml:30:5: configs.app.contents: unknown key",
        ]
    );
    // Two files at one path in the task: what the leader would refuse, at the service's key.
    let twice = "services:\n  api:\n    image: x\n    secrets:\n      - a\n      - source: b\n        target: a\nsecrets:\n  a: {environment: A}\n  b: {environment: A}\n";
    let refused =
        load_with(&[("docker-compose.yml", twice)], &[("A", "1")], &[]).expect_err("refused");
    assert_eq!(
        refused.errors[0].to_string(),
        "docker-compose.yml:5:9: services.api.secrets: two secrets at /run/secrets/a"
    );
}

#[test]
fn broken_yaml_is_refused_with_its_place() {
    let found = errors("services:\n  web:\n    image: [nginx\n  db:\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("docker-compose.yml:4:"), "{found:?}");
}

#[test]
fn one_bad_service_refuses_the_whole_file() {
    let text = "services:\n  good:\n    image: nginx\n  bad:\n    image: nginx\n    deploy:\n      mode: sometimes\n";
    let refused = one(text).expect_err("refused");
    assert_eq!(refused.errors.len(), 1);
    assert!(refused.errors[0]
        .to_string()
        .contains("services.bad.deploy.mode"));
    assert!(refused.to_string().ends_with("nothing was deployed"));
}

#[test]
fn keys_docker_ignores_in_stacks_are_warnings() {
    let text = "services:\n  web:\n    image: nginx\n    build: .\n    container_name: web1\n    depends_on: [db]\n  db:\n    image: postgres\n";
    let stack = one(text).expect("loads");
    let warned: Vec<&str> = stack.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        warned,
        vec![
            "services.web.build",
            "services.web.container_name",
            "services.web.depends_on"
        ]
    );
}

#[test]
fn a_service_needs_an_image_and_declared_networks() {
    let found = errors("services:\n  web:\n    build: .\n    networks: [nowhere]\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("docker-compose.yml:2:3: services.web: no image"),
        "{found:?}"
    );
    assert!(
        found[1].contains("services.web.networks.nowhere: the network 'nowhere' is not declared")
    );
}

#[test]
fn version_two_files_are_refused_and_jobs_read() {
    assert!(errors("version: '2.4'\nservices:\n  a:\n    image: x\n")[0].contains("version '2.4'"));
    let jobs = one("services:\n  a:\n    image: x\n    deploy:\n      mode: replicated-job\n      replicas: 3\n  b:\n    image: x\n    deploy:\n      mode: global-job\n").expect("valid");
    assert_eq!(
        service(&jobs, "shop_a").mode,
        ServiceMode::ReplicatedJob {
            completions: 3,
            max_concurrent: 0
        }
    );
    assert_eq!(service(&jobs, "shop_b").mode, ServiceMode::GlobalJob);
    assert_eq!(
        service(&jobs, "shop_b").task.restart_policy.condition,
        RestartCondition::OnFailure
    );
    let global = errors(
        "services:\n  a:\n    image: x\n    deploy:\n      mode: global\n      replicas: 2\n",
    );
    assert!(global[0].contains("replicas can only be used with mode replicated"));
}

#[test]
fn anchors_and_extension_fields_are_read_as_compose_reads_them() {
    let text = "x-common: &common\n  image: busybox\n  deploy:\n    replicas: 2\nservices:\n  a:\n    <<: *common\n  b:\n    <<: *common\n    image: alpine\n";
    let stack = one(text).expect("loads");
    assert_eq!(service(&stack, "shop_a").task.image, "busybox");
    assert_eq!(
        service(&stack, "shop_a").mode,
        ServiceMode::Replicated { replicas: 2 }
    );
    assert_eq!(service(&stack, "shop_b").task.image, "alpine");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Texts shaped like compose files: keys and values from a compose vocabulary, nested.
    fn compose_like() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            Just("services"),
            Just("web"),
            Just("image"),
            Just("nginx"),
            Just("deploy"),
            Just("replicas"),
            Just("3"),
            Just("-1"),
            Just("ports"),
            Just("\"80:80\""),
            Just("networks"),
            Just("mode"),
            Just("global"),
            Just("resources"),
            Just("limits"),
            Just("memory"),
            Just("lots"),
            Just("${X:?no}"),
            Just("&a"),
            Just("*a"),
            Just("<<"),
            Just("- "),
            Just("["),
            Just("]"),
            Just("{"),
            Just("}"),
            Just(":"),
            Just("'"),
            Just("\""),
            Just("environment"),
            Just("A=1"),
        ];
        let line = (0usize..4, prop::collection::vec(word, 1..4))
            .prop_map(|(indent, words)| format!("{}{}", "  ".repeat(indent), words.join(" ")));
        prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whatever the text, loading ends with a stack or with errors that each carry a
        /// place in the file; it never panics.
        #[test]
        fn any_text_loads_or_is_refused_with_a_place(text in compose_like()) {
            match one(&text) {
                Ok(stack) => prop_assert!(!stack.services.is_empty()),
                Err(refused) => {
                    prop_assert!(!refused.errors.is_empty());
                    for error in &refused.errors {
                        prop_assert!(error.at.line >= 1 && error.at.column >= 1, "{}", error);
                        prop_assert_eq!(error.at.file.as_ref(), "docker-compose.yml");
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(text in "\\PC{0,200}") {
            let _ = one(&text);
        }
    }
}
