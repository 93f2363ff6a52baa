package deploytest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/chatpoc/chat-poc/deploy/deploytest"
)

// TestKubernetesWorkloads renders every kustomization (strictly decoded
// into client-go's types) and checks what each workload must have: every
// object in the kustomization's namespace; every container with readiness
// and liveness probes, CPU and memory requests and limits, and an image
// pinned to a version; our containers probed on /readyz and /healthz of a
// port they declare, from an image a Dockerfile of ours builds; every
// envFrom, configMapKeyRef and secretKeyRef resolving to a key the
// kustomization has.
func TestKubernetesWorkloads(t *testing.T) {
	t.Parallel()
	root := deploytest.RepoRoot(t)
	for _, k := range deploytest.Kustomizations {
		t.Run(filepath.Base(k.Dir), func(t *testing.T) {
			r := deploytest.Render(t, k)
			if len(r.Objects) == 0 {
				t.Fatal("renders no objects")
			}
			for _, o := range r.Objects {
				m, err := meta.Accessor(o)
				if err != nil {
					t.Fatal(err)
				}
				if _, isNS := o.(*corev1.Namespace); isNS {
					if m.GetName() != k.Namespace {
						t.Errorf("creates namespace %s, want only %s", m.GetName(), k.Namespace)
					}
				} else if m.GetNamespace() != k.Namespace {
					t.Errorf("%T %s is in namespace %q, want %q", o, m.GetName(), m.GetNamespace(), k.Namespace)
				}
			}
			pods := r.PodTemplates()
			if len(pods) == 0 {
				t.Fatal("has no Deployment or StatefulSet")
			}
			for workload, pod := range pods {
				for i := range pod.Spec.Containers {
					c := &pod.Spec.Containers[i]
					where := fmt.Sprintf("%s container %s", workload, c.Name)
					checkContainer(t, root, where, c)
					r.ContainerEnv(t, where, c) // fails on dangling references
				}
			}
		})
	}
}

func checkContainer(t *testing.T, root, where string, c *corev1.Container) {
	t.Helper()
	name, tag := deploytest.SplitImage(c.Image)
	if tag == "" || tag == "latest" {
		t.Errorf("%s: image %q is not pinned to a version", where, c.Image)
	}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("%s: needs a readiness and a liveness probe", where)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
		if req.IsZero() || lim.IsZero() {
			t.Errorf("%s: needs a %s request and limit", where, res)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("%s: %s request %s above its limit %s", where, res, req.String(), lim.String())
		}
	}
	bin, ours := strings.CutPrefix(name, deploytest.ImageRegistry)
	if !ours {
		return
	}
	if !slices.ContainsFunc(dockerfiles(t, root), func(df string) bool { return deploytest.Image(df) == name }) {
		t.Errorf("%s: image %s is built by no Dockerfile docker-compose.yaml builds", where, name)
	}
	for probe, path := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil {
			continue
		}
		if probe.HTTPGet == nil || probe.HTTPGet.Path != path {
			t.Errorf("%s (%s): a probe should GET %s", where, bin, path)
			continue
		}
		port := probe.HTTPGet.Port.String()
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
			return p.Name == port || fmt.Sprint(p.ContainerPort) == port
		}) {
			t.Errorf("%s: probe of %s on port %s, which the container does not declare", where, path, port)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: our containers run with allowPrivilegeEscalation false and a read-only root filesystem", where)
	}
}

// dockerfiles returns the Dockerfiles docker-compose.yaml builds, relative
// to the repository root.
func dockerfiles(t *testing.T, root string) []string {
	t.Helper()
	var dfs []string
	for _, s := range deploytest.Compose(t).Services {
		if s.Build == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, s.Build.Dockerfile)); err == nil && !slices.Contains(dfs, s.Build.Dockerfile) {
			dfs = append(dfs, s.Build.Dockerfile)
		}
	}
	return dfs
}

// TestKubernetesHighAvailability checks the replicas, disruption budgets
// and Kafka settings the design's availability rests on, in both regions.
func TestKubernetesHighAvailability(t *testing.T) {
	t.Parallel()
	for _, k := range deploytest.Kustomizations {
		if !strings.HasPrefix(k.Dir, "deploy/k8s/overlays/") {
			continue
		}
		t.Run(filepath.Base(k.Dir), func(t *testing.T) {
			r := deploytest.Render(t, k)
			want := map[string]int32{
				"Deployment/sync": 2, "Deployment/writer": 2, "StatefulSet/internal": 2,
				"StatefulSet/kafka": 3, "StatefulSet/postgres": 1, "Deployment/mm2": 1,
			}
			for _, o := range r.Objects {
				var name string
				var replicas *int32
				var selector *metav1.LabelSelector
				var template *corev1.PodTemplateSpec
				switch w := o.(type) {
				case *appsv1.Deployment:
					name, replicas, selector, template = "Deployment/"+w.Name, w.Spec.Replicas, w.Spec.Selector, &w.Spec.Template
				case *appsv1.StatefulSet:
					name, replicas, selector, template = "StatefulSet/"+w.Name, w.Spec.Replicas, w.Spec.Selector, &w.Spec.Template
				default:
					continue
				}
				if sel, err := metav1.LabelSelectorAsSelector(selector); err != nil || !sel.Matches(labels.Set(template.Labels)) {
					t.Errorf("%s: its selector does not select its own pods (%v)", name, err)
				}
				n, ok := want[name]
				if !ok {
					continue
				}
				delete(want, name)
				if replicas == nil || *replicas < n {
					t.Errorf("%s: %v replicas, want at least %d", name, replicas, n)
				}
				if n > 1 && !hasBudget(r.Objects, template.Labels) {
					t.Errorf("%s: no PodDisruptionBudget keeps its pods available", name)
				}
			}
			for name := range want {
				t.Errorf("no %s", name)
			}
			kafka := kafkaEnv(t, r)
			for k, v := range map[string]string{
				"KAFKA_DEFAULT_REPLICATION_FACTOR":               "3",
				"KAFKA_MIN_INSYNC_REPLICAS":                      "2",
				"KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE":           "false",
				"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "3",
				"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
				"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "2",
			} {
				if kafka[k] != v {
					t.Errorf("Kafka %s = %q, want %q", k, kafka[k], v)
				}
			}
		})
	}
}

func hasBudget(objs []runtime.Object, podLabels map[string]string) bool {
	for _, o := range objs {
		pdb, ok := o.(*policyv1.PodDisruptionBudget)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err == nil && sel.Matches(labels.Set(podLabels)) {
			return true
		}
	}
	return false
}

func kafkaEnv(t *testing.T, r *deploytest.Rendered) map[string]string {
	t.Helper()
	pod, ok := r.PodTemplates()["StatefulSet/kafka"]
	if !ok {
		t.Fatal("no StatefulSet/kafka")
	}
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	return env
}

// TestKubernetesRegions checks what makes the two overlays two regions of
// one system: region a's Postgres is the primary and b's streams from it;
// each region's clients use its own Kafka cluster and fail over to the
// other's; MirrorMaker 2 copies the other region into its own; and the
// NodePorts of everything applied to one cluster are the documented ones
// and distinct.
func TestKubernetesRegions(t *testing.T) {
	t.Parallel()
	nodePorts := map[int32]string{}
	for _, k := range deploytest.Kustomizations {
		r := deploytest.Render(t, k)
		for _, o := range r.Objects {
			svc, ok := o.(*corev1.Service)
			if !ok {
				continue
			}
			for _, p := range svc.Spec.Ports {
				if p.NodePort == 0 {
					continue
				}
				where := k.Namespace + "/" + svc.Name
				if other, dup := nodePorts[p.NodePort]; dup {
					t.Errorf("NodePort %d of %s is also %s's", p.NodePort, where, other)
				}
				nodePorts[p.NodePort] = where
			}
		}
	}
	for port, svc := range map[int32]string{
		30001: "chat-poc-external/external",
		30002: "chat-poc-a/internal", 30080: "chat-poc-a/kafka-ui",
		30003: "chat-poc-b/internal", 30081: "chat-poc-b/kafka-ui",
	} {
		if nodePorts[port] != svc {
			t.Errorf("NodePort %d is %q, want %s", port, nodePorts[port], svc)
		}
	}

	for _, tc := range []struct {
		overlay, self, other, pgRole string
	}{
		{"deploy/k8s/overlays/a", "a", "b", "primary"},
		{"deploy/k8s/overlays/b", "b", "a", "standby"},
	} {
		t.Run(tc.self, func(t *testing.T) {
			r := deploytest.Render(t, deploytest.Kustomization{Dir: tc.overlay, Namespace: "chat-poc-" + tc.self})
			role := generated(t, r, "ConfigMap", "postgres-role")
			if role["PG_ROLE"] != tc.pgRole {
				t.Errorf("Postgres PG_ROLE = %q, want %q", role["PG_ROLE"], tc.pgRole)
			}
			if tc.pgRole == "standby" && !strings.Contains(role["PG_PRIMARY_HOST"], ".chat-poc-"+tc.other+".svc") {
				t.Errorf("standby streams from %q, not region %s's primary", role["PG_PRIMARY_HOST"], tc.other)
			}
			sync := generated(t, r, "ConfigMap", "sync-config")
			if sync["KAFKA_CLUSTER"] != tc.self || sync["KAFKA_FAILOVER_CLUSTER"] != tc.other ||
				!strings.Contains(sync["KAFKA_FAILOVER_BOOTSTRAP"], ".chat-poc-"+tc.other+".svc") {
				t.Errorf("sync config %v: want cluster %s failing over to %s's", sync, tc.self, tc.other)
			}
			if w := generated(t, r, "ConfigMap", "writer-config"); w["KAFKA_CLUSTER"] != tc.self {
				t.Errorf("writers' KAFKA_CLUSTER = %q, want %q", w["KAFKA_CLUSTER"], tc.self)
			}
			if mm2 := generated(t, r, "ConfigMap", "mm2-region"); mm2["MM2_TARGET"] != tc.self || mm2["MM2_SOURCE"] != tc.other {
				t.Errorf("MirrorMaker 2 %v: want %s into %s", mm2, tc.other, tc.self)
			}
			dsn := generated(t, r, "Secret", "writer-secrets")["PG_INTERNAL_DSN"]
			if !strings.Contains(dsn, "target_session_attrs=read-write") ||
				!strings.Contains(dsn, ".chat-poc-a.svc") || !strings.Contains(dsn, ".chat-poc-b.svc") {
				t.Errorf("writers' DSN %q must list both servers and pick the read-write one", dsn)
			}
		})
	}
}

// generated returns the data of the ConfigMap or Secret kustomize generated
// from name (its name has a hash suffix).
func generated(t *testing.T, r *deploytest.Rendered, kind, name string) map[string]string {
	t.Helper()
	for _, o := range r.Objects {
		m, _ := meta.Accessor(o)
		if gen, ok := strings.CutPrefix(m.GetName(), name+"-"); ok && !strings.Contains(gen, "-") {
			if data, ok := r.ConfigData(kind, m.GetName()); ok {
				return data
			}
		}
	}
	t.Fatalf("%s has no %s %s", r.Dir, kind, name)
	return nil
}
