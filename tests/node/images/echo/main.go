// Command echo is a tiny HTTP server for the one-node test cluster's smoke test: it answers
// every request with the pod's hostname and the request line, and /healthz with "ok".
// Flags: -listen (default :8080). Exits 0 on SIGTERM after closing the listener.
//
// As a client (for checks from inside a pod, `kubectl exec POD -- /echo -get URL`): GET URL,
// print the status and body, exit 0 on 2xx. For https it trusts the pod's ServiceAccount CA and
// sends its token, as an in-cluster client does.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func get(url string) int {
	tr := &http.Transport{}
	if ca, err := os.ReadFile(saDir + "/ca.crt"); err == nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if tok, err := os.ReadFile(saDir + "/token"); err == nil && strings.HasPrefix(url, "https://") {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("%s\n%s\n", resp.Status, strings.TrimRight(string(body), "\n"))
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}

func main() {
	listen := flag.String("listen", ":8080", "address to listen on")
	getURL := flag.String("get", "", "act as a client: GET this URL, print status and body, and exit")
	flag.Parse()
	if *getURL != "" {
		os.Exit(get(*getURL))
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s (uid %d): %s %s from %s\n", host, os.Getuid(), r.Method, r.URL.Path, r.RemoteAddr)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck
	}()
	log.Printf("echo listening on %s", *listen)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
