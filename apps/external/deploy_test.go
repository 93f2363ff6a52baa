package main

import (
	"testing"

	"github.com/chatpoc/chat-poc/deploy/deploytest"
)

// TestComposeSetsWhatTheBinaryReads checks every docker-compose.yaml service
// built from this command's Dockerfile: it sets only variables Config reads,
// and every one Config requires.
func TestComposeSetsWhatTheBinaryReads(t *testing.T) {
	t.Parallel()
	p := deploytest.Compose(t)
	for _, name := range deploytest.ServicesBuilding(t, p, "apps/external/Dockerfile") {
		deploytest.CheckEnv(t, "docker-compose.yaml service "+name, deploytest.ComposeEnv(p.Services[name]), &Config{})
	}
}
