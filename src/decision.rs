//! Request + policy → Allow{headers} or Deny{reason}: the one place the rules are applied.
//! Pure: keys through [`KeyLookup`], time as an argument.

use axum::http::HeaderMap;

use crate::headers::{self, Rendered};
use crate::keys::{KeyAnswer, KeyLookup};
use crate::policy::CompiledPolicy;
use crate::reason::Reason;
use crate::verify::{self, TokenKind};

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow { kind: TokenKind, headers: Rendered },
    Deny(Reason),
}

impl Decision {
    pub fn outcome(&self) -> Result<(), Reason> {
        match self {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny(r) => Err(*r),
        }
    }
}

/// Decides one request. `now` is seconds since the Unix epoch.
pub fn decide(policy: &CompiledPolicy, request_headers: &HeaderMap, keys: &impl KeyLookup, now: u64) -> Decision {
    match evaluate(policy, request_headers, keys, now) {
        Ok((kind, headers)) => Decision::Allow { kind, headers },
        Err(reason) => Decision::Deny(reason),
    }
}

fn evaluate(
    policy: &CompiledPolicy,
    request_headers: &HeaderMap,
    keys: &impl KeyLookup,
    now: u64,
) -> Result<(TokenKind, Rendered), Reason> {
    let token = verify::extract_token(request_headers, &policy.token_sources)?;
    let header = verify::read_header(token, &policy.algorithms)?;
    let key = match keys.lookup(&policy.jwks_uri, &header.kid) {
        KeyAnswer::Found(key) => key,
        KeyAnswer::Unknown => return Err(Reason::KeyUnknown),
        KeyAnswer::Unavailable => return Err(Reason::KeysUnavailable),
    };
    let claims = verify::verify_signature(token, &header, &key)?;
    let kind = verify::check_claims(&claims, policy, now)?;
    Ok((kind, headers::render(&claims, &policy.claim_headers)))
}
