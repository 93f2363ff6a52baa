package devstack

import (
	"errors"
	"fmt"
	"os"
)

// secrets are the stack's generated passwords and token, kept in
// <dir>/secrets.env (mode 0600) so they survive restarts of the same state
// directory. They appear in stack.env's DSNs and nowhere in the logs.
type secrets struct {
	pgSuperuser   string // role postgres
	pgApp         string // role chatpoc, owner of the internal and external databases
	pgReplicator  string // role replicator, used by the standby
	controlToken  string // bearer token of the control API
	externalAdmin string // bearer token of the external service's /admin/faults
}

const (
	secretPGSuperuser   = "PG_SUPERUSER_PASSWORD"
	secretPGApp         = "PG_APP_PASSWORD"
	secretPGReplicator  = "PG_REPLICATOR_PASSWORD"
	secretControlToken  = "CONTROL_TOKEN"
	secretExternalAdmin = "EXTERNAL_ADMIN_TOKEN"
)

func loadSecrets(path string) (secrets, error) {
	env, err := ReadEnvFile(path)
	if errors.Is(err, os.ErrNotExist) {
		env = Env{}
	} else if err != nil {
		return secrets{}, fmt.Errorf("read secrets: %w", err)
	}
	changed := false
	for _, k := range []string{secretPGSuperuser, secretPGApp, secretPGReplicator, secretControlToken, secretExternalAdmin} {
		if env[k] == "" {
			env[k] = randomHex(16)
			changed = true
		}
	}
	if changed {
		if err := writeEnvFile(path, env); err != nil {
			return secrets{}, err
		}
	}
	return secrets{
		pgSuperuser:   env[secretPGSuperuser],
		pgApp:         env[secretPGApp],
		pgReplicator:  env[secretPGReplicator],
		controlToken:  env[secretControlToken],
		externalAdmin: env[secretExternalAdmin],
	}, nil
}
