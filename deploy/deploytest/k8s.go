package deploytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// Kustomization is one of deploy/k8s's deployable kustomizations: what
// `kubectl apply -k` is run on, and the namespace it deploys into.
type Kustomization struct {
	Dir       string // relative to the repository root
	Namespace string
}

// Kustomizations lists the kustomizations the README tells users to apply.
var Kustomizations = []Kustomization{
	{"deploy/k8s/temporal", "temporal"},
	{"deploy/k8s/external", "chat-poc-external"},
	{"deploy/k8s/overlays/a", "chat-poc-a"},
	{"deploy/k8s/overlays/b", "chat-poc-b"},
}

// ImageRegistry is where deploy/k8s's kustomizations take our images from
// (microk8s's built-in registry).
const ImageRegistry = "localhost:32000/chat-poc/"

// Image returns the Kubernetes image name of the binary built by
// dockerfile: the registry and the Dockerfile's directory's name, so
// apps/internal/Dockerfile runs as localhost:32000/chat-poc/internal.
func Image(dockerfile string) string {
	return ImageRegistry + filepath.Base(filepath.Dir(dockerfile))
}

// Rendered is one kustomization rendered and decoded into typed objects.
type Rendered struct {
	Kustomization
	Objects []runtime.Object
}

var renders = struct {
	sync.Mutex
	done map[string]*Rendered
}{done: map[string]*Rendered{}}

// Render renders k with kustomize (kubectl kustomize, or the kustomize the
// bootstrap installed when kubectl's is older than v5) and decodes every
// object strictly — an unknown or misspelt field is an error — into its
// typed client-go object. Renders are cached per test binary.
func Render(t testing.TB, k Kustomization) *Rendered {
	t.Helper()
	renders.Lock()
	defer renders.Unlock()
	if r, ok := renders.done[k.Dir]; ok {
		return r
	}
	root := RepoRoot(t)
	argv, err := kustomizeCommand(root)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], append(argv[1:], filepath.Join(root, k.Dir))...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", strings.Join(argv, " "), k.Dir, err, stderr.Bytes())
	}
	objs, err := DecodeStrict(out)
	if err != nil {
		t.Fatalf("%s: %v", k.Dir, err)
	}
	r := &Rendered{Kustomization: k, Objects: objs}
	renders.done[k.Dir] = r
	return r
}

// kustomizeCommand returns the command that renders a kustomization
// directory: `kubectl kustomize` if its embedded kustomize is v5 (our
// files use v5's syntax), else bin/kustomize build.
func kustomizeCommand(root string) ([]string, error) {
	if out, err := exec.Command("kubectl", "version", "--client", "-o", "json").Output(); err == nil {
		var v struct {
			KustomizeVersion string `json:"kustomizeVersion"`
		}
		if json.Unmarshal(out, &v) == nil && strings.HasPrefix(v.KustomizeVersion, "v5.") {
			return []string{"kubectl", "kustomize"}, nil
		}
	}
	bin := filepath.Join(root, "bin", "kustomize")
	if _, err := os.Stat(bin); err == nil {
		return []string{bin, "build"}, nil
	}
	return nil, errors.New("neither kubectl with kustomize v5 nor bin/kustomize: run deploy/bootstrap.sh")
}

// DecodeStrict decodes a multi-document YAML stream into typed Kubernetes
// objects, rejecting unknown and duplicate fields and unknown kinds.
func DecodeStrict(yamlStream []byte) ([]runtime.Object, error) {
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(yamlStream)))
	var objs []runtime.Object
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("split documents: %w", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("decode object %d: %w\n%s", len(objs)+1, err, doc)
		}
		if gvk.Kind == "" {
			return nil, fmt.Errorf("object %d has no kind", len(objs)+1)
		}
		objs = append(objs, obj)
	}
}

// PodTemplates returns the pod templates of r's Deployments and
// StatefulSets, by "Kind/name".
func (r *Rendered) PodTemplates() map[string]*corev1.PodTemplateSpec {
	pods := map[string]*corev1.PodTemplateSpec{}
	for _, o := range r.Objects {
		switch w := o.(type) {
		case *appsv1.Deployment:
			pods["Deployment/"+w.Name] = &w.Spec.Template
		case *appsv1.StatefulSet:
			pods["StatefulSet/"+w.Name] = &w.Spec.Template
		}
	}
	return pods
}

// ConfigData returns the keys and values of r's ConfigMap or Secret name
// (its generated name, as pods refer to it), and whether r has it.
func (r *Rendered) ConfigData(kind, name string) (map[string]string, bool) {
	for _, o := range r.Objects {
		switch c := o.(type) {
		case *corev1.ConfigMap:
			if kind == "ConfigMap" && c.Name == name {
				return c.Data, true
			}
		case *corev1.Secret:
			if kind == "Secret" && c.Name == name {
				data := map[string]string{}
				for k, v := range c.Data {
					data[k] = string(v)
				}
				for k, v := range c.StringData {
					data[k] = v
				}
				return data, true
			}
		}
	}
	return nil, false
}

// ContainerEnv returns the names of the variables container c of r sets:
// its env entries and the keys of the ConfigMaps and Secrets its envFrom
// names (with their prefix). It fails t on a reference to a ConfigMap,
// Secret or key r does not have.
func (r *Rendered) ContainerEnv(t testing.TB, where string, c *corev1.Container) map[string]bool {
	t.Helper()
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
		if e.ValueFrom == nil {
			continue
		}
		if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
			r.checkKey(t, where, "ConfigMap", ref.Name, ref.Key)
		}
		if ref := e.ValueFrom.SecretKeyRef; ref != nil {
			r.checkKey(t, where, "Secret", ref.Name, ref.Key)
		}
	}
	for _, from := range c.EnvFrom {
		kind, name := "ConfigMap", ""
		switch {
		case from.ConfigMapRef != nil:
			name = from.ConfigMapRef.Name
		case from.SecretRef != nil:
			kind, name = "Secret", from.SecretRef.Name
		}
		data, ok := r.ConfigData(kind, name)
		if !ok {
			t.Errorf("%s: envFrom %s %s, which %s does not have", where, kind, name, r.Dir)
			continue
		}
		for k := range data {
			env[from.Prefix+k] = true
		}
	}
	return env
}

func (r *Rendered) checkKey(t testing.TB, where, kind, name, key string) {
	t.Helper()
	data, ok := r.ConfigData(kind, name)
	if !ok {
		t.Errorf("%s: refers to %s %s, which %s does not have", where, kind, name, r.Dir)
		return
	}
	if _, ok := data[key]; !ok {
		t.Errorf("%s: refers to key %s of %s %s, which has no such key", where, key, kind, name)
	}
}

// CheckKubernetesEnv checks every container of every kustomization that
// runs the image built from dockerfile, as CheckEnv does for compose: it
// sets only variables cfg reads, and every one cfg requires. It fails t if
// no kustomization runs that image.
func CheckKubernetesEnv(t testing.TB, dockerfile string, cfg any) {
	t.Helper()
	image := Image(dockerfile)
	found := 0
	for _, k := range Kustomizations {
		r := Render(t, k)
		for workload, pod := range r.PodTemplates() {
			for i := range pod.Spec.Containers {
				c := &pod.Spec.Containers[i]
				if name, _ := SplitImage(c.Image); name != image {
					continue
				}
				found++
				where := fmt.Sprintf("%s %s container %s", k.Dir, workload, c.Name)
				CheckEnv(t, where, r.ContainerEnv(t, where, c), cfg)
			}
		}
	}
	if found == 0 {
		t.Errorf("no kustomization of deploy/k8s runs %s", image)
	}
}

// SplitImage splits an image reference into its name and tag ("" if it
// has none): localhost:32000/chat-poc/sync:0.1.0 is
// localhost:32000/chat-poc/sync and 0.1.0.
func SplitImage(ref string) (name, tag string) {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}
