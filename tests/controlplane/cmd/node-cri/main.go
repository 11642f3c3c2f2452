// Command node-cri is a minimal CRI client for tests/node (Debian has no crictl package):
//
//	node-cri -endpoint unix:///path/containerd.sock pods       list pod sandboxes
//	node-cri -endpoint ... ps                                 list containers
//	node-cri -endpoint ... teardown                           stop and remove every pod sandbox
//
// teardown goes through the runtime's StopPodSandbox/RemovePodSandbox, so the CNI DEL runs
// (veth, IPAM, portmap rules released) and the sandbox's netns and /dev/shm are unmounted,
// which killing the processes would leave behind.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "", "CRI endpoint, unix:///path/to/containerd.sock")
	timeout := flag.Duration("timeout", 60*time.Second, "overall timeout")
	flag.Parse()
	if *endpoint == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: node-cri -endpoint unix:///path.sock pods|ps|teardown")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(*endpoint, "unix://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	switch flag.Arg(0) {
	case "pods", "teardown":
		resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			fail(err)
		}
		rc := 0
		for _, p := range resp.Items {
			m := p.GetMetadata()
			if flag.Arg(0) == "pods" {
				fmt.Printf("%.13s %-8s %s/%s\n", p.Id, p.State, m.GetNamespace(), m.GetName())
				continue
			}
			if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				fmt.Fprintf(os.Stderr, "stop %s/%s: %v\n", m.GetNamespace(), m.GetName(), err)
				rc = 1
				continue
			}
			if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				fmt.Fprintf(os.Stderr, "remove %s/%s: %v\n", m.GetNamespace(), m.GetName(), err)
				rc = 1
				continue
			}
			fmt.Printf("removed pod sandbox %.13s %s/%s\n", p.Id, m.GetNamespace(), m.GetName())
		}
		os.Exit(rc)
	case "ps":
		resp, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		if err != nil {
			fail(err)
		}
		for _, c := range resp.Containers {
			fmt.Printf("%.13s %-18s %.13s %s %s\n", c.Id, c.State, c.PodSandboxId, c.GetMetadata().GetName(), c.GetImage().GetImage())
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", flag.Arg(0))
		os.Exit(2)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "node-cri:", err)
	os.Exit(1)
}
