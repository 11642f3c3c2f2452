//! Long-running benchmarks (issue 13), not tests: nothing asserts a duration, verdicts are
//! reported.
//!
//! - Soak (`40-soak`): accessgate behind real nginx (ingress-nginx's auth-url shape) for
//!   ACCESSGATE_SOAK_MINUTES (10) at 70 % of the maximum vegeta measured through the same
//!   nginx with the same mix: 90 % valid tokens of 1,000 users, 5 % expired, 5 % garbage. Every
//!   minute the issuer rotates its key and the policy is edited. Reports errors per class,
//!   RSS growth after warm-up and p99 of the last minute against the first; plots RSS and
//!   p99 over time to docs/soak.svg.
//! - Churn (`50-churn`): 10,000 policies, 20 policy changes per second for
//!   ACCESSGATE_CHURN_SECONDS (60) under open-loop load; request p99 against the same load
//!   without churn, and how long each change takes to be enforced.
//!
//! `cargo bench --bench soak` runs both; `cargo bench --bench soak -- soak` (or `churn`) one.
//! accessgate gets one core's worth of workers, as in every other benchmark.

mod support;

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::nginx::{Nginx, Site};
use common::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use support::plot::{Panel, Series};
use support::*;

const HOST: &str = "app.example.test";
const USERS: usize = 1000;
/// 5 % each of the whole mix: 1,000 valid tokens are 90 % of 1,111.
const EXPIRED: usize = 56;
const GARBAGE: usize = 56;
const MINUTE: Duration = Duration::from_secs(60);
/// When, within each soak minute, the policy is edited and the key rotated.
const EDIT_AT: Duration = Duration::from_secs(30);
const ROTATE_AT: Duration = Duration::from_secs(50);
const RSS_EVERY: Duration = Duration::from_secs(5);
/// Width of the p99 buckets in the plot.
const BUCKET_SECS: f64 = 10.0;

const POLICIES: usize = 10_000;
/// Policies that change during churn, each in its own small file (the other 9,900 sit in
/// ten large files, as a real policy directory would hold them).
const CHURNED: usize = 100;
const CHANGES_PER_SECOND: u64 = 20;
/// Highest default churn load, requests per second (see [`churn_rate`]).
const CHURN_RATE_CAP: u64 = 2000;
/// How often the probe asks whether the oldest pending change is in force.
const PROBE_EVERY: Duration = Duration::from_millis(5);

fn main() {
    if listing() {
        return;
    }
    let issuer = Issuer::start();
    if wanted("soak") {
        soak(&issuer);
    }
    if wanted("churn") {
        churn(&issuer);
    }
}

/// Parts named on the command line (`-- soak`), or every part when none is.
fn wanted(part: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|a| a == part)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Asks `f` every [`PROBE_EVERY`] until it says yes (30 s at most); whether it did.
fn poll_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(PROBE_EVERY);
    }
}

fn sleep_until(t: Instant) {
    if let Some(left) = t.checked_duration_since(Instant::now()) {
        thread::sleep(left);
    }
}

// ---------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------

fn soak(issuer: &Issuer) {
    let started = Instant::now();
    let minutes = env_u64("ACCESSGATE_SOAK_MINUTES", 10).max(1) as usize;
    let mut r = Report::new("Soak", &soak_intro(minutes));
    let server = Server::start_in_env(
        policy_dir("p.yaml", &soak_policy(&issuer.url, 0)),
        &[],
        &ONE_CORE,
    );
    // The upstream is an nginx `return 200`: common::echo records every request it sees,
    // which over minutes at thousands per second would grow without bound.
    let upstream = Nginx::start_return_200();
    // auth-keepalive (an ingress-nginx annotation): without it every subrequest is a new
    // connection, and minutes at thousands per second exhaust loopback's ephemeral ports.
    let nginx = Nginx::start_keepalive(&[soak_site(&server)], upstream.port);
    let minter = Minter::new(issuer);
    // Minting 1,100 tokens a minute is a second of RSA signing on the two cores the measured
    // stack runs on; a real issuer is elsewhere. Niced, the issuer takes only idle time.
    renice(issuer.proc.pid());

    let max = soak_capacity(&mut r, &nginx, &minter.mix());
    let rate = (0.7 * max).round().max(1.0) as u64;
    let run = run_soak(&server, &nginx, issuer, &minter, rate, minutes);
    report_soak(&mut r, &run, rate);
    r.write("40-soak", started.elapsed());
}

/// Lowest priority for every thread of `pid` (a nice value is per thread on Linux, and the
/// runtime's workers already run).
fn renice(pid: u32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let tids: Vec<String> = tasks
        .filter_map(|t| Some(t.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    let _ = Command::new("renice")
        .args(["-n", "19", "-p"])
        .args(&tids)
        .stdout(Stdio::null())
        .status();
}

/// The maximum through `nginx` with the mix, closed loop, 32 connections: wrk's (the
/// stack's own) and vegeta's, which is returned. The open-loop rate is a share of vegeta's:
/// the generator shares the two cores with nginx and accessgate and costs several times
/// what wrk does per request, so 70 % of wrk's maximum is more than the machine can carry
/// with vegeta sending it.
fn soak_capacity(r: &mut Report, nginx: &Nginx, mix: &[MixRequest]) -> f64 {
    r.row(
        "capacity",
        "wrk -t1 -c32 through nginx, the soak's mix",
        wrk_mix(nginx, mix),
        "10 % of the answers are the expected 401s",
    );
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.json");
    write_targets(&targets, &mix_targets(nginx, mix));
    let secs = Duration::from_secs(seconds().into());
    let hits = attack(
        &targets,
        Pace::Closed(CONNECTIONS),
        secs,
        &RunClock::start(),
    );
    let max = r.row(
        "capacity",
        "vegeta, 32 workers closed loop, through nginx, the soak's mix",
        summarize(&hits),
        "failures: answers other than 200 (valid) or 401 (expired, garbage)",
    );
    max.rps
}

fn soak_intro(minutes: usize) -> String {
    format!(
        "accessgate (one worker) behind nginx as ingress-nginx renders `auth-url` with \
         `auth-keepalive`, upstream an nginx `return 200`. First wrk and vegeta (closed loop, \
         32 connections each) measure the maximum through this nginx with the soak's mix; \
         then vegeta offers 70 % of its own maximum (it shares the two cores with what it \
         measures, and costs more per request than wrk), open loop, for {minutes} min: 90 % \
         valid tokens of 1,000 users (email/sub each their own), 5 % expired, 5 % garbage, \
         in a fixed shuffled order. Every minute, at +30 s the policy is edited (an extra \
         audience, a claim-header mapping changed; valid tokens stay valid) \
         and at +50 s the issuer rotates its key and 1,000 new valid tokens signed with the \
         new key are minted for the next minute (the issuer publishes the current and the \
         previous key, as Cloudflare does: tokens in flight survive the rotation, tokens two \
         rotations old would not). The first minute is the warm-up."
    )
}

fn soak_site(server: &Server) -> Site {
    Site {
        host: HOST.into(),
        auth_url: format!("{}/auth/bench/web", server.auth),
        response_headers: vec!["X-Auth-Request-Email".into(), "X-Auth-Request-User".into()],
    }
}

fn policy_dir(file: &str, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), body).unwrap();
    dir
}

/// The soak's policy after `edit` edits: each edit adds its own extra audience and swaps
/// what `X-Auth-Request-User` carries, so every edit is a real change and valid tokens
/// (audience [`AUD`]) stay valid.
fn soak_policy(issuer_url: &str, edit: usize) -> String {
    let extra = if edit == 0 {
        String::new()
    } else {
        format!(", \"soak-edit-{edit}\"")
    };
    let user_claim = if edit % 2 == 0 { "sub" } else { "email" };
    format!(
        "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: web, namespace: bench }}\nspec:\n  issuer:\n    url: {issuer_url}\n    jwksUri: {issuer_url}/cdn-cgi/access/certs\n  audiences: [\"{AUD}\"{extra}]\n  hosts: [{HOST}]\n  claimHeaders:\n    - {{ header: X-Auth-Request-Email, claim: email }}\n    - {{ header: X-Auth-Request-User, claim: {user_claim} }}\n"
    )
}

/// Which kind of request a result was. The URL path says: nginx proxies any path, so the
/// path is a marker that survives into vegeta's per-request results.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Valid,
    Expired,
    Garbage,
}

impl Class {
    const ALL: [Class; 3] = [Class::Valid, Class::Expired, Class::Garbage];

    fn name(self) -> &'static str {
        match self {
            Class::Valid => "valid",
            Class::Expired => "expired",
            Class::Garbage => "garbage",
        }
    }

    fn of_url(url: &str) -> Class {
        let path = url.splitn(4, '/').nth(3).unwrap_or("");
        Class::ALL
            .into_iter()
            .find(|c| path.starts_with(c.name()))
            .unwrap_or(Class::Valid)
    }

    /// The status nginx must answer: 200 for a valid token, 401 (accessgate's deny, passed
    /// on by nginx) for the others; anything else, 5xx above all, is an error.
    fn expected(self) -> u16 {
        match self {
            Class::Valid => 200,
            Class::Expired | Class::Garbage => 401,
        }
    }
}

/// One request of the mix: its path (which names its class) and its token.
#[derive(Clone)]
struct MixRequest {
    path: String,
    token: String,
}

/// Mints through the dev issuer with one HTTP client (`Issuer::token` builds a client per
/// call, too slow for 1,100 tokens a minute on a loaded machine).
struct Minter {
    client: reqwest::blocking::Client,
    url: String,
}

impl Minter {
    fn new(issuer: &Issuer) -> Minter {
        Minter {
            client: http(),
            url: format!("{}/mint", issuer.url),
        }
    }

    fn mint(&self, req: Value) -> String {
        let resp = self.client.post(&self.url).json(&req).send().expect("mint");
        assert!(resp.status().is_success(), "mint: {}", resp.status());
        resp.text().unwrap()
    }

    /// User `i`'s token with the issuer's current key; `ttl` negative for an expired one.
    fn user_token(&self, i: usize, ttl: i64) -> String {
        self.mint(json!({
            "aud": [AUD],
            "email": user_email(i),
            "sub": user_sub(i),
            "ttl": ttl,
        }))
    }

    /// The soak's mix, freshly minted, in a fixed shuffled order: vegeta and wrk go round
    /// robin through it, so shuffling spreads the classes evenly over time.
    fn mix(&self) -> Vec<MixRequest> {
        let t = Instant::now();
        let mut mix = Vec::with_capacity(USERS + EXPIRED + GARBAGE);
        for i in 0..USERS {
            mix.push(MixRequest {
                path: format!("/valid/{i}"),
                token: self.user_token(i, 7200),
            });
        }
        for i in 0..EXPIRED {
            mix.push(MixRequest {
                path: format!("/expired/{i}"),
                // Past the policy's 60 s leeway.
                token: self.user_token(USERS + i, -3600),
            });
        }
        for i in 0..GARBAGE {
            mix.push(MixRequest {
                path: format!("/garbage/{i}"),
                token: garbage_token(i),
            });
        }
        mix.shuffle(&mut rand::rngs::StdRng::seed_from_u64(13));
        eprintln!("minted {} tokens in {:.1?}", mix.len(), t.elapsed());
        mix
    }
}

fn user_email(i: usize) -> String {
    format!("user{i}@example.com")
}

/// A Cloudflare-shaped `sub` (a UUID) of its own for user `i`.
fn user_sub(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Three dot-separated base64url runs of a real token's length whose header is not JSON
/// (`token_malformed`). No readable `kid`: an unknown kid would make accessgate refetch
/// the issuer's keys, and those refetches are rate-limited, which is another benchmark.
fn garbage_token(i: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
    let mut run = |n: usize| -> String {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ALPHABET[(state % 64) as usize] as char
            })
            .collect()
    };
    format!("{}.{}.{}", run(100), run(300), run(342))
}

/// Capacity through `nginx` with the mix: wrk, one thread, 32 connections, a Lua script
/// cycling through the mix's requests.
fn wrk_mix(nginx: &Nginx, mix: &[MixRequest]) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mix.lua");
    std::fs::write(&script, wrk_script(mix)).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{}s", seconds()),
            "--latency",
        ])
        .arg("-s")
        .arg(&script)
        .arg(nginx.url("/"))
        .output()
        .expect("wrk (apt-get install wrk; bench/run.sh does)");
    let load = parse_wrk(&String::from_utf8_lossy(&out.stdout));
    eprintln!("wrk with the mix through nginx: {load:?}");
    load
}

fn wrk_script(mix: &[MixRequest]) -> String {
    let mut lua = String::from("local reqs = {\n");
    for m in mix {
        writeln!(lua, "  {{\"{}\", \"{}\"}},", m.path, m.token).unwrap();
    }
    write!(
        lua,
        "}}\nlocal i = 0\nrequest = function()\n  i = i % #reqs + 1\n  return wrk.format(\"GET\", reqs[i][1], {{[\"Host\"] = \"{HOST}\", [\"Cf-Access-Jwt-Assertion\"] = reqs[i][2]}})\nend\n"
    )
    .unwrap();
    lua
}

/// wrk's summary (as `support::wrk` reads it; that one takes no script).
fn parse_wrk(text: &str) -> Load {
    let mut load = Load::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            load.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("50%") {
            load.p50_ms = duration_ms(v);
        } else if let Some(v) = line.strip_prefix("99%") {
            load.p99_ms = duration_ms(v);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.failures += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    load
}

/// What the soak recorded: each minute's results, the RSS samples and the time each policy
/// edit took to be in force.
struct SoakRun {
    minutes: Vec<Vec<Hit>>,
    /// Each minute's start and end, seconds on the run's clock.
    spans: Vec<(f64, f64)>,
    rss: Vec<(f64, u64)>,
    edits: Vec<Duration>,
    /// Policy reloads the server logged during the run (one per edit expected).
    reloads: usize,
    /// Seconds the run lasted (minutes plus the pauses between attacks).
    took: f64,
}

/// The soak proper: one vegeta attack per minute at `rate`, each over tokens signed with the
/// then-current key; a policy edit and a key rotation inside every minute.
fn run_soak(
    server: &Server,
    nginx: &Nginx,
    issuer: &Issuer,
    minter: &Minter,
    rate: u64,
    minutes: usize,
) -> SoakRun {
    let work = tempfile::tempdir().unwrap();
    let clock = RunClock::start();
    let rss = RssSampler::start(server.proc.pid(), clock.clone());
    let reloads = server.reloads();
    // A new key and new tokens for the first minute too, so every minute starts alike: 1,000
    // tokens not yet cached and a kid accessgate has not seen (one key refetch).
    issuer.rotate();
    let mut mix = minter.mix();
    let (mut results, mut edits, mut spans) = (Vec::new(), Vec::new(), Vec::new());
    for minute in 0..minutes {
        let start = Instant::now();
        let began = clock.since_start();
        let targets = work.path().join(format!("targets-{minute}.json"));
        write_targets(&targets, &mix_targets(nginx, &mix));
        let attack = spawn_attack(targets, Pace::Rate(rate), MINUTE, clock.clone());
        sleep_until(start + EDIT_AT);
        edits.push(edit_policy(server, &issuer.url, minute + 1, &mix));
        sleep_until(start + ROTATE_AT);
        issuer.rotate();
        mix = minter.mix();
        let hits = attack.join().expect("vegeta thread");
        spans.push((began, clock.since_start()));
        eprintln!(
            "soak minute {}: {}",
            minute + 1,
            describe(&summarize(&hits))
        );
        results.push(hits);
    }
    SoakRun {
        minutes: results,
        spans,
        rss: rss.stop(),
        edits,
        reloads: server.reloads() - reloads,
        took: clock.since_start(),
    }
}

/// Writes the policy's `edit`th version and waits until accessgate answers by it: user 0's
/// `X-Auth-Request-User` switches between its `sub` and its `email` with every edit. Returns
/// the time from the rename to that answer.
fn edit_policy(server: &Server, issuer_url: &str, edit: usize, mix: &[MixRequest]) -> Duration {
    let token = &mix.iter().find(|m| m.path == "/valid/0").unwrap().token;
    let want = if edit % 2 == 0 {
        user_sub(0)
    } else {
        user_email(0)
    };
    let client = http();
    let user = || -> Option<String> {
        let resp = client
            .get(format!("{}/auth/bench/web", server.auth))
            .header("x-original-url", format!("https://{HOST}/"))
            .header("cf-access-jwt-assertion", token)
            .send()
            .ok()?;
        Some(
            resp.headers()
                .get("x-auth-request-user")?
                .to_str()
                .ok()?
                .to_owned(),
        )
    };
    server.write_policy("p.yaml", &soak_policy(issuer_url, edit));
    let written = Instant::now();
    assert!(
        poll_until(|| user().as_ref() == Some(&want)),
        "policy edit {edit} not in force within 30 s"
    );
    written.elapsed()
}

fn mix_targets(nginx: &Nginx, mix: &[MixRequest]) -> Vec<Value> {
    mix.iter()
        .map(|m| {
            target(
                &nginx.url(&m.path),
                &[("Host", HOST), ("Cf-Access-Jwt-Assertion", &m.token)],
            )
        })
        .collect()
}

fn report_soak(r: &mut Report, run: &SoakRun, rate: u64) {
    let all: Vec<Hit> = run.minutes.iter().flatten().copied().collect();
    let sent: f64 = run.minutes.iter().map(|m| m.len() as f64).sum::<f64>()
        / run.minutes.iter().map(|m| send_span(m)).sum::<f64>();
    r.note(
        "open loop",
        "vegeta, offered rate",
        format!(
            "{rate}/s (0.7 × vegeta's maximum); sent at {sent:.0}/s; {:.0} min in all",
            run.took / 60.0
        ),
    );
    for (i, hits) in run.minutes.iter().enumerate() {
        let rss = max_rss(&run.rss, run.spans[i]).map_or(f64::NAN, |k| k as f64 / 1024.0);
        r.row(
            "soak",
            &format!("minute {}", i + 1),
            summarize(hits),
            format!(
                "max RSS {rss:.1} MiB; policy edit in force after {:.0?}",
                run.edits[i]
            ),
        );
    }
    r.note(
        "soak",
        "policy reloads",
        format!(
            "{} logged for {} edits (more means reloads nothing asked for)",
            run.reloads,
            run.edits.len()
        ),
    );
    report_classes(r, &all);
    let first = summarize(&run.minutes[0]);
    let last = summarize(run.minutes.last().unwrap());
    r.verdict(
        "soak: p99, last minute vs first minute",
        last.p99_ms / first.p99_ms,
        "≤ 1.2",
        last.p99_ms <= 1.2 * first.p99_ms,
    );
    report_rss(r, &run.rss, &run.spans);
    r.extra = soak_plot(&all, &run.rss);
}

/// Per class: how many, how many answered as they must, how many 5xx or transport errors.
fn report_classes(r: &mut Report, all: &[Hit]) {
    for class in Class::ALL {
        let of: Vec<&Hit> = all.iter().filter(|h| h.class == class).collect();
        let right = of.iter().filter(|h| h.code == class.expected()).count();
        let server_errors = of.iter().filter(|h| h.code >= 500 || h.code == 0).count();
        r.note(
            "soak, whole run",
            &format!("{} tokens", class.name()),
            format!(
                "{} requests, {right} answered {}, {server_errors} 5xx or transport errors, \
                 {} other",
                of.len(),
                class.expected(),
                of.len() - right - server_errors
            ),
        );
        let wrong = of.len() - right;
        let share = wrong as f64 / of.len().max(1) as f64;
        let what = match class {
            Class::Valid => format!("soak: valid-token errors ({wrong} of {})", of.len()),
            _ => format!(
                "soak: {} tokens not denied with 401 ({wrong} of {})",
                class.name(),
                of.len()
            ),
        };
        r.verdict(&what, share, "0 (none)", wrong == 0);
    }
}

/// RSS growth after warm-up: the highest sample of the last minute against the highest of
/// the first (warm-up) minute.
fn report_rss(r: &mut Report, samples: &[(f64, u64)], spans: &[(f64, f64)]) {
    let (Some(warm), Some(end)) = (
        max_rss(samples, spans[0]),
        max_rss(samples, *spans.last().unwrap()),
    ) else {
        r.note("soak", "RSS", "no samples");
        return;
    };
    r.note(
        "soak",
        "accessgate RSS, max of first minute → max of last minute",
        format!(
            "{:.1} MiB → {:.1} MiB",
            warm as f64 / 1024.0,
            end as f64 / 1024.0
        ),
    );
    r.verdict(
        "soak: RSS, last minute vs warm-up minute",
        end as f64 / warm as f64,
        "< 1.05",
        (end as f64) < 1.05 * warm as f64,
    );
}

/// The highest RSS sampled within `span` (seconds on the run's clock).
fn max_rss(samples: &[(f64, u64)], span: (f64, f64)) -> Option<u64> {
    samples
        .iter()
        .filter(|(t, _)| *t >= span.0 && *t <= span.1)
        .map(|(_, kib)| *kib)
        .max()
}

/// Draws docs/soak.svg and returns the Markdown that shows it.
fn soak_plot(all: &[Hit], rss: &[(f64, u64)]) -> String {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/soak.svg"));
    let rss_mib = rss.iter().map(|(t, k)| (*t, *k as f64 / 1024.0)).collect();
    let panels = [
        Panel {
            title: "accessgate RSS".into(),
            y_label: "MiB".into(),
            series: vec![Series {
                label: "RSS, sampled every 5 s".into(),
                points: rss_mib,
            }],
        },
        Panel {
            title: "Request latency through nginx, p99 per 10 s".into(),
            y_label: "ms".into(),
            series: vec![
                Series {
                    label: "all requests".into(),
                    points: p99_buckets(all.iter()),
                },
                Series {
                    label: "valid tokens".into(),
                    points: p99_buckets(all.iter().filter(|h| h.class == Class::Valid)),
                },
            ],
        },
    ];
    match plot::write_svg(&path, "seconds since the soak started", &panels) {
        Ok(()) => format!(
            "![soak](soak.svg)\n\nRSS of accessgate and p99 latency per {BUCKET_SECS:.0} s \
             over the soak.\n\n"
        ),
        Err(e) => format!("(plot failed: {e})\n\n"),
    }
}

/// p99 latency per [`BUCKET_SECS`] of the run, at each bucket's middle.
fn p99_buckets<'a>(hits: impl Iterator<Item = &'a Hit>) -> Vec<(f64, f64)> {
    let mut buckets: Vec<Vec<f64>> = Vec::new();
    for h in hits {
        let b = (h.at.max(0.0) / BUCKET_SECS) as usize;
        if buckets.len() <= b {
            buckets.resize(b + 1, Vec::new());
        }
        buckets[b].push(h.latency_ms);
    }
    buckets
        .iter_mut()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, b)| ((i as f64 + 0.5) * BUCKET_SECS, percentile(b, 0.99)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Churn
// ---------------------------------------------------------------------------------------

fn churn(issuer: &Issuer) {
    let started = Instant::now();
    let secs = env_u64("ACCESSGATE_CHURN_SECONDS", 60).max(1);
    let mut r = Report::new("Policy churn", &churn_intro(secs));
    let server = Server::start_in_env(churn_dir(&issuer.url), &[], &ONE_CORE);
    let token = issuer.token(json!({"ttl": 7200}));
    let isolated = isolated_reloads(&server, &issuer.url, &token, &mut r);
    reload_breakdown(server.path(), &mut r);
    incremental_reload(server.path(), &issuer.url, &mut r);

    let url = format!("{}/auth/bench/p5000", server.auth);
    let headers = [
        ("Cf-Access-Jwt-Assertion", token.as_str()),
        ("X-Original-URL", "https://h5000.example.test/"),
    ];
    let max = r.row(
        "capacity",
        "wrk -t1 -c32, 10,000 policies, cached token",
        wrk(&url, &headers),
        "",
    );
    let rate = churn_rate(max.rps);
    let work = tempfile::tempdir().unwrap();
    let targets = work.path().join("targets.json");
    write_targets(&targets, &[target(&url, &headers)]);

    let reloads = server.reloads();
    // The baseline carries the probe's requests too, so the two runs differ only by the
    // changes.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = spawn_idle_probe(server.auth.clone(), token.clone(), stop.clone());
    let quiet = summarize(&attack(
        &targets,
        Pace::Rate(rate),
        Duration::from_secs(secs),
        &RunClock::start(),
    ));
    stop.store(true, Ordering::Relaxed);
    probe.join().unwrap();
    let idle_reloads = server.reloads() - reloads;
    let churned = run_churn(&server, &issuer.url, &token, &targets, rate, secs);
    report_churn(&mut r, rate, (&quiet, idle_reloads), &churned, isolated);
    r.write("50-churn", started.elapsed());
}

/// Half the closed-loop maximum, at most [`CHURN_RATE_CAP`] (ACCESSGATE_CHURN_RATE sets it
/// outright): half of a direct wrk maximum is tens of thousands a second, more than vegeta
/// can send from the same two cores without becoming what is measured.
fn churn_rate(max_rps: f64) -> u64 {
    let half = (0.5 * max_rps).round().max(1.0) as u64;
    env_u64("ACCESSGATE_CHURN_RATE", half.min(CHURN_RATE_CAP))
}

fn churn_intro(secs: u64) -> String {
    format!(
        "accessgate (one worker) with {POLICIES} policies, each its own host: {} in ten \
         files, {CHURNED} in a file each. vegeta offers half the wrk maximum (at most \
         {CHURN_RATE_CAP}/s), open loop, to one policy with a cached token for {secs} s, once \
         without changes (the probe below asking all the same) and once while \
         {CHANGES_PER_SECOND} policy changes a second are written (each a file of one of the \
         {CHURNED} policies, replaced by rename as a ConfigMap update does, its claim-header \
         mapping renamed to `X-Rev-<change number>`). A probe asks accessgate for the oldest \
         change not yet seen, every {} ms, until the answer carries its header (or a later \
         one): change→enforced is from the rename to that answer.",
        POLICIES - CHURNED,
        PROBE_EVERY.as_millis()
    )
}

/// 9,900 policies in ten files (the YAML loader admits at most 1,024 documents a file) and
/// the churned ones in a file each, so a change rewrites one small file.
fn churn_dir(issuer_url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixed: Vec<usize> = (0..POLICIES - CHURNED).collect();
    for (f, chunk) in fixed.chunks(1000).enumerate() {
        let mut text = String::new();
        for i in chunk {
            let host = format!("  hosts: [h{i}.example.test]\n");
            writeln!(
                text,
                "{}\n---",
                policy_yaml("bench", &format!("p{i}"), issuer_url, &host)
            )
            .unwrap();
        }
        std::fs::write(dir.path().join(format!("many-{f}.yaml")), text).unwrap();
    }
    for k in 0..CHURNED {
        std::fs::write(
            dir.path().join(churn_file(k)),
            churn_policy(issuer_url, k, 0),
        )
        .unwrap();
    }
    dir
}

fn churn_file(k: usize) -> String {
    format!("churn-{k}.yaml")
}

/// Churned policy `k` at revision `rev`: the revision is in the name of the header the email
/// goes to, so an answer says which revision decided it.
fn churn_policy(issuer_url: &str, k: usize, rev: u64) -> String {
    let extra = format!(
        "  hosts: [c{k}.example.test]\n  claimHeaders:\n    - {{ header: X-Rev-{rev}, claim: email }}\n"
    );
    policy_yaml("bench", &format!("c{k}"), issuer_url, &extra)
}

/// What one change costs with nothing else going on: five changes one at a time, each timed
/// from the rename until an answer shows it in force, and accessgate's CPU time per reload
/// it logged meanwhile. Returns the median.
fn isolated_reloads(server: &Server, issuer_url: &str, token: &str, r: &mut Report) -> Duration {
    let (client, pid) = (http(), server.proc.pid());
    let (cpu, reloads) = (cpu_seconds(pid), server.reloads());
    let mut took: Vec<Duration> = (1..=5)
        .map(|rev| {
            server.write_policy(&churn_file(0), &churn_policy(issuer_url, 0, rev));
            let written = Instant::now();
            wait_for_revision(&client, &server.auth, token, 0, rev);
            written.elapsed()
        })
        .collect();
    let reloads = (server.reloads() - reloads).max(1);
    let cpu_each = (cpu_seconds(pid) - cpu) / reloads as f64;
    took.sort();
    let median = took[took.len() / 2];
    r.note(
        "reload, no load",
        "one change with 10,000 policies loaded, rename → in force",
        format!(
            "median {median:.0?} of 5 (150 ms of it the watcher's settle delay); {reloads} reloads \
             logged, accessgate CPU {:.0} ms each",
            cpu_each * 1000.0
        ),
    );
    median
}

/// Polls until churned policy `k` answers with revision `rev` or later (30 s at most).
fn wait_for_revision(
    client: &reqwest::blocking::Client,
    auth: &str,
    token: &str,
    k: usize,
    rev: u64,
) {
    poll_until(|| revision_in_force(client, auth, token, k) >= Some(rev));
}

/// Where one reload's time goes, measured in this process with accessgate's own loader on
/// the server's directory, each stage the best of three: reading the files, YAML to
/// documents, documents to typed policies, compiling, the whole of `parse_manifests` (all
/// three, as a reload runs them), indexing, and dropping the previous set.
fn reload_breakdown(dir: &Path, r: &mut Report) {
    let mut best = [Duration::MAX; 7];
    for _ in 0..3 {
        for (b, took) in best.iter_mut().zip(reload_stages(dir)) {
            *b = (*b).min(took);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    r.note(
        "reload, no load",
        "one reload of 10,000 policies, stage by stage (in-process, best of 3)",
        format!(
            "read {:.0} ms; YAML → documents {:.0} ms; documents → AccessPolicy {:.0} ms; \
             compile {:.0} ms; parse_manifests (the three together) {:.0} ms; \
             index {:.0} ms; dropping the old set {:.0} ms",
            ms(best[0]),
            ms(best[1]),
            ms(best[2]),
            ms(best[3]),
            ms(best[4]),
            ms(best[5]),
            ms(best[6])
        ),
    );
}

/// What one change costs the file source, which reloads incrementally: the policy directory
/// copied and loaded whole, then one churned file rewritten five times, each reload timed
/// in-process (best of 5): finding and parsing the change (`load_changes`), updating the
/// index, and dropping the index it replaces.
fn incremental_reload(dir: &Path, issuer_url: &str, r: &mut Report) {
    use accessgate::source::files::{HostLedger, ParsedFiles, load_changes};
    let copy = tempfile::tempdir().unwrap();
    for (path, text) in read_policy_files(dir) {
        let name = Path::new(&path).file_name().unwrap();
        std::fs::write(copy.path().join(name), text).unwrap();
    }
    let mut parsed = ParsedFiles::default();
    let mut ledger = HostLedger::new(None, Duration::from_secs(3600));
    ledger.apply(load_changes(copy.path(), &mut parsed).unwrap());
    // Files written within 2 s of a look are read again (a "racy" stat): let the copy age
    // past that, as a directory in service has, and look once more.
    thread::sleep(Duration::from_millis(2100));
    let mut index = ledger.apply(load_changes(copy.path(), &mut parsed).unwrap());
    let mut best = [Duration::MAX; 3];
    for rev in 1..=5 {
        let text = churn_policy(issuer_url, 0, 1000 + rev);
        std::fs::write(copy.path().join(churn_file(0)), text).unwrap();
        let t = Instant::now();
        let changes = load_changes(copy.path(), &mut parsed).unwrap();
        best[0] = best[0].min(t.elapsed());
        let t = Instant::now();
        let next = ledger.apply(changes);
        best[1] = best[1].min(t.elapsed());
        let t = Instant::now();
        drop(std::mem::replace(&mut index, next));
        best[2] = best[2].min(t.elapsed());
    }
    assert_eq!(index.len(), POLICIES);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    r.note(
        "reload, no load",
        "one change to one of 10,000 policies, as the file source reloads it (in-process, best of 5)",
        format!(
            "find and parse the change {:.0} µs; update the index {:.0} µs; drop the index it \
             replaces {:.0} µs",
            us(best[0]),
            us(best[1]),
            us(best[2])
        ),
    );
}

/// One pass of [`reload_breakdown`]'s stages, in its order.
fn reload_stages(dir: &Path) -> [Duration; 7] {
    use accessgate::api::AccessPolicy;
    use accessgate::core::policy::{PolicyKey, compile};
    use accessgate::source::files::{HostLedger, parse_manifests};
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let mut texts = Vec::new();
    let read = timed(&mut || texts = read_policy_files(dir));
    let mut docs: Vec<Value> = Vec::new();
    let yaml = timed(&mut || {
        docs = texts
            .iter()
            .flat_map(|(_, text)| serde_saphyr::from_multiple::<Value>(text).unwrap())
            .filter(|d| !d.is_null())
            .collect()
    });
    let mut typed: Vec<AccessPolicy> = Vec::new();
    let deserialize = timed(&mut || {
        typed = docs
            .iter()
            .map(|d| serde_json::from_value(d.clone()).unwrap())
            .collect()
    });
    let compiling = timed(&mut || {
        for p in &typed {
            let key = PolicyKey::new("bench", p.metadata.name.clone().unwrap_or_default());
            compile(key, None, &p.spec).unwrap();
        }
    });
    let mut entries = Vec::new();
    let parse = timed(&mut || {
        entries = texts
            .iter()
            .flat_map(|(name, text)| parse_manifests(name, text).unwrap())
            .collect()
    });
    let mut index = None;
    let indexing = timed(&mut || {
        index = Some(
            HostLedger::new(None, std::time::Duration::from_secs(3600))
                .index(std::mem::take(&mut entries)),
        )
    });
    let dropping = timed(&mut || drop(index.take()));
    [
        read,
        yaml,
        deserialize,
        compiling,
        parse,
        indexing,
        dropping,
    ]
}

/// The policy files of `dir` as the file source picks them, (name, text), in name order.
fn read_policy_files(dir: &Path) -> Vec<(String, String)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// One written change: its number (= the revision it wrote), the policy, when the rename
/// completed.
#[derive(Clone, Copy)]
struct Change {
    rev: u64,
    policy: usize,
    written: Instant,
}

/// What the churned run measured.
struct ChurnRun {
    load: Load,
    /// Change→enforced times, ms, in change order.
    enforced_ms: Vec<f64>,
    written: usize,
    /// Changes not seen in force within the grace period after the run.
    unseen: usize,
    reloads: usize,
    cpu_seconds: f64,
}

/// The load at `rate` for `secs` while this thread writes [`CHANGES_PER_SECOND`] changes a
/// second and a probe thread times each one until it is in force.
fn run_churn(
    server: &Server,
    issuer_url: &str,
    token: &str,
    targets: &Path,
    rate: u64,
    secs: u64,
) -> ChurnRun {
    let pending = Arc::new(Mutex::new(VecDeque::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let probe = spawn_probe(
        server.auth.clone(),
        token.to_owned(),
        pending.clone(),
        stop.clone(),
    );
    let (reloads, cpu) = (server.reloads(), cpu_seconds(server.proc.pid()));
    let attack = spawn_attack(
        targets.to_owned(),
        Pace::Rate(rate),
        Duration::from_secs(secs),
        RunClock::start(),
    );
    let written = write_changes(server, issuer_url, secs, &pending);
    let hits = attack.join().expect("vegeta thread");
    // The last changes get a grace period to be enforced; what is left is reported unseen.
    eventually(Duration::from_secs(30), || {
        pending.lock().unwrap().is_empty()
    });
    stop.store(true, Ordering::Relaxed);
    let enforced_ms = probe.join().expect("probe thread");
    ChurnRun {
        load: summarize(&hits),
        unseen: written - enforced_ms.len(),
        enforced_ms,
        written,
        reloads: server.reloads() - reloads,
        cpu_seconds: cpu_seconds(server.proc.pid()) - cpu,
    }
}

/// Writes the changes on schedule (change `n` at `n / rate` s), round robin over the churned
/// policies, each queued for the probe once renamed into place. Returns how many.
fn write_changes(
    server: &Server,
    issuer_url: &str,
    secs: u64,
    pending: &Mutex<VecDeque<Change>>,
) -> usize {
    let start = Instant::now();
    let count = secs * CHANGES_PER_SECOND;
    for n in 0..count {
        sleep_until(start + Duration::from_secs_f64(n as f64 / CHANGES_PER_SECOND as f64));
        // Revisions 1..=5 went to policy 0 in `isolated_reloads`; keep counting up.
        let rev = 10 + n;
        let policy = n as usize % CHURNED;
        server.write_policy(&churn_file(policy), &churn_policy(issuer_url, policy, rev));
        pending.lock().unwrap().push_back(Change {
            rev,
            policy,
            written: Instant::now(),
        });
    }
    count as usize
}

/// The probe: asks about the oldest pending change until an answer shows its revision or a
/// later one (a later one means the change was read and then superseded), then moves on to
/// the next. Returns each change's change→enforced time, ms.
fn spawn_probe(
    auth: String,
    token: String,
    pending: Arc<Mutex<VecDeque<Change>>>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<f64>> {
    thread::spawn(move || {
        let client = http();
        let mut enforced = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let oldest = pending.lock().unwrap().front().copied();
            let Some(change) = oldest else {
                thread::sleep(PROBE_EVERY);
                continue;
            };
            if revision_in_force(&client, &auth, &token, change.policy) >= Some(change.rev) {
                enforced.push(change.written.elapsed().as_secs_f64() * 1000.0);
                pending.lock().unwrap().pop_front();
            } else {
                thread::sleep(PROBE_EVERY);
            }
        }
        enforced
    })
}

/// The probe's requests without changes to look for: churned policy 0 asked every
/// [`PROBE_EVERY`], as [`spawn_probe`] asks while a change is pending.
fn spawn_idle_probe(auth: String, token: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let client = http();
        while !stop.load(Ordering::Relaxed) {
            revision_in_force(&client, &auth, &token, 0);
            thread::sleep(PROBE_EVERY);
        }
    })
}

/// The revision of churned policy `k` that answers now: the number in its `X-Rev-<n>`
/// response header.
fn revision_in_force(
    client: &reqwest::blocking::Client,
    auth: &str,
    token: &str,
    k: usize,
) -> Option<u64> {
    let resp = client
        .get(format!("{auth}/auth/bench/c{k}"))
        .header("x-original-url", format!("https://c{k}.example.test/"))
        .header("cf-access-jwt-assertion", token)
        .send()
        .ok()?;
    resp.headers()
        .keys()
        .find_map(|name| name.as_str().strip_prefix("x-rev-")?.parse().ok())
}

/// `quiet` is the run without changes and the policy reloads logged during it (any is one too
/// many: nothing changed).
fn report_churn(
    r: &mut Report,
    rate: u64,
    quiet: (&Load, usize),
    run: &ChurnRun,
    isolated: Duration,
) {
    let (quiet, idle_reloads) = quiet;
    r.row(
        "open loop",
        &format!("vegeta {rate}/s, no changes"),
        quiet.clone(),
        format!("{idle_reloads} policy reloads meanwhile, though nothing changed"),
    );
    r.row(
        "open loop",
        &format!("vegeta {rate}/s, {CHANGES_PER_SECOND} policy changes/s"),
        run.load.clone(),
        format!(
            "{} changes written, {} reloads ({:.2} s of accessgate CPU)",
            run.written, run.reloads, run.cpu_seconds
        ),
    );
    let mut sorted = run.enforced_ms.clone();
    let (p50, p99) = (percentile(&mut sorted, 0.5), percentile(&mut sorted, 0.99));
    r.note(
        "churn",
        "change → enforced",
        format!(
            "p50 {p50:.0} ms, p99 {p99:.0} ms, max {:.0} ms over {} changes; {} not seen \
             within 30 s after the run",
            sorted.last().copied().unwrap_or(f64::NAN),
            sorted.len(),
            run.unseen
        ),
    );
    r.verdict(
        "churn: request p99 under churn vs without",
        run.load.p99_ms / quiet.p99_ms,
        "≤ 1.2",
        run.load.p99_ms <= 1.2 * quiet.p99_ms,
    );
    r.verdict(
        "churn: change→enforced p99 (of 1 s)",
        p99 / 1000.0,
        "< 1",
        p99 < 1000.0 && run.unseen == 0,
    );
    r.extra = format!(
        "A change is in force once the file source has reloaded the directory: {isolated:.0?} \
         from rename to in force with no load, of which 150 ms is the watcher waiting for \
         writes to settle. Changes written while a reload runs wait for the next one. The \
         stage-by-stage row is what loading all 10,000 policies from nothing costs (a start); \
         a reload reads, parses and re-indexes only what changed (the one-change row).\n\n"
    );
}

// ---------------------------------------------------------------------------------------
// Open-loop load: vegeta with per-request results
// ---------------------------------------------------------------------------------------

/// One request as vegeta recorded it.
#[derive(Clone, Copy, Debug)]
struct Hit {
    /// When it was sent, seconds since the run's clock started.
    at: f64,
    class: Class,
    /// 0 when there was no answer (timeout, socket error).
    code: u16,
    latency_ms: f64,
}

/// A run's time origin, both as an `Instant` (for samplers) and as Unix time (vegeta's
/// timestamps).
#[derive(Clone)]
struct RunClock {
    instant: Instant,
    unix_ns: u128,
}

impl RunClock {
    fn start() -> RunClock {
        RunClock {
            instant: Instant::now(),
            unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        }
    }

    fn since_start(&self) -> f64 {
        self.instant.elapsed().as_secs_f64()
    }
}

/// One GET in vegeta's JSON target format.
fn target(url: &str, headers: &[(&str, &str)]) -> Value {
    let header: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!([v])))
        .collect();
    json!({"method": "GET", "url": url, "header": header})
}

fn write_targets(path: &Path, targets: &[Value]) {
    let mut text = String::new();
    for t in targets {
        writeln!(text, "{t}").unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// How vegeta sends.
#[derive(Clone, Copy)]
enum Pace {
    /// Open loop: this many requests a second, however slow the answers.
    Rate(u64),
    /// Closed loop: this many workers, each sending when its last answer came (a maximum).
    Closed(u32),
}

impl Pace {
    fn args(self) -> Vec<String> {
        match self {
            Pace::Rate(rate) => vec![
                format!("-rate={rate}/1s"),
                "-workers=64".into(),
                // Bounded so that a stall queues requests on open connections, as a proxy's
                // keep-alive pool would, instead of making vegeta open thousands of new ones
                // and measure its own connection storm.
                "-max-connections=256".into(),
            ],
            Pace::Closed(workers) => vec![
                "-rate=0".into(),
                format!("-workers={workers}"),
                format!("-max-workers={workers}"),
            ],
        }
    }
}

fn spawn_attack(
    targets: PathBuf,
    pace: Pace,
    duration: Duration,
    clock: RunClock,
) -> thread::JoinHandle<Vec<Hit>> {
    thread::spawn(move || attack(&targets, pace, duration, &clock))
}

fn vegeta() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(vegeta_bin)
}

/// `vegeta attack` at `pace` for `duration`, round robin over `targets`, its results
/// streamed through `vegeta encode --to csv` and kept as [`Hit`]s (a results file of a
/// ten-minute soak would run to gigabytes).
fn attack(targets: &Path, pace: Pace, duration: Duration, clock: &RunClock) -> Vec<Hit> {
    let mut attack = Command::new(vegeta())
        .args(["attack", "-format=json", "-max-body=0", "-timeout=10s"])
        .args(pace.args())
        .arg(format!("-duration={}ms", duration.as_millis()))
        .arg(format!("-targets={}", targets.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("vegeta attack");
    let mut encode = Command::new(vegeta())
        .args(["encode", "--to", "csv"])
        .stdin(attack.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("vegeta encode");
    let hits = BufReader::new(encode.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| parse_hit(&line, clock))
        .collect();
    let status = attack.wait().expect("vegeta attack");
    assert!(status.success(), "vegeta attack failed: {status}");
    encode.wait().expect("vegeta encode");
    hits
}

/// One line of `vegeta encode --to csv`: timestamp (Unix ns), code, latency (ns), bytes out,
/// bytes in, error, body, attack, seq, method, URL, headers.
fn parse_hit(line: &str, clock: &RunClock) -> Option<Hit> {
    let f = csv_fields(line);
    let ns: u128 = f.first()?.parse().ok()?;
    Some(Hit {
        at: (ns as f64 - clock.unix_ns as f64) / 1e9,
        code: f.get(1)?.parse().ok()?,
        latency_ms: f.get(2)?.parse::<f64>().ok()? / 1e6,
        class: Class::of_url(f.get(10)?),
    })
}

/// Fields of one CSV record (RFC 4180 quoting: vegeta quotes error texts holding commas).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// Hits as a report row: the rate they were sent at (over the span of their send times, so
/// a generator that fell behind shows), latency percentiles, and failures (answers other
/// than the class's expected status).
fn summarize(hits: &[Hit]) -> Load {
    let mut latencies: Vec<f64> = hits.iter().map(|h| h.latency_ms).collect();
    Load {
        rps: hits.len() as f64 / send_span(hits),
        p50_ms: percentile(&mut latencies, 0.5),
        p99_ms: percentile(&mut latencies, 0.99),
        failures: hits.iter().filter(|h| h.code != h.class.expected()).count() as u64,
    }
}

/// Seconds from the first request sent to the last.
fn send_span(hits: &[Hit]) -> f64 {
    let (first, last) = hits
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), h| {
            (lo.min(h.at), hi.max(h.at))
        });
    (last - first).max(f64::MIN_POSITIVE)
}

/// A row's figures on one line, for progress output.
fn describe(load: &Load) -> String {
    format!(
        "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} failures",
        load.rps, load.p50_ms, load.p99_ms, load.failures
    )
}

/// The `q` quantile (nearest rank) of `values`, which it sorts.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

// ---------------------------------------------------------------------------------------
// RSS sampling
// ---------------------------------------------------------------------------------------

/// Samples a process's RSS every [`RSS_EVERY`] from a thread until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    fn start(pid: u32, clock: RunClock) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                samples.push((clock.since_start(), rss_kib(pid)));
                thread::park_timeout(RSS_EVERY);
            }
            samples
        });
        RssSampler { stop, thread }
    }

    /// Stops sampling; the samples as (seconds since the clock started, KiB).
    fn stop(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        self.thread.join().expect("RSS sampler")
    }
}
