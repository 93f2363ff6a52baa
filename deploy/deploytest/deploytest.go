// Package deploytest checks the deployment files against the code, since
// neither Docker nor a Kubernetes cluster runs where the tests do:
// docker-compose.yaml is loaded with the Compose Specification's own Go
// loader, and each binary's tests check that every service running it sets
// only variables its Config struct reads, and every one it requires.
package deploytest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/chatpoc/chat-poc/internal/envconfig"
)

// RepoRoot returns the repository's root: the nearest directory up from the
// test's working directory with a go.mod that is not deploy/temporal's.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "docker-compose.yaml")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no docker-compose.yaml above the test's directory")
		}
		dir = parent
	}
}

// Compose loads the repository's docker-compose.yaml as `docker compose`
// would, variables interpolated from the file's own defaults (not from the
// test's environment).
func Compose(t testing.TB) *types.Project {
	t.Helper()
	root := RepoRoot(t)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yaml")},
		cli.WithWorkingDirectory(root), cli.WithName("chat-poc"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yaml: %v", err)
	}
	return p
}

// ServicesBuilding returns the names of the services built from dockerfile
// (relative to the repository root), sorted.
func ServicesBuilding(t testing.TB, p *types.Project, dockerfile string) []string {
	t.Helper()
	var names []string
	for name, s := range p.Services {
		if s.Build != nil && s.Build.Dockerfile == dockerfile {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		t.Fatalf("no service of docker-compose.yaml is built from %s", dockerfile)
	}
	slices.Sort(names)
	return names
}

// CheckEnv fails t unless every variable service sets is one that cfg (a
// pointer to a binary's Config) reads, and every variable cfg requires is
// set.
func CheckEnv(t testing.TB, where string, env map[string]bool, cfg any) {
	t.Helper()
	reads := map[string]envconfig.Var{}
	for _, v := range envconfig.Vars(cfg) {
		reads[v.Name] = v
	}
	for name := range env {
		if _, ok := reads[name]; !ok {
			t.Errorf("%s sets %s, which the binary does not read", where, name)
		}
	}
	for name, v := range reads {
		if v.Required && !env[name] {
			t.Errorf("%s does not set %s, which the binary requires", where, name)
		}
	}
}

// ComposeEnv returns the names of the variables a compose service sets.
func ComposeEnv(s types.ServiceConfig) map[string]bool {
	env := make(map[string]bool, len(s.Environment))
	for k := range s.Environment {
		env[k] = true
	}
	return env
}

// CheckDeployments checks every deployment of the binary built from
// dockerfile — each docker-compose.yaml service built from it and each
// Kubernetes container running its image — with CheckEnv: it sets only
// variables cfg (a pointer to the binary's Config) reads, and every one cfg
// requires.
func CheckDeployments(t testing.TB, dockerfile string, cfg any) {
	t.Helper()
	p := Compose(t)
	for _, name := range ServicesBuilding(t, p, dockerfile) {
		CheckEnv(t, "docker-compose.yaml service "+name, ComposeEnv(p.Services[name]), cfg)
	}
	CheckKubernetesEnv(t, dockerfile, cfg)
}
