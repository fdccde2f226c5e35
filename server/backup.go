package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"time"

	"skiff.dev/skiff/api/backup"
)

// backup serves GET /v1/backup (admin only): a backup file (package
// api/backup), the manifest first, then the snapshot of etcd.
//
// The snapshot is first taken into a temporary file (in $TMPDIR, as large
// as etcd's database), so that the manifest, which comes first, can give
// its size, its SHA-256 and its etcd revision, and count the objects at
// that very revision.
//
// A backup holds the CA's private key and every token's hash: it is as
// secret as an admin token.
func (s *Server) backup(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "take backups"); err != nil {
		return err
	}
	f, err := os.CreateTemp("", "skiff-backup-*.db")
	if err != nil {
		return fmt.Errorf("backup: a temporary file for the snapshot: %w", err)
	}
	defer os.Remove(f.Name())
	f.Close()
	info, err := s.store.SaveSnapshot(r.Context(), f.Name())
	if err != nil {
		return err
	}
	m := backup.Manifest{Format: backup.Format, Created: time.Now().UTC().Truncate(time.Second),
		EtcdRevision: info.Revision, SnapshotSize: info.Size, SnapshotSHA256: info.SHA256,
		Objects: info.Objects, Revisions: info.Revisions}
	if s.ca != nil {
		h := sha256.Sum256(s.ca.Cert.Raw)
		m.CAHash = "sha256:" + hex.EncodeToString(h[:])
	}
	db, err := os.Open(f.Name())
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer db.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(200)
	// A failure from here on can only cut the stream short, which the
	// client sees (backup.ErrDamaged).
	backup.Write(w, m, db)
	return nil
}
