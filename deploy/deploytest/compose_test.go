package deploytest_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chatpoc/chat-poc/deploy/deploytest"
)

// TestComposeServices checks every service of docker-compose.yaml: a
// health check; an image pinned to a version (a tag, not latest) or a build
// whose context and Dockerfile exist; every depends_on waiting for health;
// and the documented ports published.
func TestComposeServices(t *testing.T) {
	t.Parallel()
	p := deploytest.Compose(t)
	root := deploytest.RepoRoot(t)
	for name, s := range p.Services {
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
			t.Errorf("service %s has no health check", name)
		}
		switch {
		case s.Build != nil:
			df := filepath.Join(s.Build.Context, s.Build.Dockerfile)
			if _, err := os.Stat(df); err != nil {
				t.Errorf("service %s builds from %s: %v", name, df, err)
			}
			if !strings.HasPrefix(s.Build.Context, root) {
				t.Errorf("service %s builds from %s, outside the repository", name, s.Build.Context)
			}
		case s.Image == "":
			t.Errorf("service %s has neither image nor build", name)
		default:
			if _, tag := deploytest.SplitImage(s.Image); tag == "" || tag == "latest" {
				t.Errorf("service %s: image %q is not pinned to a version", name, s.Image)
			}
		}
		for dep, d := range s.DependsOn {
			if d.Condition != "service_healthy" {
				t.Errorf("service %s depends on %s with condition %q, want service_healthy", name, dep, d.Condition)
			}
		}
	}
	published := map[uint32]bool{}
	for _, s := range p.Services {
		for _, port := range s.Ports {
			if port.Published != "" {
				var n uint32
				for _, c := range port.Published {
					n = n*10 + uint32(c-'0')
				}
				published[n] = true
			}
		}
	}
	for _, want := range []uint32{30001, 30002, 30080, 8233} {
		if !published[want] {
			t.Errorf("port %d is not published", want)
		}
	}
}

// goBuild matches a Dockerfile's build of a Go binary.
var goBuild = regexp.MustCompile(`^RUN (CGO_ENABLED=[01] go build(?: .*)? -o /out/(\S+) (\S+))$`)

// TestDockerfilesBuild runs the `go build` line of every Dockerfile that
// docker-compose.yaml builds — with its CGO setting, tags and flags, in
// its WORKDIR — so that a broken image build shows up here, not on a
// user's machine.
func TestDockerfilesBuild(t *testing.T) {
	t.Parallel()
	p := deploytest.Compose(t)
	root := deploytest.RepoRoot(t)
	var dockerfiles []string
	for _, s := range p.Services {
		if s.Build != nil && !slices.Contains(dockerfiles, s.Build.Dockerfile) {
			dockerfiles = append(dockerfiles, s.Build.Dockerfile)
		}
	}
	slices.Sort(dockerfiles)
	out := t.TempDir()
	for _, df := range dockerfiles {
		t.Run(strings.ReplaceAll(df, "/", "_"), func(t *testing.T) {
			f, err := os.Open(filepath.Join(root, df))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			dir, builds := root, 0
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if w, ok := strings.CutPrefix(line, "WORKDIR /src"); ok {
					dir = filepath.Join(root, w)
				}
				m := goBuild.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				builds++
				cmd := exec.Command("sh", "-c", strings.Replace(m[1], "-o /out/", "-o "+out+"/", 1))
				cmd.Dir = dir
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s: %s in %s: %v\n%s", df, m[1], dir, err, b)
				}
			}
			if builds == 0 {
				t.Fatalf("%s has no `RUN CGO_ENABLED=… go build … -o /out/NAME PKG` line", df)
			}
		})
	}
}
