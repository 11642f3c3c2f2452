//! What every end-to-end benchmark shares: the load generators' runners (wrk closed-loop,
//! vegeta open-loop), the report a benchmark fills (rows, verdicts) and writes as one part of
//! docs/benchmarks.md, and a few /proc readings. `bench/run.sh` joins the parts.
//!
//! Benchmarks, not tests: nothing here asserts a duration; a verdict is reported, never
//! enforced.

#![allow(dead_code)] // each bench binary uses its own subset

pub mod plot;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub mod vegeta;
pub mod zero_work;

/// Seconds per wrk row (ACCESSGATE_BENCH_SECONDS overrides, for a quick look).
pub fn seconds() -> u32 {
    std::env::var("ACCESSGATE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

pub const CONNECTIONS: u32 = 32;
/// One core's worth of workers for accessgate, as for every other server measured.
pub const ONE_CORE: [(&str, &str); 1] = [("TOKIO_WORKER_THREADS", "1")];

#[derive(Debug, Clone, Default)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors.
    pub failures: u64,
}

pub fn duration_ms(s: &str) -> f64 {
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

/// wrk, one thread, [`CONNECTIONS`] keep-alive connections, [`seconds()`] long.
pub fn wrk(url: &str, headers: &[(&str, &str)]) -> Load {
    wrk_for(url, headers, seconds())
}

pub fn wrk_for(url: &str, headers: &[(&str, &str)], secs: u32) -> Load {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{secs}s"),
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

/// vegeta (built by bench/tools/vegeta.sh, cached): the open-loop load generator.
pub fn vegeta_bin() -> String {
    let out = Command::new("bash")
        .arg(format!(
            "{}/bench/tools/vegeta.sh",
            env!("CARGO_MANIFEST_DIR")
        ))
        .output()
        .expect("bash bench/tools/vegeta.sh");
    assert!(
        out.status.success(),
        "bench/tools/vegeta.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub subject: String,
    pub load: Option<Load>,
    pub note: String,
}

/// One part of docs/benchmarks.md: a titled results table, the ratios with their targets,
/// and free text (figures, plots).
pub struct Report {
    pub title: String,
    pub intro: String,
    pub rows: Vec<Row>,
    pub verdicts: Vec<String>,
    pub extra: String,
}

impl Report {
    pub fn new(title: &str, intro: &str) -> Report {
        Report {
            title: title.into(),
            intro: intro.into(),
            rows: Vec::new(),
            verdicts: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn row(
        &mut self,
        scenario: &str,
        subject: &str,
        load: Load,
        note: impl Into<String>,
    ) -> Load {
        self.rows.push(Row {
            scenario: scenario.into(),
            subject: subject.into(),
            load: Some(load.clone()),
            note: note.into(),
        });
        load
    }

    /// A row with a note instead of a load (a rate, a size, why a subject is missing).
    pub fn note(&mut self, scenario: &str, subject: &str, note: impl Into<String>) {
        self.rows.push(Row {
            scenario: scenario.into(),
            subject: subject.into(),
            load: None,
            note: note.into(),
        });
    }

    /// A ratio against its target; `met` is reported as such, never asserted.
    pub fn verdict(&mut self, what: &str, ratio: f64, target: &str, met: bool) {
        let v = format!(
            "| {what} | {ratio:.2}× | {target} | {} |",
            if met { "met" } else { "missed" }
        );
        eprintln!("{v}");
        self.verdicts.push(v);
    }

    /// Writes the part to `target/bench-report/{slug}.md` (bench/run.sh joins the parts into
    /// docs/benchmarks.md) and prints it.
    pub fn write(&self, slug: &str, took: Duration) {
        let mut md = String::new();
        writeln!(md, "## {}\n", self.title).unwrap();
        if !self.intro.is_empty() {
            writeln!(md, "{}\n", self.intro).unwrap();
        }
        writeln!(md, "_This part took {:.0?}._\n", took).unwrap();
        if !self.rows.is_empty() {
            writeln!(md, "| scenario | subject | req/s | p50 ms | p99 ms | failures | note |\n|---|---|---:|---:|---:|---:|---|").unwrap();
            for row in &self.rows {
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
            md.push('\n');
        }
        if !self.verdicts.is_empty() {
            writeln!(md, "| ratio | measured | target | |\n|---|---:|---|---|").unwrap();
            for v in &self.verdicts {
                writeln!(md, "{v}").unwrap();
            }
            md.push('\n');
        }
        md.push_str(&self.extra);
        let dir = report_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{slug}.md"));
        std::fs::write(&path, &md).unwrap();
        println!("{md}");
        eprintln!("wrote {}", path.display());
    }
}

/// Where the parts go (ACCESSGATE_BENCH_REPORT_DIR overrides).
pub fn report_dir() -> PathBuf {
    std::env::var_os("ACCESSGATE_BENCH_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-report"))
        })
}

/// Resident set size of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process so far, seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `cargo bench -- --list` probing: nothing to list.
pub fn listing() -> bool {
    std::env::args().any(|a| a == "--list")
}
