//! Signing keys: one cache per JWKS URL, shared by every policy that names it, refreshed in the
//! background and refetched once (coalesced, rate-limited) when a token names an unknown `kid`.
//!
//! Whatever asks (first use, refresh, retries, unknown kids, a policy removed and added again),
//! one URL is fetched at most [`FETCH_BURST`] times at once and then once per [`FETCH_PERIOD`]:
//! no setting and no policy can make a replica poll an issuer harder, since issuers such as
//! Cloudflare rate-limit clients that do. After fetch errors the last good set is kept for a
//! bounded time, then dropped: stale keys never live forever. Fetches go through
//! [`crate::fetch`]. Defaults and flags: docs/reference.md, "The auth contract".

pub mod signing;
pub mod tokens;

pub use crate::core::jwks::{
    FixedKeys, KeyAnswer, KeyLookup, KeyParseError, KeySet, MAX_KID_LEN, VerifyingKey,
    parse_key_set,
};
pub use crate::fetch::FetchError;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use rand::Rng;
use reqwest::header::HeaderMap;
use tokio::task::JoinHandle;
use url::Url;

use crate::fetch::{AddressPolicy, Fetcher};
use crate::metrics::{JwksLabels, KeyFetchLabels, Metrics};

/// Sustained rate of fetches of one JWKS URL: one per period, per replica. The design's own
/// unknown-`kid` limit (once per 10 s per issuer); 6 a minute stays far below what issuers
/// rate-limit (Cloudflare's certs endpoint is cached and meant to be polled in minutes).
pub const FETCH_PERIOD: Duration = Duration::from_secs(10);
/// Fetches of one URL allowed back to back before [`FETCH_PERIOD`] applies: the first fetch,
/// a refetch for a key rotated just after it, and one retry or re-added policy, without
/// making any of them wait. So at most `FETCH_BURST + 6` fetches in any minute.
pub const FETCH_BURST: u32 = 3;

/// When the next fetch of one URL may start: a bucket of [`FETCH_BURST`] fetches refilled one
/// per [`FETCH_PERIOD`], kept as the instant it is full again (the generic cell rate
/// algorithm: one `Instant`, no timer).
#[derive(Clone, Copy, Debug)]
struct FetchBudget {
    full_at: Instant,
}

impl FetchBudget {
    fn full(now: Instant) -> Self {
        Self { full_at: now }
    }

    /// Spends one fetch at `now`, or returns the instant one is available.
    fn spend(&mut self, now: Instant) -> Result<(), Instant> {
        let full_at = self.full_at.max(now);
        let reach = FETCH_PERIOD * (FETCH_BURST - 1);
        if let Some(earliest) = full_at.checked_sub(reach)
            && now < earliest
        {
            return Err(earliest);
        }
        self.full_at = full_at + FETCH_PERIOD;
        Ok(())
    }

    /// Full again: forgetting it changes nothing.
    fn is_full(&self, now: Instant) -> bool {
        now >= self.full_at
    }
}

/// Tunables; the defaults are the design's.
#[derive(Clone, Debug)]
pub struct KeyConfig {
    pub refresh_interval: Duration,
    pub unknown_kid_min_interval: Duration,
    pub max_stale: Duration,
    pub fetch_timeout: Duration,
    pub retry_interval: Duration,
    pub max_body_bytes: usize,
    /// Which addresses fetches may connect to; everything by default (file mode), guarded in
    /// cluster mode.
    pub addresses: AddressPolicy,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(300),
            unknown_kid_min_interval: Duration::from_secs(10),
            max_stale: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(15),
            max_body_bytes: 1 << 20,
            addresses: AddressPolicy::AllowAll,
        }
    }
}

/// A snapshot of one cache, for status, events and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    pub ids: Vec<String>,
    pub fetched_at: Option<SystemTime>,
    /// The last fetch's failure as a category (`timeout`, `blocked_address`,
    /// `http_status 404`, `not_jwks`, ...; see [`FetchError`]), `None` after a success.
    pub error: Option<String>,
}

struct Loaded {
    set: KeySet,
    fetched_at: SystemTime,
    fetched: Instant,
}

struct Cache {
    url: Url,
    loaded: ArcSwapOption<Loaded>,
    last_error: Mutex<Option<String>>,
    /// Held for the duration of a fetch: concurrent refetches wait and then reuse the result.
    fetch_lock: tokio::sync::Mutex<()>,
    /// Bumped after every fetch attempt, so a waiter can tell one happened while it waited.
    attempts: AtomicU64,
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

/// All key caches of the process.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

/// Called with a JWKS URL and its new key IDs whenever its key set changes.
pub type KeySetListener = Arc<dyn Fn(&Url, &[String]) + Send + Sync>;

struct Inner {
    fetcher: Fetcher,
    config: KeyConfig,
    caches: RwLock<HashMap<Url, Arc<Cache>>>,
    metrics: Arc<Metrics>,
    listener: RwLock<Option<KeySetListener>>,
    /// Per URL, outliving its cache: a policy removed and added again gets no new budget.
    budgets: Mutex<HashMap<Url, FetchBudget>>,
}

impl Inner {
    /// Takes one fetch of `url` from its budget, or returns when one will be available.
    fn spend_fetch(&self, url: &Url) -> Result<(), Instant> {
        let now = Instant::now();
        self.budgets
            .lock()
            .expect("fetch budget lock")
            .entry(url.clone())
            .or_insert_with(|| FetchBudget::full(now))
            .spend(now)
    }

    /// Waits until `url` may be fetched, and takes that fetch.
    async fn wait_for_fetch(&self, url: &Url) {
        while let Err(at) = self.spend_fetch(url) {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    /// Forgets the budgets of URLs no policy names that are full again (the rest are kept
    /// until they refill, so dropping and re-adding a URL cannot reset its budget).
    fn prune_budgets(&self, urls: &HashSet<Url>) {
        let now = Instant::now();
        self.budgets
            .lock()
            .expect("fetch budget lock")
            .retain(|url, budget| urls.contains(url) || !budget.is_full(now));
    }
}

impl KeyStore {
    pub fn new(config: KeyConfig, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let fetcher = Fetcher::new(config.fetch_timeout, config.addresses.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                fetcher,
                config,
                caches: RwLock::new(HashMap::new()),
                metrics,
                listener: RwLock::new(None),
                budgets: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Registers the one listener told about key set changes (the verified-token cache).
    pub fn on_key_set_change(&self, listener: KeySetListener) {
        *self.inner.listener.write().expect("listener lock") = Some(listener);
    }

    /// Makes the set of cached URLs exactly `urls`: new ones start fetching at once, ones no
    /// policy names any more stop refreshing and are forgotten.
    pub fn retain(&self, urls: &HashSet<Url>) {
        let mut caches = self.inner.caches.write().expect("key cache lock poisoned");
        caches.retain(|url, cache| {
            let keep = urls.contains(url);
            if !keep {
                if let Some(task) = cache.refresher.lock().expect("refresher lock").take() {
                    task.abort();
                }
                self.inner.metrics.keys_loaded.remove(&JwksLabels {
                    jwks_uri: url.to_string(),
                });
            }
            keep
        });
        self.inner.prune_budgets(urls);
        for url in urls {
            if !caches.contains_key(url) {
                let cache = Arc::new(Cache {
                    url: url.clone(),
                    loaded: ArcSwapOption::empty(),
                    last_error: Mutex::new(None),
                    fetch_lock: tokio::sync::Mutex::new(()),
                    attempts: AtomicU64::new(0),
                    last_unknown_kid_fetch: Mutex::new(None),
                    refresher: Mutex::new(None),
                });
                let task = tokio::spawn(refresh_loop(self.inner.clone(), cache.clone()));
                *cache.refresher.lock().expect("refresher lock") = Some(task);
                caches.insert(url.clone(), cache);
            }
        }
    }

    fn cache(&self, url: &Url) -> Option<Arc<Cache>> {
        self.inner
            .caches
            .read()
            .expect("key cache lock poisoned")
            .get(url)
            .cloned()
    }

    /// Called when a decision hit an unknown `kid` or no keys: fetches again unless a fetch
    /// for this URL ran within the rate limit (`unknown_kid_min_interval`, and the URL's
    /// fetch budget). Concurrent callers share one fetch. Returns
    /// whether a fetch completed since the caller looked, i.e. whether deciding again can
    /// give a different answer.
    pub async fn refetch(&self, url: &Url) -> bool {
        let Some(cache) = self.cache(url) else {
            return false;
        };
        let seen = cache.attempts.load(Ordering::Acquire);
        let _guard = cache.fetch_lock.lock().await;
        if cache.attempts.load(Ordering::Acquire) != seen {
            return true; // someone else fetched while we waited
        }
        {
            let mut last = cache
                .last_unknown_kid_fetch
                .lock()
                .expect("rate limit lock");
            let now = Instant::now();
            if let Some(t) = *last
                && now.duration_since(t) < self.inner.config.unknown_kid_min_interval
            {
                return false;
            }
            if self.inner.spend_fetch(url).is_err() {
                tracing::debug!(jwks_uri = %url, "unknown-kid refetch held back: the URL's fetch budget is spent");
                return false;
            }
            *last = Some(now);
        }
        fetch_into(&self.inner, &cache).await;
        true
    }

    /// Waits until every cached URL has had at least one fetch attempt (or `timeout`):
    /// whether they all had one, so a caller cannot mistake a timeout for a fetch.
    pub async fn wait_first_fetch(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = {
                let caches = self.inner.caches.read().expect("key cache lock poisoned");
                caches
                    .values()
                    .any(|c| c.attempts.load(Ordering::Acquire) == 0)
            };
            if !pending {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn status(&self, url: &Url) -> Option<KeyStatus> {
        let cache = self.cache(url)?;
        let loaded = cache.loaded.load();
        Some(KeyStatus {
            ids: loaded.as_ref().map(|l| l.set.ids()).unwrap_or_default(),
            fetched_at: loaded.as_ref().map(|l| l.fetched_at),
            error: cache.last_error.lock().expect("error lock").clone(),
        })
    }
}

impl KeyLookup for KeyStore {
    fn lookup(&self, jwks_uri: &Url, kid: &str) -> KeyAnswer {
        let Some(cache) = self.cache(jwks_uri) else {
            return KeyAnswer::Unavailable;
        };
        let loaded = cache.loaded.load();
        match loaded.as_ref() {
            None => KeyAnswer::Unavailable,
            Some(l) if l.fetched.elapsed() > self.inner.config.max_stale => KeyAnswer::Unavailable,
            Some(l) => match l.set.get(kid) {
                Some(k) => KeyAnswer::Found(k.clone()),
                None => KeyAnswer::Unknown,
            },
        }
    }
}

async fn refresh_loop(inner: Arc<Inner>, cache: Arc<Cache>) {
    loop {
        inner.wait_for_fetch(&cache.url).await;
        let ok = {
            let _guard = cache.fetch_lock.lock().await;
            fetch_into(&inner, &cache).await
        };
        let base = if ok {
            inner.config.refresh_interval
        } else {
            inner.config.retry_interval
        };
        tokio::time::sleep(jittered(base)).await;
    }
}

/// ±10 %, so replicas and URLs do not fetch in lockstep.
fn jittered(base: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..1.1);
    base.mul_f64(factor)
}

/// One fetch; the caller holds `fetch_lock`. Returns whether it succeeded.
async fn fetch_into(inner: &Inner, cache: &Cache) -> bool {
    let url = cache.url.to_string();
    let result = fetch_key_set(&inner.fetcher, &cache.url, inner.config.max_body_bytes).await;
    let ok = result.is_ok();
    match result {
        Ok(set) => {
            let old = cache.loaded.load();
            let old_ids = old.as_ref().map(|l| l.set.ids());
            let new_ids = set.ids();
            let same_material = old
                .as_ref()
                .is_some_and(|l| l.set.fingerprints() == set.fingerprints());
            if old_ids.as_ref() == Some(&new_ids) && !same_material {
                // The verified-token cache compares key material, so its entries for these
                // kids stop matching; worth a line for whoever wonders why.
                tracing::warn!(jwks_uri = %url, kids = ?new_ids, "signing key material changed under the same key IDs");
            }
            if old_ids.as_ref() != Some(&new_ids) {
                tracing::info!(jwks_uri = %url, kids = ?new_ids, previous = ?old_ids, "signing keys loaded");
                if let Some(listener) = inner.listener.read().expect("listener lock").as_ref() {
                    listener(&cache.url, &new_ids);
                }
            }
            inner
                .metrics
                .keys_loaded
                .get_or_create(&JwksLabels {
                    jwks_uri: url.clone(),
                })
                .set(set.len() as i64);
            cache.loaded.store(Some(Arc::new(Loaded {
                set,
                fetched_at: SystemTime::now(),
                fetched: Instant::now(),
            })));
            *cache.last_error.lock().expect("error lock") = None;
        }
        Err(e) => {
            tracing::warn!(jwks_uri = %url, error = %e, detail = e.detail(), "signing key fetch failed; keeping the last good set");
            *cache.last_error.lock().expect("error lock") = Some(e.to_string());
        }
    }
    let result = if ok { "success" } else { "error" };
    inner
        .metrics
        .key_fetches
        .get_or_create(&KeyFetchLabels {
            jwks_uri: url,
            result,
        })
        .inc();
    cache.attempts.fetch_add(1, Ordering::AcqRel);
    ok
}

impl From<KeyParseError> for FetchError {
    fn from(e: KeyParseError) -> Self {
        match e {
            KeyParseError::NotJson(_) | KeyParseError::NotKeyDocument => FetchError::NotJwks,
            KeyParseError::NoUsableKeys => FetchError::NoUsableKeys,
        }
    }
}

/// Fetches and parses one key document: the one JWKS fetch of the crate (the key caches and
/// `accessgate check` both use it).
pub async fn fetch_key_set(
    fetcher: &Fetcher,
    url: &Url,
    max_body: usize,
) -> Result<KeySet, FetchError> {
    let body = fetcher.get(url, HeaderMap::new(), max_body).await?;
    Ok(parse_key_set(&body)?)
}

/// One fetch with `config`'s timeout, body cap and address guard, outside any cache.
pub async fn fetch_once(config: &KeyConfig, url: &Url) -> Result<KeySet, FetchError> {
    let fetcher = Fetcher::new(config.fetch_timeout, config.addresses.clone())
        .map_err(|e| FetchError::Request(e.to_string()))?;
    fetch_key_set(&fetcher, url, config.max_body_bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_a_burst_of_fetches_then_one_per_period() {
        let start = Instant::now();
        let mut budget = FetchBudget::full(start);
        for _ in 0..FETCH_BURST {
            assert_eq!(budget.spend(start), Ok(()));
        }
        assert_eq!(budget.spend(start), Err(start + FETCH_PERIOD));
        let later = start + FETCH_PERIOD;
        assert_eq!(budget.spend(later), Ok(()));
        assert_eq!(budget.spend(later), Err(later + FETCH_PERIOD));
    }

    /// Asked every 10 ms for ten minutes (what a flood of unknown kids, a 0 s refresh and
    /// policy churn together would ask): never more than the burst plus one per period.
    #[test]
    fn no_caller_pattern_spends_more_than_burst_plus_one_per_period() {
        let start = Instant::now();
        let mut budget = FetchBudget::full(start);
        let mut granted = Vec::new();
        for tick in 0..60_000u32 {
            let now = start + Duration::from_millis(10) * tick;
            if budget.spend(now).is_ok() {
                granted.push(now);
            }
        }
        for (i, &from) in granted.iter().enumerate() {
            let in_a_minute = granted[i..]
                .iter()
                .take_while(|&&t| t < from + Duration::from_secs(60))
                .count();
            assert!(
                in_a_minute <= FETCH_BURST as usize + 6,
                "{in_a_minute} fetches in a minute"
            );
        }
        // Ten minutes: the burst at the start, then one at every period but the first.
        assert_eq!(granted.len(), FETCH_BURST as usize + 59);
    }

    #[test]
    fn an_unused_budget_refills_and_is_then_forgettable() {
        let start = Instant::now();
        let mut budget = FetchBudget::full(start);
        assert!(budget.is_full(start));
        for _ in 0..FETCH_BURST {
            budget.spend(start).unwrap();
        }
        assert!(!budget.is_full(start + FETCH_PERIOD));
        let refilled = start + FETCH_PERIOD * FETCH_BURST;
        assert!(budget.is_full(refilled));
        for _ in 0..FETCH_BURST {
            assert_eq!(budget.spend(refilled), Ok(()));
        }
    }
}
