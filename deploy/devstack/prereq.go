package devstack

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Environment variables that override where the launcher finds its tools.
const (
	EnvPGBinDir = "DEVSTACK_PG_BINDIR" // directory holding initdb, postgres, pg_basebackup
	EnvJava     = "DEVSTACK_JAVA"      // java executable (default: $JAVA_HOME/bin/java, then PATH)
	EnvRedis    = "DEVSTACK_REDIS"     // redis-server executable (default: PATH)
	EnvMaven    = "DEVSTACK_MVN"       // mvn executable (default: PATH)
	EnvGo       = "DEVSTACK_GO"        // go executable (default: PATH), builds temporal-dev
)

// ErrMissingPrerequisite reports that a program the stack needs is not installed.
var ErrMissingPrerequisite = errors.New("missing prerequisite")

// tools are the resolved programs a stack runs.
type tools struct {
	pgBin    string   // directory of the Postgres server binaries
	pgUser   *userIDs // user to run Postgres as when we are root
	java     string
	redis    string
	mvn      string
	goBin    string
	pgNeeded bool
}

// findTools resolves every program the profile needs, and reports all that are
// missing in one error naming the package that installs each.
func findTools(p Profile) (*tools, error) {
	t := &tools{}
	var missing []string
	need := func(what, install string, find func() (string, error)) string {
		path, err := find()
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v; install: %s)", what, err, install))
		}
		return path
	}
	t.pgBin = need("postgres", "apt-get install -y postgresql", findPGBin)
	t.redis = need("redis-server", "apt-get install -y redis-server", func() (string, error) { return lookTool(EnvRedis, "redis-server") })
	if slices.ContainsFunc(p.Components(), isKafka) {
		t.java = need("java", "apt-get install -y openjdk-17-jre-headless", findJava)
		t.mvn = need("mvn", "apt-get install -y maven", func() (string, error) { return lookTool(EnvMaven, "mvn") })
	}
	t.goBin = need("go", "https://go.dev/doc/install (Go 1.26)", func() (string, error) { return lookTool(EnvGo, "go") })
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrMissingPrerequisite, strings.Join(missing, "; "))
	}
	if os.Geteuid() == 0 {
		u, err := lookupUser("postgres")
		if err != nil {
			return nil, fmt.Errorf("%w: Postgres refuses to run as root and there is no postgres user (%v; install: apt-get install -y postgresql)", ErrMissingPrerequisite, err)
		}
		t.pgUser = u
	}
	return t, nil
}

func isKafka(n Name) bool { return n == KafkaA || n == KafkaB || n == MirrorMaker }

// lookTool finds an executable named by the environment variable env, or on PATH.
func lookTool(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if err := isExecutable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH", name)
	}
	return p, nil
}

func findJava() (string, error) {
	if os.Getenv(EnvJava) == "" {
		if home := os.Getenv("JAVA_HOME"); home != "" {
			p := filepath.Join(home, "bin", "java")
			if isExecutable(p) == nil {
				return p, nil
			}
		}
	}
	return lookTool(EnvJava, "java")
}

// findPGBin returns the directory of Postgres's server binaries: the one named
// by DEVSTACK_PG_BINDIR, else Debian's newest /usr/lib/postgresql/<v>/bin, else
// the directory of initdb on PATH.
func findPGBin() (string, error) {
	check := func(dir string) error {
		for _, b := range []string{"initdb", "postgres", "pg_basebackup"} {
			if err := isExecutable(filepath.Join(dir, b)); err != nil {
				return err
			}
		}
		return nil
	}
	if dir := os.Getenv(EnvPGBinDir); dir != "" {
		if err := check(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvPGBinDir, dir, err)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return pgMajor(b) - pgMajor(a) })
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	for _, d := range dirs {
		if check(d) == nil {
			return d, nil
		}
	}
	return "", errors.New("initdb/postgres/pg_basebackup not found in /usr/lib/postgresql/*/bin or PATH")
}

func pgMajor(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist", path)
		}
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

func lookupUser(name string) (*userIDs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of %s: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of %s: %w", name, err)
	}
	return &userIDs{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
}
