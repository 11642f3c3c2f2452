// grpc-client: an Envoy-shaped gRPC ext_authz client for accessgate's tests and benchmarks.
//
// It shares no code with the server: the messages come from Envoy's own Go protos
// (github.com/envoyproxy/go-control-plane), the transport from grpc-go, and the JSON from
// protojson. Every command prints one JSON object on stdout.
//
//	grpc-client check  -addr HOST:PORT [-request FILE]   CheckRequest as protojson (file or stdin)
//	                                                     -> {"response": CheckResponse} | {"rpc_error": {...}}
//	                   [-proto-hex]                      the input is a serialised CheckRequest in hex, sent
//	                                                     as it is (e.g. with non-UTF-8 strings, which
//	                                                     proto.Marshal refuses to write)
//	grpc-client health -addr HOST:PORT [-service NAME] [-watch [-all]]
//	                                                     -> {"status": "SERVING"} | {"rpc_error": {...}}
//	                                                     -all: one {"status"} line per Watch message as
//	                                                     it arrives, then {"end": "OK"} | {"end": {rpc_error}}
//	grpc-client raw    -addr HOST:PORT -path P [-method POST] [-content-type CT] [-body-hex HEX]
//	                                                     one HTTP/2 cleartext (prior knowledge) request
//	                                                     -> {"proto", "status", "headers", "trailers", "body"}
//	grpc-client load   -addr HOST:PORT -request FILE -n N -c C
//	                                                     N Check calls from C goroutines on one connection
//	grpc-client load-http -url URL [-H 'Name: value']... -n N -c C
//	                                                     the same loop over HTTP/1.1 keep-alive
//	                                                     -> {"requests", "seconds", "rps", "p50_ms", "p99_ms", ...}
//	grpc-client protoset -out FILE                       the Authorization and Health services'
//	                                                     FileDescriptorSet (for ghz --protoset)
//
// Exit status: 0 when a JSON answer was printed (an RPC error is an answer), 2 on bad usage
// or unreadable input.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var out any
	switch cmd {
	case "check":
		out = check(args)
	case "health":
		out = health(args)
	case "raw":
		out = raw(args)
	case "load":
		out = load(args)
	case "load-http":
		out = loadHTTP(args)
	case "protoset":
		out = protoset(args)
	default:
		usage()
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fail("encode: %v", err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: grpc-client check|health|raw|load|load-http -addr HOST:PORT ... (see main.go)")
	os.Exit(2)
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "grpc-client: "+format+"\n", a...)
	os.Exit(2)
}

func dial(addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	return conn
}

func rpcError(err error) map[string]any {
	s, _ := status.FromError(err)
	return map[string]any{"rpc_error": map[string]any{"code": s.Code().String(), "message": s.Message()}}
}

// readInput reads a file, or stdin for "" and "-".
func readInput(path string) []byte {
	var data []byte
	var err error
	if path == "" || path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		fail("read request: %v", err)
	}
	return data
}

// readRequest reads a CheckRequest in protojson form; unknown fields are an error, so a
// test cannot misspell a field and send an empty message without noticing.
func readRequest(path string) *authv3.CheckRequest {
	data := readInput(path)
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(data, req); err != nil {
		fail("request is not a CheckRequest: %v", err)
	}
	return req
}

var marshal = protojson.MarshalOptions{UseProtoNames: true}

func check(args []string) any {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	addr := fs.String("addr", "", "server host:port")
	file := fs.String("request", "-", "CheckRequest JSON file, - for stdin")
	timeout := fs.Duration("timeout", 10*time.Second, "call timeout")
	protoHex := fs.Bool("proto-hex", false, "the input is a serialised CheckRequest in hex, sent as it is")
	_ = fs.Parse(args)
	conn := dial(*addr)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var resp *authv3.CheckResponse
	var err error
	if *protoHex {
		body, herr := hex.DecodeString(strings.TrimSpace(string(readInput(*file))))
		if herr != nil {
			fail("proto-hex: %v", herr)
		}
		resp = &authv3.CheckResponse{}
		err = conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, body, resp, grpc.ForceCodec(rawProto{}))
	} else {
		resp, err = authv3.NewAuthorizationClient(conn).Check(ctx, readRequest(*file))
	}
	if err != nil {
		return rpcError(err)
	}
	b, err := marshal.Marshal(resp)
	if err != nil {
		fail("marshal response: %v", err)
	}
	return map[string]any{"response": json.RawMessage(b)}
}

// rawProto is the proto codec with the request side left out: the request is already
// bytes (-proto-hex), written as they are; the answer is decoded with Envoy's protos.
type rawProto struct{}

func (rawProto) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawProto: %T is not []byte", v)
	}
	return b, nil
}

func (rawProto) Unmarshal(data []byte, v any) error {
	return proto.Unmarshal(data, v.(proto.Message))
}

func (rawProto) Name() string { return "proto" }

func health(args []string) any {
	fs := flag.NewFlagSet("health", flag.ExitOnError)
	addr := fs.String("addr", "", "server host:port")
	service := fs.String("service", "", "service name (empty: the whole server)")
	watch := fs.Bool("watch", false, "use Watch and report its first message")
	all := fs.Bool("all", false, "with -watch: report every message until the call ends")
	_ = fs.Parse(args)
	conn := dial(*addr)
	defer conn.Close()
	timeout := 10 * time.Second
	if *all {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := healthpb.NewHealthClient(conn)
	req := &healthpb.HealthCheckRequest{Service: *service}
	if *watch && *all {
		stream, err := client.Watch(ctx, req)
		if err != nil {
			return map[string]any{"end": rpcError(err)}
		}
		enc := json.NewEncoder(os.Stdout)
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return map[string]any{"end": "OK"}
			}
			if err != nil {
				return map[string]any{"end": rpcError(err)}
			}
			_ = enc.Encode(map[string]any{"status": resp.GetStatus().String()})
		}
	}
	var resp *healthpb.HealthCheckResponse
	var err error
	if *watch {
		var stream healthpb.Health_WatchClient
		if stream, err = client.Watch(ctx, req); err == nil {
			resp, err = stream.Recv()
		}
	} else {
		resp, err = client.Check(ctx, req)
	}
	if err != nil {
		return rpcError(err)
	}
	return map[string]any{"status": resp.GetStatus().String()}
}

// raw sends one request over HTTP/2 cleartext with prior knowledge (no upgrade), as a gRPC
// client does, but with whatever content type and body it is given.
func raw(args []string) any {
	fs := flag.NewFlagSet("raw", flag.ExitOnError)
	addr := fs.String("addr", "", "server host:port")
	path := fs.String("path", "/", "request path")
	method := fs.String("method", "POST", "request method")
	ctype := fs.String("content-type", "", "content-type header (none when empty)")
	bodyHex := fs.String("body-hex", "", "request body, hex")
	var headers headerFlags
	fs.Var(&headers, "H", "extra header 'Name: value' (repeatable)")
	_ = fs.Parse(args)
	body, err := hex.DecodeString(*bodyHex)
	if err != nil {
		fail("body-hex: %v", err)
	}
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, err := http.NewRequest(*method, "http://"+*addr+*path, strings.NewReader(string(body)))
	if err != nil {
		fail("request: %v", err)
	}
	if *ctype != "" {
		req.Header.Set("Content-Type", *ctype)
	}
	headers.apply(req)
	resp, err := client.Do(req)
	if err != nil {
		return map[string]any{"transport_error": err.Error()}
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(resp.Body)
	return map[string]any{
		"proto":    resp.Proto,
		"status":   resp.StatusCode,
		"headers":  flatten(resp.Header),
		"trailers": flatten(resp.Trailer),
		"body":     string(respBody),
	}
}

func flatten(h http.Header) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return out
}

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, "; ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }
func (h headerFlags) apply(req *http.Request) {
	for _, kv := range h {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			fail("header %q is not 'Name: value'", kv)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
}

// stats is what a load run reports; latencies are per call, wall clock.
type stats struct {
	Requests int              `json:"requests"`
	Conc     int              `json:"concurrency"`
	Seconds  float64          `json:"seconds"`
	RPS      float64          `json:"rps"`
	P50ms    float64          `json:"p50_ms"`
	P99ms    float64          `json:"p99_ms"`
	Outcomes map[string]int64 `json:"outcomes"`
}

// run calls one() n times from c goroutines; one returns the outcome's name.
func run(n, c int, one func() string) stats {
	if n < 1 || c < 1 {
		fail("-n and -c must be positive")
	}
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var mu sync.Mutex
	outcomes := map[string]int64{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int64{}
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					break
				}
				t := time.Now()
				local[one()]++
				lat[i] = time.Since(t)
			}
			mu.Lock()
			for k, v := range local {
				outcomes[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(n-1))]) / float64(time.Millisecond)
	}
	return stats{
		Requests: n, Conc: c, Seconds: elapsed.Seconds(),
		RPS: float64(n) / elapsed.Seconds(), P50ms: pct(0.50), P99ms: pct(0.99),
		Outcomes: outcomes,
	}
}

func load(args []string) any {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "", "server host:port")
	file := fs.String("request", "-", "CheckRequest JSON file")
	n := fs.Int("n", 10000, "calls")
	c := fs.Int("c", 32, "concurrent callers")
	_ = fs.Parse(args)
	req := readRequest(*file)
	conn := dial(*addr)
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	return run(*n, *c, func() string {
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			return "rpc_error:" + status.Code(err).String()
		}
		if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
			return "ok"
		}
		if d := resp.GetDeniedResponse(); d != nil {
			return fmt.Sprintf("denied:%d", d.GetStatus().GetCode())
		}
		return "denied"
	})
}

func loadHTTP(args []string) any {
	fs := flag.NewFlagSet("load-http", flag.ExitOnError)
	url := fs.String("url", "", "URL")
	n := fs.Int("n", 10000, "requests")
	c := fs.Int("c", 32, "concurrent callers")
	var headers headerFlags
	fs.Var(&headers, "H", "header 'Name: value' (repeatable)")
	_ = fs.Parse(args)
	tr := &http.Transport{MaxIdleConnsPerHost: *c, MaxConnsPerHost: *c}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return run(*n, *c, func() string {
		req, err := http.NewRequest("GET", *url, nil)
		if err != nil {
			fail("request: %v", err)
		}
		headers.apply(req)
		resp, err := client.Do(req)
		if err != nil {
			var ue interface{ Timeout() bool }
			if errors.As(err, &ue) && ue.Timeout() {
				return "timeout"
			}
			return "transport_error"
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return fmt.Sprintf("http:%d", resp.StatusCode)
	})
}

// protoset writes the descriptors of external_auth.proto and health.proto with every file
// they import, dependencies first, as a FileDescriptorSet.
func protoset(args []string) any {
	fs := flag.NewFlagSet("protoset", flag.ExitOnError)
	out := fs.String("out", "", "output file")
	_ = fs.Parse(args)
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(f protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	add(authv3.File_envoy_service_auth_v3_external_auth_proto)
	add(healthpb.File_grpc_health_v1_health_proto)
	b, err := proto.Marshal(set)
	if err != nil {
		fail("marshal protoset: %v", err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fail("write %s: %v", *out, err)
	}
	return map[string]any{"files": len(set.File), "out": *out}
}
