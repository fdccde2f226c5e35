// Package backup is the file format of skiff's backups, which the server
// streams and the CLI writes, inspects and restores. It knows nothing of
// etcd beyond the snapshot being a file: taking and restoring snapshots
// is package store's job.
package backup

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// A backup file is a tar of two files, in this order:
//
//	manifest.json   Manifest
//	etcd.db         an etcd snapshot of the cluster's whole keyspace
//
// GET /v1/backup streams one; the CLI writes it to a file with the version
// of skiff that wrote it added to the manifest. `tar tvf FILE` lists it, and
// `tar xOf FILE manifest.json` prints the manifest.

// Format names the backup file format in its manifest.
const Format = "skiff-backup/1"

// Manifest says what a backup holds.
type Manifest struct {
	Format       string    `json:"format"`
	Created      time.Time `json:"created"`
	SkiffVersion string    `json:"skiffVersion,omitempty"` // of the skiff that wrote the file
	// CAHash identifies the cluster: the SHA-256 of its CA certificate,
	// as agents pin it (--ca-hash).
	CAHash string `json:"caHash,omitempty"`
	// EtcdRevision is the revision the snapshot holds; every write
	// acknowledged before the backup began is in it.
	EtcdRevision   int64          `json:"etcdRevision"`
	SnapshotSize   int64          `json:"snapshotSize"`
	SnapshotSHA256 string         `json:"snapshotSHA256"`
	Objects        map[string]int `json:"objects"`   // current objects by kind
	Revisions      int            `json:"revisions"` // history entries, deleted objects' included
}

// ErrDamaged means a backup is not what its manifest says: its
// snapshot's size or SHA-256 differ, or the file is cut short.
var ErrDamaged = errors.New("backup is damaged")

// Read reads a backup file's manifest from r and returns a reader
// of its snapshot. Reading the snapshot to its end checks it: the last
// read fails with ErrDamaged unless it had the manifest's size and
// SHA-256.
func Read(r io.Reader) (Manifest, io.Reader, error) {
	tr := tar.NewReader(r)
	var m Manifest
	if err := nextEntry(tr, "manifest.json", 1<<20); err != nil {
		return m, nil, err
	}
	if err := json.NewDecoder(tr).Decode(&m); err != nil {
		return m, nil, fmt.Errorf("%w: manifest.json: %v", ErrDamaged, err)
	}
	if m.Format != Format {
		return m, nil, fmt.Errorf("manifest.json: format %q, this skiff reads %q", m.Format, Format)
	}
	if err := nextEntry(tr, "etcd.db", -1); err != nil {
		return m, nil, err
	}
	return m, &checkedReader{r: tr, h: sha256.New(), m: m}, nil
}

// nextEntry reads the next tar header and checks that it is the regular
// file name, of at most max bytes if max ≥ 0.
func nextEntry(tr *tar.Reader, name string, max int64) error {
	hdr, err := tr.Next()
	if err == io.EOF {
		return fmt.Errorf("%w: no %s in it (not a skiff backup, or cut short)", ErrDamaged, name)
	}
	if err != nil {
		return fmt.Errorf("%w: reading %s: %v (not a skiff backup?)", ErrDamaged, name, err)
	}
	if hdr.Name != name || hdr.Typeflag != tar.TypeReg || (max >= 0 && hdr.Size > max) {
		return fmt.Errorf("%w: found %q where %s should be (not a skiff backup?)", ErrDamaged, hdr.Name, name)
	}
	return nil
}

// checkedReader reads a snapshot, checking it at its end.
type checkedReader struct {
	r io.Reader
	h hash.Hash
	n int64
	m Manifest
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	switch {
	case err == io.ErrUnexpectedEOF:
		return n, fmt.Errorf("%w: etcd.db is cut short after %d of %d bytes", ErrDamaged, c.n, c.m.SnapshotSize)
	case err != io.EOF:
		return n, err
	case c.n != c.m.SnapshotSize:
		return n, fmt.Errorf("%w: etcd.db has %d bytes, the manifest says %d", ErrDamaged, c.n, c.m.SnapshotSize)
	}
	if sum := hex.EncodeToString(c.h.Sum(nil)); sum != c.m.SnapshotSHA256 {
		return n, fmt.Errorf("%w: etcd.db's sha256 checksum is %s, the manifest says %s", ErrDamaged, sum, c.m.SnapshotSHA256)
	}
	return n, io.EOF
}

// Write writes a backup file of m and the snapshot read from db,
// which must be m.SnapshotSize bytes long. The error of db's last read (a
// checkedReader's verdict) is Write's.
func Write(w io.Writer, m Manifest, db io.Reader) error {
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	mb = append(mb, '\n')
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "manifest.json", Size: int64(len(mb)), Mode: 0o600, ModTime: m.Created}); err != nil {
		return err
	}
	if _, err := tw.Write(mb); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etcd.db", Size: m.SnapshotSize, Mode: 0o600, ModTime: m.Created}); err != nil {
		return err
	}
	// io.Copy reads db to its end, so a checkedReader checks it.
	if _, err := io.Copy(tw, db); err != nil {
		return err
	}
	return tw.Close()
}
