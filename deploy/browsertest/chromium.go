package browsertest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Where the harness finds the browser, and how a machine gets it.
const (
	// ChromiumPath is where Debian's chromium package installs its launcher.
	ChromiumPath = "/usr/bin/chromium"
	// ChromiumPackage is the Debian package that provides ChromiumPath; a
	// bootstrap script installs it with InstallCommand.
	ChromiumPackage = "chromium"
	// InstallCommand is the command that installs Chromium on Debian.
	InstallCommand = "apt-get install -y " + ChromiumPackage
	// EnvChromium names an environment variable that overrides ChromiumPath,
	// for a machine that has the browser elsewhere.
	EnvChromium = "BROWSERTEST_CHROMIUM"
)

// ErrNoChromium reports that the browser is not installed where the harness
// looks for it.
var ErrNoChromium = errors.New("chromium not found")

// FindChromium returns the path of the Chromium executable: $BROWSERTEST_CHROMIUM
// if set, else ChromiumPath. Its error wraps ErrNoChromium and names
// InstallCommand. It installs nothing; a bootstrap script or a prerequisite
// check can call it to decide whether to install ChromiumPackage.
func FindChromium() (string, error) {
	path, from := ChromiumPath, ""
	if p := os.Getenv(EnvChromium); p != "" {
		path, from = p, " ("+EnvChromium+")"
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w at %s%s: %v; install it with: %s", ErrNoChromium, path, from, err, InstallCommand)
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("%w at %s%s: not an executable file; install it with: %s", ErrNoChromium, path, from, InstallCommand)
	}
	return path, nil
}

// chromiumFlags are the switches every browser of the harness starts with,
// besides --user-data-dir and the --remote-debugging-pipe that chromedp adds.
// A value of true is a bare switch; a string is --name=value.
func chromiumFlags(width, height int) [][2]any {
	return [][2]any{
		{"headless", true},
		// Tests run as root here, and Chromium refuses to sandbox as root.
		{"no-sandbox", true},
		{"disable-gpu", true},
		{"no-first-run", true},
		{"no-default-browser-check", true},
		// No traffic but the test's: no update checks, field trials, sync,
		// safe-browsing lists, or QUIC probes to the outside world.
		{"disable-background-networking", true},
		{"disable-component-update", true},
		{"disable-sync", true},
		{"disable-quic", true},
		{"disable-default-apps", true},
		{"disable-extensions", true},
		{"disable-breakpad", true},
		{"disable-domain-reliability", true},
		{"disable-client-side-phishing-detection", true},
		{"no-pings", true},
		{"password-store", "basic"},
		{"disable-features", "Translate,MediaRouter,OptimizationHints"},
		// Several tabs of one test are live at once; none may be throttled
		// as a background tab while another one is driven.
		{"disable-background-timer-throttling", true},
		{"disable-backgrounding-occluded-windows", true},
		{"disable-renderer-backgrounding", true},
		// Debian's launcher decides this from the free space of /dev/shm, and
		// its check breaks when /dev/shm is mounted twice (as on our
		// machines); say it ourselves so every machine behaves the same.
		{"disable-dev-shm-usage", true},
		{"hide-scrollbars", true},
		{"mute-audio", true},
		{"window-size", strconv.Itoa(width) + "," + strconv.Itoa(height)},
	}
}

// killLeftovers ends, by pid, the processes that still run with our
// --user-data-dir after the browser exited (a renderer or the zygote can
// outlive it), so the profile directory can be removed. It returns how many it
// found. The directory is unique to one browser of this process, so nothing
// else matches.
func killLeftovers(userDataDir string, wait time.Duration) int {
	want := "--user-data-dir=" + userDataDir
	found := 0
	deadline := time.Now().Add(wait)
	for quiet := 0; quiet < 3 && time.Now().Before(deadline); {
		n := 0
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return found
		}
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil {
				continue
			}
			for arg := range strings.SplitSeq(string(cmdline), "\x00") {
				if arg == want {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					n++
					break
				}
			}
		}
		found += n
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(10 * time.Millisecond) // between scans of /proc, not a readiness wait
	}
	return found
}
