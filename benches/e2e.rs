//! End-to-end benchmarks (not tests): accessgate against the physical limit and against
//! peers, each ratio against a baseline measured in the same run on the same machine.
//! Writes docs/benchmarks.md. Run everything with `bench/run.sh`.
//!
//! Every server under load gets one core's worth of workers (nginx: one process;
//! accessgate: TOKIO_WORKER_THREADS=1; Go peers: GOMAXPROCS=1); wrk uses one thread. The
//! machine has two cores, so load generator and servers share them: the same for every row.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::{Nginx, STATIC_ALLOW, Site};
use common::*;
use serde_json::json;

const SECONDS: u32 = 8;
const CONNECTIONS: u32 = 32;
const ONE_CORE: [(&str, &str); 1] = [("TOKIO_WORKER_THREADS", "1")];

#[derive(Debug, Clone, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: u64,
}

fn duration_ms(s: &str) -> f64 {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

/// wrk with one thread; `failures` counts non-2xx answers and socket errors.
fn wrk(url: &str, headers: &[(&str, &str)]) -> Load {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{SECONDS}s"),
        "--latency",
    ]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk (apt-get install wrk; bench/run.sh does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut load = Load::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            load.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            load.p50_ms = duration_ms(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            load.p99_ms = duration_ms(v);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            load.failures += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            load.failures += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    eprintln!("wrk {url}: {load:?}");
    load
}

struct Row {
    scenario: String,
    subject: String,
    load: Option<Load>,
    note: String,
}

struct Report {
    rows: Vec<Row>,
    verdicts: Vec<String>,
}

impl Report {
    fn row(&mut self, scenario: &str, subject: &str, load: Load, note: impl Into<String>) -> Load {
        self.rows.push(Row {
            scenario: scenario.into(),
            subject: subject.into(),
            load: Some(load.clone()),
            note: note.into(),
        });
        load
    }

    fn verdict(&mut self, what: &str, ratio: f64, target: &str, met: bool) {
        let v = format!(
            "| {what} | {ratio:.2}× | {target} | {} |",
            if met { "met" } else { "missed" }
        );
        eprintln!("{v}");
        self.verdicts.push(v);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn policy_named(name: &str, issuer: &str, host: &str) -> String {
    policy_yaml("bench", name, issuer, &format!("  hosts: [{host}]\n"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probing
    }
    let started = Instant::now();
    let mut r = Report {
        rows: Vec::new(),
        verdicts: Vec::new(),
    };
    let issuer = Issuer::start();
    let token = issuer.token(json!({"ttl": 7200}));
    let assertion = [
        ("Cf-Access-Jwt-Assertion", token.as_str()),
        ("X-Original-URL", "https://app.example.test/"),
    ];

    // 1. Through nginx (ingress-nginx's auth-url config) vs the same nginx with a static-200 auth location.
    let server = Server::start_in_env(
        {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(
                d.path().join("p.yaml"),
                policy_named("web", &issuer.url, "app.example.test"),
            )
            .unwrap();
            d
        },
        &[],
        &ONE_CORE,
    );
    let echo = common::echo::Echo::start();
    let headers = vec![
        "X-Auth-Request-Email".to_string(),
        "X-Auth-Request-User".to_string(),
    ];
    let real = Nginx::start(
        &[Site {
            host: "app.example.test".into(),
            auth_url: format!("{}/auth/bench/web", server.auth),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let ceiling = Nginx::start(
        &[Site {
            host: "app.example.test".into(),
            auth_url: STATIC_ALLOW.into(),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let host = [
        ("Host", "app.example.test"),
        ("Cf-Access-Jwt-Assertion", token.as_str()),
    ];
    let base = r.row(
        "through nginx",
        "nginx, auth location returns 200 (ceiling)",
        wrk(&ceiling.url("/"), &host),
        "",
    );
    let ours = r.row(
        "through nginx",
        "nginx + accessgate (auth-url subrequest, new connection each)",
        wrk(&real.url("/"), &host),
        "as ingress-nginx renders auth-url",
    );
    r.verdict(
        "through nginx: throughput vs ceiling",
        ours.rps / base.rps,
        "≥ 0.9",
        ours.rps >= 0.9 * base.rps,
    );
    r.verdict(
        "through nginx: p99 vs ceiling p99",
        ours.p99_ms / base.p99_ms,
        "≤ 1.5",
        ours.p99_ms <= 1.5 * base.p99_ms,
    );
    drop((real, ceiling));
    // What the subrequest itself costs nginx: the same config with a zero-work auth service
    // (a second nginx answering `return 200`), and with ingress-nginx's `auth-keepalive`.
    let noop = Nginx::start_return_200();
    let via_noop = Nginx::start(
        &[Site {
            host: "app.example.test".into(),
            auth_url: noop.url("/"),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let zero = r.row(
        "through nginx",
        "nginx + a zero-work auth service (nginx return 200)",
        wrk(&via_noop.url("/"), &host),
        "nginx's own subrequest cost",
    );
    drop(via_noop);
    r.verdict(
        "through nginx: accessgate vs a zero-work auth service",
        ours.rps / zero.rps,
        "(context)",
        true,
    );
    let keep = Nginx::start_keepalive(
        &[Site {
            host: "app.example.test".into(),
            auth_url: format!("{}/auth/bench/web", server.auth),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let kept = r.row(
        "through nginx",
        "nginx + accessgate with auth-keepalive",
        wrk(&keep.url("/"), &host),
        "nginx.ingress.kubernetes.io/auth-keepalive",
    );
    drop(keep);
    let keep_noop = Nginx::start_keepalive(
        &[Site {
            host: "app.example.test".into(),
            auth_url: noop.url("/"),
            response_headers: headers,
        }],
        echo.port(),
    );
    let zero_kept = r.row(
        "through nginx",
        "nginx + zero-work auth service with auth-keepalive",
        wrk(&keep_noop.url("/"), &host),
        "",
    );
    drop((keep_noop, noop));
    r.verdict(
        "through nginx, auth-keepalive: throughput vs ceiling",
        kept.rps / base.rps,
        "≥ 0.9",
        kept.rps >= 0.9 * base.rps,
    );
    r.verdict(
        "through nginx, auth-keepalive: p99 vs ceiling p99",
        kept.p99_ms / base.p99_ms,
        "≤ 1.5",
        kept.p99_ms <= 1.5 * base.p99_ms,
    );
    r.verdict(
        "through nginx, auth-keepalive: accessgate vs zero-work auth service",
        kept.rps / zero_kept.rps,
        "(context)",
        true,
    );

    // 2. Direct: accessgate with a cached valid token vs nginx `return 200`.
    let floor_nginx = Nginx::start_return_200();
    let floor = r.row(
        "direct",
        "nginx return 200 (floor)",
        wrk(&floor_nginx.url("/"), &assertion),
        "",
    );
    drop(floor_nginx);
    let direct = r.row(
        "direct",
        "accessgate /auth/{ns}/{name}, cached token",
        wrk(&format!("{}/auth/bench/web", server.auth), &assertion),
        "",
    );
    r.verdict(
        "direct: throughput vs nginx return 200",
        direct.rps / floor.rps,
        "≥ 0.6",
        direct.rps >= 0.6 * floor.rps,
    );

    // 3. Cold verification per core vs openssl's RSA-2048 verify per core.
    let ours_cold = cold_verifications_per_second(&issuer);
    let openssl = openssl_rsa2048_verify_per_second();
    r.rows.push(Row {
        scenario: "cold verify (1 core)".into(),
        subject: "openssl speed rsa2048 verify/s".into(),
        load: None,
        note: format!("{openssl:.0}/s"),
    });
    r.rows.push(Row {
        scenario: "cold verify (1 core)".into(),
        subject: "accessgate decide(), every token new, cache off".into(),
        load: None,
        note: format!("{ours_cold:.0}/s"),
    });
    r.verdict(
        "cold verification vs openssl RSA-2048 verify",
        ours_cold / openssl,
        "≥ 0.9",
        ours_cold >= 0.9 * openssl,
    );

    // 4. Scale: 1 vs 10,000 policies.
    let (idle_1, load_1) = (rss_kib(server.proc.pid()), direct.clone());
    drop(server);
    // The YAML loader admits at most 1024 documents per file: 10 files of 1000.
    let many = tempfile::tempdir().unwrap();
    for f in 0..10 {
        let mut text = String::new();
        for i in f * 1000..(f + 1) * 1000 {
            writeln!(
                text,
                "{}\n---",
                policy_named(&format!("p{i}"), &issuer.url, &format!("h{i}.example.test"))
            )
            .unwrap();
        }
        std::fs::write(many.path().join(format!("many-{f}.yaml")), text).unwrap();
    }
    let t0 = Instant::now();
    let big = Server::start_in_env(many, &[], &ONE_CORE);
    let load_time = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let idle_10k = rss_kib(big.proc.pid());
    let load_10k = r.row(
        "scale",
        "accessgate, 10,000 policies, cached token",
        wrk(&format!("{}/auth/bench/p5000", big.auth), &assertion),
        format!("start-up with 10,000 policies: {load_time:.1?}"),
    );
    let busy_10k = rss_kib(big.proc.pid());
    drop(big);
    r.rows.push(Row {
        scenario: "scale".into(),
        subject: "RSS idle: 1 policy / 10,000 policies".into(),
        load: None,
        note: format!(
            "{:.1} MiB / {:.1} MiB (after load: {:.1} MiB)",
            idle_1 as f64 / 1024.0,
            idle_10k as f64 / 1024.0,
            busy_10k as f64 / 1024.0
        ),
    });
    r.verdict(
        "p50 latency, 10,000 vs 1 policy",
        load_10k.p50_ms / load_1.p50_ms,
        "≤ 1.1",
        load_10k.p50_ms <= 1.1 * load_1.p50_ms,
    );
    r.verdict(
        "p99 latency, 10,000 vs 1 policy",
        load_10k.p99_ms / load_1.p99_ms,
        "≤ 1.1",
        load_10k.p99_ms <= 1.1 * load_1.p99_ms,
    );
    r.verdict(
        "RSS idle, 1 policy (MiB, target < 20)",
        idle_1 as f64 / 1024.0 / 20.0,
        "< 1 (of 20 MiB)",
        idle_1 < 20 * 1024,
    );
    r.verdict(
        "RSS idle, 10,000 policies (MiB, target < 64)",
        idle_10k as f64 / 1024.0 / 64.0,
        "< 1 (of 64 MiB)",
        idle_10k < 64 * 1024,
    );

    // 5. Peers on the same token and machine.
    peers(&mut r, &issuer, &token, &direct);

    write_report(&r, started.elapsed());
}

fn cold_verifications_per_second(issuer: &Issuer) -> f64 {
    use accessgate::core::decision::{Decision, decide};
    use accessgate::core::policy::{AccessPolicySpec, IssuerSpec, PolicyKey, compile};
    use accessgate::keys::tokens::TokenCache;
    use accessgate::keys::{KeyAnswer, KeyLookup, KeySet, parse_key_set};
    struct Keys(KeySet);
    impl KeyLookup for Keys {
        fn lookup(&self, _: &url::Url, kid: &str) -> KeyAnswer {
            self.0
                .get(kid)
                .cloned()
                .map(KeyAnswer::Found)
                .unwrap_or(KeyAnswer::Unknown)
        }
    }
    let keys = Keys(parse_key_set(issuer.certs().to_string().as_bytes()).unwrap());
    let spec = AccessPolicySpec {
        issuer: IssuerSpec {
            team_domain: None,
            url: Some(issuer.url.clone()),
            jwks_uri: Some(issuer.certs_url()),
        },
        audiences: vec![AUD.into()],
        ..Default::default()
    };
    let policy = compile(PolicyKey::new("bench", "cold"), None, &spec).unwrap();
    let requests: Vec<axum::http::HeaderMap> = (0..2000)
        .map(|i| {
            let t = issuer.token(json!({"email": format!("u{i}@example.com")}));
            let mut h = axum::http::HeaderMap::new();
            h.insert("cf-access-jwt-assertion", t.parse().unwrap());
            h
        })
        .collect();
    let off = TokenCache::disabled();
    let now = accessgate::devissuer::unix_now() as u64;
    let t = Instant::now();
    let mut allowed = 0;
    for _ in 0..3 {
        for h in &requests {
            if matches!(decide(&policy, h, &keys, &off, now), Decision::Allow { .. }) {
                allowed += 1;
            }
        }
    }
    assert_eq!(allowed, 3 * requests.len(), "every cold token must verify");
    allowed as f64 / t.elapsed().as_secs_f64()
}

fn openssl_rsa2048_verify_per_second() -> f64 {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.trim_start().starts_with("rsa") && l.contains("2048"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// oauth2-proxy and Oathkeeper, built by bench/peers/build.sh; a peer that cannot be built or
/// started is recorded with the reason instead of a number.
fn peers(r: &mut Report, issuer: &Issuer, token: &str, ours: &Load) {
    let root = env!("CARGO_MANIFEST_DIR");
    let bearer = format!("Bearer {token}");
    for (name, script, path) in [
        ("oauth2-proxy", "start-oauth2-proxy.sh", "/oauth2/auth"),
        (
            "Ory Oathkeeper",
            "start-oathkeeper.sh",
            "/decisions/anything",
        ),
    ] {
        let script = format!("{root}/bench/peers/{script}");
        if !std::path::Path::new(&script).exists() {
            r.rows.push(Row {
                scenario: "peers".into(),
                subject: name.into(),
                load: None,
                note: "not available: see bench/peers/README.md".into(),
            });
            continue;
        }
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let port = free();
        // setsid: the peer runs in its own process group, so the whole group can be stopped.
        let mut child = Command::new("setsid")
            .args(["bash", &script, &port.to_string(), &issuer.url, AUD])
            .env("GOMAXPROCS", "1")
            .env("OATHKEEPER_PROXY_PORT", free().to_string())
            .env("OATHKEEPER_METRICS_PORT", free().to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start peer");
        let stop = |child: &mut std::process::Child| {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        };
        let url = format!("http://127.0.0.1:{port}{path}");
        let up = eventually(Duration::from_secs(30), || {
            http()
                .get(&url)
                .header("Authorization", &bearer)
                .send()
                .map(|x| x.status().is_success())
                .unwrap_or(false)
        });
        if !up {
            stop(&mut child);
            r.rows.push(Row {
                scenario: "peers".into(),
                subject: name.into(),
                load: None,
                note: "did not answer 2xx for a valid token within 30 s".into(),
            });
            continue;
        }
        let load = r.row(
            "peers",
            &format!("{name} (GOMAXPROCS=1)"),
            wrk(
                &url,
                &[
                    ("Authorization", &bearer),
                    ("X-Original-URL", "https://app.example.test/"),
                ],
            ),
            "",
        );
        stop(&mut child);
        r.verdict(
            &format!("accessgate throughput vs {name}"),
            ours.rps / load.rps,
            "≥ 3",
            ours.rps >= 3.0 * load.rps,
        );
        r.verdict(
            &format!("accessgate p99 vs {name} p99"),
            ours.p99_ms / load.p99_ms,
            "< 1",
            ours.p99_ms < load.p99_ms,
        );
    }
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn write_report(r: &Report, took: Duration) {
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n").unwrap();
    writeln!(md, "Generated by `bench/run.sh` ({}) in {:.0?}. Every ratio compares numbers measured in this same run.\n", sh("date -u +%Y-%m-%dT%H:%MZ"), took).unwrap();
    writeln!(md, "## Machine\n").unwrap();
    writeln!(
        md,
        "- CPU: {} × {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    )
    .unwrap();
    writeln!(
        md,
        "- Memory: {}",
        sh("grep MemTotal /proc/meminfo | awk '{printf \"%.1f GiB\", $2/1048576}'")
    )
    .unwrap();
    writeln!(
        md,
        "- Kernel: {}; {}; {}; {}",
        sh("uname -r"),
        sh("nginx -v 2>&1"),
        sh("wrk -v 2>&1 | head -1"),
        sh("openssl version")
    )
    .unwrap();
    writeln!(md, "- Load: `wrk -t1 -c{CONNECTIONS} -d{SECONDS}s --latency`; servers get one core's worth of workers each (nginx one process, accessgate `TOKIO_WORKER_THREADS=1`, Go peers `GOMAXPROCS=1`); load generator and servers share the 2 cores.\n").unwrap();
    writeln!(md, "## Results\n\n| scenario | subject | req/s | p50 ms | p99 ms | failures | note |\n|---|---|---:|---:|---:|---:|---|").unwrap();
    for row in &r.rows {
        match &row.load {
            Some(l) => writeln!(
                md,
                "| {} | {} | {:.0} | {:.3} | {:.3} | {} | {} |",
                row.scenario, row.subject, l.rps, l.p50_ms, l.p99_ms, l.failures, row.note
            ),
            None => writeln!(
                md,
                "| {} | {} | | | | | {} |",
                row.scenario, row.subject, row.note
            ),
        }
        .unwrap();
    }
    writeln!(
        md,
        "\n## Ratios and targets\n\n| ratio | measured | target | |\n|---|---:|---|---|"
    )
    .unwrap();
    for v in &r.verdicts {
        writeln!(md, "{v}").unwrap();
    }
    writeln!(md, "\n## How to reproduce\n\n```sh\nbench/run.sh          # installs wrk, builds the peers, then: cargo bench --bench e2e && cargo bench --bench verify\n```").unwrap();
    let path = format!("{}/docs/benchmarks.md", env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(format!("{}/docs", env!("CARGO_MANIFEST_DIR"))).unwrap();
    std::fs::write(&path, &md).unwrap();
    println!("{md}");
    eprintln!("wrote {path}");
}
