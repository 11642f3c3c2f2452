//! This install's Service, and whether an `auth-url` reaches it. Pure.
//!
//! The proxy resolves the auth-url's host through the cluster DNS, so a URL counts only when its
//! host can resolve to nothing but this Service: `svc.ns.svc.<clusterDomain>` (the form to use;
//! nginx's own resolver sends names as written), or `svc.ns.svc` / `svc.ns`, which a pod's
//! search path can complete only to this Service. Never a bare `svc`: it is completed in the
//! *proxy's* namespace, which accessgate cannot see. Nor an IP literal (a ClusterIP is not part
//! of [`InstallService`], a pod IP bypasses the Service), a scheme other than `http`, another
//! port, or a host with userinfo, `%`-escapes or nginx variables. Each form and why:
//! docs/proxies.md, "The Ingress audit".

/// The Service in front of this install's auth port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallService {
    pub name: String,
    pub namespace: String,
    pub port: u16,
    /// The cluster's DNS domain (kubelet `--cluster-domain`), e.g. `cluster.local`.
    pub cluster_domain: String,
}

/// Why an auth-url does not reach this install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elsewhere {
    /// Not `http://` (`https://`, another scheme, or none).
    NotHttp,
    /// The authority is not a plain `host[:port]`.
    Malformed,
    IpAddress,
    /// A bare Service name: resolved in the proxy pod's namespace.
    BareServiceName,
    /// Another Service, namespace or cluster domain, or no Service name at all.
    OtherHost,
    OtherPort,
}

impl InstallService {
    /// `http://{name}.{namespace}.svc.{clusterDomain}`, with `:{port}` unless it is 80.
    pub fn base_url(&self) -> String {
        let port = match self.port {
            80 => String::new(),
            p => format!(":{p}"),
        };
        format!(
            "http://{}.{}.svc.{}{port}",
            self.name, self.namespace, self.cluster_domain
        )
    }

    /// The path (with query) `auth_url` asks this install for, or why it goes elsewhere.
    pub fn path_on_this_install<'u>(&self, auth_url: &'u str) -> Result<&'u str, Elsewhere> {
        let (scheme, rest) = auth_url.split_once("://").ok_or(Elsewhere::NotHttp)?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(Elsewhere::NotHttp);
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (host, port) = split_port(authority)?;
        if port != self.port {
            return Err(Elsewhere::OtherPort);
        }
        self.check_host(host)?;
        Ok(path)
    }

    /// Whether `host` resolves to this Service and nothing else (module doc).
    fn check_host(&self, host: &str) -> Result<(), Elsewhere> {
        if host.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(Elsewhere::IpAddress);
        }
        let host = host.to_ascii_lowercase();
        let (name, absolute) = match host.strip_suffix('.') {
            Some(n) => (n, true),
            None => (host.as_str(), false),
        };
        let fqdn = format!(
            "{}.{}.svc.{}",
            self.name, self.namespace, self.cluster_domain
        );
        let through_search_path = [
            format!("{}.{}", self.name, self.namespace),
            format!("{}.{}.svc", self.name, self.namespace),
        ];
        if name == fqdn || (!absolute && through_search_path.iter().any(|f| f == name)) {
            Ok(())
        } else if !absolute && name == self.name {
            Err(Elsewhere::BareServiceName)
        } else {
            Err(Elsewhere::OtherHost)
        }
    }
}

/// Splits `host[:port]`; the port defaults to http's 80. Refuses what is not a plain host:
/// userinfo, IPv6 literals (brackets), escapes, variables, an empty or zero port.
fn split_port(authority: &str) -> Result<(&str, u16), Elsewhere> {
    if authority.starts_with('[') {
        return Err(Elsewhere::IpAddress);
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => {
            let valid =
                !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| valid && *p != 0)
                .ok_or(Elsewhere::Malformed)?;
            (host, port)
        }
        None => (authority, 80),
    };
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    if host.is_empty() || !host.bytes().all(plain) {
        return Err(Elsewhere::Malformed);
    }
    Ok((host, port))
}

/// A DNS name as Kubernetes writes a cluster domain: lowercase labels of letters, digits
/// and inner dashes, at most 63 characters each and 253 in all, no trailing dot.
pub fn is_cluster_domain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// The Service a default chart release in `accessgate-system` creates, for tests.
#[cfg(test)]
impl InstallService {
    pub fn chart_default() -> InstallService {
        InstallService {
            name: "accessgate".into(),
            namespace: "accessgate-system".into(),
            port: 80,
            cluster_domain: "cluster.local".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> InstallService {
        InstallService::chart_default()
    }

    fn reached(url: &str) -> Result<&str, Elsewhere> {
        install().path_on_this_install(url)
    }

    #[test]
    fn base_url_uses_the_cluster_domain_and_omits_port_80() {
        assert_eq!(
            install().base_url(),
            "http://accessgate.accessgate-system.svc.cluster.local"
        );
        let other = InstallService {
            port: 8080,
            cluster_domain: "corp.internal".into(),
            ..install()
        };
        assert_eq!(
            other.base_url(),
            "http://accessgate.accessgate-system.svc.corp.internal:8080"
        );
    }

    #[test]
    fn fully_qualified_names_reach_it_with_or_without_the_trailing_dot() {
        for url in [
            "http://accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local./auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local:80/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local.:80/auth/apps/web",
        ] {
            assert_eq!(reached(url), Ok("/auth/apps/web"), "{url}");
        }
    }

    #[test]
    fn names_the_search_path_completes_to_it_reach_it() {
        for url in [
            "http://accessgate.accessgate-system.svc/auth/apps/web",
            "http://accessgate.accessgate-system/auth/apps/web",
            "http://accessgate.accessgate-system:80/auth/apps/web",
        ] {
            assert_eq!(reached(url), Ok("/auth/apps/web"), "{url}");
        }
    }

    #[test]
    fn host_and_scheme_are_case_insensitive() {
        assert_eq!(
            reached("HTTP://AccessGate.AccessGate-System.SVC.Cluster.Local/auth/apps/web"),
            Ok("/auth/apps/web")
        );
    }

    #[test]
    fn the_path_keeps_its_query_and_may_be_empty() {
        assert_eq!(
            reached("http://accessgate.accessgate-system.svc.cluster.local/auth?host=$host"),
            Ok("/auth?host=$host")
        );
        assert_eq!(
            reached("http://accessgate.accessgate-system.svc.cluster.local?x=1"),
            Ok("?x=1")
        );
        assert_eq!(reached("http://accessgate.accessgate-system"), Ok(""));
    }

    #[test]
    fn a_bare_service_name_never_counts() {
        // Resolved in the proxy pod's namespace, which accessgate cannot see.
        assert_eq!(
            reached("http://accessgate/auth/apps/web"),
            Err(Elsewhere::BareServiceName)
        );
        assert_eq!(
            reached("http://accessgate:80/auth/apps/web"),
            Err(Elsewhere::BareServiceName)
        );
    }

    #[test]
    fn short_names_with_a_trailing_dot_are_absolute_and_resolve_nowhere() {
        for url in [
            "http://accessgate./auth/apps/web",
            "http://accessgate.accessgate-system./auth/apps/web",
            "http://accessgate.accessgate-system.svc./auth/apps/web",
        ] {
            assert_eq!(reached(url), Err(Elsewhere::OtherHost), "{url}");
        }
    }

    #[test]
    fn misspelt_service_namespace_or_domain_go_elsewhere() {
        for url in [
            "http://acessgate.accessgate-system.svc.cluster.local/auth/apps/web",
            "http://accessgate.accesgate-system.svc.cluster.local/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.locl/auth/apps/web",
            "http://accessgate.accessgate-system.svc.corp.internal/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster/auth/apps/web",
            "http://accessgate.other.svc.cluster.local/auth/apps/web",
            "http://acessgate.accessgate-system/auth/apps/web",
            "http://accessgate.accessgate-system.pod.cluster.local/auth/apps/web",
            "http://x.accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
            "http://accessgate.example.com/auth/apps/web",
            "http://accessgate-system/auth/apps/web",
        ] {
            assert_eq!(reached(url), Err(Elsewhere::OtherHost), "{url}");
        }
    }

    #[test]
    fn another_port_goes_elsewhere() {
        for url in [
            "http://accessgate.accessgate-system.svc.cluster.local:8080/auth/apps/web",
            "http://accessgate.accessgate-system:9090/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local:443/auth/apps/web",
        ] {
            assert_eq!(reached(url), Err(Elsewhere::OtherPort), "{url}");
        }
        let on_8080 = InstallService {
            port: 8080,
            ..install()
        };
        assert_eq!(
            on_8080.path_on_this_install("http://accessgate.accessgate-system:8080/auth/a/b"),
            Ok("/auth/a/b")
        );
        assert_eq!(
            on_8080.path_on_this_install("http://accessgate.accessgate-system/auth/a/b"),
            Err(Elsewhere::OtherPort)
        );
    }

    #[test]
    fn only_plain_http_counts() {
        for url in [
            "https://accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
            "https://accessgate.accessgate-system.svc.cluster.local:80/auth/apps/web",
            "grpc://accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
            "accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
            "/auth/apps/web",
        ] {
            assert_eq!(reached(url), Err(Elsewhere::NotHttp), "{url}");
        }
    }

    #[test]
    fn ip_literals_never_count() {
        for url in [
            "http://10.96.0.10/auth/apps/web",
            "http://10.96.0.10:80/auth/apps/web",
            "http://127.0.0.1/auth/apps/web",
            "http://[fd00::10]/auth/apps/web",
            "http://[::1]:80/auth/apps/web",
        ] {
            assert_eq!(reached(url), Err(Elsewhere::IpAddress), "{url}");
        }
    }

    #[test]
    fn authorities_that_are_not_plain_hosts_are_refused() {
        for url in [
            "http://user@accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local:/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local:0/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local:65536/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local:+80/auth/apps/web",
            "http://accessgate.accessgate-system.svc.cluster.local:80:80/auth/apps/web",
            "http://access%67ate.accessgate-system.svc.cluster.local/auth/apps/web",
            "http://$host/auth/apps/web",
            "http:///auth/apps/web",
            "http:// accessgate.accessgate-system/auth/apps/web",
        ] {
            assert_eq!(reached(url), Err(Elsewhere::Malformed), "{url}");
        }
    }

    #[test]
    fn cluster_domains_are_lowercase_dns_names() {
        for good in ["cluster.local", "corp.internal", "k8s", "a-b.c1"] {
            assert!(is_cluster_domain(good), "{good}");
        }
        let long_label = format!("{}.local", "a".repeat(64));
        for bad in [
            "",
            "cluster.local.",
            ".cluster.local",
            "Cluster.local",
            "cluster..local",
            "-cluster.local",
            "cluster-.local",
            "cluster_local",
            "cluster.local/x",
            long_label.as_str(),
        ] {
            assert!(!is_cluster_domain(bad), "{bad:?}");
        }
    }
}
