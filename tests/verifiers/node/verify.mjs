#!/usr/bin/env node
// Independent verifier of accessgate's signed upstream assertion, written against panva/jose
// (npm `jose`, pinned in package-lock.json) and sharing no code with accessgate.
//
//   node verify.mjs --jwks URL --issuer ISS --audience AUD --token TOKEN
//
// Fetches the JWKS over HTTP, verifies the token's ES256 signature with the key its header's
// kid names, and checks iss, aud (the token's aud must contain AUD), exp (required, no leeway),
// iat (required) and nbf (if present). On success: exit 0 and one line of JSON on stdout, the
// verified payload with the protected header's "kid" first. On any failure: exit 1 and one line
// `error: <reason>` on stderr. Bad arguments: exit 2. The token itself is never printed.
import { parseArgs } from 'node:util';
import { webcrypto } from 'node:crypto';

// jose 6 uses the global WebCrypto object, a default from Node.js 19 on; Node.js 18
// (Debian 12's nodejs) has it only behind a flag, so provide it before loading jose.
if (!globalThis.crypto) globalThis.crypto = webcrypto;
const { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } = await import('jose');

let token = '';

function fail(reason, code = 1) {
  let text = String(reason);
  // Never echo the token (a shorter string is no token, and too common to cut out).
  if (token.length >= 16) text = text.split(token).join('<token>');
  process.stderr.write(`error: ${text.replace(/\s+/g, ' ').trim()}\n`);
  process.exit(code);
}

function describe(err) {
  if (!err || typeof err !== 'object') return String(err);
  let text = err.code ? `${err.code}: ${err.message}` : `${err.name || 'Error'}: ${err.message}`;
  // A failed claim check names the claim; say what the token had.
  if ((err.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' || err.code === 'ERR_JWT_EXPIRED') && err.claim && err.payload && err.claim in err.payload) {
    text += `: got ${JSON.stringify(err.payload[err.claim])}`;
    if (err.claim === 'iss') text += `, want ${JSON.stringify(args.issuer)}`;
    if (err.claim === 'aud') text += `, want ${JSON.stringify(args.audience)}`;
    if (err.claim === 'exp') text += `, now ${Math.floor(Date.now() / 1000)}`;
  }
  if (err.code === 'ERR_JWKS_NO_MATCHING_KEY') {
    try {
      text += ` (token kid ${JSON.stringify(decodeProtectedHeader(token).kid ?? null)})`;
    } catch {}
  }
  // fetch() failures say only "fetch failed"; the cause says why (connect ECONNREFUSED ...).
  const cause = err.cause;
  if (cause && typeof cause === 'object') {
    const detail = cause.message || cause.code;
    if (detail && !text.includes(detail)) text += ` (${detail})`;
  }
  return text;
}

let args;
try {
  args = parseArgs({
    options: {
      jwks: { type: 'string' },
      issuer: { type: 'string' },
      audience: { type: 'string' },
      token: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (err) {
  fail(`${err.message}; usage: verify.mjs --jwks URL --issuer ISS --audience AUD --token TOKEN`, 2);
}
token = args.token ?? '';
for (const name of ['jwks', 'issuer', 'audience', 'token']) {
  if (!args[name]) fail(`missing --${name}; usage: verify.mjs --jwks URL --issuer ISS --audience AUD --token TOKEN`, 2);
}

let jwksUrl;
try {
  jwksUrl = new URL(args.jwks);
} catch {
  fail(`--jwks is not a URL: ${args.jwks}`, 2);
}

try {
  const jwks = createRemoteJWKSet(jwksUrl, { timeoutDuration: 5000 });
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer: args.issuer,
    audience: args.audience,
    algorithms: ['ES256'],
    requiredClaims: ['exp', 'iat'],
  });
  if (typeof protectedHeader.kid !== 'string' || protectedHeader.kid === '') {
    fail('token header has no "kid"');
  }
  process.stdout.write(`${JSON.stringify({ kid: protectedHeader.kid, ...payload })}\n`);
  process.exit(0);
} catch (err) {
  fail(describe(err));
}
