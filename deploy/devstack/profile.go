package devstack

import (
	"fmt"
	"slices"
	"strings"
)

// Name identifies one component of the stack. It names the component's pid
// file (pids/<name>.pid), log file (logs/<name>.log) and data directory.
type Name string

// The infrastructure components the launcher knows how to run.
const (
	PGPrimary Name = "pg-primary"
	PGStandby Name = "pg-standby"
	// PGExternal is the external simulator's own server: a service we do
	// not run would not share our database, and a failover of ours must
	// not move it.
	PGExternal  Name = "pg-external"
	Redis       Name = "redis"
	KafkaA      Name = "kafka-a"
	KafkaB      Name = "kafka-b"
	MirrorMaker Name = "mm2"
	Temporal    Name = "temporal"
)

// Profile selects which components a stack runs.
type Profile string

const (
	// ProfileSingle is one of each, Kafka a only, no Postgres standby: fast tests.
	ProfileSingle Profile = "single"
	// ProfileGeo is the two-region topology: Kafka a and b joined by MirrorMaker 2,
	// a Postgres primary with a streaming-replication standby.
	ProfileGeo Profile = "geo"
)

var profiles = map[Profile][]Name{
	ProfileSingle: {PGPrimary, PGExternal, Redis, KafkaA, Temporal, External, SyncA1, WriterA1, InternalA1},
	ProfileGeo: {PGPrimary, PGStandby, PGExternal, Redis, KafkaA, KafkaB, MirrorMaker, Temporal, External,
		SyncA1, SyncA2, SyncB1, WriterA1, WriterA2, WriterB1, InternalA1, InternalB1},
}

// ParseProfile returns the profile named s, or an error listing the valid ones.
func ParseProfile(s string) (Profile, error) {
	p := Profile(s)
	if _, ok := profiles[p]; !ok {
		return "", fmt.Errorf("unknown profile %q: use one of %s", s, strings.Join(profileNames(), ", "))
	}
	return p, nil
}

// Components lists the components the profile runs, in start order.
func (p Profile) Components() []Name { return slices.Clone(profiles[p]) }

// Has reports whether the profile runs component n.
func (p Profile) Has(n Name) bool { return slices.Contains(profiles[p], n) }

func profileNames() []string {
	names := make([]string, 0, len(profiles))
	for p := range profiles {
		names = append(names, string(p))
	}
	slices.Sort(names)
	return names
}
