//! Open-loop load with vegeta: requests leave at a fixed rate whether or not earlier ones have
//! been answered, so a slow answer cannot hold back the next request (wrk's closed loop lets
//! it, which hides queueing). `attack` runs one fixed-rate attack and reads `vegeta report
//! -type=json`; `ceiling` measures how fast vegeta itself can send on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Workers vegeta starts with; it adds more (up to [`MAX_WORKERS`]) whenever all are busy, so
/// the rate holds even when answers are slow.
const WORKERS: u32 = 64;
/// Requests in flight at most: enough for 5,000 req/s answered in 200 ms. Past that the
/// server is far beyond its capacity, and thousands more connections would only bury the
/// machine (and the next run) in its backlog.
pub const MAX_WORKERS: u32 = 1024;

/// One GET request, as vegeta's `http` target format writes it.
pub struct Target<'a> {
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

impl Target<'_> {
    fn to_http_format(&self) -> String {
        let mut text = format!("GET {}\n", self.url);
        for (k, v) in self.headers {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text
    }
}

/// What one fixed-rate attack measured.
#[derive(Debug, Clone, Default)]
pub struct OpenLoad {
    /// Offered rate, requests per second.
    pub offered: f64,
    /// The rate vegeta actually sent at; below `offered` when the generator could not keep up.
    pub sent: f64,
    /// Successful answers per second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Share of answers with a 2xx/3xx status (vegeta's `success`, 0..1).
    pub success: f64,
    pub requests: u64,
}

impl OpenLoad {
    /// Requests that failed (non-2xx/3xx, timeouts, socket errors).
    pub fn failures(&self) -> u64 {
        (self.requests as f64 * (1.0 - self.success)).round() as u64
    }

    /// Whether vegeta sent within 2 % of the offered rate.
    pub fn kept_rate(&self) -> bool {
        self.sent >= 0.98 * self.offered
    }

    /// Whether vegeta fell far (> 10 %) short of the offered rate: every worker was waiting on
    /// the server, or the generator or the machine was saturated. Either way the loop was no
    /// longer open, and the latencies are not comparable with other rows.
    pub fn generator_bound(&self) -> bool {
        self.sent < 0.9 * self.offered
    }

    /// Whether the server answered (nearly) everything offered, successfully and in time:
    /// it was below its capacity at this rate.
    pub fn kept_up(&self) -> bool {
        self.kept_rate() && self.throughput >= 0.98 * self.offered && self.success >= 0.999
    }

    /// The same figures as a closed-loop [`super::Load`], for a report row.
    pub fn as_load(&self) -> super::Load {
        super::Load {
            rps: self.throughput,
            p50_ms: self.p50_ms,
            p99_ms: self.p99_ms,
            failures: self.failures(),
        }
    }
}

/// `vegeta attack -rate=RATE/s -duration=SECSs` against `target`, then `vegeta report
/// -type=json` on its results. `Err` carries vegeta's complaint.
pub fn attack(vegeta: &str, target: &Target, rate: u32, secs: u32) -> Result<OpenLoad, String> {
    let (_dir, targets, results) = scratch(target)?;
    let pace = [
        format!("-rate={rate}/s"),
        format!("-workers={WORKERS}"),
        format!("-max-workers={MAX_WORKERS}"),
    ];
    run_attack(vegeta, &pace, &targets, &results, secs)?;
    let json = run_report(vegeta, &results)?;
    let load = parse_report(&json, rate as f64)?;
    eprintln!("vegeta {} at {rate}/s: {load:?}", target.url);
    Ok(load)
}

/// How fast vegeta itself can send on this machine: `-rate=0` (as fast as `workers` allow,
/// closed loop) against `target` for `secs`; the rate it sent at, requests per second. Offered
/// rates near this measure the generator rather than the server.
pub fn ceiling(vegeta: &str, target: &Target, workers: u32, secs: u32) -> Result<f64, String> {
    let (_dir, targets, results) = scratch(target)?;
    let pace = [
        "-rate=0".to_owned(),
        format!("-workers={workers}"),
        format!("-max-workers={workers}"),
    ];
    run_attack(vegeta, &pace, &targets, &results, secs)?;
    let load = parse_report(&run_report(vegeta, &results)?, 0.0)?;
    eprintln!("vegeta ceiling against {}: {:.0}/s", target.url, load.sent);
    Ok(load.sent)
}

/// A temporary directory holding the targets file for `target` and the results file to be;
/// both go when the directory is dropped.
fn scratch(target: &Target) -> Result<(tempfile::TempDir, PathBuf, PathBuf), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let targets = dir.path().join("targets.txt");
    let results = dir.path().join("results.bin");
    std::fs::write(&targets, target.to_http_format()).map_err(|e| e.to_string())?;
    Ok((dir, targets, results))
}

fn run_attack(
    vegeta: &str,
    pace: &[String],
    targets: &Path,
    results: &Path,
    secs: u32,
) -> Result<(), String> {
    let out = Command::new(vegeta)
        .arg("attack")
        .args(pace)
        .arg(format!("-duration={secs}s"))
        .arg("-timeout=10s")
        .arg(format!("-targets={}", targets.display()))
        .arg(format!("-output={}", results.display()))
        .output()
        .map_err(|e| format!("cannot run {vegeta}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "vegeta attack: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn run_report(vegeta: &str, results: &Path) -> Result<String, String> {
    let out = Command::new(vegeta)
        .args(["report", "-type=json"])
        .arg(results)
        .output()
        .map_err(|e| format!("cannot run {vegeta}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "vegeta report: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads `vegeta report -type=json` (latencies in nanoseconds).
pub fn parse_report(json: &str, offered: f64) -> Result<OpenLoad, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("vegeta report is not JSON: {e}"))?;
    let ms = |key: &str| v["latencies"][key].as_f64().unwrap_or(f64::NAN) / 1e6;
    Ok(OpenLoad {
        offered,
        sent: v["rate"].as_f64().unwrap_or(0.0),
        throughput: v["throughput"].as_f64().unwrap_or(0.0),
        p50_ms: ms("50th"),
        p99_ms: ms("99th"),
        max_ms: ms("max"),
        success: v["success"].as_f64().unwrap_or(0.0),
        requests: v["requests"].as_u64().unwrap_or(0),
    })
}
