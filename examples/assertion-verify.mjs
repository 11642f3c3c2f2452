// An app verifying accessgate's signed upstream assertion (spec.upstreamAssertion) before it
// trusts who the request is from: Node.js with panva/jose (`npm install jose`).
//
//   ACCESSGATE=http://accessgate.accessgate-system.svc.cluster.local \
//   AUDIENCE=grafana node assertion-verify.mjs
//
// ISSUER is the install's --assertion-issuer (the chart sets the Service URL); AUDIENCE the
// policy's upstreamAssertion.audience. The JWKS is fetched through the cluster Service and
// refetched when a token names a key it has not seen (a rotation).
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const base = process.env.ACCESSGATE ?? 'http://accessgate.accessgate-system.svc.cluster.local';
const issuer = process.env.ISSUER ?? base;
const audience = process.env.AUDIENCE ?? 'grafana';
const keys = createRemoteJWKSet(new URL('/.well-known/jwks.json', base));

http.createServer(async (req, res) => {
  const token = req.headers['x-accessgate-assertion'];
  try {
    if (typeof token !== 'string') throw new Error('no assertion');
    const { payload } = await jwtVerify(token, keys, { issuer, audience, algorithms: ['ES256'] });
    // Trust these, not X-Auth-Request-Email: only accessgate could have signed them.
    res.end(`hello ${payload.email ?? payload.sub} (groups: ${payload.groups.join(', ')}; policy ${payload.policy})\n`);
  } catch (e) {
    res.writeHead(401).end(`refused: ${e.code ?? e.message}\n`);
  }
}).listen(8000);
