// Command verify-go is an independent verifier of accessgate's signed upstream assertion,
// written against github.com/go-jose/go-jose/v4 (pinned in go.mod) and sharing no code with
// accessgate.
//
//	verify-go --jwks URL --issuer ISS --audience AUD --token TOKEN
//
// It fetches the JWKS over HTTP, parses the token accepting ES256 only, picks the key its
// header's kid names, verifies the signature and checks iss, aud (the token's aud must
// contain AUD), exp (required, no leeway), iat (required, not in the future) and nbf (if
// present). On success: exit 0 and one line of JSON on stdout, the verified payload with the
// protected header's "kid" first. On any failure: exit 1 and one line `error: <reason>` on
// stderr. Bad arguments: exit 2. The token itself is never printed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const usage = "usage: verify-go --jwks URL --issuer ISS --audience AUD --token TOKEN"

var token string

func fail(code int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if len(token) >= 16 { // never echo the token (a shorter string is no token, and too common to cut)
		msg = strings.ReplaceAll(msg, token, "<token>")
	}
	msg = strings.Join(strings.Fields(msg), " ")
	fmt.Fprintf(os.Stderr, "error: %s\n", msg)
	os.Exit(code)
}

func fetchJWKS(url string) (*jose.JSONWebKeySet, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching JWKS: %s answered %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading JWKS: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("parsing JWKS: %w", err)
	}
	return &set, nil
}

func main() {
	flags := flag.NewFlagSet("verify-go", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	jwksURL := flags.String("jwks", "", "JWKS URL")
	issuer := flags.String("issuer", "", "expected iss")
	audience := flags.String("audience", "", "expected aud (one of the token's)")
	flags.StringVar(&token, "token", "", "the compact JWS")
	if err := flags.Parse(os.Args[1:]); err != nil {
		fail(2, "%v; %s", err, usage)
	}
	if flags.NArg() != 0 {
		fail(2, "unexpected argument %q; %s", flags.Arg(0), usage)
	}
	for _, f := range []struct{ name, value string }{
		{"jwks", *jwksURL}, {"issuer", *issuer}, {"audience", *audience}, {"token", token},
	} {
		if f.value == "" {
			fail(2, "missing --%s; %s", f.name, usage)
		}
	}

	set, err := fetchJWKS(*jwksURL)
	if err != nil {
		fail(1, "%v", err)
	}

	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		fail(1, "parsing token: %v", err)
	}
	if len(tok.Headers) != 1 {
		fail(1, "token has %d signatures, want 1", len(tok.Headers))
	}
	kid := tok.Headers[0].KeyID
	if kid == "" {
		fail(1, `token header has no "kid"`)
	}
	keys := set.Key(kid)
	if len(keys) == 0 {
		fail(1, "no key with kid %q in the JWKS at %s", kid, *jwksURL)
	}

	var claims jwt.Claims
	var raw json.RawMessage // the whole verified payload, as signed
	var verr error
	verified := false
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != string(jose.ES256) {
			verr = fmt.Errorf("JWKS key %q is for alg %q, not ES256", kid, k.Algorithm)
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			verr = fmt.Errorf("JWKS key %q has use %q, not sig", kid, k.Use)
			continue
		}
		if verr = tok.Claims(k.Key, &claims, &raw); verr == nil {
			verified = true
			break
		}
	}
	if !verified {
		fail(1, "signature verification failed with JWKS key %q: %v", kid, verr)
	}

	if err := claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      *issuer,
		AnyAudience: jwt.Audience{*audience},
		Time:        time.Now(),
	}, 0); err != nil {
		switch {
		case errors.Is(err, jwt.ErrInvalidIssuer):
			fail(1, "%v: got %q, want %q", err, claims.Issuer, *issuer)
		case errors.Is(err, jwt.ErrExpired) && claims.Expiry != nil:
			fail(1, "%v: got %d, now %d", err, claims.Expiry.Time().Unix(), time.Now().Unix())
		case errors.Is(err, jwt.ErrInvalidAudience):
			fail(1, "%v: got %q, want %q", err, []string(claims.Audience), *audience)
		default:
			fail(1, "%v", err)
		}
	}
	if claims.Expiry == nil {
		fail(1, `token has no "exp" claim`)
	}
	if claims.IssuedAt == nil {
		fail(1, `token has no "iat" claim`)
	}

	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil || compact.Len() < 2 || compact.Bytes()[0] != '{' {
		fail(1, "payload is not a JSON object")
	}
	kidJSON, _ := json.Marshal(kid)
	out := []byte(`{"kid":`)
	out = append(out, kidJSON...)
	if rest := compact.Bytes()[1:]; !bytes.Equal(rest, []byte("}")) {
		out = append(out, ',')
		out = append(out, rest...)
	} else {
		out = append(out, '}')
	}
	out = append(out, '\n')
	os.Stdout.Write(out)
}
