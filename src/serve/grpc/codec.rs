//! The codec of ext_authz `Check`: tonic's prost codec, except that a `CheckRequest` whose
//! fault is a `string` field that is not UTF-8 decodes to `request_malformed` instead of
//! failing the call.
//!
//! prost refuses a whole message for one such field (a header name or value, `path`,
//! `host`, a context extension, ...: a proxy passing raw header bytes on can send one), and
//! tonic answers a message it cannot decode with a gRPC error, which Envoy handles by its
//! failure mode (`failure_mode_allow` lets the request through). A check that cannot be read
//! is a deny by contract, so the handler gets the reason and answers with one.

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::core::reason::Reason;

/// A check as decoded: the request, or why it cannot be read.
pub type Check = Result<CheckRequest, Reason>;

/// How prost's message for a `string` field that is not UTF-8 ends. Its error kinds are
/// private, so the text is the only way to tell; the tests pin it, so a prost upgrade that
/// rewords it fails there instead of turning these checks back into gRPC errors.
const NOT_UTF8: &str = "invalid string value: data is not UTF-8 encoded";

/// [`CheckResponse`] out, [`Check`] in.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = Check;
    type Encoder = ResponseEncoder;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> CheckDecoder {
        CheckDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = CheckResponse;
    type Error = Status;

    fn encode(&mut self, item: CheckResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // The buffer grows as needed; prost fails only on one that cannot.
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckDecoder;

impl Decoder for CheckDecoder {
    type Item = Check;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Check>, Status> {
        decode_check(src).map(Some)
    }
}

/// The one message in `buf`, which is read to its end. Bytes that are no `CheckRequest` at
/// all are an `INTERNAL` error, as tonic's own prost codec makes them.
fn decode_check(buf: &mut impl Buf) -> Result<Check, Status> {
    match CheckRequest::decode(&mut *buf) {
        Ok(check) => Ok(Ok(check)),
        Err(e) if e.to_string().ends_with(NOT_UTF8) => {
            // prost stopped inside the message: tonic would read the rest as the next one.
            buf.advance(buf.remaining());
            Ok(Err(Reason::RequestMalformed))
        }
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
    use std::collections::HashMap;
    use tonic::Code;

    const MARK: &str = "cafe-latin1";

    /// A check whose `http` request is `http`, serialised.
    fn serialised(http: attribute_context::HttpRequest, context: &[(&str, &str)]) -> Vec<u8> {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: context
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }

    /// `bytes` with the one [`MARK`] in it made ISO-8859-1 (`caf\xe9-latin1`: not UTF-8).
    fn latin1(mut bytes: Vec<u8>) -> Vec<u8> {
        let at = bytes
            .windows(MARK.len())
            .position(|w| w == MARK.as_bytes())
            .expect("the mark");
        bytes[at + 3] = 0xe9;
        bytes
    }

    fn decode(bytes: &[u8]) -> (Result<Check, Status>, usize) {
        let mut buf = bytes;
        let check = decode_check(&mut buf);
        (check, buf.len())
    }

    #[test]
    fn a_non_utf8_string_anywhere_is_request_malformed_and_the_message_is_consumed() {
        let http = |headers: HashMap<String, String>, path: &str, host: &str| {
            attribute_context::HttpRequest {
                method: "GET".into(),
                headers,
                path: path.into(),
                host: host.into(),
                ..Default::default()
            }
        };
        let header = |k: &str, v: &str| HashMap::from([(k.to_owned(), v.to_owned())]);
        for (what, bytes) in [
            (
                "header value",
                serialised(http(header("x-a", MARK), "/", "a"), &[]),
            ),
            (
                "header name",
                serialised(http(header(MARK, "v"), "/", "a"), &[]),
            ),
            ("path", serialised(http(HashMap::new(), MARK, "a"), &[])),
            ("host", serialised(http(HashMap::new(), "/", MARK), &[])),
            (
                "context extension",
                serialised(http(HashMap::new(), "/", "a"), &[("name", MARK)]),
            ),
        ] {
            let (check, _) = decode(&bytes);
            assert!(
                matches!(check, Ok(Ok(_))),
                "{what}: the clean message decodes"
            );
            let (check, left) = decode(&latin1(bytes));
            assert!(
                matches!(check, Ok(Err(Reason::RequestMalformed))),
                "{what}: {check:?}"
            );
            assert_eq!(left, 0, "{what}: the rest of the message is skipped");
        }
    }

    #[test]
    fn bytes_that_are_no_check_request_stay_an_error() {
        for garbage in [&b"\xff\xff\xff"[..], b"\x0a\x05ab", b"\x08"] {
            let (check, _) = decode(garbage);
            let status = check.expect_err("garbage");
            assert_eq!(status.code(), Code::Internal, "{garbage:?}");
        }
    }
}
