package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/api"
)

// DefaultUID is the user a container runs as when its image says root (or
// nothing): containers never run as root unless granted it.
const DefaultUID = 1000

// StopGrace is how long a container gets between SIGTERM and SIGKILL.
const StopGrace = 10 * time.Second

// containerID names a container in the runtime: pod namespace, pod name,
// container name (DNS labels, so '_' separates them) and a start counter.
func containerID(ns, pod, c string, seq int) string {
	return fmt.Sprintf("%s_%s_%s_%d", ns, pod, c, seq)
}

// podNetNS returns the network namespace a pod's containers join: its own
// (created once, found again after an agent restart, made anew after a
// reboot), or, with the hostNetwork privilege, the node's.
func (a *Agent) podNetNS(p *podRecord) (string, error) {
	if p.Spec.Has("hostNetwork") {
		return fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), nil
	}
	ns, err := a.rt.CreatePodNetNS(podNetName(p), runtime.IDRange{HostID: p.IDBase, Size: idRangeSize})
	if err != nil {
		return "", err
	}
	// After a reboot the namespace is new and needs its veth again.
	return ns, a.setupPodNetwork(p, ns)
}

// podNetName names a pod's network namespace in the runtime.
func podNetName(p *podRecord) string { return netName(p.Namespace, p.Name) }

func netName(ns, name string) string { return ns + "_" + name }

// configHash identifies the configuration a container runs with (its own
// and the pod's privileges); a change restarts the container in place.
func configHash(c api.Container, privs []api.Privilege) string {
	b, _ := json.Marshal(struct {
		C api.Container
		P []api.Privilege
	}{c, privs})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// ensure makes the pod's containers match its spec: starts missing ones,
// restarts in place those whose config changed, removes those no longer in
// the spec. It returns after every container was started once.
func (a *Agent) ensure(ctx context.Context, p *podRecord) error {
	netns, err := a.podNetNS(p)
	if err != nil {
		return err
	}
	p.NetNS = netns
	if p.Containers == nil {
		p.Containers = map[string]*containerRecord{}
	}
	want := map[string]bool{}
	for _, c := range p.Spec.Containers {
		want[string(c.Name)] = true
	}
	for name, cr := range p.Containers {
		if !want[name] {
			a.removeContainer(ctx, cr.ID)
			delete(p.Containers, name)
		}
	}
	started := map[api.Name]bool{}
	for _, c := range p.Spec.StartOrder() {
		for _, r := range c.Requires {
			if !started[r] {
				return fmt.Errorf("container %s requires %s, which did not start", c.Name, r)
			}
		}
		started[c.Name] = true
		cr := p.Containers[string(c.Name)]
		hash := configHash(c, p.Spec.Privileges)
		if cr != nil && cr.Hash == hash {
			if st, err := a.rt.State(cr.ID); err == nil && st.Status == runtime.StatusRunning {
				continue
			}
		}
		if cr == nil {
			cr = &containerRecord{}
			p.Containers[string(c.Name)] = cr
		} else {
			if cr.ID != "" {
				a.removeContainer(ctx, cr.ID)
			}
			if cr.Hash != hash || !cr.StartedAt.IsZero() {
				cr.Restarts++
			}
		}
		cr.Hash = hash
		if err := a.startContainer(ctx, p, c, cr); err != nil {
			a.st.put(p)
			return err
		}
		if err := a.st.put(p); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) removeContainer(ctx context.Context, id string) {
	a.removeContainerWithin(ctx, id, StopGrace)
}

// removeContainerWithin stops a container, killing it after grace, and
// removes it.
func (a *Agent) removeContainerWithin(ctx context.Context, id string, grace time.Duration) {
	if err := a.rt.Stop(ctx, id, grace); err != nil {
		a.log.Warn("stop container", "container", id, "err", err)
	}
	if err := a.rt.Remove(ctx, id); err != nil {
		a.log.Warn("remove container", "container", id, "err", err)
	}
}

// startContainer pulls the image and starts one container.
func (a *Agent) startContainer(ctx context.Context, p *podRecord, c api.Container, cr *containerRecord) error {
	img, err := a.images.Pull(ctx, c.Image)
	if err != nil {
		cr.LastError = err.Error()
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	cr.Image, cr.Digest = c.Image, img.Digest
	args := resolveArgs(img, c)
	if len(args) == 0 {
		cr.LastError = "no command: the image has no entrypoint or cmd and the pod gives none"
		return fmt.Errorf("container %s: %s", c.Name, cr.LastError)
	}
	user := img.User
	if c.User != "" {
		user = c.User
	}
	uid, gid, err := resolveUser(img.Rootfs, user)
	if err != nil {
		cr.LastError = err.Error()
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	privs, err := privileges(&p.Spec)
	if err != nil {
		cr.LastError = err.Error()
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	if privs.Root && (c.User == "0" || strings.HasPrefix(c.User, "0:")) {
		uid = 0 // asked for, and admitted only because it is granted
		if _, g, ok := strings.Cut(c.User, ":"); ok {
			n, _ := strconv.Atoi(g)
			gid = uint32(n)
		} else {
			gid = 0
		}
	}
	env := append([]string(nil), img.Env...)
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+c.Env[k])
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = img.WorkingDir
	}
	cr.Seq++
	cr.ID = containerID(p.Namespace, p.Name, string(c.Name), cr.Seq)
	spec := runtime.Spec{
		ID: cr.ID, Rootfs: img.Rootfs, Args: args, Env: env, Cwd: cwd, UID: uid, GID: gid,
		Hostname: p.Name, NetNS: p.NetNS,
		UserNS:   runtime.IDRange{HostID: p.IDBase, Size: idRangeSize},
		CPUMilli: c.Resources.CPU.Milli(), MemoryBytes: c.Resources.Memory.Bytes(),
		Privileges: privs,
		Labels: map[string]string{"namespace": p.Namespace, "pod": p.Name, "container": string(c.Name),
			"generation": strconv.FormatInt(p.Generation, 10)},
	}
	if err := a.rt.Start(ctx, spec); err != nil {
		cr.LastError = err.Error()
		cr.Failures++
		cr.NextStart = time.Now().Add(backoff(cr.Failures))
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	cr.LastError, cr.ExitCode, cr.EndedAt = "", nil, time.Time{}
	cr.StartedAt = time.Now().UTC()
	return nil
}

// privileges turns a pod's requested privileges into the runtime's. The
// admission step has already refused pods asking for ungranted ones.
func privileges(spec *api.PodSpec) (runtime.Privileges, error) {
	var out runtime.Privileges
	for _, p := range spec.Privileges {
		kind, arg := p.Arg()
		switch kind {
		case "root":
			out.Root = true
		case "capability":
			out.Capabilities = append(out.Capabilities, arg)
		case "device":
			out.Devices = append(out.Devices, arg)
		case "hostPath":
			path, ro, _ := p.HostPath()
			out.HostPaths = append(out.HostPaths, runtime.HostPath{Path: path, ReadOnly: ro})
		case "writableRoot":
			out.WritableRoot = true
		case "hostNetwork":
			// Handled where the pod's network namespace is chosen.
		case "hostUser":
			out.HostUser = true
		case "unconfined":
			out.Unconfined = true
		default:
			return out, fmt.Errorf("privilege %s is not supported on this node yet", p)
		}
	}
	return out, nil
}

// resolveArgs merges the image's entrypoint and cmd with the pod's
// command and args, as Docker does: command replaces entrypoint+cmd, args
// replace cmd.
func resolveArgs(img Image, c api.Container) []string {
	switch {
	case len(c.Command) > 0:
		return append(append([]string(nil), c.Command...), c.Args...)
	case len(c.Args) > 0:
		return append(append([]string(nil), img.Entrypoint...), c.Args...)
	default:
		return append(append([]string(nil), img.Entrypoint...), img.Cmd...)
	}
}

// resolveUser turns a USER ("name", "uid", "uid:gid") into IDs inside the
// user namespace; root (or none) becomes DefaultUID.
func resolveUser(rootfs, user string) (uint32, uint32, error) {
	u, g, _ := strings.Cut(user, ":")
	uid, gid := -1, -1
	switch u {
	case "", "0", "root":
		return DefaultUID, DefaultUID, nil
	}
	if n, err := strconv.Atoi(u); err == nil {
		uid, gid = n, n
	} else {
		n, gn, err := lookupPasswd(filepath.Join(rootfs, "etc", "passwd"), u)
		if err != nil {
			return 0, 0, fmt.Errorf("user %q: %v", user, err)
		}
		uid, gid = n, gn
	}
	if g != "" {
		n, err := strconv.Atoi(g)
		if err != nil {
			return 0, 0, fmt.Errorf("user %q: group must be numeric", user)
		}
		gid = n
	}
	if uid <= 0 || uid >= idRangeSize || gid < 0 || gid >= idRangeSize {
		return DefaultUID, DefaultUID, nil
	}
	return uint32(uid), uint32(gid), nil
}

func lookupPasswd(path, name string) (int, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("no /etc/passwd in the image to look it up")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) >= 4 && parts[0] == name {
			uid, err1 := strconv.Atoi(parts[2])
			gid, err2 := strconv.Atoi(parts[3])
			if err1 == nil && err2 == nil {
				return uid, gid, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("not in the image's /etc/passwd")
}

// backoff is the delay before restart attempt n, like systemd's
// RestartSec with exponential steps: 1s, 2s, 4s, ... at most 5 minutes.
func backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := time.Second << min(n-1, 9)
	return min(d, 5*time.Minute)
}

// stopPod stops and removes every container and the pod's network
// namespace, and forgets the pod.
func (a *Agent) stopPod(ctx context.Context, p *podRecord) error {
	for _, cr := range p.Containers {
		if cr.ID != "" {
			a.removeContainer(ctx, cr.ID)
		}
	}
	if err := a.rt.RemovePodNetNS(podNetName(p)); err != nil {
		return err
	}
	return a.st.delete(p.Namespace, p.Name)
}

// status computes a pod's status from its containers.
func (a *Agent) status(p *podRecord) map[string]any {
	var list []any
	running, exited, failed := 0, 0, 0
	var msgs []string
	for _, c := range p.Spec.Containers {
		cr := p.Containers[string(c.Name)]
		entry := map[string]any{"name": string(c.Name), "image": c.Image, "state": "waiting", "restarts": 0}
		if cr != nil {
			entry["restarts"] = cr.Restarts
			if cr.Digest != "" {
				entry["imageDigest"] = cr.Digest
			}
			if !cr.StartedAt.IsZero() {
				entry["startedAt"] = cr.StartedAt.Format(time.RFC3339Nano)
			}
			st, err := a.rt.State(cr.ID)
			switch {
			case cr.ID != "" && err == nil && st.Status == runtime.StatusRunning:
				entry["state"] = "running"
				running++
			case cr.ExitCode != nil:
				entry["state"] = "exited"
				entry["exitCode"] = *cr.ExitCode
				entry["finishedAt"] = cr.EndedAt.Format(time.RFC3339Nano)
				exited++
				if *cr.ExitCode != 0 {
					failed++
				}
			}
			if cr.LastError != "" {
				entry["error"] = cr.LastError
				msgs = append(msgs, string(c.Name)+": "+cr.LastError)
			}
		}
		list = append(list, entry)
	}
	n := len(p.Spec.Containers)
	phase := "Pending"
	switch {
	case running == n:
		phase = "Running"
	case exited == n && failed == 0 && p.Spec.Restart != api.RestartAlways:
		phase = "Succeeded"
	case exited == n && failed > 0 && p.Spec.Restart == api.RestartNever:
		phase = "Failed"
	case running > 0:
		phase = "Running"
	}
	if p.Fenced {
		phase = "Stopped"
		msgs = append([]string{fencedMessage(p)}, msgs...)
	}
	st := map[string]any{"phase": phase, "containers": list, "message": strings.Join(msgs, "; ")}
	return st
}
