//! Part 7: cluster resilience (issue #20). Three nats-server nodes clustered on
//! loopback, three nats-callout replicas in one queue group (replica `i` logs in to node
//! `i` and learns the others from nats-server's INFO, as a deployment with one URL per
//! replica does), and an oauth2 storm spread over the nodes. In each scenario one fault
//! strikes when a quarter of the clients are in: a replica killed (SIGKILL), a replica
//! drained (SIGTERM), a node killed and restarted, the identity provider stopped.
//!
//! A client that is not admitted tries once more, on the next node; a TCP connect
//! refused (a node that is down) moves on to the node after it without counting as a
//! try, as client libraries walk their server list. A [`Watcher`] on a node no fault
//! touches counts requests answered twice and unanswered.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nats_callout_tests::{Keys, NatsServer, callout_server_config, free_port};

use crate::fixture::{Fixture, http_get, nats_entry};
use crate::procs::Process;
use crate::rawclient::{Client, Credential, Outcome};
use crate::stats::Latencies;
use crate::watch::Watcher;

/// Nodes in the cluster, and callout replicas (one per node).
pub const NODES: usize = 3;
/// How long a replica or the cluster may take to come (back) up.
const UP_WITHIN: Duration = Duration::from_secs(30);
/// How long the killed node stays down before it is restarted: long enough for the
/// replica logged in to it to notice and move to another node, and for the storm's
/// clients of that node to find it gone.
const NODE_DOWN_FOR: Duration = Duration::from_secs(1);

/// Where each replica logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Replica `i` to node `i` only: one queue member per node.
    OneNode,
    /// Every replica to every node (one `nats:` entry each): every node has a member
    /// of every replica.
    EveryNode,
}

impl Topology {
    pub const ALL: [Topology; 2] = [Topology::OneNode, Topology::EveryNode];

    pub fn describe(self) -> &'static str {
        match self {
            Topology::OneNode => "its own node",
            Topology::EveryNode => "every node",
        }
    }
}

/// What strikes mid-storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    KillReplica,
    DrainReplica,
    KillNode,
    IdpDown,
}

impl Fault {
    /// In the order they run; the provider stays down after the last.
    pub const ALL: [Fault; 5] = [
        Fault::None,
        Fault::KillReplica,
        Fault::DrainReplica,
        Fault::KillNode,
        Fault::IdpDown,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::KillReplica => "replica 1 killed (SIGKILL)",
            Fault::DrainReplica => "replica 2 drained (SIGTERM)",
            Fault::KillNode => "node 3 killed, restarted 1 s later",
            Fault::IdpDown => "identity provider stopped",
        }
    }

    /// Whether clients may lose their first try to this fault: the requests a killed
    /// replica held, and those of (or answered through) a killed node. A drain answers
    /// what it holds, and cached keys do not need the provider.
    pub fn may_lose_first_tries(self) -> bool {
        matches!(self, Fault::KillReplica | Fault::KillNode)
    }
}

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct Row {
    pub topology: Topology,
    pub fault: Fault,
    pub clients: usize,
    pub first_try: usize,
    pub on_retry: usize,
    pub not_admitted: usize,
    /// Why first tries failed, and how many.
    pub lost: BTreeMap<String, usize>,
    /// Why retries failed, and on which node: the clients not admitted.
    pub lost_again: BTreeMap<String, usize>,
    /// Storm start to admission, of the clients admitted on their retry.
    pub retried: Latencies,
    /// Storm start to admission, of every admitted client.
    pub all: Latencies,
    pub wall: Duration,
    /// Authorization requests nats-server published during the storm (all nodes).
    pub requests: usize,
    pub answered_twice: usize,
    pub unanswered: usize,
    /// What recovery looked like, e.g. the replicas' `/readyz` after a node restart.
    pub after: String,
}

pub struct Options {
    /// Clients per storm.
    pub clients: usize,
}

/// Run every scenario in each topology, on a fresh cluster with its own identity
/// provider (the last scenario stops it).
pub async fn run(opts: &Options) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for topology in Topology::ALL {
        let mut fx = Fixture::start()?;
        let mut cluster = Cluster::start(&fx, topology).await?;
        for fault in Fault::ALL {
            eprintln!(
                "[bench] part 7: storm of {} clients over {NODES} nodes, replicas on {}, fault: {}…",
                opts.clients,
                topology.describe(),
                fault.describe()
            );
            let row = cluster
                .scenario(&mut fx, fault, opts.clients)
                .await
                .with_context(|| format!("scenario {fault:?} (logs in {})", cluster.dir_text()))?;
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The nodes, the replicas, and the subscriber that watches requests and responses.
struct Cluster {
    topology: Topology,
    nodes: Vec<Option<NatsServer>>,
    /// nats-server's monitoring port per node (`/routez`).
    monitoring: Vec<u16>,
    replicas: Vec<Option<Process>>,
    /// Config file and operations port per replica.
    configs: Vec<PathBuf>,
    ops_ports: Vec<u16>,
    /// Replica starts so far (names their log files).
    starts: usize,
    /// On node 1, which no fault touches.
    watcher: Watcher,
    dir: tempfile::TempDir,
}

/// nats-server's config for node `i`: auth callout as every part has it, clustered with
/// the others.
fn node_config(keys: &Keys, i: usize, routes: &[u16], monitoring: u16) -> String {
    let others: Vec<String> = routes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    format!(
        "server_name: node-{n}\nhttp: 127.0.0.1:{monitoring}\n\
         cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [ {others} ] }}\n{auth}",
        n = i + 1,
        route = routes[i],
        others = others.join(", "),
        auth = callout_server_config(keys, false),
    )
}

impl Cluster {
    async fn start(fx: &Fixture, topology: Topology) -> Result<Self> {
        let keys = Keys::generate();
        let dir = tempfile::tempdir()?;
        keys.write(dir.path())?;
        let ports = (0..NODES)
            .map(|_| free_port())
            .collect::<Result<Vec<_>>>()?;
        let routes = (0..NODES)
            .map(|_| free_port())
            .collect::<Result<Vec<_>>>()?;
        let monitoring = (0..NODES)
            .map(|_| free_port())
            .collect::<Result<Vec<_>>>()?;
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let config = node_config(&keys, i, &routes, monitoring[i]);
            nodes.push(Some(NatsServer::start_on(ports[i], &config)?));
        }
        let mut configs = Vec::new();
        let mut ops_ports = Vec::new();
        for (i, node) in nodes.iter().flatten().enumerate() {
            let port = free_port()?;
            let path = dir.path().join(format!("replica-{}.yaml", i + 1));
            let listen = format!("127.0.0.1:{port}");
            let mut yaml = fx.callout_yaml(&node.url(), true, &listen);
            if topology == Topology::EveryNode {
                let every: String = nodes
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(j, n)| nats_entry(&format!("node-{}", j + 1), &n.url()))
                    .collect();
                yaml = yaml.replacen(&nats_entry("main", &node.url()), &every, 1);
            }
            std::fs::write(&path, yaml)?;
            configs.push(path);
            ops_ports.push(port);
        }
        let url = nodes[0].as_ref().map(NatsServer::url).unwrap_or_default();
        let watcher = Watcher::start(
            &url,
            async_nats::ConnectOptions::with_nkey(keys.callout.seed()?),
        )
        .await?;
        let mut cluster = Self {
            topology,
            nodes,
            monitoring,
            replicas: (0..NODES).map(|_| None).collect(),
            configs,
            ops_ports,
            starts: 0,
            watcher,
            dir,
        };
        cluster.routed().await?;
        for i in 0..NODES {
            cluster.start_replica(i)?;
        }
        cluster.ready().await?;
        Ok(cluster)
    }

    fn dir_text(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Start replica `i` and wait until it serves.
    fn start_replica(&mut self, i: usize) -> Result<()> {
        self.starts += 1;
        let config = self.configs[i].display().to_string();
        let log = self
            .dir
            .path()
            .join(format!("replica-{}.start-{}.log", i + 1, self.starts));
        self.replicas[i] = Some(Process::spawn_self(
            &format!("nats-callout replica {}", i + 1),
            &["serve-callout", "--config", &config],
            &log,
            UP_WITHIN,
        )?);
        Ok(())
    }

    /// Wait until every node has a route to every other (nats-server pools several
    /// connections per peer: count peers, not routes).
    async fn routed(&self) -> Result<Duration> {
        let peers = |port: u16| -> usize {
            let Some(v) = http_get(port, "/routez")
                .ok()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            else {
                return 0;
            };
            let routes = v["routes"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ids: std::collections::HashSet<&str> = routes
                .iter()
                .filter_map(|r| r["remote_id"].as_str())
                .collect();
            ids.len()
        };
        until("every node routes to the others", || {
            self.monitoring.iter().all(|&p| peers(p) == NODES - 1)
        })
        .await
    }

    /// Wait until every replica's `/readyz` says ready; how long that took.
    async fn ready(&self) -> Result<Duration> {
        until("every replica's /readyz says ready", || {
            self.ops_ports
                .iter()
                .all(|&p| http_get(p, "/readyz").is_ok_and(|b| b.starts_with("ready")))
        })
        .await
    }

    /// Clients of node `i` for each token.
    fn clients(&self, tokens: &[String]) -> Result<Vec<Vec<Arc<Client>>>> {
        self.nodes
            .iter()
            .map(|n| {
                let port = n.as_ref().context("a node is down")?.port;
                Ok(tokens
                    .iter()
                    .map(|t| Arc::new(Client::new(port, Credential::Token(t.clone()))))
                    .collect())
            })
            .collect()
    }

    async fn scenario(&mut self, fx: &mut Fixture, fault: Fault, n: usize) -> Result<Row> {
        // Fresh tokens: each replica meets them for the first time in the storm.
        let tokens = fx.storm_tokens().await?;
        let clients = Arc::new(self.clients(&tokens)?);
        // Let earlier sockets close, and the watcher see the last scenario's stragglers.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.watcher.take()?;

        let admitted = Arc::new(AtomicUsize::new(0));
        let storm = tokio::spawn(storm(clients, n, admitted.clone()));
        while admitted.load(Ordering::Relaxed) < n / 4 && !storm.is_finished() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut after = self.strike(fx, fault).await?;
        let (ends, wall) = storm.await.context("the storm panicked")?;
        after.push_str(&self.recover(fault).await?);

        // The watcher's view: give routed responses a moment to arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = self.watcher.take()?;
        let mut row = Row {
            topology: self.topology,
            fault,
            clients: n,
            first_try: 0,
            on_retry: 0,
            not_admitted: 0,
            lost: BTreeMap::new(),
            lost_again: BTreeMap::new(),
            retried: Latencies::default(),
            all: Latencies::default(),
            wall,
            requests: seen.requests,
            answered_twice: seen.answered_twice,
            unanswered: seen.unanswered,
            after,
        };
        for end in ends {
            let mut lost = end.lost.into_iter();
            if let Some((_, reason)) = lost.next() {
                *row.lost.entry(reason).or_default() += 1;
            }
            if let Some((node, reason)) = lost.next() {
                *row.lost_again
                    .entry(format!("{reason} on node {node}"))
                    .or_default() += 1;
            }
            match (end.admitted_after, end.tries) {
                (Some(t), 1) => {
                    row.first_try += 1;
                    row.all.push(t);
                }
                (Some(t), _) => {
                    row.on_retry += 1;
                    row.retried.push(t);
                    row.all.push(t);
                }
                (None, _) => row.not_admitted += 1,
            }
        }
        Ok(row)
    }

    /// Inject `fault`; what it did, for the report.
    async fn strike(&mut self, fx: &mut Fixture, fault: Fault) -> Result<String> {
        Ok(match fault {
            Fault::None => String::new(),
            Fault::KillReplica => {
                let replica = self.replicas[0].as_mut().context("replica 1 is down")?;
                replica.signal(libc::SIGKILL)?;
                replica.exited(UP_WITHIN).await?;
                String::new()
            }
            Fault::DrainReplica => {
                let replica = self.replicas[1].as_mut().context("replica 2 is down")?;
                let t = Instant::now();
                replica.signal(libc::SIGTERM)?;
                let status = replica.exited(UP_WITHIN).await?;
                if !status.success() {
                    bail!("replica 2 drained but exited with {status}");
                }
                format!(
                    "replica 2 drained and exited in {:.2} s; ",
                    t.elapsed().as_secs_f64()
                )
            }
            Fault::KillNode => {
                let mut node = self.nodes[2].take().context("node 3 is down")?;
                node.stop()?;
                tokio::time::sleep(NODE_DOWN_FOR).await;
                // Restarting waits for the port: off this thread, which drives the storm.
                let node = tokio::task::spawn_blocking(move || node.restart().map(|()| node))
                    .await
                    .context("restart panicked")??;
                self.nodes[2] = Some(node);
                String::new()
            }
            Fault::IdpDown => {
                fx.oidc.stop();
                String::new()
            }
        })
    }

    /// Undo `fault` once the storm is over (the provider stays down: it is the last),
    /// and wait until the cluster is whole again; what recovery looked like.
    async fn recover(&mut self, fault: Fault) -> Result<String> {
        match fault {
            Fault::KillReplica => self.start_replica(0)?,
            Fault::DrainReplica => self.start_replica(1)?,
            _ => {}
        }
        self.routed().await?;
        let ready = self.ready().await?;
        Ok(match fault {
            Fault::KillNode => format!(
                "routes re-formed; /readyz: {NODES} of {NODES} replicas ready {:.2} s after the storm",
                ready.as_secs_f64()
            ),
            Fault::KillReplica => "replica 1 restarted".into(),
            Fault::DrainReplica => "restarted".into(),
            Fault::None | Fault::IdpDown => String::new(),
        })
    }
}

/// How one client's storm ended.
struct End {
    tries: usize,
    /// Why each try that did not admit it failed, and on which node (1-based).
    lost: Vec<(usize, String)>,
    /// Storm start to admission.
    admitted_after: Option<Duration>,
}

/// `n` clients at once, client `i` on node `i % NODES` with token `(i / NODES) % tokens`,
/// each trying at most twice; `admitted` counts those in.
async fn storm(
    clients: Arc<Vec<Vec<Arc<Client>>>>,
    n: usize,
    admitted: Arc<AtomicUsize>,
) -> (Vec<End>, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (clients, admitted) = (clients.clone(), admitted.clone());
            tokio::spawn(async move {
                let tokens = clients[0].len().max(1);
                let (node, token) = (i % NODES, (i / NODES) % tokens);
                let mut end = End {
                    tries: 0,
                    lost: Vec::new(),
                    admitted_after: None,
                };
                // Walk the nodes from this client's own, at most two tries.
                for k in 0..NODES {
                    let on = (node + k) % NODES;
                    let client = &clients[on][token];
                    let attempt = client.connect_once().await;
                    match attempt.outcome {
                        Outcome::Admitted => {
                            end.tries += 1;
                            end.admitted_after = Some(attempt.done_at - started);
                            admitted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        // Nobody listens: the node is down; not a try.
                        Outcome::Failed(e) if e == "ConnectionRefused" => continue,
                        Outcome::Refused(e) | Outcome::Failed(e) => {
                            end.tries += 1;
                            end.lost.push((on + 1, e));
                            if end.tries == 2 {
                                break;
                            }
                        }
                    }
                }
                end
            })
        })
        .collect();
    let mut ends = Vec::with_capacity(n);
    for t in tasks {
        ends.push(t.await.unwrap_or(End {
            tries: 0,
            lost: vec![(0, "task panicked".into())],
            admitted_after: None,
        }));
    }
    (ends, started.elapsed())
}

/// Wait until `ok` holds, at most [`UP_WITHIN`]; how long that took.
async fn until(what: &str, mut ok: impl FnMut() -> bool) -> Result<Duration> {
    let started = Instant::now();
    while !ok() {
        if started.elapsed() > UP_WITHIN {
            bail!("not within {UP_WITHIN:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}
