package client

import (
	"context"
	"fmt"
	"io"

	"skiff.dev/skiff/api/backup"
)

// Backup asks the server for a backup of the cluster (admin only) and
// writes it to w as a backup file (package api/backup), recording version as the skiff that
// wrote it. It has no deadline of its own: the snapshot is as large as
// etcd's database. It returns the manifest once the snapshot written is
// checked against the manifest's size and SHA-256; after an error, what w
// got is no backup.
func (c *Client) Backup(ctx context.Context, w io.Writer, version string) (backup.Manifest, error) {
	resp, err := c.sendWith(ctx, func() {}, "GET", "/v1/backup", nil, false)
	if err != nil {
		return backup.Manifest{}, err
	}
	defer resp.Body.Close()
	m, db, err := backup.Read(resp.Body)
	if err != nil {
		return backup.Manifest{}, fmt.Errorf("backup from the server: %w", err)
	}
	m.SkiffVersion = version
	if err := backup.Write(w, m, db); err != nil {
		return backup.Manifest{}, fmt.Errorf("backup from the server: %w", err)
	}
	return m, nil
}
