//! The examples `essaim help COMMAND` shows under each command. Every line that starts with
//! `$ essaim` runs in the end-to-end test `help_examples_run` (tests/shell.rs), in the order
//! the help lists the commands, on a fresh two-node cluster (hostnames `node-1`, a manager,
//! and `node-2`, a worker), with the process runtime; `swarm leave` runs last. So an example
//! must work as written.

pub const SWARM_INIT: &str = "\
Examples:
  $ essaim swarm init
  Make this node the first manager of a new swarm; the output tells how other nodes join.";

pub const SWARM_JOIN: &str = "\
Examples:
  essaim swarm join --token SWMTKN-1-... 192.168.1.10:4242
  Join the swarm of the manager at 192.168.1.10 with the token `swarm join-token` printed.";

pub const SWARM_JOIN_TOKEN: &str = "\
Examples:
  $ essaim swarm join-token worker
  $ essaim swarm join-token -q manager";

pub const SWARM_LEAVE: &str = "\
Examples:
  $ essaim swarm leave --force
  A manager leaves only with --force (the swarm may lose its quorum); a worker needs none.";

pub const SWARM_INSPECT: &str = "\
Examples:
  $ essaim swarm inspect --format table";

pub const SWARM_UPDATE: &str = "\
Examples:
  $ essaim swarm update --task-history-limit 10 --dispatcher-heartbeat 5s";

pub const NODE_LS: &str = "\
Examples:
  $ essaim node ls
  $ essaim node ls -q";

pub const NODE_INSPECT: &str = "\
Examples:
  $ essaim node inspect --pretty node-1
  $ essaim node inspect node-1 node-2";

pub const NODE_UPDATE: &str = "\
Examples:
  $ essaim node update --label-add zone=a node-1
  $ essaim node update --availability drain node-2
  $ essaim node update --availability active node-2";

pub const NODE_PROMOTE: &str = "\
Examples:
  $ essaim node promote node-2";

pub const NODE_DEMOTE: &str = "\
Examples:
  $ essaim node demote --yes node-2";

pub const NODE_RM: &str = "\
Examples:
  $ essaim node rm --force node-2
  A node that is still up needs --force; its tasks are started elsewhere.";

pub const NODE_PS: &str = "\
Examples:
  $ essaim node ps node-1";

pub const NETWORK_CREATE: &str = "\
Examples:
  $ essaim network create front
  $ essaim network create --subnet 10.0.9.0/24 --label team=data back
  The subnet comes from the swarm's address pool (swarm init --default-addr-pool).";

pub const NETWORK_LS: &str = "\
Examples:
  $ essaim network ls
  $ essaim network ls --format json";

pub const NETWORK_INSPECT: &str = "\
Examples:
  $ essaim network inspect front
  $ essaim network inspect --format table back";

pub const NETWORK_RM: &str = "\
Examples:
  $ essaim network rm back
  Refused while a service uses the network, naming the services.";

pub const SECRET_CREATE: &str = "\
Examples:
  printf '%s' \"$DB_PASSWORD\" | essaim secret create db_pw -
  $ essaim secret create --label team=shop site_name /etc/hostname
  The data is encrypted in the managers' log and reaches only the nodes that run a task using
  it, which keep it in memory. It never changes: to rotate, create a new secret and move the
  services to it (see service update).";

pub const SECRET_LS: &str = "\
Examples:
  $ essaim secret ls
  $ essaim secret ls --format json";

pub const SECRET_INSPECT: &str = "\
Examples:
  $ essaim secret inspect site_name
  $ essaim secret inspect --pretty site_name
  Shows its labels, size and the services that use it, never its data.";

pub const SECRET_RM: &str = "\
Examples:
  $ essaim secret rm site_name
  Refused while a service uses it, naming the services.";

pub const CONFIG_CREATE: &str = "\
Examples:
  $ essaim config create --label app=shop os_release /etc/os-release
  essaim config create nginx_conf ./nginx.conf
  A task sees a config at /NAME unless the service gives a target.";

pub const CONFIG_LS: &str = "\
Examples:
  $ essaim config ls";

pub const CONFIG_INSPECT: &str = "\
Examples:
  $ essaim config inspect --pretty os_release
  The data is in the JSON form as base64, shown as text by --pretty.";

pub const CONFIG_RM: &str = "\
Examples:
  $ essaim config rm os_release
  Refused while a service uses it, naming the services.";

pub const STACK_DEPLOY: &str = "\
Examples:
  essaim stack deploy -c docker-compose.yml shop
  essaim stack deploy -c docker-compose.yml -c prod.yml --prune shop
  essaim stack deploy -c docker-compose.yml --dry-run shop
  Redeploying changes only what the files changed; --dry-run prints that plan and changes
  nothing (--format json for pipelines). Variables come from the environment, then from a .env
  file beside the first file.";

pub const STACK_LS: &str = "\
Examples:
  $ essaim stack ls
  $ essaim stack ls --format json";

pub const STACK_PS: &str = "\
Examples:
  essaim stack ps shop
  essaim stack ps -a --filter desired-state=shutdown shop";

pub const STACK_SERVICES: &str = "\
Examples:
  essaim stack services shop
  essaim stack services -q shop";

pub const STACK_RM: &str = "\
Examples:
  essaim stack rm --yes shop
  Removes the stack's services and the networks it made, and waits until their tasks are
  gone (--detach returns at once).";

pub const SERVICE_CREATE: &str = "\
Examples:
  $ essaim service create --name web --replicas 3 --network front busybox sleep 3600
  $ essaim service create --name api --env LOG=debug --limit-memory 256M --constraint node.role==manager busybox sleep 3600
  $ essaim service create --name nap --mode global --detach busybox sleep 3600
  With Docker, IMAGE is an image; with the process runtime, a program on the node.";

pub const SERVICE_LS: &str = "\
Examples:
  $ essaim service ls
  $ essaim service ls --format json";

pub const SERVICE_PS: &str = "\
Examples:
  $ essaim service ps web
  $ essaim service ps -a --filter desired-state=running web";

pub const SERVICE_INSPECT: &str = "\
Examples:
  $ essaim service inspect --pretty web";

pub const SERVICE_UPDATE: &str = "\
Examples:
  $ essaim service update --env-add LOG=info --limit-memory 512M api
  $ essaim service update --force --detach web
  $ essaim service update --args 'sleep 7200' --update-parallelism 2 --update-monitor 1s web
  $ essaim service update --force --update-pause-after 1 --update-monitor 1s web
  $ essaim service update --continue web
  essaim service update --image app:2 --update-order start-first --update-failure-action rollback web
  An update replaces tasks in batches (--update-parallelism), each watched for --update-monitor;
  --update-pause-after stops at a checkpoint until --continue.
  essaim service update --secret-rm db_pw --secret-add source=db_pw_v2,target=db_pw api
  Rotates a secret: the tasks are replaced, as by any update, and see the new one at the old
  path.";

pub const SERVICE_ROLLBACK: &str = "\
Examples:
  $ essaim service rollback web
  Goes back to the spec before the last update, with the --rollback-* settings.";

pub const SERVICE_SCALE: &str = "\
Examples:
  $ essaim service scale web=5 api=2";

pub const SERVICE_RM: &str = "\
Examples:
  $ essaim service rm nap
  Asks first when run on a terminal; --yes skips the question.";

pub const SERVICE_LOGS: &str = "\
Examples:
  $ essaim service logs --tail 20 web
  essaim service logs -f web";

pub const SERVICE_WAIT: &str = "\
Examples:
  $ essaim service wait --timeout 1m web";

pub const INFO: &str = "\
Examples:
  $ essaim info";

pub const WATCH: &str = "\
Examples:
  essaim watch service ps web
  essaim watch node ls
  Redraws when the cluster changes, until Ctrl-C.";

pub const RUN: &str = "\
Examples:
  $ essaim run -c 'services().len()'
  $ essaim run --format json -c 'cluster()'
  essaim run scripts/health-report.rhai
  essaim run --lock autoscale --timeout 1m scripts/autoscale.rhai --arg service=web
  Exit codes: 0 ok, 1 the script failed, 2 usage, 3 cluster unreachable, 4 timeout, 5 lock
  held by another run, 130 Ctrl-C, N for exit(N).";
