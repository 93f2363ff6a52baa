package main

import (
	"testing"

	"github.com/chatpoc/chat-poc/deploy/deploytest"
)

// TestDeploymentsSetWhatTheBinaryReads checks every docker-compose.yaml
// service built from this command's Dockerfile and every Kubernetes
// container running its image: each sets only variables Config reads, and
// every one Config requires.
func TestDeploymentsSetWhatTheBinaryReads(t *testing.T) {
	t.Parallel()
	deploytest.CheckDeployments(t, "apps/external/Dockerfile", &Config{})
}
