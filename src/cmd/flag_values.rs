//! Flag values that would hurt someone else, or stop the process after it was deployed, are
//! refused while the command line is parsed. These are clap value parsers: clap's message
//! names the flag and the value (`invalid value '0s' for '--jwks-refresh <JWKS_REFRESH>'`),
//! these add why. The chart's `values.schema.json` refuses the same values before a pod
//! starts; `tests/cluster/helm.rs` checks the two agree.

use std::time::Duration;

/// The shortest interval accepted for anything that schedules a JWKS fetch
/// (`--jwks-refresh`, `--jwks-retry`, `--jwks-refetch-min-interval`): the key store's own
/// per-URL period ([`crate::keys::FETCH_PERIOD`]). A shorter one could not take effect (the
/// store would hold the fetches back), so it is refused instead of silently stretched.
pub const MIN_FETCH_INTERVAL: Duration = crate::keys::FETCH_PERIOD;

/// Log levels `--log` accepts, alone or after `target=`.
pub const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A duration (`90s`, `5m`, `1h30m`) of at least [`MIN_FETCH_INTERVAL`].
pub fn fetch_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if interval < MIN_FETCH_INTERVAL {
        let floor = humantime::format_duration(MIN_FETCH_INTERVAL);
        return Err(format!(
            "must be at least {floor}, the floor for intervals that schedule JWKS fetches \
             (a JWKS URL is fetched at most once per {floor}; issuers rate-limit clients that \
             fetch their keys more often)"
        ));
    }
    Ok(interval)
}

/// An install class (`--class`): a DNS label, the shape `spec.className` must have, so that
/// a class no policy could name is refused instead of silently serving nothing.
pub fn class_name(value: &str) -> Result<String, String> {
    if crate::core::policy::is_dns_label(value) {
        Ok(value.to_owned())
    } else {
        Err("must be a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters), as spec.className is".to_owned())
    }
}

/// The cluster's DNS domain (`--cluster-domain`): a lowercase DNS name without a trailing
/// dot, as the kubelet's is written, so that the Ingress audit compares like with like.
pub fn cluster_domain(value: &str) -> Result<String, String> {
    if crate::controller::install::is_cluster_domain(value) {
        Ok(value.to_owned())
    } else {
        Err("must be a lowercase DNS name without a trailing dot (labels of letters, digits and inner '-', at most 63 characters each, 253 in all), e.g. cluster.local".to_owned())
    }
}

/// A log filter: comma-separated directives, each a level or `target=level`, the target a
/// Rust module path (`info`, `warn,accessgate=debug`, `accessgate::keys=trace`).
///
/// Stricter than tracing's `EnvFilter`, which reads a bare word that is not a level as a
/// target: `nonsense` would enable every level for a target nothing logs under and silence
/// everything else, so a typo would turn the logs off instead of failing.
pub fn log_filter(value: &str) -> Result<String, String> {
    match value.split(',').find(|d| !is_log_directive(d)) {
        None => Ok(value.to_owned()),
        Some(bad) => Err(format!(
            "`{bad}` is not a level ({}) or `target=level`",
            LOG_LEVELS.join(", ")
        )),
    }
}

fn is_log_directive(directive: &str) -> bool {
    let (target, level) = match directive.split_once('=') {
        Some((target, level)) => (Some(target), level),
        None => (None, directive),
    };
    LOG_LEVELS.contains(&level) && target.is_none_or(is_module_path)
}

/// `name(::name)*`, a name being an ASCII identifier.
fn is_module_path(path: &str) -> bool {
    path.split("::").all(|name| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `--assertion-key-rotation`: a duration of at least
/// [`MIN_STEP`](crate::controller::key_rotation::MIN_STEP).
pub fn key_rotation_step(raw: &str) -> Result<std::time::Duration, String> {
    use crate::controller::key_rotation::MIN_STEP;
    let d = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if d < MIN_STEP {
        return Err(format!(
            "at least {} (the kubelet's Secret sync plus the longest assertion lifetime)",
            humantime::format_duration(MIN_STEP)
        ));
    }
    Ok(d)
}

/// `NAMESPACE/NAME`, both DNS labels.
pub fn namespaced_name(raw: &str) -> Result<(String, String), String> {
    let (ns, name) = raw
        .split_once('/')
        .ok_or("NAMESPACE/NAME, such as gateway-system/public")?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !label(ns) || !label(name) {
        return Err("NAMESPACE/NAME, both lowercase DNS labels".into());
    }
    Ok((ns.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_intervals_below_the_floor_are_refused_with_the_floor() {
        for bad in ["0s", "1s", "9s", "9999ms"] {
            let e = fetch_interval(bad).unwrap_err();
            assert!(e.contains("must be at least 10s"), "{bad}: {e}");
        }
        for good in ["10s", "10000ms", "5m", "1h30m", "1m 5s"] {
            assert!(fetch_interval(good).is_ok(), "{good}");
        }
        assert!(fetch_interval("soon").is_err());
    }

    #[test]
    fn classes_are_dns_labels() {
        for good in ["accessgate", "blue", "team-2"] {
            assert_eq!(class_name(good).as_deref(), Ok(good));
        }
        for bad in ["", "Blue", "blue.green", "-blue", "blue_green"] {
            assert!(class_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn cluster_domains_are_lowercase_dns_names() {
        for good in ["cluster.local", "corp.internal", "k8s"] {
            assert_eq!(cluster_domain(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "cluster.local.",
            "Cluster.local",
            "cluster..local",
            "-x.local",
        ] {
            assert!(cluster_domain(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn log_filters_are_levels_or_target_level_lists() {
        for good in [
            "info",
            "warn,accessgate=debug",
            "accessgate::keys=trace",
            "off",
            "kube_runtime=warn,info",
        ] {
            assert_eq!(log_filter(good).as_deref(), Ok(good));
        }
        for bad in [
            "nonsense",
            "",
            "INFO",
            "info,",
            "accessgate=verbose",
            "accessgate=",
            "=debug",
            "info debug",
            "accessgate:keys=debug",
            "[span]=debug",
            "accessgate-x=debug",
        ] {
            assert!(log_filter(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// What passes here, tracing parses too: the binary never starts with a filter it
    /// would then refuse or read differently.
    #[test]
    fn accepted_log_filters_parse_as_env_filters() {
        for good in ["info", "warn,accessgate=debug", "accessgate::keys=trace"] {
            tracing_subscriber::EnvFilter::try_new(log_filter(good).unwrap()).unwrap();
        }
    }
}
