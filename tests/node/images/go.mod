// Tiny static programs for the locally built images of the one-node test cluster.
// Standard library only: nothing but the Go toolchain is needed to build them.
module accessgate.dev/nodeimages

go 1.22
