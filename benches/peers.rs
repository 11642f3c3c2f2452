//! accessgate against its peers, like for like (issue 13): oauth2-proxy and Ory Oathkeeper
//! verify the RSA signature of the token on every request, so accessgate runs with its
//! verified-token cache off (`--token-cache-mib 0`) for the compared rows. The cached
//! accessgate is measured too, in rows labelled as such, for context only.
//!
//! One request shape for every subject: `GET` with `Authorization: Bearer <JWT>` (and
//! `X-Original-URL`, which only accessgate reads). One token, minted by the dev issuer, is
//! valid for all three; with the cache off every request verifies it anyway.
//!
//! Closed loop (capacity): a discarded wrk warm-up per subject, then REPEATS interleaved
//! rounds of SECONDS each (every subject once per round), reported as mean and min–max.
//! Open loop (latency): vegeta at fixed offered rates below each subject's measured capacity.
//!
//! Every subject gets one core's worth of workers (accessgate `TOKIO_WORKER_THREADS=1`, Go
//! peers `GOMAXPROCS=1`); the load generator shares the machine with it. All subjects stay up
//! for the whole run; only one is under load at a time.
//!
//! Env: ACCESSGATE_PEERS_SECONDS (30), ACCESSGATE_PEERS_REPEATS (3), ACCESSGATE_PEERS_WARMUP
//! (5), ACCESSGATE_PEERS_OPEN_SECONDS (15), ACCESSGATE_PEERS_RATES (fixed offered rates for
//! every subject, "1000,2000").

mod support;

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use support::vegeta::{self, OpenLoad, Target};
use support::{Load, Report};

const ORIGINAL_URL: &str = "https://app.example.test/";
/// Open-loop rates as shares of a subject's own capacity: comfortably below it, and close.
const CAPACITY_SHARES: [f64; 2] = [0.5, 0.8];
/// A fixed rate is offered to a subject only up to this share of its capacity: above it the
/// row would measure queueing at saturation, which the closed loop already shows.
const MAX_SHARE: f64 = 0.8;
/// Rates are offered only up to this share of vegeta's own closed-loop ceiling here: paced
/// and sharing 2 cores with the server, it falls behind well before that ceiling (measured:
/// fine at 13,000 req/s, far short at 21,000 with a ceiling of 35,000).
const GENERATOR_SHARE: f64 = 0.5;

fn main() {
    if support::listing() {
        return;
    }
    let started = Instant::now();
    let plan = Plan::from_env();
    let mut r = Report::new("Peers, like for like", &intro(&plan));
    let issuer = Issuer::start();
    // Valid for the whole run, however long the knobs make it.
    let token = issuer.token(json!({"ttl": 24 * 3600}));
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("X-Original-URL", ORIGINAL_URL),
    ];

    let load_before = load_average();
    let subjects = start_subjects(&mut r, &issuer, &headers);
    let closed = closed_loop(&plan, &subjects, &headers);
    report_closed(&mut r, &plan, &subjects, &closed);
    let open = open_loop(&plan, &subjects, &closed, &headers);
    report_open(&mut r, &subjects, &open);
    verdicts(&mut r, &subjects, &closed, &open);
    drop(subjects);
    // Both loops share the 2 cores with whatever else runs; say how busy the machine was.
    let _ = writeln!(
        r.extra,
        "- Load average (1 min) when this part started / ended: {load_before} / {}.",
        load_average()
    );
    r.write("20-peers", started.elapsed());
}

/// How long and how often; env overrides for a quick look.
struct Plan {
    seconds: u32,
    repeats: u32,
    warmup: u32,
    open_seconds: u32,
    rates: Vec<u32>,
}

impl Plan {
    fn from_env() -> Plan {
        Plan {
            seconds: env_or("ACCESSGATE_PEERS_SECONDS", 30),
            repeats: env_or("ACCESSGATE_PEERS_REPEATS", 3).max(1),
            warmup: env_or("ACCESSGATE_PEERS_WARMUP", 5),
            open_seconds: env_or("ACCESSGATE_PEERS_OPEN_SECONDS", 15),
            rates: std::env::var("ACCESSGATE_PEERS_RATES")
                .unwrap_or_else(|_| "1000,2000".into())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn intro(plan: &Plan) -> String {
    format!(
        "**Like for like:** accessgate with its verified-token cache off (`--token-cache-mib 0`) \
         against oauth2-proxy and Ory Oathkeeper. All three verify the RS256 signature of the \
         same token (RSA-2048, dev issuer) on every request, sent the same way to all: `GET` \
         with `Authorization: Bearer <JWT>` (accessgate's policy has `tokenSources: [bearer]`). \
         Each also checks iss, aud and exp; accessgate additionally checks the token type and \
         matches the host. **Not like for like:** the rows labelled *cached token*: accessgate \
         with its default cache, hitting one token whose signature it verified once; context \
         only, no target applies to them.\n\n\
         Every subject gets one core's worth of workers (accessgate `TOKIO_WORKER_THREADS=1`, \
         Go peers `GOMAXPROCS=1`); the load generator shares the 2 cores with it. All subjects \
         run side by side for the whole part; one is under load at a time.\n\n\
         - Closed loop (capacity): `wrk -t1 -c{c}`; a discarded {w} s warm-up per subject, then \
         {n} interleaved rounds of {s} s (each round loads every subject once, in turn). Rows give \
         the mean over rounds; the note gives the spread (min–max), the server's CPU time per \
         request and how many cores it kept busy (well below 1: not the server's own work but \
         the load generator or the shared CPU was the limit). p99 here is at saturation, \
         where it mostly restates throughput.\n\
         - Open loop (latency): vegeta at fixed offered rates, {o} s each: the same absolute \
         rates for every subject ({rates} req/s, where at most {max:.0} % of that subject's \
         capacity), {shares} of each subject's own capacity, and accessgate also at the peers' \
         rates, so latency is compared at equal offered load. The p99 target is judged at the \
         highest rate that both accessgate (cache off) and the peer kept up with (≥ 98 % \
         answered successfully in time). vegeta keeps at most {inflight} requests in flight; rates \
         above {g:.0} % of its own ceiling on this machine are not run; a run where it fell more \
         than 10 % short of the rate (the server far past its capacity, or the generator or the \
         machine saturated) is tried once more, and noted instead of shown if it falls short \
         again.",
        c = support::CONNECTIONS,
        w = plan.warmup,
        n = plan.repeats,
        s = plan.seconds,
        o = plan.open_seconds,
        rates = plan
            .rates
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        max = MAX_SHARE * 100.0,
        g = GENERATOR_SHARE * 100.0,
        inflight = vegeta::MAX_WORKERS,
        shares = CAPACITY_SHARES
            .iter()
            .map(|s| format!("{:.0} %", s * 100.0))
            .collect::<Vec<_>>()
            .join(" and "),
    )
}

// ---------------------------------------------------------------------------------------
// Subjects

/// Which kind of row a subject's numbers go into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// accessgate, cache off: the like-for-like subject.
    Ours,
    /// A peer: verifies on every request.
    Peer,
    /// accessgate with its cache, one token: context only.
    Cached,
}

/// A running server under test and where to send the Bearer request.
struct Subject {
    name: String,
    kind: Kind,
    url: String,
    running: Running,
}

/// What keeps a subject alive (stopped on drop) and whose CPU time it spends.
enum Running {
    Accessgate(Server),
    Peer(Peer),
}

impl Subject {
    fn cpu_seconds(&self) -> f64 {
        match &self.running {
            Running::Accessgate(s) => support::cpu_seconds(s.proc.pid()),
            Running::Peer(p) => group_cpu_seconds(p.child.id()),
        }
    }
}

/// Waits (30 s at most) until `s` is idle: a server overloaded by the last run may still be
/// working through requests whose clients have gone, which would steal CPU from the next run.
fn settle(s: &Subject) {
    let mut last = s.cpu_seconds();
    let idle = eventually(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(200)); // one sampling interval
        let now = s.cpu_seconds();
        let busy = (now - last) / 0.2;
        last = now;
        busy < 0.05
    });
    if !idle {
        eprintln!("{} still busy 30 s after its run; going on", s.name);
    }
}

/// accessgate cache off, the peers that start, accessgate cached: in the order every round
/// loads them. A peer that cannot be built or started becomes a note.
fn start_subjects(r: &mut Report, issuer: &Issuer, headers: &[(&str, &str)]) -> Vec<Subject> {
    let mut subjects = vec![accessgate(
        issuer,
        "accessgate, cache off",
        Kind::Ours,
        &["--token-cache-mib", "0"],
    )];
    match build_peers() {
        Ok(bin) => {
            for spec in PEERS {
                match start_peer(&spec, &bin, issuer, headers) {
                    Ok(s) => subjects.push(s),
                    Err(why) => r.note("peers", spec.name, why),
                }
            }
        }
        Err(why) => {
            for spec in PEERS {
                r.note("peers", spec.name, format!("not built: {why}"));
            }
        }
    }
    subjects.push(accessgate(
        issuer,
        "accessgate, cached token (context)",
        Kind::Cached,
        &[],
    ));
    for s in &subjects {
        assert!(
            answers_2xx(&s.url, headers),
            "{} does not allow the bench token",
            s.name
        );
    }
    subjects
}

fn accessgate(issuer: &Issuer, name: &str, kind: Kind, args: &[&str]) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    // Bearer is opt-in for accessgate; the peers read only that (oauth2-proxy) or by default.
    let policy = policy_yaml(
        "bench",
        "web",
        &issuer.url,
        "  hosts: [app.example.test]\n  tokenSources: [bearer]\n",
    );
    std::fs::write(dir.path().join("p.yaml"), policy).unwrap();
    let server = Server::start_in_env(dir, args, &support::ONE_CORE);
    Subject {
        name: name.into(),
        kind,
        url: format!("{}/auth/bench/web", server.auth),
        running: Running::Accessgate(server),
    }
}

fn answers_2xx(url: &str, headers: &[(&str, &str)]) -> bool {
    let mut req = http().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().map(|x| x.status().is_success()).unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// Peers

struct PeerSpec {
    name: &'static str,
    script: &'static str,
    /// The env var naming the binary, so the start script need not run build.sh again.
    bin_env: &'static str,
    bin: &'static str,
    path: &'static str,
}

const PEERS: [PeerSpec; 2] = [
    PeerSpec {
        name: "oauth2-proxy",
        script: "start-oauth2-proxy.sh",
        bin_env: "OAUTH2_PROXY_BIN",
        bin: "oauth2-proxy",
        path: "/oauth2/auth",
    },
    PeerSpec {
        name: "Ory Oathkeeper",
        script: "start-oathkeeper.sh",
        bin_env: "OATHKEEPER_BIN",
        bin: "oathkeeper",
        path: "/decisions/anything",
    },
];

/// bench/peers/build.sh (a no-op when the cached binaries are current): the bin dir, or why not.
fn build_peers() -> Result<PathBuf, String> {
    let script = format!("{}/bench/peers/build.sh", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bench/peers/build.sh failed: {}",
            tail(&String::from_utf8_lossy(&out.stderr), 3)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(stdout.lines().last().unwrap_or_default()))
}

/// A peer in its own process group (setsid), so the start script and the server it runs
/// stop together; its output goes to a log file quoted when it fails.
struct Peer {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Peer {
    fn log_tail(&self) -> String {
        tail(
            &std::fs::read_to_string(self.log.path()).unwrap_or_default(),
            3,
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let exited = eventually(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

/// Starts a peer on free ports, again on new ones (three tries) when another process took a
/// port between the pick and the peer's bind.
fn start_peer(
    spec: &PeerSpec,
    bin: &std::path::Path,
    issuer: &Issuer,
    headers: &[(&str, &str)],
) -> Result<Subject, String> {
    let mut why = String::new();
    for _ in 0..3 {
        match try_start_peer(spec, bin, issuer, headers) {
            Ok(subject) => return Ok(subject),
            Err(e) if e.contains("address already in use") => why = e,
            Err(e) => return Err(e),
        }
    }
    Err(why)
}

fn try_start_peer(
    spec: &PeerSpec,
    bin: &std::path::Path,
    issuer: &Issuer,
    headers: &[(&str, &str)],
) -> Result<Subject, String> {
    let script = format!("{}/bench/peers/{}", env!("CARGO_MANIFEST_DIR"), spec.script);
    let [port, proxy_port, metrics_port] = free_ports();
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let child = Command::new("setsid")
        .args(["bash", &script, &port.to_string(), &issuer.url, AUD])
        .env("GOMAXPROCS", "1")
        .env(spec.bin_env, bin.join(spec.bin))
        // oathkeeper also opens a proxy and a metrics port; keep them off PORT+1/+2.
        .env("OATHKEEPER_PROXY_PORT", proxy_port.to_string())
        .env("OATHKEEPER_METRICS_PORT", metrics_port.to_string())
        .stdout(Stdio::null())
        .stderr(log.reopen().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start {script}: {e}"))?;
    let mut peer = Peer { child, log };
    let url = format!("http://127.0.0.1:{port}{}", spec.path);
    let up = eventually(Duration::from_secs(30), || {
        answers_2xx(&url, headers) || !matches!(peer.child.try_wait(), Ok(None))
    }) && answers_2xx(&url, headers);
    if !up {
        return Err(format!(
            "did not answer 2xx for a valid token within 30 s: {}",
            peer.log_tail()
        ));
    }
    Ok(Subject {
        name: format!("{} (GOMAXPROCS=1)", spec.name),
        kind: Kind::Peer,
        url,
        running: Running::Peer(peer),
    })
}

/// Distinct free loopback ports: all bound at once, so none is handed out twice.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// User + system CPU seconds of every process in process group `pgid` (the start script
/// and the peer it runs).
fn group_cpu_seconds(pgid: u32) -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_group(*pid) == Some(pgid))
        .map(support::cpu_seconds)
        .sum()
}

fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state, ppid, pgrp.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" / ")
}

// ---------------------------------------------------------------------------------------
// Closed loop

/// One subject's closed-loop rounds.
struct Closed {
    rounds: Vec<Load>,
    /// Server CPU microseconds per request, one per round.
    cpu_us: Vec<f64>,
    /// Cores the server kept busy, one per round: near 1 it is the bottleneck, well below 1
    /// the load generator is.
    cores: Vec<f64>,
}

impl Closed {
    fn rps(&self) -> Stats {
        Stats::of(self.rounds.iter().map(|l| l.rps))
    }

    fn p99(&self) -> Stats {
        Stats::of(self.rounds.iter().map(|l| l.p99_ms))
    }

    fn mean_load(&self) -> Load {
        Load {
            rps: self.rps().mean,
            p50_ms: Stats::of(self.rounds.iter().map(|l| l.p50_ms)).mean,
            p99_ms: self.p99().mean,
            failures: self.rounds.iter().map(|l| l.failures).sum(),
        }
    }
}

#[derive(Clone, Copy)]
struct Stats {
    mean: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(values: impl Iterator<Item = f64>) -> Stats {
        let v: Vec<f64> = values.collect();
        Stats {
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Warm-ups first (discarded: key fetches, connection set-up, allocator and Go heap growth
/// settle), then rounds that load every subject in turn, so drift in the machine's state
/// spreads over all subjects instead of landing on one.
fn closed_loop(plan: &Plan, subjects: &[Subject], headers: &[(&str, &str)]) -> Vec<Closed> {
    for s in subjects {
        eprintln!("warm-up: {}", s.name);
        support::wrk_for(&s.url, headers, plan.warmup.max(1));
    }
    let mut closed: Vec<Closed> = subjects
        .iter()
        .map(|_| Closed {
            rounds: Vec::new(),
            cpu_us: Vec::new(),
            cores: Vec::new(),
        })
        .collect();
    for round in 0..plan.repeats {
        for (s, c) in subjects.iter().zip(&mut closed) {
            eprintln!("round {}/{}: {}", round + 1, plan.repeats, s.name);
            let cpu_before = s.cpu_seconds();
            let load = support::wrk_for(&s.url, headers, plan.seconds);
            let cpu = s.cpu_seconds() - cpu_before;
            let requests = load.rps * plan.seconds as f64;
            c.cpu_us.push(cpu * 1e6 / requests.max(1.0));
            c.cores.push(cpu / plan.seconds.max(1) as f64);
            c.rounds.push(load);
            settle(s);
        }
    }
    closed
}

fn report_closed(r: &mut Report, plan: &Plan, subjects: &[Subject], closed: &[Closed]) {
    let scenario = format!(
        "closed loop, wrk -c{}, {} × {} s",
        support::CONNECTIONS,
        plan.repeats,
        plan.seconds
    );
    for (s, c) in subjects.iter().zip(closed) {
        let (rps, p99) = (c.rps(), c.p99());
        let note = format!(
            "req/s {:.0}–{:.0}; p99 {:.2}–{:.2} ms; server CPU {:.0} µs/request, \
             {:.2} cores busy; rounds: {}",
            rps.min,
            rps.max,
            p99.min,
            p99.max,
            Stats::of(c.cpu_us.iter().copied()).mean,
            Stats::of(c.cores.iter().copied()).mean,
            c.rounds
                .iter()
                .map(|l| format!("{:.0}", l.rps))
                .collect::<Vec<_>>()
                .join(", ")
        );
        r.row(&scenario, &s.name, c.mean_load(), note);
    }
}

// ---------------------------------------------------------------------------------------
// Open loop

/// A fixed offered rate for one subject and why that rate.
struct Offer {
    subject: usize,
    rate: u32,
    why: String,
}

struct Open {
    offer: Offer,
    /// What vegeta measured, or why there is nothing: not run, or vegeta failed.
    load: Result<OpenLoad, String>,
}

/// Rates per subject: the fixed ones below its capacity, shares of its own capacity, and for
/// accessgate (both rows) the peers' share rates too, to compare at equal offered load.
fn offers(plan: &Plan, subjects: &[Subject], closed: &[Closed]) -> Vec<Offer> {
    let capacity = |i: usize| closed[i].rps().mean;
    let mut offers: Vec<Offer> = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let mut wanted: Vec<(u32, String)> = plan
            .rates
            .iter()
            .map(|&rate| (rate, "fixed rate".to_owned()))
            .collect();
        for share in CAPACITY_SHARES {
            let why = format!("{:.0} % of own capacity", share * 100.0);
            wanted.push((share_of(share, capacity(i)), why));
        }
        if s.kind != Kind::Peer {
            for (j, p) in subjects.iter().enumerate() {
                if p.kind != Kind::Peer {
                    continue;
                }
                for share in CAPACITY_SHARES {
                    let why = format!("{:.0} % of {}'s capacity", share * 100.0, short(p));
                    wanted.push((share_of(share, capacity(j)), why));
                }
            }
        }
        for (rate, why) in wanted {
            let fresh = !offers.iter().any(|o| o.subject == i && o.rate == rate);
            // + 5: a share of capacity rounded to 10 req/s may round up past the bound.
            if rate > 0 && rate as f64 <= MAX_SHARE * capacity(i) + 5.0 && fresh {
                offers.push(Offer {
                    subject: i,
                    rate,
                    why,
                });
            }
        }
    }
    // Lowest rate first, every subject at a rate before the next rate: like the rounds,
    // this spreads the machine's drift over the subjects.
    offers.sort_by_key(|o| (o.rate, o.subject));
    offers
}

/// `share` of `capacity`, rounded to 10 req/s so rates read cleanly.
fn share_of(share: f64, capacity: f64) -> u32 {
    ((share * capacity / 10.0).round() * 10.0) as u32
}

/// A subject's name without the "(GOMAXPROCS=1)" suffix.
fn short(s: &Subject) -> &str {
    s.name.split(" (").next().unwrap_or(&s.name)
}

/// The generator's ceiling first (closed loop against the cheapest subject, the cached
/// accessgate), then every offer in turn, lowest rate first. Offers above
/// [`GENERATOR_SHARE`] of that ceiling are not run: vegeta, paced and sharing the CPU, falls
/// behind well before its closed-loop ceiling, and such rows would measure it, not the server.
fn open_loop(
    plan: &Plan,
    subjects: &[Subject],
    closed: &[Closed],
    headers: &[(&str, &str)],
) -> Vec<Open> {
    let vegeta = support::vegeta_bin();
    let cheapest = Target {
        url: &subjects[index_of(subjects, Kind::Cached)].url,
        headers,
    };
    let ceiling = vegeta::ceiling(&vegeta, &cheapest, support::CONNECTIONS, plan.warmup.max(3));
    let mut runs = Vec::new();
    for mut offer in offers(plan, subjects, closed) {
        let subject = &subjects[offer.subject];
        let load = match beyond_generator(&ceiling, offer.rate) {
            Some(why) => Err(why),
            None => attack_once_more_if_short(&vegeta, plan, subject, headers, &mut offer),
        };
        runs.push(Open { offer, load });
    }
    runs
}

/// Why `rate` is not offered, when it is above [`GENERATOR_SHARE`] of vegeta's ceiling.
fn beyond_generator(ceiling: &Result<f64, String>, rate: u32) -> Option<String> {
    let c = *ceiling.as_ref().ok()?;
    (rate as f64 > GENERATOR_SHARE * c).then(|| {
        format!(
            "not run: above {:.0} % of what vegeta can send here ({c:.0} req/s, closed loop \
             with {} workers against the cached accessgate)",
            GENERATOR_SHARE * 100.0,
            support::CONNECTIONS
        )
    })
}

/// One attack; a second when vegeta fell far short of the rate, which on a shared machine may
/// be a burst of other work (the note says so). The subject settles after each.
fn attack_once_more_if_short(
    vegeta: &str,
    plan: &Plan,
    subject: &Subject,
    headers: &[(&str, &str)],
    offer: &mut Offer,
) -> Result<OpenLoad, String> {
    let target = Target {
        url: &subject.url,
        headers,
    };
    let attack = || {
        let load = vegeta::attack(vegeta, &target, offer.rate, plan.open_seconds)
            .map_err(|e| format!("vegeta failed: {e}"));
        settle(subject);
        load
    };
    let first = attack()?;
    if !first.generator_bound() {
        return Ok(first);
    }
    let _ = write!(
        offer.why,
        " (second try: vegeta sent only {:.0}/s the first time)",
        first.sent
    );
    attack()
}

/// A row per run; a note where there is no measurement or the generator fell far short of
/// the offered rate (its latencies then describe vegeta's backlog, not the server).
fn report_open(r: &mut Report, subjects: &[Subject], open: &[Open]) {
    for o in open {
        let scenario = format!("open loop, {} req/s offered", o.offer.rate);
        let name = &subjects[o.offer.subject].name;
        match &o.load {
            Ok(l) if !l.generator_bound() => {
                r.row(&scenario, name, l.as_load(), open_note(&o.offer, l));
            }
            Ok(l) => r.note(
                &scenario,
                name,
                format!(
                    "{}; vegeta sent only {:.0}/s (all {} workers waiting on the server, or \
                     the generator or the machine saturated), so its latencies (p99 {:.0} ms) \
                     are not comparable",
                    o.offer.why,
                    l.sent,
                    vegeta::MAX_WORKERS,
                    l.p99_ms
                ),
            ),
            Err(why) => r.note(&scenario, name, format!("{}; {why}", o.offer.why)),
        }
    }
}

fn open_note(offer: &Offer, l: &OpenLoad) -> String {
    let mut note = format!(
        "{}; max {:.1} ms; success {:.2} %",
        offer.why,
        l.max_ms,
        l.success * 100.0
    );
    if !l.kept_rate() {
        let _ = write!(note, "; vegeta sent {:.0}/s", l.sent);
    }
    if !l.kept_up() {
        note.push_str("; did not keep up (answered < 98 % of offered in time)");
    }
    note
}

// ---------------------------------------------------------------------------------------
// Verdicts

/// Targets apply to the like-for-like rows only: accessgate cache off against each peer,
/// throughput (mean over rounds) ≥ 3×, and p99 lower at an equal offered rate. The cached
/// row's ratios, and CPU per request, are context.
fn verdicts(r: &mut Report, subjects: &[Subject], closed: &[Closed], open: &[Open]) {
    let ours = index_of(subjects, Kind::Ours);
    let cached = index_of(subjects, Kind::Cached);
    for (p, peer) in subjects.iter().enumerate() {
        if peer.kind != Kind::Peer {
            continue;
        }
        throughput_verdict(r, short(peer), &closed[ours], &closed[p]);
        latency_verdict(r, short(peer), open, ours, p);
        let (c, b) = (closed[cached].rps(), closed[p].rps());
        r.verdict(
            &format!(
                "peers, context (cached token, not like for like): accessgate throughput vs {}",
                short(peer)
            ),
            c.mean / b.mean,
            "(context)",
            true,
        );
        let cpu = |i: usize| Stats::of(closed[i].cpu_us.iter().copied()).mean;
        r.verdict(
            &format!(
                "peers, context: {} server CPU per request / accessgate (cache off)'s",
                short(peer)
            ),
            cpu(p) / cpu(ours),
            "(context)",
            true,
        );
    }
    let (c, o) = (closed[cached].rps(), closed[ours].rps());
    r.verdict(
        "peers, context: accessgate cached token vs cache off, throughput",
        c.mean / o.mean,
        "(context)",
        true,
    );
}

/// Mean over rounds, ≥ 3×; the spread of the ratio goes to the free text.
fn throughput_verdict(r: &mut Report, peer: &str, ours: &Closed, theirs: &Closed) {
    let (a, b) = (ours.rps(), theirs.rps());
    r.verdict(
        &format!("peers, like for like: accessgate (cache off) throughput vs {peer}"),
        a.mean / b.mean,
        "≥ 3",
        a.mean >= 3.0 * b.mean,
    );
    let _ = writeln!(
        r.extra,
        "- accessgate (cache off) / {peer} throughput across rounds: {:.2}× (worst round \
         against best) to {:.2}× (best against worst).",
        a.min / b.max,
        a.max / b.min
    );
}

/// At the highest offered rate both kept up with (below both capacities), as the peer's p99
/// over accessgate's, so that > 1 means accessgate answers faster.
fn latency_verdict(r: &mut Report, peer: &str, runs: &[Open], ours: usize, theirs: usize) {
    match equal_rate_p99(runs, ours, theirs) {
        Some((rate, ours_p99, peer_p99)) => r.verdict(
            &format!(
                "peers, like for like: {peer} p99 / accessgate (cache off) p99, \
                 both at {rate} req/s offered"
            ),
            peer_p99 / ours_p99,
            "> 1",
            ours_p99 < peer_p99,
        ),
        None => {
            let _ = writeln!(
                r.extra,
                "- No offered rate that both accessgate (cache off) and {peer} kept up \
                 with: no p99 verdict."
            );
        }
    }
}

fn index_of(subjects: &[Subject], kind: Kind) -> usize {
    subjects
        .iter()
        .position(|s| s.kind == kind)
        .expect("accessgate subjects always start")
}

/// The highest offered rate at which both subjects kept up: (rate, p99 of `a`, p99 of `b`).
fn equal_rate_p99(runs: &[Open], a: usize, b: usize) -> Option<(u32, f64, f64)> {
    let kept = |subject: usize, rate: u32| {
        runs.iter()
            .find(|o| o.offer.subject == subject && o.offer.rate == rate)
            .and_then(|o| o.load.as_ref().ok())
            .filter(|l| l.kept_up())
            .map(|l| l.p99_ms)
    };
    runs.iter()
        .filter(|o| o.offer.subject == b)
        .filter_map(|o| Some((o.offer.rate, kept(a, o.offer.rate)?, kept(b, o.offer.rate)?)))
        .max_by_key(|(rate, _, _)| *rate)
}
