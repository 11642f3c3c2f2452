//! The proxy tier, one test binary: accessgate behind real nginx (as ingress-nginx renders
//! `auth-url`), Caddy (`forward_auth`), Traefik (`forwardAuth`, and its ingress-nginx provider
//! against a real kube-apiserver), and the gateway examples against the gateways' own CRDs.
//!
//! [`contract`] is what every proxy must do with accessgate's answers, written once and run
//! per proxy; each proxy's module adds what only that proxy has. One binary, so the harness
//! and its processes' helpers are built once.
#![cfg(feature = "e2e")]

#[path = "../common/mod.rs"]
mod common;

mod caddy;
mod contract;
mod gateway_examples;
mod nginx;
mod rollout;
mod routing;
mod traefik;
mod traefik_ingress_nginx;
