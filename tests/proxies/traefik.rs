//! Behind real Traefik v3 (`forwardAuth`, built from the Go module proxy by
//! `tests/traefik/build.sh`) on the forward dialect: the proxy contract.

use crate::common::traefik::Traefik;
use crate::contract::contract_tests;

contract_tests!(Traefik);
