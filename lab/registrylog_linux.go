package lab

import (
	"os"
	"strings"
)

// BlobDownloads counts the blobs the lab's registry served so far (layers
// and configs, not manifests), from its access log: what pulls
// downloaded, as opposed to tags resolved.
func (l *Lab) BlobDownloads() (int, error) {
	b, err := os.ReadFile(l.logPath("registry"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"GET /v2/`) && strings.Contains(line, "/blobs/sha256:") {
			n++
		}
	}
	return n, nil
}
