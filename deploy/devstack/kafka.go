package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"text/template"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

//go:embed maven/pom.xml templates
var kafkaFiles embed.FS

// jvmArgs keep each JVM small and cheap to start on a 2-core machine.
// SerialGC and C1 only (TieredStopAtLevel=1) start a broker in about 5 s instead
// of 9-11 s and use ~350 MB instead of ~450 MB; transactional produce still
// runs at 40k+ records/s, far above what the stack needs.
var jvmArgs = []string{"-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"}

// kafkaJars names the Maven resolution step in progress output and its log (logs/kafka-jars.log).
const kafkaJars Name = "kafka-jars"

// Kafka main classes, from Apache Kafka's own launch scripts.
const (
	kafkaMain       = "kafka.Kafka"
	kafkaStorageApp = "kafka.tools.StorageTool"
	mirrorMakerMain = "org.apache.kafka.connect.mirror.MirrorMaker"
)

func (s *Stack) kafka(n Name, brokerPort, controllerPort string) *component {
	port, cport := s.ports[brokerPort], s.ports[controllerPort]
	dir := s.dataDir(n)
	props := filepath.Join(dir, "server.properties")
	return &component{
		name: n,
		addr: hostPort(port),
		prepare: func(ctx context.Context) error {
			if _, err := s.kafkaLibs(ctx); err != nil {
				return err
			}
			if err := mkdirs(dir); err != nil {
				return err
			}
			err := renderTemplate("templates/kafka-broker.properties.tmpl", props, map[string]any{
				"NodeID":         1,
				"BrokerPort":     port,
				"ControllerPort": cport,
				"DataDir":        filepath.Join(dir, "kraft"),
				"ClusterName":    string(n),
			})
			if err != nil {
				return err
			}
			if err := s.writeLog4j(dir); err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(dir, "kraft", "meta.properties")); err == nil {
				return nil // formatted by an earlier run
			}
			return s.runLogged(ctx, n, dir, nil, nil, s.tools.java,
				s.javaArgs(dir, kafkaStorageApp, "format", "--cluster-id="+newKafkaClusterID(), "-c", props, "--ignore-formatted")...)
		},
		spec: func() procSpec {
			return s.baseSpec(n, s.tools.java, s.javaArgs(dir, kafkaMain, props)...)
		},
		ready: func(ctx context.Context) error {
			_, err := kafkaTopics(ctx, hostPort(port))
			return err
		},
	}
}

func (s *Stack) mirrorMaker() *component {
	dir := s.dataDir(MirrorMaker)
	props := filepath.Join(dir, "mm2.properties")
	a, b := hostPort(s.ports[portKafkaA]), hostPort(s.ports[portKafkaB])
	return &component{
		name:  MirrorMaker,
		after: []Name{KafkaA, KafkaB},
		addr:  "a <-> b",
		prepare: func(ctx context.Context) error {
			if _, err := s.kafkaLibs(ctx); err != nil {
				return err
			}
			if err := mkdirs(dir); err != nil {
				return err
			}
			if err := renderTemplate("templates/mm2.properties.tmpl", props, map[string]any{"BootstrapA": a, "BootstrapB": b}); err != nil {
				return err
			}
			return s.writeLog4j(dir)
		},
		spec: func() procSpec {
			return s.baseSpec(MirrorMaker, s.tools.java, s.javaArgs(dir, mirrorMakerMain, props)...)
		},
		// Ready once each direction has mirrored something: MM2's heartbeats
		// from a show up on b as a.heartbeats, and the other way round.
		ready: func(ctx context.Context) error {
			for _, c := range []struct{ bootstrap, topic string }{{b, "a.heartbeats"}, {a, "b.heartbeats"}} {
				topics, err := kafkaTopics(ctx, c.bootstrap)
				if err != nil {
					return err
				}
				if !slices.Contains(topics, c.topic) {
					return fmt.Errorf("%s not mirrored yet", c.topic)
				}
			}
			return nil
		},
	}
}

// javaArgs is the command line of a Kafka JVM whose configs live in dir.
func (s *Stack) javaArgs(dir, mainClass string, args ...string) []string {
	out := slices.Clone(jvmArgs)
	out = append(out,
		"-Dlog4j2.configurationFile="+filepath.Join(dir, "log4j2.properties"),
		"-Dkafka.logs.dir="+filepath.Join(dir, "logs"),
		"-cp", filepath.Join(s.kafkaLibDir(), "*"),
		mainClass)
	return append(out, args...)
}

func (s *Stack) writeLog4j(dir string) error {
	data, err := kafkaFiles.ReadFile("templates/log4j2.properties")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "log4j2.properties"), data, 0o644)
}

// kafkaLibDir is where Maven copies the Kafka jars: keyed by the pom's hash,
// so a change of Kafka version resolves anew and nothing else does.
func (s *Stack) kafkaLibDir() string {
	pom, _ := kafkaFiles.ReadFile("maven/pom.xml")
	sum := sha256.Sum256(pom)
	return filepath.Join(s.opts.CacheDir, "kafka-"+hex.EncodeToString(sum[:])[:12], "libs")
}

// kafkaLibs resolves Kafka's jars with Maven into the cache, once.
func (s *Stack) kafkaLibs(ctx context.Context) (string, error) {
	s.jarsMu.Lock()
	defer s.jarsMu.Unlock()
	libs := s.kafkaLibDir()
	done := filepath.Join(filepath.Dir(libs), ".complete")
	if _, err := os.Stat(done); err == nil {
		return libs, nil
	}
	root := filepath.Dir(libs)
	if err := mkdirs(root); err != nil {
		return "", err
	}
	pom, err := kafkaFiles.ReadFile("maven/pom.xml")
	if err != nil {
		return "", err
	}
	pomPath := filepath.Join(root, "pom.xml")
	if err := os.WriteFile(pomPath, pom, 0o644); err != nil {
		return "", err
	}
	s.progress.line(kafkaJars, "resolving", "Apache Kafka's jars with Maven (first time only)")
	began := time.Now()
	if err := s.runLogged(ctx, kafkaJars, root, nil, nil, s.tools.mvn,
		"-q", "-B", "-f", pomPath, "dependency:copy-dependencies",
		"-DoutputDirectory="+libs, "-DincludeScope=runtime"); err != nil {
		return "", fmt.Errorf("resolve Kafka jars: %w", err)
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		return "", err
	}
	s.progress.line(kafkaJars, "resolved", fmt.Sprintf("in %s into %s", time.Since(began).Round(time.Second), libs))
	return libs, nil
}

func renderTemplate(name, dest string, data any) error {
	t, err := template.ParseFS(kafkaFiles, name)
	if err != nil {
		return fmt.Errorf("parse %s: %w", name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return os.WriteFile(dest, buf.Bytes(), 0o644)
}

// newKafkaClusterID returns a KRaft cluster ID: 16 random bytes, base64url.
// It may start with '-', hence --cluster-id=ID rather than -t ID.
func newKafkaClusterID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// kafkaTopics returns the topic names a broker reports; it fails unless the
// broker answers a metadata request.
func kafkaTopics(ctx context.Context, bootstrap string) ([]string, error) {
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{
		"bootstrap.servers": bootstrap,
		"log_level":         0, // a broker still starting is expected; do not spam stderr
	})
	if err != nil {
		return nil, fmt.Errorf("kafka admin client: %w", err)
	}
	defer admin.Close()
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	md, err := admin.GetMetadata(nil, true, int(timeout.Milliseconds()))
	if err != nil {
		return nil, err
	}
	if len(md.Brokers) == 0 {
		return nil, errors.New("no brokers in metadata")
	}
	topics := make([]string, 0, len(md.Topics))
	for t := range md.Topics {
		topics = append(topics, t)
	}
	return topics, nil
}
