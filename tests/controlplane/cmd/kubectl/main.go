// Command kubectl is the upstream kubectl (a copy of k8s.io/kubernetes/cmd/kubectl/kubectl.go,
// which is a main package and cannot be imported), built from the Go module proxy for
// accessgate's end-to-end tests.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Import to initialize client auth plugins.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	// Parse the verbosity flag early, as upstream does, so klog works during
	// command construction (plugins, .kuberc).
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
