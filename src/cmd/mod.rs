//! Command line: subcommands and their flags; each hands off to the module that does the work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::controller::install::InstallService;
use crate::controller::key_rotation::KeyRotationConfig;
use crate::controller::{self, RunConfig};
use crate::core::index::NamespaceHosts;
use crate::devissuer::{self, IssuerState};
use crate::fetch::{AddressPolicy, AllowList};
use crate::identity::IdentityConfig;
use crate::keys::KeyConfig;
use crate::keys::signing::{AssertionConfig, AssertionKeys};
use crate::serve::decision_log::{DecisionLogConfig, Sink, SubjectField, SubjectKey};
use crate::serve::listener::{self, ConnectionLimits, ListenerLimits};
use crate::serve::{ServiceConfig, Services};
use crate::source::class::{DEFAULT_CLASS, InstallClass};
use serve::ServeConfig;
use signals::{Signal, Signals};

pub mod check;
pub mod demo;
pub mod flag_values;
pub mod migrate;
pub mod serve;
pub mod signals;

#[derive(Parser, Debug)]
#[command(
    name = "accessgate",
    version,
    about = "Validates Cloudflare Access JWTs for ingress-nginx auth-url"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "ACCESSGATE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter: a level (off, error, warn, info, debug, trace) or comma-separated
    /// `target=level` directives, e.g. `info` or `warn,accessgate=debug`.
    #[arg(long, global = true, default_value = "info", env = "ACCESSGATE_LOG", value_parser = flag_values::log_filter)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Json,
    Text,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the auth endpoint from a directory of AccessPolicy manifests (no cluster).
    Serve {
        /// Directory of AccessPolicy YAML/JSON files; reloaded on change.
        #[arg(long)]
        policies: PathBuf,
        /// Refuse JWKS and get-identity fetches to loopback, link-local, private and other
        /// non-public addresses, as `run` always does (implied by --allow-fetch-cidr).
        #[arg(long)]
        fetch_guard: bool,
        #[command(flatten)]
        service: ServiceFlags,
    },
    /// In-cluster (or KUBECONFIG): watch AccessPolicies, serve auth; the elected replica writes status and Events.
    Run {
        /// Namespaces to watch (comma-separated); all when empty.
        #[arg(long, value_delimiter = ',', env = "ACCESSGATE_NAMESPACES")]
        namespaces: Vec<String>,
        /// The namespace accessgate runs in (Lease and Service live there).
        #[arg(long, env = "POD_NAMESPACE", default_value = "accessgate-system")]
        pod_namespace: String,
        /// This replica's name, the leader-election identity.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Service that fronts the auth port: the `authUrl` status field names it, and the
        /// Ingress audit counts only auth-urls that reach it.
        #[arg(long, default_value = "accessgate")]
        service_name: String,
        /// Port of that Service (omitted from the URL when 80).
        #[arg(long, default_value_t = 80)]
        service_port: u16,
        /// The cluster's DNS domain (the kubelet's `--cluster-domain`), for `authUrl`
        /// (`http://<service>.<namespace>.svc.<domain>`) and for telling which auth-urls
        /// reach this install.
        #[arg(long, default_value = "cluster.local", value_parser = flag_values::cluster_domain)]
        cluster_domain: String,
        /// Lease used for leader election.
        #[arg(long, default_value = "accessgate-leader")]
        lease_name: String,
        /// ConfigMap (beside the Lease) where the elected replica records which namespace
        /// holds which host; every replica routes hosts by it.
        #[arg(long, default_value = "accessgate-hosts")]
        host_ledger: String,
        /// How long a leader holds the Lease without renewing it.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        lease_duration: Duration,
        /// The shortest time between two status writes of one policy (status is written only
        /// when it changes; this bounds a policy flapping between two specs).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        status_interval: Duration,
        /// The Secret (in this namespace) behind `--assertion-keys`, which the elected replica
        /// rotates every `--assertion-key-rotation`: next → current → previous, a new next
        /// drawn. Needs get and update on that Secret (the chart grants exactly that).
        #[arg(long, value_name = "NAME", requires = "assertion_key_rotation")]
        assertion_keys_secret: Option<String>,
        /// How long each key stays in each slot (at least 10m: the kubelet's Secret sync plus
        /// the longest assertion lifetime, with room).
        #[arg(long, value_parser = flag_values::key_rotation_step, requires = "assertion_keys_secret")]
        assertion_key_rotation: Option<Duration>,
        #[command(flatten)]
        service: ServiceFlags,
    },
    /// Run a local Cloudflare-Access-shaped issuer (certs endpoint, token minting, key rotation).
    DevIssuer {
        #[arg(long, default_value = "127.0.0.1:9400")]
        listen: SocketAddr,
    },
    /// Start the dev issuer, an example policy and the auth service, and print curl lines to try.
    Demo {
        #[arg(long, default_value = "127.0.0.1:9400")]
        issuer_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9401")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9402")]
        admin_listen: SocketAddr,
    },
    /// Print the AccessPolicy CustomResourceDefinition.
    Crd,
    /// Check that ingress-nginx auth survives a move to Traefik, Gateway API or Envoy Gateway,
    /// and write the manifests that keep it. Exit 0: nothing lost; 3: auth would be lost.
    Migrate {
        /// Ingress YAML files or directories; none: the cluster's Ingresses (read-only).
        #[arg(long)]
        from: Vec<PathBuf>,
        /// The controller ConfigMap's global-auth-url (no Ingress shows it).
        #[arg(long, value_name = "URL")]
        global_auth_url: Option<String>,
        /// The Gateway the written HTTPRoutes attach to.
        #[arg(long, value_name = "NAMESPACE/NAME", default_value = "gateway-system/public", value_parser = flag_values::namespaced_name)]
        gateway: (String, String),
        /// Write the Gateway API and Envoy Gateway manifests under this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// A JSON report on stdout (for a pipeline) instead of text.
        #[arg(long)]
        json: bool,
        /// A target whose lost auth fails the run (repeatable); default: the three real ones.
        #[arg(long = "target", value_enum)]
        targets: Vec<migrate::analyze::Target>,
        /// This install's Service, namespace, port and cluster domain: which auth-urls are
        /// accessgate's.
        #[arg(long, default_value = "accessgate")]
        service_name: String,
        #[arg(long, default_value = "accessgate-system")]
        service_namespace: String,
        #[arg(long, default_value_t = 80)]
        service_port: u16,
        #[arg(long, default_value = "cluster.local", value_parser = flag_values::cluster_domain)]
        cluster_domain: String,
    },
    /// Explain the decision for one token, step by step; exits 0 on allow, 1 on deny.
    Check {
        /// Policy file (AccessPolicy YAML); with --name, picks that policy from it.
        #[arg(long, conflicts_with = "namespace")]
        policy: Option<PathBuf>,
        /// Namespace of the policy in the cluster (with --name; uses KUBECONFIG).
        #[arg(long, requires = "name")]
        namespace: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// The JWT to check (as Cloudflare would send it).
        #[arg(long)]
        token: String,
        /// Original URL, to show whether the bare /auth endpoint would route to this policy.
        #[arg(long)]
        url: Option<String>,
        /// Refuse the key fetch to non-public addresses, as `run` does (implied by
        /// --allow-fetch-cidr).
        #[arg(long)]
        fetch_guard: bool,
        /// Do not fetch the identity of a policy with `spec.identity` from get-identity:
        /// decide on the token alone (the server never does; the output says so).
        #[arg(long)]
        no_identity: bool,
        #[command(flatten)]
        fetch: FetchFlags,
    },
}

/// What `serve` and `run` share: the listeners and their limits, fetches, keys, host
/// routing, shutdown and the install's class.
#[derive(clap::Args, Debug, Clone)]
struct ServiceFlags {
    /// Auth listener (what the proxy calls).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long, default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    #[command(flatten)]
    fetch: FetchFlags,
    #[command(flatten)]
    routing: RoutingFlags,
    #[command(flatten)]
    keys: VerifyFlags,
    #[command(flatten)]
    lifecycle: LifecycleFlags,
    #[command(flatten)]
    listener: ListenerFlags,
    #[command(flatten)]
    class: ClassFlags,
    #[command(flatten)]
    decision_log: DecisionLogFlags,
    #[command(flatten)]
    assertion: AssertionFlags,
}

/// The upstream assertion's signing keys (`keys::signing`; docs/security.md, "The upstream
/// assertion").
#[derive(clap::Args, Debug, Clone)]
struct AssertionFlags {
    /// Directory with the signing keys: `current.pem` signs, `next.pem` and `previous.pem`
    /// (optional) are published too; P-256, SEC1 or PKCS#8 PEM. Reloaded when they change.
    /// Without it `serve` draws a key at start (apps must refetch the JWKS after a restart)
    /// and `run` signs nothing: replicas must share one key, so policies asking for an
    /// assertion are refused (`assertion_unavailable`).
    #[arg(long, env = "ACCESSGATE_ASSERTION_KEYS", value_name = "DIR")]
    assertion_keys: Option<PathBuf>,
    /// The assertions' `iss`. Default `http://<--listen>`.
    #[arg(long, value_name = "URL")]
    assertion_issuer: Option<String>,
}

impl ServiceFlags {
    /// What the flags start, with fetches guarded when `guard` (or any CIDR is allowed), and
    /// the shutdown timing. `draw_key`: without a key directory, draw a signing key (one
    /// process: `serve`).
    fn config(
        self,
        guard: bool,
        draw_key: bool,
    ) -> anyhow::Result<(ServiceConfig, LifecycleFlags)> {
        let addresses = self.fetch.policy(guard);
        log_address_policy(&addresses);
        let config = ServiceConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            listeners: self.listener.limits(),
            services: Services {
                decision_log: self.decision_log.config()?,
                assertion: AssertionConfig {
                    issuer: self
                        .assertion
                        .assertion_issuer
                        .unwrap_or_else(|| format!("http://{}", self.listen)),
                    keys: match (self.assertion.assertion_keys, draw_key) {
                        (Some(dir), _) => AssertionKeys::Dir(dir),
                        (None, true) => AssertionKeys::Drawn,
                        (None, false) => AssertionKeys::None,
                    },
                },
                ..self.keys.services(&addresses)
            },
            host_claims: self.routing.rules()?,
            host_release_after: self.routing.host_release_after,
            class: self.class.install_class(),
        };
        Ok((config, self.lifecycle))
    }
}

/// The decision log (`serve::decision_log`; docs/operating.md, "The decision log").
#[derive(clap::Args, Debug, Clone)]
struct DecisionLogFlags {
    /// One JSON line per decision, for auditors: `off`, `stdout`, `stderr`, or a file to
    /// append to. Never holds a token; the subject is a keyed hash.
    #[arg(
        long,
        env = "ACCESSGATE_DECISION_LOG",
        default_value = "off",
        value_name = "SINK"
    )]
    decision_log: String,
    /// Deny lines per second at most, per replica (0: none); more are dropped and counted.
    #[arg(long, default_value_t = 100)]
    decision_log_denies_per_second: u32,
    /// Allow lines per second at most, per replica (0: none): lower than denies by default,
    /// as who was refused is asked first and allows are most of the traffic.
    #[arg(long, default_value_t = 10)]
    decision_log_allows_per_second: u32,
    /// Also write the token's `email` in clear (by default only the keyed subject hash).
    #[arg(long)]
    decision_log_email: bool,
    /// File with the secret for subject hashes (at least 16 bytes; the chart mounts it from
    /// a Secret). Without it each process draws its own: hashes then correlate only within
    /// one replica's lifetime.
    #[arg(long, env = "ACCESSGATE_DECISION_LOG_KEY_FILE", value_name = "PATH")]
    decision_log_key_file: Option<PathBuf>,
    /// Lines waiting for the sink at most (a line is about 300 bytes); when the sink is
    /// slower, more are dropped and counted, never waited for.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    decision_log_queue_lines: u32,
}

impl DecisionLogFlags {
    fn config(&self) -> anyhow::Result<Option<DecisionLogConfig>> {
        let sink = match self.decision_log.as_str() {
            "off" | "" => return Ok(None),
            "stdout" => Sink::Stdout,
            "stderr" => Sink::Stderr,
            path => Sink::File(PathBuf::from(path)),
        };
        let key = match &self.decision_log_key_file {
            Some(path) => {
                let secret = std::fs::read(path)
                    .with_context(|| format!("--decision-log-key-file {}", path.display()))?;
                SubjectKey::new(secret.trim_ascii())
                    .with_context(|| format!("--decision-log-key-file {}", path.display()))?
            }
            None => {
                tracing::warn!(
                    "decision log without --decision-log-key-file: subject hashes are keyed per process and do not correlate across replicas or restarts"
                );
                SubjectKey::ephemeral()
            }
        };
        Ok(Some(DecisionLogConfig {
            sink,
            allows_per_second: self.decision_log_allows_per_second,
            denies_per_second: self.decision_log_denies_per_second,
            subject: if self.decision_log_email {
                SubjectField::HashedAndEmail
            } else {
                SubjectField::Hashed
            },
            key,
            queue_lines: self.decision_log_queue_lines as usize,
        }))
    }
}

#[derive(clap::Args, Debug, Clone)]
struct FetchFlags {
    /// With the fetch guard on (always in `run`): a CIDR (or address) that JWKS and
    /// get-identity fetches may reach although it is loopback, link-local, private or otherwise
    /// non-public, e.g. an in-cluster issuer's range. Repeatable or comma-separated; none by
    /// default.
    #[arg(long = "allow-fetch-cidr", value_name = "CIDR", value_delimiter = ',', value_parser = crate::fetch::parse_net)]
    allow_fetch_cidr: Vec<ipnet::IpNet>,
}

impl FetchFlags {
    /// The address policy: guarded when `guard` or when any CIDR is allowed.
    fn policy(&self, guard: bool) -> AddressPolicy {
        if guard || !self.allow_fetch_cidr.is_empty() {
            AddressPolicy::Guarded(AllowList::new(self.allow_fetch_cidr.iter().copied()))
        } else {
            AddressPolicy::AllowAll
        }
    }
}

/// Which policies this install serves, when several share a cluster or a directory (see
/// `source::class`).
#[derive(clap::Args, Debug, Clone)]
struct ClassFlags {
    /// This install's class: it serves, and writes status and Events for, only the
    /// AccessPolicies whose `spec.className` is this class (and those without one, see
    /// --claim-unclassed); to every other install they are unknown. Give each install in a
    /// cluster its own class.
    #[arg(long, env = "ACCESSGATE_CLASS", default_value = DEFAULT_CLASS, value_parser = flag_values::class_name)]
    class: String,
    /// Whether policies without `spec.className` are this install's too. Default: true when
    /// --class is the default class `accessgate`, false otherwise. Let one install per
    /// cluster claim them.
    #[arg(long, env = "ACCESSGATE_CLAIM_UNCLASSED", value_name = "BOOL")]
    claim_unclassed: Option<bool>,
}

impl ClassFlags {
    fn install_class(&self) -> InstallClass {
        InstallClass::new(self.class.clone(), self.claim_unclassed)
    }
}

#[derive(clap::Args, Debug, Clone)]
struct LifecycleFlags {
    /// After SIGTERM: how long the auth listener keeps answering while `/readyz` is 503, so
    /// endpoints and proxies stop sending before it stops accepting.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_period: Duration,
    /// Then: how long requests in flight may take to be answered. Connections with no
    /// request in flight (idle, or still sending a request head) are closed at once.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

/// Connection limits of the auth and admin listeners (see `serve::listener`): what keeps a
/// neighbour opening connections from exhausting a replica's memory or holding its shutdown.
#[derive(clap::Args, Debug, Clone)]
struct ListenerFlags {
    /// A connection must send a complete request head within this long: from accept for its
    /// first request, from the first byte of each later one. Both listeners.
    #[arg(long, default_value = "10s", value_parser = connection_timeout)]
    request_head_timeout: Duration,
    /// A connection with no request in flight is closed this long after its last response.
    /// Keep it longer than the proxy's own upstream keep-alive timeout (nginx 60s, Traefik
    /// 90s), so the proxy closes idle connections first. Both listeners.
    #[arg(long, default_value = "120s", value_parser = connection_timeout)]
    idle_timeout: Duration,
    /// Open connections on the auth listener at most; more are reset at once, not queued.
    /// Memory: each may buffer up to --max-request-head-kib while sending its head.
    #[arg(long, default_value_t = listener::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Open connections on the admin listener (probes, metrics) at most.
    #[arg(long, default_value_t = listener::DEFAULT_ADMIN_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    admin_max_connections: u32,
    /// Largest request head on the auth listener, in KiB (request line and headers; the
    /// header list of an HTTP/2 request): also what one connection buffers at most while
    /// reading it. The default fits ingress-nginx's `large-client-header-buffers 4 16k`.
    #[arg(long, default_value_t = (listener::DEFAULT_MAX_HEAD_BYTES / 1024) as u32, value_parser = clap::value_parser!(u32).range(8..=4096))]
    max_request_head_kib: u32,
}

impl ListenerFlags {
    fn limits(&self) -> ListenerLimits {
        let auth = ConnectionLimits {
            head_timeout: self.request_head_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_head_bytes: self.max_request_head_kib as usize * 1024,
        };
        let admin = ConnectionLimits {
            max_connections: self.admin_max_connections,
            max_head_bytes: listener::ADMIN_MAX_HEAD_BYTES,
            ..auth
        };
        ListenerLimits { auth, admin }
    }
}

/// A connection timeout: a duration of at least a second (0 would close every connection).
fn connection_timeout(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(d)
}

#[derive(clap::Args, Debug, Clone)]
struct RoutingFlags {
    /// Which hosts a namespace may claim for host routing: `NAMESPACE=PATTERN[,PATTERN...]`,
    /// a pattern being a host or `*.suffix`. Repeatable. Once given, namespaces not listed
    /// claim no host (their policies still work by name); without it any namespace may
    /// claim any host not already owned.
    #[arg(long = "host-claims", value_name = "NAMESPACE=PATTERNS")]
    host_claims: Vec<String>,
    /// How long a namespace keeps a host (for host routing) after it stopped claiming it:
    /// an owner's delete-and-recreate, restore or Invalid spell never hands its host to a
    /// waiting claim from another namespace within this time.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    host_release_after: Duration,
}

impl RoutingFlags {
    fn rules(&self) -> anyhow::Result<Option<Arc<NamespaceHosts>>> {
        if self.host_claims.is_empty() {
            return Ok(None);
        }
        let rules = NamespaceHosts::parse(&self.host_claims)
            .map_err(|e| anyhow::anyhow!("--host-claims {e}"))?;
        Ok(Some(Arc::new(rules)))
    }
}

#[derive(clap::Args, Debug, Clone)]
struct VerifyFlags {
    /// Background refresh interval of each JWKS (at least 10s).
    #[arg(long, default_value = "5m", value_parser = flag_values::fetch_interval)]
    jwks_refresh: Duration,
    /// Minimum time between refetches triggered by an unknown `kid`, per JWKS URL (at least
    /// 10s).
    #[arg(long, default_value = "10s", value_parser = flag_values::fetch_interval)]
    jwks_refetch_min_interval: Duration,
    /// How long the last good key set is used while fetches fail.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    jwks_max_stale: Duration,
    /// Timeout of one JWKS fetch.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    jwks_timeout: Duration,
    /// Retry interval after a failed fetch (at least 10s).
    #[arg(long, default_value = "15s", value_parser = flag_values::fetch_interval)]
    jwks_retry: Duration,
    /// Memory for remembering verified signatures (MiB); 0 verifies every request.
    #[arg(long, default_value_t = 32)]
    token_cache_mib: u64,
    /// Memory for cached get-identity answers (MiB), weighed per identity.
    #[arg(long, default_value_t = 16)]
    identity_cache_mib: u64,
}

impl VerifyFlags {
    fn services(&self, addresses: &AddressPolicy) -> Services {
        Services {
            keys: self.key_config(addresses),
            token_cache_bytes: self.token_cache_mib * 1024 * 1024,
            enrichment: self.identity_config(addresses),
            decision_log: None,
            assertion: AssertionConfig::default(),
        }
    }

    fn key_config(&self, addresses: &AddressPolicy) -> KeyConfig {
        KeyConfig {
            refresh_interval: self.jwks_refresh,
            unknown_kid_min_interval: self.jwks_refetch_min_interval,
            max_stale: self.jwks_max_stale,
            fetch_timeout: self.jwks_timeout,
            retry_interval: self.jwks_retry,
            addresses: addresses.clone(),
            ..KeyConfig::default()
        }
    }

    fn identity_config(&self, addresses: &AddressPolicy) -> IdentityConfig {
        IdentityConfig {
            cache_bytes: self.identity_cache_mib * 1024 * 1024,
            addresses: addresses.clone(),
            ..IdentityConfig::default()
        }
    }
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Crd = cli.command {
        print!("{}", crate::api::crd_yaml());
        return Ok(());
    }
    // `check` talks to a person: keep its output free of log lines unless asked.
    let log = if matches!(cli.command, Command::Check { .. }) && cli.log == "info" {
        "warn"
    } else {
        &cli.log
    };
    init_logging(cli.log_format, log)?;
    // Fail at start-up, not at the first token, if the JWT crypto backend is missing.
    jsonwebtoken::crypto::CryptoProvider::try_get_default()
        .context("jsonwebtoken has no crypto provider; build with the aws_lc_rs feature")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            policies,
            fetch_guard,
            service,
        } => {
            // File mode: the operator writes the policies, so fetches may go anywhere unless
            // the guard is asked for.
            let (service, lifecycle) = service.config(fetch_guard, true)?;
            // From before the listeners accept: a Ctrl-C must never meet the default action.
            let mut signals = Signals::install()?;
            let running = serve::start(ServeConfig { policies, service }).await?;
            let code = signals
                .stop_with(|signal| async move {
                    // Ctrl-C: nothing to hand over, so nothing to wait for.
                    if signal == Signal::Terminate {
                        serve::drain_and_stop_running(
                            running,
                            lifecycle.drain_period,
                            lifecycle.shutdown_grace,
                        )
                        .await;
                    }
                })
                .await;
            exit_unless_zero(code);
        }
        Command::Run {
            namespaces,
            pod_namespace,
            identity,
            service_name,
            service_port,
            cluster_domain,
            lease_name,
            host_ledger,
            lease_duration,
            status_interval,
            assertion_keys_secret,
            assertion_key_rotation,
            service,
        } => {
            // Cluster mode: tenants write the policies, so the guard is always on.
            let (service, lifecycle) = service.config(true, false)?;
            let install = InstallService {
                name: service_name,
                namespace: pod_namespace.clone(),
                port: service_port,
                cluster_domain,
            };
            let identity = identity.unwrap_or_else(default_identity);
            let mut signals = Signals::install()?;
            let key_rotation =
                assertion_keys_secret
                    .zip(assertion_key_rotation)
                    .map(|(secret, every)| KeyRotationConfig {
                        namespace: pod_namespace.clone(),
                        secret,
                        every,
                    });
            let starting = controller::start(RunConfig {
                service,
                namespaces: namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
                host_ledger,
                auth_base_url: install.base_url(),
                install,
                lease_name,
                lease_namespace: pod_namespace,
                lease_duration,
                identity,
                status_interval,
                key_rotation,
            });
            // Start-up waits for the API server; a stop signal meanwhile ends it (nothing
            // was served, nothing to drain).
            let running = tokio::select! {
                running = starting => running?,
                signal = signals.next() => {
                    tracing::info!(signal = signal.name(), "stopping before start-up completed");
                    exit_unless_zero(match signal {
                        Signal::Terminate => 0,
                        Signal::Interrupt => signal.exit_code(),
                    });
                    return Ok(());
                }
            };
            let code = signals
                .stop_with(|signal| async move {
                    match signal {
                        Signal::Terminate => {
                            running
                                .shutdown(lifecycle.drain_period, lifecycle.shutdown_grace)
                                .await
                        }
                        Signal::Interrupt => running.interrupt(LEASE_RELEASE_ON_INTERRUPT).await,
                    }
                })
                .await;
            exit_unless_zero(code);
        }
        Command::DevIssuer { listen } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listen on {listen}"))?;
            let addr = listener.local_addr()?;
            let state = IssuerState::new(devissuer::issuer_url(addr))?;
            tracing::warn!(issuer = %devissuer::issuer_url(addr), "dev issuer running: it signs anything it is asked to; loopback only");
            println!(
                "dev issuer on http://{addr} (certs at /cdn-cgi/access/certs; POST /mint, /sign, /rotate, /certs-mode)"
            );
            let mut signals = Signals::install()?;
            tokio::select! {
                _ = crate::serve::serve_http(listener, devissuer::router(state)) => {}
                _ = signals.next() => {}
            }
        }
        Command::Demo {
            issuer_listen,
            listen,
            admin_listen,
        } => {
            let mut signals = Signals::install()?;
            let demo = demo::start(demo::DemoConfig {
                issuer_listen,
                listen,
                admin_listen,
            })
            .await?;
            // Dropping the demo removes its policy directory, before any exit.
            let code = signals.stop_with(|_| async move { drop(demo) }).await;
            exit_unless_zero(code);
        }
        Command::Migrate {
            from,
            global_auth_url,
            gateway,
            out,
            json,
            targets,
            service_name,
            service_namespace,
            service_port,
            cluster_domain,
        } => {
            let args = migrate::MigrateArgs {
                from,
                global_auth_url,
                install: InstallService {
                    name: service_name,
                    namespace: service_namespace,
                    port: service_port,
                    cluster_domain,
                },
                gateway,
                out,
                json,
                targets: if targets.is_empty() {
                    vec![
                        migrate::analyze::Target::TraefikProvider,
                        migrate::analyze::Target::GatewayApi,
                        migrate::analyze::Target::EnvoyGateway,
                    ]
                } else {
                    targets
                },
            };
            exit_unless_zero(migrate::run(&args).await?);
        }
        Command::Check {
            policy,
            namespace,
            name,
            token,
            url,
            fetch_guard,
            no_identity,
            fetch,
        } => {
            let target = match (policy, namespace, name) {
                (Some(path), _, name) => check::PolicyRef::File { path, name },
                (None, Some(namespace), Some(name)) => {
                    check::PolicyRef::Cluster { namespace, name }
                }
                _ => anyhow::bail!("give --policy FILE, or --namespace NS --name NAME"),
            };
            let addresses = fetch.policy(fetch_guard);
            let fetching = check::Fetching {
                identity: (!no_identity).then(|| IdentityConfig {
                    addresses: addresses.clone(),
                    ..IdentityConfig::default()
                }),
                keys: KeyConfig {
                    addresses,
                    ..KeyConfig::default()
                },
            };
            let allowed = check::run(target, &token, url.as_deref(), &fetching).await?;
            std::process::exit(if allowed { 0 } else { 1 });
        }
        Command::Crd => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}

fn log_address_policy(addresses: &AddressPolicy) {
    match addresses {
        AddressPolicy::AllowAll => {
            tracing::info!("fetch guard off: JWKS and get-identity fetches may reach any address")
        }
        AddressPolicy::Guarded(allow) => tracing::info!(
            allowed = ?allow.nets().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "fetch guard on: JWKS and get-identity fetches refuse non-public addresses outside the allowed CIDRs"
        ),
    }
}

/// Outside a pod: the host name and process id, unique enough for a Lease holder.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{}-{}",
        if host.is_empty() { "accessgate" } else { &host },
        std::process::id()
    )
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// On Ctrl-C, `run` waits this long at most for the Lease to be released; past it the
/// Lease expires as after a crash (`--lease-duration`).
const LEASE_RELEASE_ON_INTERRUPT: Duration = Duration::from_secs(2);

/// Ends the process at once with `code`, unless it is 0: then `main` returns as usual.
fn exit_unless_zero(code: i32) {
    if code != 0 {
        std::process::exit(code);
    }
}

#[cfg(test)]
mod listener_flags_tests {
    use super::*;

    /// `demo` and the library use `ListenerLimits::default()`; `serve` and `run` the flags.
    #[test]
    fn listener_flag_defaults_are_the_library_defaults() {
        for args in [
            &["accessgate", "serve", "--policies", "/nonexistent"][..],
            &["accessgate", "run"][..],
        ] {
            let listener = match Cli::try_parse_from(args).unwrap().command {
                Command::Serve { service, .. } | Command::Run { service, .. } => service.listener,
                _ => unreachable!(),
            };
            assert_eq!(listener.limits(), ListenerLimits::default(), "{args:?}");
        }
    }

    #[test]
    fn a_zero_timeout_is_refused() {
        let e = Cli::try_parse_from([
            "accessgate",
            "serve",
            "--policies",
            "/nonexistent",
            "--request-head-timeout",
            "0s",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("at least 1s"), "{e}");
    }
}

#[cfg(test)]
mod class_flags_tests {
    use super::*;

    fn class_of(args: &[&str]) -> InstallClass {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Serve { service, .. } | Command::Run { service, .. } => {
                service.class.install_class()
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn only_the_default_class_claims_unclassed_policies_unless_told() {
        let run = ["accessgate", "run"];
        assert_eq!(class_of(&run), InstallClass::default());
        assert!(class_of(&run).claims_unclassed());
        let blue = class_of(&["accessgate", "run", "--class", "blue"]);
        assert_eq!(blue.name(), "blue");
        assert!(!blue.claims_unclassed());
        let green = class_of(&[
            "accessgate",
            "run",
            "--class=green",
            "--claim-unclassed=true",
        ]);
        assert!(green.claims_unclassed());
        let serve = [
            "accessgate",
            "serve",
            "--policies",
            "/p",
            "--claim-unclassed=false",
        ];
        assert!(!class_of(&serve).claims_unclassed());
    }

    #[test]
    fn a_class_that_is_not_a_dns_label_is_refused() {
        let e = Cli::try_parse_from(["accessgate", "run", "--class", "Blue"]).unwrap_err();
        assert!(e.to_string().contains("DNS label"), "{e}");
    }
}
