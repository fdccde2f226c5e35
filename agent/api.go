package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Exec stream frames, on the wire of POST /exec: one byte of stream, four
// bytes of big-endian length, the payload.
const (
	FrameStdout = 1
	FrameStderr = 2
	FrameExit   = 3 // payload: exit code, 4 bytes big-endian
	FrameError  = 4 // payload: error text
)

// Execer is the optional runtime ability to run a command in a container.
type Execer interface {
	Exec(ctx context.Context, id string, args []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) (int, error)
}

// Logger is the optional runtime ability to name a container's log files.
type Logger interface {
	Logs(id string) []string
}

// Handler serves the node's own API: container logs and exec. The server
// proxies to it; it trusts its caller to have authorized the request.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /logs", a.serveLogs)
	mux.HandleFunc("POST /exec", a.serveExec)
	mux.HandleFunc("POST /images/import", a.serveImport)
	mux.HandleFunc("POST /pods/{namespace}/{name}/release", a.serveRelease)
	return mux
}

// serveRelease stops a pod and forgets it, before the servers place it on
// another node (a drain): the copy here is gone before the next starts.
func (a *Agent) serveRelease(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	unlock := a.lockPod(ns, name)
	defer unlock()
	p, err := a.st.get(ns, name)
	if err == nil && p != nil {
		a.log.Info("releasing pod: the servers move it to another node", "pod", ns+"/"+name)
		err = a.release(r.Context(), p)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// ImageImporter is the optional ability of an image store to import
// archives (OCI layout or docker save).
type ImageImporter interface {
	Import(ctx context.Context, path, name string) ([]string, error)
}

// serveImport takes an image archive as the request body and imports it.
func (a *Agent) serveImport(w http.ResponseWriter, r *http.Request) {
	im, ok := a.images.(ImageImporter)
	if !ok {
		http.Error(w, "this node's image store cannot import", http.StatusNotImplemented)
		return
	}
	f, err := os.CreateTemp(a.o.DataDir, "import-*.tar")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, r.Body)
	f.Close()
	if err != nil {
		http.Error(w, "receive archive: "+err.Error(), http.StatusBadRequest)
		return
	}
	names, err := im.Import(r.Context(), f.Name(), r.URL.Query().Get("name"))
	if err != nil {
		http.Error(w, strings.ReplaceAll(err.Error(), f.Name(), r.URL.Query().Get("file")), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string][]string{"images": names})
}

// container finds the runtime ID of a pod's container; the container may
// be omitted when the pod has only one.
func (a *Agent) container(r *http.Request) (string, error) {
	ns, name := r.URL.Query().Get("namespace"), r.URL.Query().Get("pod")
	p, err := a.st.get(ns, name)
	if err != nil {
		return "", err
	}
	if p == nil {
		return "", fmt.Errorf("pod/%s is not on node %s", name, a.o.Name)
	}
	c := r.URL.Query().Get("container")
	if c == "" {
		if len(p.Spec.Containers) != 1 {
			var names []string
			for _, c := range p.Spec.Containers {
				names = append(names, string(c.Name))
			}
			return "", fmt.Errorf("pod/%s has %d containers: pick one with -c (%s)", name, len(names), strings.Join(names, ", "))
		}
		c = string(p.Spec.Containers[0].Name)
	}
	cr := p.Containers[c]
	if cr == nil || cr.ID == "" {
		return "", fmt.Errorf("pod/%s has no container %s running or run", name, c)
	}
	return cr.ID, nil
}

func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	id, err := a.container(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	lg, ok := a.rt.(Logger)
	if !ok {
		http.Error(w, "this runtime keeps no logs", http.StatusNotImplemented)
		return
	}
	tail, _ := strconv.Atoi(r.URL.Query().Get("tail"))
	follow := r.URL.Query().Get("follow") == "1"
	var lines []string
	for _, f := range lg.Logs(id) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.SplitAfter(string(b), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
	}
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, l := range lines {
		io.WriteString(w, l)
	}
	if !follow {
		return
	}
	// Follow the newest file from its current end.
	files := lg.Logs(id)
	if len(files) == 0 {
		return
	}
	f, err := os.Open(files[len(files)-1])
	if err != nil {
		return
	}
	defer f.Close()
	f.Seek(0, io.SeekEnd)
	rd := bufio.NewReader(f)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	for r.Context().Err() == nil {
		line, err := rd.ReadString('\n')
		if line != "" {
			io.WriteString(w, line)
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			select {
			case <-r.Context().Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// frameWriter writes one stream of an exec response as frames.
type frameWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	fl     http.Flusher
	stream byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := writeFrame(f.w, f.stream, p); err != nil {
		return 0, err
	}
	if f.fl != nil {
		f.fl.Flush()
	}
	return len(p), nil
}

func writeFrame(w io.Writer, stream byte, p []byte) error {
	var h [5]byte
	h[0] = stream
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// ReadFrame reads one exec frame.
func ReadFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("exec frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return h[0], p, err
}

func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request) {
	id, err := a.container(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	ex, ok := a.rt.(Execer)
	if !ok {
		http.Error(w, "this runtime cannot exec", http.StatusNotImplemented)
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(r.URL.Query().Get("cmd")), &args); err != nil || len(args) == 0 {
		http.Error(w, `exec needs cmd=["program", "arg", ...]`, http.StatusBadRequest)
		return
	}
	http.NewResponseController(w).EnableFullDuplex()
	w.Header().Set("Content-Type", "application/vnd.skiff.exec")
	w.WriteHeader(200)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	var mu sync.Mutex
	stdout := frameWriter{mu: &mu, w: w, fl: fl, stream: FrameStdout}
	stderr := frameWriter{mu: &mu, w: w, fl: fl, stream: FrameStderr}
	code, err := ex.Exec(r.Context(), id, args, r.Body, stdout, stderr, r.URL.Query().Get("tty") == "1")
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		writeFrame(w, FrameError, []byte(err.Error()))
		return
	}
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], uint32(int32(code)))
	writeFrame(w, FrameExit, c[:])
}
